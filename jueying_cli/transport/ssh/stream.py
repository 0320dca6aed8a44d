"""Reading a command's output off an SSH channel: SshStream for one left running (the probe's serve mode),
read without blocking; drain() for one run to its end, stdout and stderr together (paramiko's
recv_exit_status has no timeout, and a full window on either stream would stall the node)."""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

import paramiko

from jueying_cli.transport.base import CANCEL_GRACE_S, MAX_OUTPUT_BYTES, Cancel, remaining
from jueying_cli.vocab import StopReason


class SshStream:
    """A command left running on a kept channel (transport.base.Stream). `fileno()` becomes readable when
    stdout or stderr has data or the command ended, so one thread can poll() a thousand of them."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel
        self._fd = channel.fileno()

    def fileno(self) -> int:
        return self._fd

    def send(self, data: bytes) -> bool:
        """Write to the command's stdin; False when the channel is gone."""
        try:
            self._channel.sendall(data)
        except (paramiko.SSHException, EOFError, OSError):
            return False
        return True

    def read(self) -> tuple[bytes, bytes]:
        """(stdout, stderr) available now, without waiting."""
        out = err = b""
        with suppress(paramiko.SSHException, EOFError, OSError, TimeoutError):
            while self._channel.recv_ready():
                out += self._channel.recv(1 << 16)
            while self._channel.recv_stderr_ready():
                err += self._channel.recv_stderr(1 << 16)
        return out, err

    def finished(self) -> bool:
        """The command closed its output or the connection is gone (read() first: data may remain)."""
        channel = self._channel
        transport = channel.get_transport()
        return bool(channel.eof_received or channel.closed or transport is None or not transport.is_active())

    def connected(self) -> bool:
        """Whether the SSH connection under the stream is still up (the command may have ended)."""
        transport = self._channel.get_transport()
        return bool(transport is not None and transport.is_active())

    def exit_code(self, wait_s: float = 0.2) -> int | None:
        """The exit code of a finished command (it follows the end of output within milliseconds), or None
        when there is none (killed by a signal, or the connection was lost)."""
        channel = self._channel
        if channel.status_event.wait(wait_s):
            code = channel.recv_exit_status()  # -1: closed without a status
            return None if code < 0 else code
        return None

    def close(self) -> None:
        with suppress(paramiko.SSHException, EOFError, OSError):
            self._channel.close()


class _Capped:
    """One output stream, kept up to MAX_OUTPUT_BYTES and drained past it (a full window would stall the node)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False

    def take(self, ready: Callable[[], bool], recv: Callable[[int], bytes]) -> None:
        while ready():
            chunk = recv(65536)
            if self.size < MAX_OUTPUT_BYTES:
                self.chunks.append(chunk)
            self.size += len(chunk)
            # a chunk that straddles the cap is cut by text(): that is truncation too
            self.truncated = self.size > MAX_OUTPUT_BYTES

    def text(self) -> str:
        return b"".join(self.chunks)[:MAX_OUTPUT_BYTES].decode("utf-8", "replace")


@dataclass(frozen=True)
class Drained:
    """What a command printed, and how reading ended: `rc` is its exit code when it exited, else None
    (`stopped` says why: the deadline passed or the run was cancelled)."""

    rc: int | None
    stdout: str
    stderr: str
    truncated: bool
    stopped: StopReason | None = None  # DEADLINE or CANCELLED


def drain(channel: paramiko.Channel, deadline: float, cancel: Cancel | None = None, *,
          lifeline: bool = False) -> Drained:
    """Read stdout and stderr together until the command exits, the deadline passes, or `cancel` is set.
    With a lifeline (transport/base.py) a cancel closes the command's stdin, which makes the node kill the
    command's group; what it printed until then is kept."""
    out, err = _Capped(), _Capped()
    poller = select.poll()  # not select(): with a thousand kept connections, descriptors pass 1024
    poller.register(channel.fileno(), select.POLLIN)  # readable when either stream has data or it closes
    stop_at: float | None = None
    while True:
        out.take(channel.recv_ready, channel.recv)
        err.take(channel.recv_stderr_ready, channel.recv_stderr)
        if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready() and (
                channel.eof_received or channel.closed):
            break
        now = time.monotonic()
        if cancel is not None and cancel.is_set() and stop_at is None:
            if lifeline:
                with suppress(paramiko.SSHException, EOFError, OSError):
                    channel.shutdown_write()
            stop_at = now + (CANCEL_GRACE_S if lifeline else 0.0)
        if stop_at is not None and now >= stop_at:
            return Drained(None, out.text(), err.text(), out.truncated or err.truncated, StopReason.CANCELLED)
        left = remaining(deadline)
        if left <= 0:
            return Drained(None, out.text(), err.text(), out.truncated or err.truncated, StopReason.DEADLINE)
        wait = min(left, 1.0, 0.2 if cancel is not None else 1.0)
        if stop_at is not None:
            wait = min(wait, max(0.0, stop_at - now))
        poller.poll(wait * 1000)
    rc = channel.recv_exit_status()  # already available: exit_status_ready() was true
    stopped = StopReason.CANCELLED if stop_at is not None else None
    return Drained(rc, out.text(), err.text(), out.truncated or err.truncated, stopped)
