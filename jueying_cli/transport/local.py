"""Run commands on this machine, with the same outcome and deadline rules as SSH."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from jueying_cli.inventory.model import Node
from jueying_cli.outcome import Outcome
from jueying_cli.transport.base import KILL_AFTER_S, MAX_OUTPUT_BYTES, Cancel, Command, remaining
from jueying_cli.vocab import OutcomeStatus, StopReason


class LocalTransport:
    def run(self, node: Node, command: Command, deadline: float, cancel: Cancel | None = None) -> Outcome:
        started = time.monotonic()
        argv = ["sh", "-c", command.script]
        if command.sudo and os.geteuid() != 0:  # as_root: a local node runs as the operator, never sudo
            argv = ["sudo", "-n", "--", *argv]
        limit: float | None = remaining(deadline)
        if command.timeout_s:
            limit = min(limit or command.timeout_s, command.timeout_s)
        if limit == float("inf"):
            limit = None
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)  # own process group: a timeout kills it all
        except OSError as exc:
            return Outcome(node.name, OutcomeStatus.UNREACHABLE, error=f"cannot start sh: {exc.strerror}")
        ends = None if limit is None else started + limit
        try:
            out, err = _communicate(proc, command.stdin or b"", ends, cancel)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return Outcome(node.name, OutcomeStatus.TIMEOUT, rc=None, stdout=_text(out), stderr=_text(err),
                           duration_s=time.monotonic() - started, error=f"command exceeded {limit or 0:.0f} s",
                           stopped=StopReason.DEADLINE if remaining(deadline) <= 0 else StopReason.LIMIT)
        except _Cancelled:
            _stop(proc)
            out, err = proc.communicate()
            return Outcome(node.name, OutcomeStatus.TIMEOUT, rc=None, stdout=_text(out), stderr=_text(err),
                           duration_s=time.monotonic() - started, error=cancel.reason if cancel else "cancelled",
                           stopped=StopReason.CANCELLED)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        rc = proc.returncode
        status = OutcomeStatus.OK if rc == 0 else OutcomeStatus.FAILED
        return Outcome(node.name, status, rc=rc, stdout=_text(out), stderr=_text(err),
                       duration_s=time.monotonic() - started,
                       error=None if rc == 0 else f"exit code {rc}",
                       truncated=len(out) > MAX_OUTPUT_BYTES or len(err) > MAX_OUTPUT_BYTES)

    def close(self) -> None:
        pass


def _text(data: bytes) -> str:
    return data[:MAX_OUTPUT_BYTES].decode("utf-8", "replace")


class _Cancelled(Exception):
    pass


def _communicate(proc: subprocess.Popen[bytes], stdin: bytes, ends: float | None,
                 cancel: Cancel | None) -> tuple[bytes, bytes]:
    """communicate(), in short slices when it may be cancelled (Popen keeps what was read between calls)."""
    if cancel is None:
        return proc.communicate(stdin, timeout=None if ends is None else max(0.0, ends - time.monotonic()))
    first: bytes | None = stdin
    while True:
        slice_s = 0.2 if ends is None else max(0.0, min(0.2, ends - time.monotonic()))
        try:
            return proc.communicate(first, timeout=slice_s)
        except subprocess.TimeoutExpired:
            first = None  # the input was handed over on the first call
            if ends is not None and time.monotonic() >= ends:
                raise
            if cancel.is_set():
                raise _Cancelled() from None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """TERM the command's process group, then KILL what is left after KILL_AFTER_S."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(KILL_AFTER_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
