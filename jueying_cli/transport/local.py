"""Run commands on this machine, with the same outcome and deadline rules as SSH."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from jueying_cli.inventory.model import Node
from jueying_cli.outcome import Outcome
from jueying_cli.transport.base import MAX_OUTPUT_BYTES, Command, remaining
from jueying_cli.vocab import OutcomeStatus


class LocalTransport:
    def run(self, node: Node, command: Command, deadline: float) -> Outcome:
        started = time.monotonic()
        argv = ["sh", "-c", command.script]
        if command.sudo and os.geteuid() != 0:
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
        try:
            out, err = proc.communicate(command.stdin or b"", timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return Outcome(node.name, OutcomeStatus.TIMEOUT, rc=None, stdout=_text(out), stderr=_text(err),
                           duration_s=time.monotonic() - started, error=f"command exceeded {limit or 0:.0f} s")
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
