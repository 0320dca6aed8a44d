"""Builtin backend for clusters without a scheduler: jueying's own ledger, plus a marker on the node.

The ledger (state DB) is the truth jueying reads. The marker file on the node,
`${JUEYING_NODE_STATE_DIR:-/var/lib/jueying}/drained`, holds the reason so the node's own tooling
(a job launcher, a prolog, a login banner) can see that it is drained. Writing it runs through
`sudo -n` unless the SSH user is root; the reason travels on stdin, never inside the shell command.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from jueying_cli.errors import SchedulerError
from jueying_cli.inventory.model import Node
from jueying_cli.outcome import Outcome
from jueying_cli.scheduler.base import NodeState
from jueying_cli.store import Store
from jueying_cli.transport.base import Command, Transport
from jueying_cli.vocab import Backend, SchedulerState

MARKER_TIMEOUT_S = 20.0
_MARKER_DIR = '"${JUEYING_NODE_STATE_DIR:-/var/lib/jueying}"'
_WRITE_MARKER = (f"d={_MARKER_DIR} && mkdir -p \"$d\" && cat > \"$d/drained.tmp\" && "
                 "mv -f \"$d/drained.tmp\" \"$d/drained\"")
_REMOVE_MARKER = f"rm -f {_MARKER_DIR}/drained"


class BuiltinScheduler:
    name = Backend.BUILTIN

    def __init__(self, store: Store, transport: Transport, nodes: Mapping[str, Node]) -> None:
        self.store = store
        self.transport = transport
        self.nodes = nodes

    def states(self, names: Sequence[str]) -> Mapping[str, NodeState]:
        ledger = self.store.ledger.read(names)
        result = {}
        for name in names:
            entry = ledger.get(name)
            if entry is None or not entry.drained:
                result[name] = NodeState(name, SchedulerState.IDLE, False, raw="in service")
            else:
                result[name] = NodeState(name, SchedulerState.DRAINED, True, reason=entry.reason,
                                         reason_user=entry.user, reason_time=entry.since,
                                         raw="drained (jueying ledger)")
        return result

    def all_states(self) -> Mapping[str, NodeState]:
        return self.states(list(self.nodes))

    def _on_node(self, name: str, script: str, stdin: bytes | None) -> Outcome:
        node = self.nodes[name]
        sudo = str(node.vars.get("ssh_user", "root")) != "root" and not node.is_local
        return self.transport.run(node, Command(script=script, timeout_s=MARKER_TIMEOUT_S, stdin=stdin, sudo=sudo),
                                  time.monotonic() + MARKER_TIMEOUT_S + 15)

    def _each(self, names: Sequence[str], script: str, stdin: bytes | None, *, drained: bool,
              reason: str | None) -> None:
        """Node by node: the marker, then that node's ledger row. A crash leaves at most one node whose
        marker is ahead of the ledger, which reconcile_entry settles from the marker."""
        failed = []
        for name in names:
            outcome = self._on_node(name, script, stdin)
            if not outcome.ok:
                failed.append(f"{name}: {outcome.status}: {outcome.error or outcome.stderr.strip()[:200]}")
                continue
            self.store.ledger.write([name], drained=drained, reason=reason,
                                  user=_reason_user(reason) if reason else None, now=time.time())
        if failed:
            raise SchedulerError("could not update the drain marker on " + "; ".join(failed))

    def drain(self, names: Sequence[str], reason: str) -> None:
        self._each(names, _WRITE_MARKER, (reason + "\n").encode(), drained=True, reason=reason)

    def resume(self, names: Sequence[str]) -> None:
        self._each(names, _REMOVE_MARKER, None, drained=False, reason=None)

    def marker(self, name: str) -> str | None:
        """The node's marker content (its drain reason), or None when it has none or cannot be read."""
        outcome = self._on_node(name, f"cat {_MARKER_DIR}/drained 2>/dev/null || true", None)
        if not outcome.ok:
            return None
        return outcome.stdout.strip() or None

    def settle_from_marker(self, name: str) -> None:
        """Make the ledger agree with the node's marker (after a crash between the two writes)."""
        if name not in self.nodes:
            return
        reason = self.marker(name)
        self.store.ledger.write([name], drained=reason is not None, reason=reason,
                              user=_reason_user(reason) if reason else None, now=time.time())


def _reason_user(reason: str) -> str | None:
    if reason.endswith("]") and "[" in reason:
        return reason[reason.rindex("[") + 1:-1]
    return None

