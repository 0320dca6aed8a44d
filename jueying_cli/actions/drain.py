"""Drain and resume: plan, cap, act, record, wait. The CLI and the automation in `check --drain` share it.

Safety rules, because this is the action operators must never get wrong:
- a reason is required and carries the `jueying:` prefix and the operator's name;
- re-draining changes nothing (it says who drained the node and when) unless the reason is updated on purpose;
- resume touches only drains jueying wrote, unless forced;
- no drain may take the cluster past max_unavailable (nodes already down or drained count) unless forced,
  and automation can never force;
- every change is written to the audit log as `pending` before it is made and settled after, so a
  crash or SIGKILL mid-run leaves a log that `reconcile` squares with what the scheduler says.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from jueying_cli.errors import BadInputError, JueyingError
from jueying_cli.scheduler.base import DRAINED, DRAINING, NodeState, Scheduler, jueying_reason, operator
from jueying_cli.store import AuditEntry, Settlement, Store


@dataclass(frozen=True)
class Change:
    node: str
    action: str  # drain, update_reason, resume, none
    before: NodeState | None
    note: str = ""  # why nothing happens, or what will


@dataclass
class ActionReport:
    changes: list[Change]
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    after: dict[str, NodeState] = field(default_factory=dict)


def _who(state: NodeState) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(state.reason_time)) if state.reason_time else "?"
    return f"by {state.reason_user or '?'} at {when}: {state.reason or '(no reason)'}"


def plan_drain(nodes: Sequence[str], states: Mapping[str, NodeState], *, update_reason: bool) -> list[Change]:
    changes = []
    for node in nodes:
        state = states.get(node)
        if state is None:
            changes.append(Change(node, "none", None, "not known to the scheduler"))
        elif state.drain:
            if update_reason:
                changes.append(Change(node, "update_reason", state, "already drained; reason replaced"))
            else:
                changes.append(Change(node, "none", state, f"already {state.state} {_who(state)}"))
        else:
            changes.append(Change(node, "drain", state, f"{state.state} -> drain"))
    return changes


def plan_resume(nodes: Sequence[str], states: Mapping[str, NodeState], *, force: bool) -> list[Change]:
    changes = []
    for node in nodes:
        state = states.get(node)
        if state is None:
            changes.append(Change(node, "none", None, "not known to the scheduler"))
        elif not state.drain:
            changes.append(Change(node, "none", state, f"not drained ({state.state})"))
        elif not state.owned and not force:
            changes.append(Change(node, "none", state,
                                  f"drained {_who(state)}; not a jueying drain: --force to resume"))
        else:
            changes.append(Change(node, "resume", state, f"{state.state} -> resume"))
    return changes


def apply(changes: Sequence[Change], scheduler: Scheduler, store: Store, *, reason: str | None,
          actor: str | None = None, run_id: str | None = None, message: str | None = None) -> ActionReport:
    """Make the planned changes through one scheduler, with audit entries written before and settled after."""
    actor = actor or operator()
    run_id = run_id or uuid.uuid4().hex[:12]
    report = ActionReport(changes=list(changes))
    todo = [c for c in changes if c.action != "none"]
    if not todo:
        return report
    now = time.time()
    ids = store.audit.intent(AuditEntry(
        at=now, actor=actor, action=c.action, node=c.node, backend=scheduler.name, reason=reason,
        before_state=c.before.raw or c.before.state if c.before else None,
        before_reason=c.before.reason if c.before else None, message=message, run_id=run_id) for c in todo)
    by_action: dict[str, list[str]] = {}
    for c in todo:
        by_action.setdefault(c.action, []).append(c.node)
    errors: dict[str, str] = {}
    for action, names in by_action.items():
        try:
            if action in ("drain", "update_reason"):
                assert reason is not None
                scheduler.drain(names, reason)
            elif action == "resume":
                scheduler.resume(names)
        except JueyingError as exc:
            errors.update(dict.fromkeys(names, str(exc)))
    after = scheduler.states([c.node for c in todo])
    settle = []
    for entry_id, c in zip(ids, todo, strict=True):
        state = after.get(c.node)
        took = state is not None and _took_effect(c.action, state, reason)
        if took:
            report.done.append(c.node)
        else:
            report.failed[c.node] = errors.get(c.node, "the scheduler does not show the change")
        settle.append(Settlement(entry_id, "done" if took else "failed", (state.raw or state.state) if state else None,
                                 state.reason if state else None, None if took else report.failed[c.node]))
        if state is not None:
            report.after[c.node] = state
    store.audit.finish(settle)
    return report


def _took_effect(action: str, state: NodeState, reason: str | None) -> bool:
    if action in ("drain", "update_reason"):
        return state.drain and (reason is None or state.reason == reason)
    return not state.drain


def reconcile(store: Store, schedulers: Mapping[str, Scheduler]) -> int:
    """Settle audit entries left `pending` by a run that died mid-action: look at what the scheduler shows
    and mark each entry done or not_done. Returns how many were settled."""
    pending = store.audit.pending()
    settle = []
    for entry in pending:
        scheduler = schedulers.get(entry.backend)
        if scheduler is None or entry.id is None:
            continue
        settle_from_marker = getattr(scheduler, "settle_from_marker", None)
        if settle_from_marker is not None:  # builtin: the node's marker may be ahead of the ledger
            settle_from_marker(entry.node)
        state = scheduler.states([entry.node]).get(entry.node)
        took = state is not None and _took_effect(entry.action, state, entry.reason)
        settle.append(Settlement(entry.id, "done" if took else "not_done",
                                 (state.raw or state.state) if state else None, state.reason if state else None,
                                 "settled after an interrupted run"))
    store.audit.finish(settle)
    return len(settle)


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
            busy = {n: s.jobs for n, s in states.items() if s.state == DRAINING or s.jobs}
            if not busy and all(states.get(n) is not None and states[n].state == DRAINED for n in nodes):
                return WaitResult("drained", states, {}, time.monotonic() - started)
            if time.monotonic() - started >= timeout_s:
                return WaitResult("timeout", states, busy, time.monotonic() - started)
            time.sleep(min(poll_s, max(0.1, timeout_s - (time.monotonic() - started))))
    except KeyboardInterrupt:
        return WaitResult("aborted", states, {n: s.jobs for n, s in states.items() if s.jobs},
                          time.monotonic() - started)


def require_reason(text: str | None) -> str:
    if not text or not text.strip():
        raise BadInputError("a reason is required (--reason 'xid 79 on GPU 3, ticket OPS-1234')", field="--reason")
    return jueying_reason(text)
