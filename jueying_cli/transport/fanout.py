"""Run one command on many nodes: a bounded sliding window, per-node deadlines, one outcome per node.

Never stops at the first failure and never waits past the global deadline: nodes still running then
are marked `timeout`. Ctrl-C returns what has been gathered (the caller prints it and exits 130).
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import resource
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jueying_cli.inventory.model import Node
from jueying_cli.outcome import Outcome
from jueying_cli.transport.base import CANCEL_GRACE_S, Cancel, Command, Transport
from jueying_cli.vocab import OutcomeStatus

DEFAULT_FANOUT = 64
STOP_GRACE_S = CANCEL_GRACE_S + 1.0  # seconds a stopped run waits for its commands' last output
# Each SSH connection costs the controller 2-3 file descriptors (socket, paramiko's event pipe).
_FDS_PER_NODE = 4


@dataclass(frozen=True)
class FanoutResult:
    outcomes: dict[str, Outcome]  # in the order of the nodes given
    interrupted: bool = False
    deadline_reached: bool = False


def raise_open_files_limit(nodes: int, fanout: int) -> None:
    """Lift the soft RLIMIT_NOFILE towards the hard limit so a wide fan-out never hits EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(nodes, fanout) * _FDS_PER_NODE + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        # If refused, keep going with what we have; nodes past the limit report their own errors.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


GLOBAL_DEADLINE = "global deadline reached before it answered"
INTERRUPTED = "interrupted before it answered"
_SAME_DEADLINE_S = 0.5  # a transport that stopped this close to the global deadline stopped for it


def _cut_short(outcome: Outcome, stop: Cancel, deadline: float) -> Outcome:
    """The one place that says why the run cut a node short. The transport says whether it stopped the
    command before it ended (Outcome.stopped); once the run is stopped (Ctrl-C, the global deadline) such a
    node gives the stop's reason, and before that, one whose transport saw the global deadline a moment
    before the fan-out did says so too. What the command printed is kept."""
    if outcome.stopped is None:
        return outcome
    if stop.is_set():
        return dataclasses.replace(outcome, error=stop.reason)
    if time.monotonic() >= deadline - _SAME_DEADLINE_S:
        return dataclasses.replace(outcome, error=GLOBAL_DEADLINE)
    return outcome


def _collect_stopped(done: queue.Queue[Outcome], outcomes: dict[str, Outcome], in_flight: int,
                     stop: Cancel, deadline: float) -> None:
    """After a stop: take the outcomes of the commands that were running, which now stop on their nodes and
    bring what they printed, for up to STOP_GRACE_S (a second Ctrl-C stops waiting)."""
    ends = time.monotonic() + STOP_GRACE_S if in_flight > 0 else time.monotonic()
    try:
        while True:
            left = ends - time.monotonic()
            try:
                outcome = done.get(timeout=max(0.0, min(left, 0.2))) if left > 0 else done.get_nowait()
            except queue.Empty:
                if left <= 0:
                    return
                continue
            if outcome.node not in outcomes:
                outcomes[outcome.node] = _cut_short(outcome, stop, deadline)
                in_flight -= 1
                if in_flight <= 0:
                    ends = time.monotonic()
    except KeyboardInterrupt:
        return


def run_many(
    transport: Transport,
    nodes: Sequence[Node],
    command: Command | Callable[[Node], Command],
    *,
    fanout: int = DEFAULT_FANOUT,
    deadline_s: float | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> FanoutResult:
    """Run `command` (or a per-node command) on every node, at most `fanout` at once.

    `deadline_s` bounds the whole run (seconds from now); None means each node's own limits only.
    `on_outcome` is called from the calling thread as each node finishes (progress display).
    """
    started = time.monotonic()
    deadline = started + deadline_s if deadline_s else float("inf")
    raise_open_files_limit(len(nodes), fanout)
    todo: queue.Queue[Node] = queue.Queue()
    for node in nodes:
        todo.put(node)
    done: queue.Queue[Outcome] = queue.Queue()
    stop = Cancel()

    def worker() -> None:
        while not stop.is_set():
            try:
                node = todo.get_nowait()
            except queue.Empty:
                return
            try:
                outcome = transport.run(node, command(node) if callable(command) else command, deadline, stop)
            except Exception as exc:  # noqa: BLE001 - one node's bug must not cost the fleet its answers
                outcome = Outcome(node.name, OutcomeStatus.FAILED, error=f"internal error: {type(exc).__name__}: {exc}")
            done.put(outcome)

    threads = [threading.Thread(target=worker, name=f"jueying-fanout-{i}", daemon=True)
               for i in range(max(1, min(fanout, len(nodes))))]
    for thread in threads:
        thread.start()

    outcomes: dict[str, Outcome] = {}
    interrupted = deadline_reached = False
    try:
        while len(outcomes) < len(nodes):
            wait = deadline - time.monotonic()
            if wait <= 0:
                deadline_reached = True
                break
            try:
                outcome = done.get(timeout=min(wait, 0.5))
            except queue.Empty:
                continue
            outcome = _cut_short(outcome, stop, deadline)
            outcomes[outcome.node] = outcome
            if on_outcome is not None:
                on_outcome(outcome)
    except KeyboardInterrupt:
        interrupted = True
    reason = INTERRUPTED if interrupted else GLOBAL_DEADLINE
    stop.set(reason)
    _collect_stopped(done, outcomes, len(nodes) - len(outcomes) - todo.qsize(), stop, deadline)
    elapsed = time.monotonic() - started
    ordered = {}
    for node in nodes:
        ordered[node.name] = outcomes.get(node.name) or Outcome(node.name, OutcomeStatus.TIMEOUT, duration_s=elapsed,
                                                                error=reason)
    return FanoutResult(outcomes=ordered, interrupted=interrupted, deadline_reached=deadline_reached)
