"""Taking nodes out of service and putting them back: the one place that plans, caps, acts and records.
The CLI (`drain`, `resume`), the automation of `check --drain/--resume` and failover all go through it.

Safety rules, because this is the action operators must never get wrong:
- a reason is required and carries jueying's tag with the operator's name (`TEXT [jueying:USER]`);
- re-draining changes nothing (it says who drained the node and when) unless the reason is updated on purpose;
- resume touches only drains jueying wrote, unless forced;
- no drain may take the cluster past max_unavailable (nodes already down or drained count; builtin nodes that
  do not answer count as down) unless forced, and automation can never force: it drains up to the cap and
  holds the rest back; runs that add drains check the cap one at a time (the cap lock, held until their
  drains are made), so two runs cannot pass it together;
- every change is written to the audit log as `pending` before it is made and settled after, under the
  node's lock, after checking again that the node is as planned (apply.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from jueying_cli.actions.apply import ActionReport, Evidence, apply, planning_states
from jueying_cli.actions.cap import Cap, OverCap, admit
from jueying_cli.actions.context import ActionContext
from jueying_cli.actions.plan import Change, plan_drain, plan_resume
from jueying_cli.scheduler.base import NodeState, Scheduler
from jueying_cli.vocab import Backend, ChangeKind, SchedulerState


class ChangeResult(StrEnum):
    """How one node's change ended (or would end), as `drain`, `resume` and `check --drain` print it."""

    DRAINED = "drained"
    REASON_UPDATED = "reason updated"
    RESUMED = "resumed"
    UNCHANGED = "unchanged"
    STALE = "not drained"  # an automatic drain whose facts were read before the node was resumed
    FAILED = "failed"
    HELD_BACK = "held back"
    WOULD_DRAIN = "would drain"
    WOULD_UPDATE_REASON = "would update_reason"
    WOULD_RESUME = "would resume"


_DONE = {ChangeKind.DRAIN: ChangeResult.DRAINED, ChangeKind.UPDATE_REASON: ChangeResult.REASON_UPDATED,
         ChangeKind.RESUME: ChangeResult.RESUMED}
_WOULD = {ChangeKind.DRAIN: ChangeResult.WOULD_DRAIN, ChangeKind.UPDATE_REASON: ChangeResult.WOULD_UPDATE_REASON,
          ChangeKind.RESUME: ChangeResult.WOULD_RESUME}
HELD_BACK_NOTE = "max_unavailable reached: automation never drains past it"


@dataclass(frozen=True)
class NodeChange:
    """One node's line in the report: `note` says why nothing happened, what failed, or what the node is now."""

    node: str
    backend: Backend
    result: ChangeResult
    note: str
    change: Change
    after: NodeState | None = None


@dataclass(frozen=True)
class DrainRequest:
    node: str
    reason: str  # the full reason, with jueying's tag (require_reason, jueying_reason)
    message: str | None = None  # for the audit log: what caused it
    # what an automatic drain was decided on: a resume made since wins, so a check that read a fault before a
    # drill or an operator put the node back does not drain it again
    evidence: Evidence | None = None


@dataclass
class ChangePlan:
    """Planned changes per backend, those held back by the cap, and the cap they were weighed against."""

    changes: dict[Backend, list[Change]]
    held: list[tuple[Backend, Change]] = field(default_factory=list)
    cap: Cap | None = None
    forced: bool = False  # --force took the cluster past max_unavailable
    requests: dict[str, DrainRequest] = field(default_factory=dict)

    def preview(self) -> list[NodeChange]:
        """What a dry run prints: every planned change as `would ...`, or `unchanged` with why."""
        return [NodeChange(c.node, backend, _WOULD.get(c.action, ChangeResult.UNCHANGED), c.note, c)
                for backend, changes in self.changes.items() for c in changes] + self._held_rows()

    def _held_rows(self) -> list[NodeChange]:
        return [NodeChange(c.node, backend, ChangeResult.HELD_BACK, HELD_BACK_NOTE, c) for backend, c in self.held]


def plan_drains(ctx: ActionContext, requests: Sequence[DrainRequest], *, over_cap: OverCap,
                update_reason: bool = False, dry_run: bool = False) -> ChangePlan:
    """Plan every request against its scheduler's current state and weigh the new drains against
    max_unavailable (CapExceeded when `over_cap` is REFUSE and they do not fit). When drains would add nodes,
    the cap lock is taken first (not for a dry run) and held until execute() has made them, and the plan is
    made again under it: another run's drains are then in the states the cap counts."""
    wanted = {r.node: r for r in requests}
    planned = _plan_drains(ctx, wanted, update_reason)
    if not any(c.action == ChangeKind.DRAIN for cs in planned.values() for c in cs):
        return ChangePlan(planned, requests=wanted)  # nothing new out of service: the cap is not asked
    if not dry_run:
        ctx.hold_cap()
        planned = _plan_drains(ctx, wanted, update_reason)
    adding = [(backend, c) for backend, changes in planned.items() for c in changes if c.action == ChangeKind.DRAIN]
    cap = ctx.cap()
    admitted, held = admit(cap, [(b, c) for b, c in adding if not cap.counted(c.node)], over_cap)
    held_nodes = {c.node for _, c in held}
    changes = {backend: [c for c in cs if c.node not in held_nodes] for backend, cs in planned.items()}
    return ChangePlan(changes, held, cap, over_cap == OverCap.FORCE and cap.exceeded_by(len(admitted)), wanted)


def _plan_drains(ctx: ActionContext, wanted: Mapping[str, DrainRequest],
                 update_reason: bool) -> dict[Backend, list[Change]]:
    # from the ledger (the cap has read every marker already); a drain known only by a node's marker is seen
    # under the node's lock (actions.apply), where the drain is then left alone
    return {backend: plan_drain([n for n in names if n in wanted], scheduler.states(
        [n for n in names if n in wanted]), update_reason=update_reason)
        for backend, (scheduler, names) in ctx.schedulers.items() if any(n in wanted for n in names)}


def plan_resumes(ctx: ActionContext, nodes: Sequence[str], *, force: bool,
                 states: Mapping[Backend, Mapping[str, NodeState]] | None = None) -> ChangePlan:
    """Plan resuming `nodes`: only drains jueying wrote, unless `force`. `states`: what each backend's
    scheduler said of its nodes a moment ago, when the caller has just asked (otherwise asked here)."""
    wanted = set(nodes)
    planned = {}
    for backend, (scheduler, names) in ctx.schedulers.items():
        mine = [n for n in names if n in wanted]
        if mine:
            known = states[backend] if states is not None and backend in states else planning_states(scheduler, mine)
            planned[backend] = plan_resume(mine, known, force=force)
    return ChangePlan(planned)


def execute(ctx: ActionContext, plan: ChangePlan, *, actor: str | None = None,
            message: str | None = None) -> list[NodeChange]:
    """Make the planned changes (one scheduler call per backend, reason and message), each recorded in the
    audit log; nodes that need no change, failed or were held back are reported as such."""
    rows: list[NodeChange] = []
    try:
        for backend, changes in plan.changes.items():
            scheduler = ctx.schedulers[backend][0]
            for (reason, why, evidence), group in _groups(changes, plan.requests).items():
                note = why or message
                if plan.forced:
                    note = "forced past max_unavailable" + (f"; {note}" if note else "")
                report = apply(group, scheduler, ctx.store, reason=reason, actor=actor, message=note,
                               evidence=evidence)
                rows += [_row(backend, c, report, reason) for c in group]
    finally:
        ctx.release_cap()  # the drains are made (or failed): the next run's cap check sees them
    return rows + plan._held_rows()


def _groups(changes: Sequence[Change], requests: Mapping[str, DrainRequest],
            ) -> dict[tuple[str | None, str | None, Evidence | None], list[Change]]:
    """Changes that share a reason, an audit message and their evidence, in order (resumes have none)."""
    groups: dict[tuple[str | None, str | None, Evidence | None], list[Change]] = {}
    for c in changes:
        request = requests.get(c.node)
        key = (request.reason, request.message, request.evidence) if request else (None, None, None)
        groups.setdefault(key, []).append(c)
    return groups


def _row(backend: Backend, c: Change, report: ActionReport, reason: str | None) -> NodeChange:
    if c.node in report.skipped:  # another run changed the node since this one planned: nothing done
        now = report.skipped[c.node]
        return NodeChange(c.node, backend, ChangeResult.UNCHANGED, now.note, now)
    if c.node in report.stale:
        return NodeChange(c.node, backend, ChangeResult.STALE, report.stale[c.node], c)
    if c.node in report.failed:
        return NodeChange(c.node, backend, ChangeResult.FAILED, report.failed[c.node], c)
    if c.action == ChangeKind.NONE:
        return NodeChange(c.node, backend, ChangeResult.UNCHANGED, c.note, c)
    after = report.after.get(c.node)
    shown = after.state if after else "?"
    if c.action == ChangeKind.RESUME:
        note = f"{shown} (was: {c.before.reason if c.before else ''})"
    else:
        note = f"{shown}: {reason}"
    return NodeChange(c.node, backend, _DONE[c.action], note, c, after)


@dataclass(frozen=True)
class WaitResult:
    outcome: str  # drained, timeout, aborted
    states: Mapping[str, NodeState]
    blocking: Mapping[str, tuple[str, ...]]  # node -> jobs still running (timeout / aborted)
    waited_s: float


def wait_drained(scheduler: Scheduler, nodes: Sequence[str], *, timeout_s: float, poll_s: float = 2.0,
                 on_poll: Callable[[Mapping[str, NodeState]], None] | None = None) -> WaitResult:
    """Wait until no job runs on the nodes (state drained), the timeout passes, or Ctrl-C."""
    started = time.monotonic()
    states: Mapping[str, NodeState] = {}
    try:
        while True:
            states = scheduler.states(list(nodes))
            if on_poll:
                on_poll(states)
            busy = {n: s.jobs for n, s in states.items() if s.state == SchedulerState.DRAINING or s.jobs}
            if not busy and all(states.get(n) is not None and states[n].state == SchedulerState.DRAINED for n in nodes):
                return WaitResult("drained", states, {}, time.monotonic() - started)
            if time.monotonic() - started >= timeout_s:
                return WaitResult("timeout", states, busy, time.monotonic() - started)
            time.sleep(min(poll_s, max(0.1, timeout_s - (time.monotonic() - started))))
    except KeyboardInterrupt:
        return WaitResult("aborted", states, {n: s.jobs for n, s in states.items() if s.jobs},
                          time.monotonic() - started)


