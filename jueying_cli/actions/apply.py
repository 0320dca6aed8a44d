"""Acting on planned changes through one scheduler, with the audit log written before (`pending`) and settled
after, and settling what a run that died mid-action left pending.

Concurrent runs: a change holds its node's lock (store.node_locks, freed by the kernel if the run dies) from
re-reading the node's state, through the audit intent and the scheduler call, to reading back and settling
the entry. Under the lock the plan is checked again: a node another run changed since this one looked is left
alone (reported `unchanged`, no entry), so two runs never both drain one node, and the log's order is the
order the changes were made in. An automatic drain decided on evidence older than the node's last resume is
left alone the same way (Evidence): the resume was made on newer evidence.

Interrupted runs: a SIGKILL mid-run leaves `pending` entries. `reconcile` settles only entries whose run is
gone (store.audit.settle_refusal), under their nodes' locks, against what the scheduler shows; for builtin
nodes the marker is read first, and an unreadable marker leaves the entry pending: it decides nothing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from jueying_cli.actions.plan import Change, who
from jueying_cli.errors import JueyingError, SchedulerError
from jueying_cli.scheduler.base import NodeState, Scheduler, operator
from jueying_cli.scheduler.builtin import BuiltinScheduler
from jueying_cli.store import AuditEntry, RunOwner, Settlement, Store
from jueying_cli.store.audit import settle_refusal
from jueying_cli.vocab import AuditResult, Backend, ChangeKind

LOCK_WAIT_S = 120.0  # how long a change waits for another run to finish with a node before giving up on it
_LOCK_POLL_S = 0.05


@dataclass(frozen=True)
class Evidence:
    """When the facts behind automatic drains were read (unix s), and which of their nodes were drained then.
    A node resumed since (the audit log says so, or it was drained then and is in service now: a resume made
    with scontrol, or in another state database) is not drained on that evidence."""

    read_at: float
    drained_then: frozenset[str] = frozenset()


@dataclass
class ActionReport:
    changes: list[Change]
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    after: dict[str, NodeState] = field(default_factory=dict)
    # nodes another run changed since this one planned: nothing done, a `none` change saying what they are now
    skipped: dict[str, Change] = field(default_factory=dict)
    settled: int = 0  # entries a dead run left for these nodes, settled before acting on them
    # drains not made because the node was resumed after their facts were read: node -> why
    stale: dict[str, str] = field(default_factory=dict)


def apply(changes: Sequence[Change], scheduler: Scheduler, store: Store, *, reason: str | None,
          actor: str | None = None, run_id: str | None = None, message: str | None = None,
          evidence: Evidence | None = None) -> ActionReport:
    """Make the planned changes through one scheduler, node locks held, with audit entries written before and
    settled after. Nodes whose lock another run holds are waited for (LOCK_WAIT_S), a batch at a time.
    `evidence`: what these drains were decided on; a node resumed since is skipped (ActionReport.stale)."""
    actor = actor or operator()
    run_id = run_id or uuid.uuid4().hex[:12]
    report = ActionReport(changes=list(changes))
    waiting = [c for c in changes if c.action != ChangeKind.NONE]
    locks = store.node_locks
    deadline = time.monotonic() + LOCK_WAIT_S
    while waiting:
        held = [c for c in waiting if locks.try_lock(c.node)]
        if held:
            try:
                _apply_locked(held, scheduler, store, report, reason=reason, actor=actor, run_id=run_id,
                              message=message, evidence=evidence)
            finally:
                locks.release(c.node for c in held)
            taken = {c.node for c in held}
            waiting = [c for c in waiting if c.node not in taken]
        elif time.monotonic() >= deadline:
            for c in waiting:
                report.failed[c.node] = (f"another jueying run is changing it ({locks.holder(c.node)}); "
                                         f"waited {LOCK_WAIT_S:g} s, nothing done")
            break
        else:
            time.sleep(_LOCK_POLL_S)
    return report


def _apply_locked(batch: Sequence[Change], scheduler: Scheduler, store: Store, report: ActionReport, *,
                  reason: str | None, actor: str, run_id: str, message: str | None,
                  evidence: Evidence | None) -> None:
    names = [c.node for c in batch]
    report.settled += reconcile(store, {scheduler.name: scheduler}, nodes=names, locked=True).settled
    now = planning_states(scheduler, names)
    todo = []
    for c in batch:
        state = now.get(c.node)
        why = _changed_since_planned(c, state)
        stale = None if why is not None else _resumed_since_read(store, c, state, evidence)
        if stale is not None:
            report.stale[c.node] = stale
        elif why is None:
            todo.append(replace(c, before=state))
        else:
            report.skipped[c.node] = Change(c.node, ChangeKind.NONE, state, why)
    if not todo:
        return
    ids = store.audit.intent(AuditEntry(
        at=time.time(), actor=actor, action=c.action, node=c.node, backend=scheduler.name, reason=reason,
        before_state=c.before.raw or c.before.state if c.before else None,
        before_reason=c.before.reason if c.before else None, message=message, run_id=run_id) for c in todo)
    by_action: dict[ChangeKind, list[str]] = {}
    for c in todo:
        by_action.setdefault(c.action, []).append(c.node)
    errors: dict[str, str] = {}
    for action, group in by_action.items():
        try:
            if action in (ChangeKind.DRAIN, ChangeKind.UPDATE_REASON):
                assert reason is not None
                scheduler.drain(group, reason)
            elif action == ChangeKind.RESUME:
                scheduler.resume(group)
        except JueyingError as exc:
            errors.update(dict.fromkeys(group, str(exc)))
    after = scheduler.states([c.node for c in todo])
    settle = []
    for entry_id, c in zip(ids, todo, strict=True):
        state = after.get(c.node)
        took = state is not None and _took_effect(c.action, state, reason)
        if took:
            report.done.append(c.node)
        else:
            report.failed[c.node] = errors.get(c.node, "the scheduler does not show the change")
        shown, reason_now = _shown(state)
        settle.append(Settlement(entry_id, AuditResult.DONE if took else AuditResult.FAILED, shown, reason_now,
                                 None if took else report.failed[c.node]))
        if state is not None:
            report.after[c.node] = state
    store.audit.finish(settle)


def planning_states(scheduler: Scheduler, names: Sequence[str]) -> Mapping[str, NodeState]:
    """The states a resume plans from, and every change is checked against under its node's lock: for builtin
    nodes a drain known only by the node's marker (another admin's tooling) counts, as it does for
    max_unavailable, so a resume can lift it and a drain leaves it, and its reason, alone. Other backends show
    every drain already."""
    if not names:
        return {}
    if isinstance(scheduler, BuiltinScheduler):
        return scheduler.with_markers(names)
    return scheduler.states(names)


def _changed_since_planned(change: Change, now: NodeState | None) -> str | None:
    """None when the change still applies to the node as it is now (read under its lock); else what another
    run made of it since this one planned, as the `unchanged` note."""
    if now is None:
        return "no longer known to the scheduler; nothing done"
    if change.action == ChangeKind.DRAIN and now.drain:
        return f"already {now.state} {who(now)} (by another run, since this one looked)"
    if change.action in (ChangeKind.UPDATE_REASON, ChangeKind.RESUME) and not now.drain:
        return f"not drained ({now.state}): resumed by another run since this one looked"
    if change.action == ChangeKind.RESUME and change.before is not None and now.reason != change.before.reason:
        return f"drained again {who(now)} since this one looked; not resumed"
    return None


def _resumed_since_read(store: Store, change: Change, now: NodeState | None, evidence: Evidence | None) -> str | None:
    """None unless `change` is a drain decided on evidence older than the node's last resume: then why it is
    not made. The next check run, on facts read after the resume, drains it if the fault is real."""
    if change.action != ChangeKind.DRAIN or evidence is None:
        return None
    resumed = store.audit.resumed_since(change.node, evidence.read_at)
    if resumed is not None:
        when = time.strftime("%H:%M:%S", time.localtime(resumed.at))
        return (f"resumed by {resumed.actor} at {when}, after this run read its facts; not drained on older "
                "evidence (the next run decides)")
    if change.node in evidence.drained_then and now is not None and not now.drain:
        return ("drained when this run read its facts and resumed since (by someone, outside this state "
                "database); not drained on older evidence (the next run decides)")
    return None


def _shown(state: NodeState | None) -> tuple[str | None, str | None]:
    """(state, reason) as the audit log records what the scheduler shows after a change."""
    if state is None:
        return None, None
    return state.raw or state.state, state.reason


def _took_effect(action: str, state: NodeState, reason: str | None) -> bool:
    if action in (ChangeKind.DRAIN, ChangeKind.UPDATE_REASON):
        return state.drain and (reason is None or state.reason == reason)
    return not state.drain


@dataclass
class Reconciled:
    """What settling left by dead runs did: how many entries it settled, and those it left pending, with why."""

    settled: int = 0
    left: list[tuple[AuditEntry, str]] = field(default_factory=list)


def reconcile(store: Store, schedulers: Mapping[Backend, Scheduler], *, nodes: Collection[str] | None = None,
              locked: bool = False) -> Reconciled:
    """Settle audit entries left `pending` by runs that are gone (of `nodes`, or all), each against what its
    scheduler shows now: done or not_done (a failover: unknown). Entries of live runs, of nodes another run is
    changing, and of builtin nodes whose marker cannot be read are left pending, with why. `locked`: the
    caller holds the locks of `nodes`. Backends not in `schedulers` are left for a run that has them."""
    result = Reconciled()
    me, now = RunOwner.current(), time.time()
    dead: dict[Backend, list[AuditEntry]] = {}
    for entry in store.audit.pending(nodes):
        if entry.id is None or (entry.owner is not None and entry.owner.same_process(me)):
            continue
        refusal = settle_refusal(entry.owner, entry.at, me, now)
        if refusal is not None:
            result.left.append((entry, refusal))
            continue
        backend = Backend(entry.backend) if entry.backend in tuple(Backend) else None
        if backend is not None and backend in schedulers:
            dead.setdefault(backend, []).append(entry)
    locks = store.node_locks
    taken: list[str] = []
    try:
        for backend, entries in dead.items():
            ready = []
            for entry in entries:
                if locked or entry.node in taken or locks.try_lock(entry.node):
                    if not locked and entry.node not in taken:
                        taken.append(entry.node)
                    ready.append(entry)
                else:
                    result.left.append((entry, f"another run is changing it ({locks.holder(entry.node)})"))
            result.settled += _settle(store, schedulers[backend], ready, result)
    finally:
        locks.release(taken)
    return result


def _settle(store: Store, scheduler: Scheduler, entries: Sequence[AuditEntry], result: Reconciled) -> int:
    names = sorted({e.node for e in entries})
    unreadable: dict[str, str] = {}
    if isinstance(scheduler, BuiltinScheduler):  # the node's marker may be ahead of the ledger
        unreadable = scheduler.settle_from_markers(names)
    try:
        states = scheduler.states([n for n in names if n not in unreadable])
    except SchedulerError as exc:
        result.left += [(e, f"the scheduler cannot be asked: {exc}") for e in entries]
        return 0
    settle = []
    for entry in entries:
        assert entry.id is not None
        if entry.node in unreadable:
            result.left.append((entry, f"its marker could not be read ({unreadable[entry.node]}); it is settled "
                                       "once the node answers"))
            continue
        state = states.get(entry.node)
        shown, reason_now = _shown(state)
        if entry.action == ChangeKind.FAILOVER:  # its drain has its own entry; its steps cannot be seen from here
            settle.append(Settlement(entry.id, AuditResult.UNKNOWN, shown, reason_now,
                                     "settled after an interrupted run: how far the failover's steps got is not "
                                     "known; check the spare and the failed node"))
            continue
        took = state is not None and _took_effect(entry.action, state, entry.reason)
        settle.append(Settlement(entry.id, AuditResult.DONE if took else AuditResult.NOT_DONE, shown, reason_now,
                                 "settled after an interrupted run"))
    return store.audit.finish(settle)
