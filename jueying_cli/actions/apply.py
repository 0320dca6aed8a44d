"""Acting on planned changes through one scheduler, with the audit log written before (`pending`) and settled
after, and settling what a run that died mid-action left pending.

A crash or SIGKILL mid-run leaves `pending` entries that `reconcile` squares with what the scheduler shows.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from jueying_cli.actions.plan import Change
from jueying_cli.errors import JueyingError
from jueying_cli.scheduler.base import NodeState, Scheduler, operator
from jueying_cli.store import AuditEntry, Settlement, Store
from jueying_cli.vocab import AuditResult, Backend, ChangeKind


@dataclass
class ActionReport:
    changes: list[Change]
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    after: dict[str, NodeState] = field(default_factory=dict)


def apply(changes: Sequence[Change], scheduler: Scheduler, store: Store, *, reason: str | None,
          actor: str | None = None, run_id: str | None = None, message: str | None = None) -> ActionReport:
    """Make the planned changes through one scheduler, with audit entries written before and settled after."""
    actor = actor or operator()
    run_id = run_id or uuid.uuid4().hex[:12]
    report = ActionReport(changes=list(changes))
    todo = [c for c in changes if c.action != ChangeKind.NONE]
    if not todo:
        return report
    now = time.time()
    ids = store.audit.intent(AuditEntry(
        at=now, actor=actor, action=c.action, node=c.node, backend=scheduler.name, reason=reason,
        before_state=c.before.raw or c.before.state if c.before else None,
        before_reason=c.before.reason if c.before else None, message=message, run_id=run_id) for c in todo)
    by_action: dict[ChangeKind, list[str]] = {}
    for c in todo:
        by_action.setdefault(c.action, []).append(c.node)
    errors: dict[str, str] = {}
    for action, names in by_action.items():
        try:
            if action in (ChangeKind.DRAIN, ChangeKind.UPDATE_REASON):
                assert reason is not None
                scheduler.drain(names, reason)
            elif action == ChangeKind.RESUME:
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
        shown, reason_now = _shown(state)
        settle.append(Settlement(entry_id, AuditResult.DONE if took else AuditResult.FAILED, shown, reason_now,
                                 None if took else report.failed[c.node]))
        if state is not None:
            report.after[c.node] = state
    store.audit.finish(settle)
    return report


def _shown(state: NodeState | None) -> tuple[str | None, str | None]:
    """(state, reason) as the audit log records what the scheduler shows after a change."""
    if state is None:
        return None, None
    return state.raw or state.state, state.reason


def _took_effect(action: str, state: NodeState, reason: str | None) -> bool:
    if action in (ChangeKind.DRAIN, ChangeKind.UPDATE_REASON):
        return state.drain and (reason is None or state.reason == reason)
    return not state.drain


def reconcile(store: Store, schedulers: Mapping[Backend, Scheduler]) -> int:
    """Settle audit entries left `pending` by a run that died mid-action: look at what the scheduler shows
    and mark each entry done or not_done. Returns how many were settled."""
    pending = store.audit.pending()
    settle = []
    for entry in pending:
        scheduler = schedulers.get(Backend(entry.backend)) if entry.backend in tuple(Backend) else None
        if scheduler is None or entry.id is None:
            continue
        settle_from_marker = getattr(scheduler, "settle_from_marker", None)
        if settle_from_marker is not None:  # builtin: the node's marker may be ahead of the ledger
            settle_from_marker(entry.node)
        state = scheduler.states([entry.node]).get(entry.node)
        took = state is not None and _took_effect(entry.action, state, entry.reason)
        shown, reason_now = _shown(state)
        settle.append(Settlement(entry.id, AuditResult.DONE if took else AuditResult.NOT_DONE, shown, reason_now,
                                 "settled after an interrupted run"))
    store.audit.finish(settle)
    return len(settle)


