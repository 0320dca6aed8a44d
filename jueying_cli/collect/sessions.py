"""Kept probe sessions for `jueying status --watch`: one long-lived probe per node, asked once per refresh.

The first refresh connects to every node, starts the probe in serve mode (probe/serve.py) and sends it
its code once; every later refresh writes one short line per node and reads one compressed facts document
back, all from one thread polling every channel. A refresh therefore costs a node one read of NVML and
/proc (no new python3, no import, no nvmlInit, no SSH handshake) and costs the controller well under a
millisecond per node. Connecting, and reconnecting a node that went away, runs on background threads, so a
node that hangs while connecting costs its own row, never the screen.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from jueying_cli.collect.oneshot import parse_outcome
from jueying_cli.collect.payload import NO_PYTHON_RC, probe_payload, probe_script
from jueying_cli.errors import FactsError
from jueying_cli.facts.collected import NodeFacts
from jueying_cli.inventory.model import Node
from jueying_cli.outcome import Outcome
from jueying_cli.transport.base import Command, Stream, StreamError, StreamingTransport
from jueying_cli.vocab import OutcomeStatus

MAX_HEADER = 128  # bytes of a frame's header line; longer is garbage, not a frame
MAX_FRAME = 64 * 1024 * 1024  # bytes of one compressed document; larger is garbage
STDERR_KEPT = 4096  # bytes of a probe's stderr kept for its error message


@dataclass(eq=False)
class _Session:
    node: Node
    stream: Stream
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    asked: int = 0  # sequence number of the last request
    asked_at: float = 0.0  # time.monotonic() when it was sent
    answered: int = 0
    starting: bool = True  # holds a place in the opener's window until its first answer or its end

    @property
    def waiting(self) -> bool:
        return self.asked > self.answered


@dataclass(frozen=True)
class _Frame:
    kind: str  # "facts" or "error"
    seq: int
    body: bytes


class _Garbage(Exception):
    """The probe's output is not a frame: the session cannot be trusted any more."""


class _Opener:
    """Daemon threads that open sessions (handshake, start the probe, send its code). At most `workers`
    sessions are in their start-up at once, counted until the probe's first answer (`started()`): a python3
    start on the node costs more than the handshake, and an unbounded pile of them starves the handshakes
    still under way. Daemon threads: a node hanging mid-handshake must not hold jueying's exit."""

    def __init__(self, open_one: Callable[[Node], tuple[Stream | None, Outcome | None]], workers: int,
                 wake_fd: int) -> None:
        self._open_one = open_one
        self._workers = workers
        self._wake_fd = wake_fd
        self._todo: queue.SimpleQueue[Node] = queue.SimpleQueue()
        self.done: queue.SimpleQueue[tuple[Node, Stream | None, Outcome | None]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._window = threading.BoundedSemaphore(workers)
        self.stopped = False

    def started(self) -> None:
        """One session left its start-up (first answer, or it failed): the next may open."""
        self._window.release()

    def submit(self, node: Node) -> None:
        self._todo.put(node)
        if len(self._threads) < self._workers:  # called from one thread only: no lock needed
            thread = threading.Thread(target=self._work, name=f"jueying-open-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        while not self.stopped:
            try:
                node = self._todo.get(timeout=1.0)
            except queue.Empty:
                continue
            while not self._window.acquire(timeout=1.0):
                if self.stopped:
                    return
            try:
                stream, failure = self._open_one(node)
            except Exception as exc:  # noqa: BLE001 - one node's bug must not cost the fleet its answers
                why = f"internal error: {type(exc).__name__}: {exc}"
                stream, failure = None, Outcome(node.name, OutcomeStatus.FAILED, error=why)
            if self.stopped and stream is not None:
                stream.close()
                return
            self.done.put((node, stream, failure))
            try:
                os.write(self._wake_fd, b"x")
            except BlockingIOError:  # full: the poll is woken already
                pass
            except OSError:  # closed: the pool is shutting down
                return


class ProbeSessions:
    """One kept probe per SSH node; `refresh()` asks them all and waits up to a deadline."""

    def __init__(self, transport: StreamingTransport, *, fanout: int, connect_timeout_s: float, probe_timeout_s: float,
                 idle_s: float, with_gpus: bool = True) -> None:
        self._transport = transport
        self._connect_timeout_s = connect_timeout_s
        self._probe_timeout_s = probe_timeout_s
        self._command = Command(script=probe_script(), stdin=probe_payload(with_gpus, idle_s))
        self._sessions: dict[str, _Session] = {}
        self._by_fd: dict[int, _Session] = {}
        self._opening: set[str] = set()
        self._poller = select.poll()  # not select(): a thousand channels pass descriptor 1024
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)  # a full pipe already wakes the poll: never block an opener
        self._poller.register(self._wake_r, select.POLLIN)
        self._opener = _Opener(self._open_one, max(1, fanout), self._wake_w)
        self._seq = 0
        self._restarted: set[str] = set()  # nodes whose probe was started again during this refresh
        self._local: dict[str, Any] = {}  # node -> probe Collector, for nodes that are this machine

    # ------------------------------------------------------------ one refresh

    def refresh(self, nodes: Sequence[Node], deadline_s: float | None,
                on_result: Callable[[NodeFacts], None] | None = None) -> tuple[list[NodeFacts], bool]:
        """Facts from every node, in node order, and whether Ctrl-C cut the wait short. A node without an
        answer by the deadline (seconds from now; None: each node's own limits) gets `timeout`."""
        self._seq += 1
        self._restarted = set()
        deadline = time.monotonic() + deadline_s if deadline_s else float("inf")
        wanted = {n.name: n for n in nodes}
        results: dict[str, NodeFacts] = {}

        def finish(result: NodeFacts) -> None:
            if result.name in wanted and result.name not in results:
                results[result.name] = result
                if on_result is not None:
                    on_result(result)

        for node in nodes:
            if node.is_local:
                finish(self._collect_here(node))
                continue
            session = self._sessions.get(node.name)
            if session is None:
                if node.name not in self._opening:
                    self._opening.add(node.name)
                    self._opener.submit(node)
                continue
            if session.waiting:  # an answer that came after the last deadline is still worth taking
                self._pump(session, finish)
            if node.name in self._sessions and not session.waiting:
                self._ask(session, finish)
        interrupted = False
        try:
            while len(results) < len(nodes):
                self._take_opened(finish)
                now = time.monotonic()
                self._expire(now, finish)
                if len(results) == len(nodes) or now >= deadline:
                    break
                for fd, _ in self._poller.poll(self._wait_s(now, deadline) * 1000):
                    if fd == self._wake_r:
                        _drain_pipe(fd)
                    elif fd in self._by_fd:
                        self._pump(self._by_fd[fd], finish)
        except KeyboardInterrupt:
            interrupted = True
        reason = "interrupted before it answered" if interrupted else (
            f"no answer within the refresh deadline ({deadline_s:g} s)" if deadline_s else "no answer")
        for node in nodes:
            if node.name not in results:
                still = "still connecting; " if node.name in self._opening else ""
                missed = Outcome(node.name, OutcomeStatus.TIMEOUT, error=still + reason)
                results[node.name] = NodeFacts(node, missed, None)
        return [results[n.name] for n in nodes], interrupted

    def _collect_here(self, node: Node) -> NodeFacts:
        """This machine, in-process, with its own kept Collector (NVML stays initialised here too)."""
        from jueying_cli.facts.model import Facts
        from jueying_cli.probe import Collector

        started = time.monotonic()
        collector = self._local.get(node.name)
        if collector is None:
            collector = self._local[node.name] = Collector()
        try:
            facts = Facts.from_document(collector.collect())
        except FactsError as exc:
            rejected = Outcome(node.name, OutcomeStatus.FAILED, error=f"probe output rejected: {exc}")
            return NodeFacts(node, rejected, None)
        return NodeFacts(node, Outcome(node.name, OutcomeStatus.OK, rc=0, duration_s=time.monotonic() - started), facts)

    def _wait_s(self, now: float, deadline: float) -> float:
        """How long poll() may sleep: to the deadline, the next probe timeout, at most 1 s."""
        wait = min(deadline - now, 1.0)
        for session in self._sessions.values():
            if session.waiting:
                wait = min(wait, session.asked_at + self._probe_timeout_s - now)
        return max(0.0, wait)

    # ------------------------------------------------------------ sessions

    def _open_one(self, node: Node) -> tuple[Stream | None, Outcome | None]:
        """On an opener thread: connect (or reuse the kept connection) and start the probe."""
        deadline = time.monotonic() + self._connect_timeout_s + 5.0
        try:
            return self._transport.open_stream(node, self._command, deadline), None
        except StreamError as exc:
            return None, exc.outcome

    def _take_opened(self, finish: Callable[[NodeFacts], None]) -> None:
        while True:
            try:
                node, stream, failure = self._opener.done.get_nowait()
            except queue.Empty:
                return
            self._opening.discard(node.name)
            if failure is not None:
                self._opener.started()
                finish(parse_outcome(node, failure))
                continue
            stream = cast(Stream, stream)  # no failure: the stream is there (a typing no-op)
            session = _Session(node, stream)
            self._sessions[node.name] = session
            self._by_fd[stream.fileno()] = session
            self._poller.register(stream.fileno(), select.POLLIN)
            self._ask(session, finish)

    def _ask(self, session: _Session, finish: Callable[[NodeFacts], None]) -> None:
        session.asked = self._seq
        session.asked_at = time.monotonic()
        if not session.stream.send(b"collect %d\n" % self._seq):
            self._ended(session, finish)

    def _expire(self, now: float, finish: Callable[[NodeFacts], None]) -> None:
        """A probe that has not answered within its timeout is hung (or its node is): close the session and
        its connection; the next refresh connects afresh."""
        for session in list(self._sessions.values()):
            if session.waiting and now - session.asked_at > self._probe_timeout_s:
                self._discard(session, drop_connection=True)
                hung = Outcome(session.node.name, OutcomeStatus.TIMEOUT, duration_s=now - session.asked_at,
                               error=f"probe did not answer within {self._probe_timeout_s:g} s (node hung?)")
                finish(NodeFacts(session.node, hung, None))

    def _pump(self, session: _Session, finish: Callable[[NodeFacts], None]) -> None:
        """Read what the session has sent; finish its node on a complete frame or when the probe ended."""
        out, err = session.stream.read()
        session.out += out
        if err:
            session.err = (session.err + err)[-STDERR_KEPT:]
        try:
            while True:
                frame = _next_frame(session.out)
                if frame is None:
                    break
                session.answered = max(session.answered, frame.seq)
                self._started(session)
                finish(self._result(session, frame))
        except _Garbage as exc:
            self._discard(session, drop_connection=False)
            garbage = Outcome(session.node.name, OutcomeStatus.FAILED,
                              stdout=bytes(session.out[:2000]).decode("utf-8", "replace"), error=str(exc))
            finish(parse_outcome(session.node, garbage))
            return
        if not out and not err and session.stream.finished():
            self._ended(session, finish)

    def _result(self, session: _Session, frame: _Frame) -> NodeFacts:
        name = session.node.name
        took = time.monotonic() - session.asked_at
        if frame.kind == "error":
            text = frame.body.decode("utf-8", "replace").strip()
            why = "probe failed: " + (text.splitlines()[-1][:200] if text else "no reason given")
            return NodeFacts(session.node, Outcome(name, OutcomeStatus.FAILED, duration_s=took, error=why), None)
        try:
            document = zlib.decompress(frame.body).decode("utf-8", "replace")
        except zlib.error as exc:
            return NodeFacts(session.node, Outcome(name, OutcomeStatus.FAILED, duration_s=took,
                                                   error=f"probe answer is not a compressed document ({exc})"), None)
        return parse_outcome(session.node, Outcome(name, OutcomeStatus.OK, rc=0, stdout=document, duration_s=took))

    def _ended(self, session: _Session, finish: Callable[[NodeFacts], None]) -> None:
        """The probe exited or its channel closed: report why, in one-shot mode's words. A probe that left
        cleanly (its idle limit) is started again, once per refresh, without a word."""
        code = session.stream.exit_code()
        # what stderr still holds: it precedes the exit status on the wire, so it has all arrived by now (read
        # before, a missing python3's "not found on PATH" was sometimes still on its way)
        _, err = session.stream.read()
        if err:
            session.err = (session.err + err)[-STDERR_KEPT:]
        connected = session.stream.connected()
        self._discard(session, drop_connection=not connected)
        name = session.node.name
        if code == 0 and not session.err and name not in self._restarted and name not in self._opening:
            self._restarted.add(name)
            self._opening.add(name)
            self._opener.submit(session.node)
            return
        stderr = session.err.decode("utf-8", "replace")
        if code is None and not connected:
            outcome = Outcome(session.node.name, OutcomeStatus.UNREACHABLE, stderr=stderr, error="connection lost")
        elif code is None:
            outcome = Outcome(session.node.name, OutcomeStatus.FAILED, stderr=stderr,
                              error="probe ended without an exit status (killed by a signal?)")
        elif code == NO_PYTHON_RC or stderr.strip():
            outcome = Outcome(name, OutcomeStatus.FAILED, rc=code, stderr=stderr, error=f"exit code {code}")
        else:
            outcome = Outcome(name, OutcomeStatus.FAILED, rc=code,
                              error=f"probe exited (code {code}) without answering")
        finish(parse_outcome(session.node, outcome))

    def _started(self, session: _Session) -> None:
        if session.starting:
            session.starting = False
            self._opener.started()

    def _discard(self, session: _Session, *, drop_connection: bool) -> None:
        self._started(session)
        fd = session.stream.fileno()
        if self._by_fd.get(fd) is session:
            del self._by_fd[fd]
            self._poller.unregister(fd)
        self._sessions.pop(session.node.name, None)
        session.stream.close()
        if drop_connection:
            self._transport.drop(session.node)

    def close(self) -> None:
        """Stop every probe (closing its channel ends it) and the opener threads."""
        self._opener.stopped = True
        for collector in self._local.values():
            collector.close()
        self._local.clear()
        for session in list(self._sessions.values()):
            session.stream.send(b"quit\n")
            self._discard(session, drop_connection=False)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _next_frame(buf: bytearray) -> _Frame | None:
    """Remove and return the first complete frame in `buf`; None while incomplete. Raises _Garbage."""
    end = buf.find(b"\n", 0, MAX_HEADER)
    if end < 0:
        if len(buf) >= MAX_HEADER:
            raise _Garbage("probe output is not a facts frame (no header line)")
        return None
    words = bytes(buf[:end]).split()
    if len(words) != 3 or words[0] not in (b"facts", b"error") or not words[1].isdigit() or not words[2].isdigit():
        raise _Garbage(f"probe output is not a facts frame: {bytes(buf[:min(end, 60)])!r}")
    size = int(words[2])
    if size > MAX_FRAME:
        raise _Garbage(f"probe announced a {size}-byte document")
    if len(buf) < end + 1 + size:
        return None
    body = bytes(buf[end + 1:end + 1 + size])
    del buf[:end + 1 + size]
    return _Frame(words[0].decode(), int(words[1]), body)


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass
