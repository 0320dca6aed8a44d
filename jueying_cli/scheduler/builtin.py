"""Builtin backend for clusters without a scheduler: jueying's own ledger, plus a marker on the node.

The ledger (state DB) is the truth jueying plans from. The marker file on the node,
`${JUEYING_NODE_STATE_DIR:-/var/lib/jueying}/drained`, holds the reason so the node's own tooling
(a job launcher, a prolog, a login banner) can see that it is drained. Writing it runs through
`sudo -n` unless the SSH connection logs in as root (its user as ssh_config, the inventory or the local user
name it); the reason travels on stdin, never inside the shell command.

Node by node, the marker is written (or removed) first and the ledger row after, so a run killed in between
leaves the marker ahead of the ledger, with its audit entry pending: settling that entry reads the marker
(`settle_from_markers`). A marker that cannot be read decides nothing. The caller (actions.apply) holds the
node's lock around both writes, so two runs never interleave them.

For max_unavailable, `survey` reads every builtin node's marker at once (bounded fan-out, short timeout, a
second try for those that fail): a node that does not answer counts as down, a node whose marker says
drained counts as drained.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from jueying_cli.errors import SchedulerError
from jueying_cli.inventory.model import Node
from jueying_cli.outcome import Outcome
from jueying_cli.scheduler.base import NodeState, reason_user
from jueying_cli.store import Store
from jueying_cli.transport.base import Command, Transport
from jueying_cli.vocab import Backend, SchedulerState

MARKER_TIMEOUT_S = 20.0  # writing or removing a marker
READ_TIMEOUT_S = 5.0  # reading one (also: does the node answer?); the SSH connect timeout applies within it
READ_FANOUT = 64  # marker reads at once
_MARKER_DIR = '"${JUEYING_NODE_STATE_DIR:-/var/lib/jueying}"'
# One line from stdin (`read` fails on a line cut short, so a killed writer leaves no half reason), to a file
# of this shell's own, renamed over the marker: readers see the old marker or the new one.
_WRITE_MARKER = (f"d={_MARKER_DIR} && mkdir -p \"$d\" && IFS= read -r r && t=\"$d/.drained.$$\" && "
                 "printf '%s\\n' \"$r\" > \"$t\" && mv -f \"$t\" \"$d/drained\"")
_REMOVE_MARKER = f"rm -f {_MARKER_DIR}/drained"
_READ_MARKER = f"f={_MARKER_DIR}/drained; if [ -e \"$f\" ]; then echo drained && cat \"$f\"; else echo absent; fi"


@dataclass(frozen=True)
class MarkerRead:
    """What a node's marker says: drained (with its reason) or not; `error` when it could not be read
    (the node did not answer, or the read failed), and then nothing else is known."""

    node: str
    drained: bool = False
    reason: str | None = None
    error: str | None = None  # "<outcome status>: <why>", e.g. "unreachable: connection refused"


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

    def survey(self, names: Sequence[str]) -> Mapping[str, NodeState]:
        """The ledger's states, corrected by each node's marker read now: a node that does not answer is
        DOWN (raw says why), a node whose marker says drained is DRAINED even if the ledger does not say so."""
        states = dict(self.states(names))  # the ledger first: a database error is told before any SSH
        return _with_markers(states, self.read_markers(names), down=True)

    def with_markers(self, names: Sequence[str]) -> Mapping[str, NodeState]:
        """The ledger's states, with a drain the ledger does not know taken from the node's marker (one written
        by another admin's tooling, or by jueying on another controller host): what a resume plans from, and
        what a change is checked against under the node's lock. A marker that cannot be read (one try) leaves
        the ledger's state."""
        states = dict(self.states(names))
        return _with_markers(states, self._read_all(names, READ_TIMEOUT_S), down=False)

    def _on_node(self, name: str, script: str, stdin: bytes | None, timeout_s: float, *,
                 slack_s: float = 15.0) -> Outcome:
        """Run `script` on the node within `timeout_s` for the command and `slack_s` more for connecting."""
        # as_root: the transport adds sudo -n unless it logs in as root (as the connection resolves its user)
        return self.transport.run(self.nodes[name], Command(script=script, timeout_s=timeout_s, stdin=stdin,
                                                            as_root=True), time.monotonic() + timeout_s + slack_s)

    def _each(self, names: Sequence[str], script: str, stdin: bytes | None, *, drained: bool,
              reason: str | None) -> None:
        """Node by node: the marker, then that node's ledger row. A crash leaves at most one node whose
        marker is ahead of the ledger, with its audit entry pending (settle_from_markers)."""
        failed = []
        for name in names:
            outcome = self._on_node(name, script, stdin, MARKER_TIMEOUT_S)
            if not outcome.ok:
                said = outcome.stderr.strip().splitlines()[-1][:200] if outcome.stderr.strip() else ""
                failed.append(f"{name}: {outcome.status}: {outcome.error or 'failed'}" + (f": {said}" if said else ""))
                continue
            self.store.ledger.write([name], drained=drained, reason=reason,
                                    user=reason_user(reason) if reason else None, now=time.time())
        if failed:
            raise SchedulerError("could not update the drain marker on " + "; ".join(failed))

    def drain(self, names: Sequence[str], reason: str) -> None:
        self._each(names, _WRITE_MARKER, (reason + "\n").encode(), drained=True, reason=reason)

    def resume(self, names: Sequence[str]) -> None:
        self._each(names, _REMOVE_MARKER, None, drained=False, reason=None)

    def _read_marker(self, name: str, timeout_s: float) -> MarkerRead:
        if name not in self.nodes:
            return MarkerRead(name, error="unknown: not in the inventory")
        outcome = self._on_node(name, _READ_MARKER, None, timeout_s, slack_s=0.0)  # connecting included
        if not outcome.ok:
            why = outcome.error or outcome.stderr.strip()[:200] or f"exit code {outcome.rc}"
            return MarkerRead(name, error=f"{outcome.status}: {why}")
        first, _, rest = outcome.stdout.partition("\n")
        if first == "absent":
            return MarkerRead(name)
        if first == "drained":
            return MarkerRead(name, drained=True, reason=rest.strip() or None)
        return MarkerRead(name, error=f"failed: unexpected answer {outcome.stdout[:80]!r}")

    def read_markers(self, names: Sequence[str], timeout_s: float = READ_TIMEOUT_S) -> dict[str, MarkerRead]:
        """Each node's marker, read at most READ_FANOUT at a time, each within `timeout_s` (and the SSH
        connect timeout). A node whose read fails is asked once more, with the others that failed: a busy
        controller can make a healthy node miss a short deadline (even its authentication), and a node that
        really refuses fails fast. At worst (all hung) n nodes take about 2 x ceil(n / READ_FANOUT) x timeout_s."""
        reads = self._read_all(names, timeout_s)
        again = [n for n, r in reads.items() if r.error is not None and n in self.nodes]
        reads.update(self._read_all(again, timeout_s))
        return reads

    def _read_all(self, names: Sequence[str], timeout_s: float) -> dict[str, MarkerRead]:
        if not names:
            return {}
        with ThreadPoolExecutor(max_workers=min(READ_FANOUT, len(names)),
                                thread_name_prefix="jueying-marker") as pool:
            return {r.node: r for r in pool.map(lambda n: self._read_marker(n, timeout_s), names)}

    def settle_from_markers(self, names: Sequence[str]) -> dict[str, str]:
        """Make the ledger agree with each node's marker (after a run died between the two writes); the
        caller holds the nodes' locks. Returns {node: why} for markers that could not be read: their ledger
        rows are left as they are, since an unread marker says nothing."""
        reads = self.read_markers(names)
        ledger = self.store.ledger.read([n for n, r in reads.items() if r.error is None])
        unreadable = {}
        for name, read in reads.items():
            if read.error is not None:
                unreadable[name] = read.error
                continue
            entry = ledger.get(name)
            in_ledger = (True, entry.reason) if entry is not None and entry.drained else (False, None)
            if in_ledger == (read.drained, read.reason if read.drained else None):
                continue
            self.store.ledger.write([name], drained=read.drained, reason=read.reason,
                                    user=reason_user(read.reason) if read.reason else None, now=time.time())
        return unreadable


def _with_markers(states: dict[str, NodeState], reads: Mapping[str, MarkerRead], *,
                  down: bool) -> dict[str, NodeState]:
    """The ledger's `states` corrected by the markers read: drained by a marker the ledger does not know;
    with `down`, a node whose marker could not be read is DOWN (else its ledger state stands)."""
    for name, read in reads.items():
        if name not in states:
            continue
        if read.error is not None:
            if down:
                states[name] = replace(states[name], state=SchedulerState.DOWN, raw=read.error)
        elif read.drained and not states[name].drain:
            states[name] = NodeState(name, SchedulerState.DRAINED, True, reason=read.reason,
                                     raw="drained (marker on the node, not in the ledger)")
    return states

