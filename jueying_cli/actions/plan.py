"""Planning a change of service state, node by node, from what the scheduler says: what would change and why
not. Pure: nothing here acts."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jueying_cli.errors import BadInputError
from jueying_cli.scheduler.base import NodeState, bare_reason, jueying_reason
from jueying_cli.vocab import ChangeKind


@dataclass(frozen=True)
class Change:
    node: str
    action: ChangeKind
    before: NodeState | None
    note: str = ""  # why nothing happens, or what will


def who(state: NodeState) -> str:
    """`by USER at TIME: REASON`, for messages about a drained node."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(state.reason_time)) if state.reason_time else "?"
    return f"by {state.reason_user or '?'} at {when}: {state.reason or '(no reason)'}"


def plan_drain(nodes: Sequence[str], states: Mapping[str, NodeState], *, update_reason: bool) -> list[Change]:
    changes = []
    for node in nodes:
        state = states.get(node)
        if state is None:
            changes.append(Change(node, ChangeKind.NONE, None, "not known to the scheduler"))
        elif state.drain:
            if update_reason:
                changes.append(Change(node, ChangeKind.UPDATE_REASON, state, "already drained; reason replaced"))
            else:
                changes.append(Change(node, ChangeKind.NONE, state, f"already {state.state} {who(state)}"))
        else:
            changes.append(Change(node, ChangeKind.DRAIN, state, f"{state.state} -> drain"))
    return changes


def plan_resume(nodes: Sequence[str], states: Mapping[str, NodeState], *, force: bool) -> list[Change]:
    changes = []
    for node in nodes:
        state = states.get(node)
        if state is None:
            changes.append(Change(node, ChangeKind.NONE, None, "not known to the scheduler"))
        elif not state.drain:
            changes.append(Change(node, ChangeKind.NONE, state, f"not drained ({state.state})"))
        elif not state.owned and not force:
            changes.append(Change(node, ChangeKind.NONE, state,
                                  f"drained {who(state)}; not a jueying drain: --force to resume"))
        else:
            changes.append(Change(node, ChangeKind.RESUME, state, f"{state.state} -> resume"))
    return changes


def require_reason(text: str | None) -> str:
    """An operator's reason with jueying's tag and their name at the end; none is refused (exit 2)."""
    if not text or not bare_reason(text):
        raise BadInputError("a reason is required (--reason 'xid 79 on GPU 3, ticket OPS-1234')", field="--reason")
    return jueying_reason(text)
