"""The Transport protocol: how a command reaches a node, and its limits."""

from __future__ import annotations

import shlex
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from jueying_cli.inventory.model import Node
from jueying_cli.outcome import Outcome

# Exit code of coreutils `timeout` when it had to stop the command.
TIMEOUT_RC = 124
# Grace between TERM and KILL for a remote command that outlives its timeout (seconds).
KILL_AFTER_S = 5

MAX_OUTPUT_BYTES = 16 * 1024 * 1024  # per stream per node: a runaway `cat` must not eat the controller


@dataclass(frozen=True)
class Command:
    """A shell command for the node's /bin/sh, with its limits.

    `script` is run by `sh -c` exactly as given (the operator wrote it). jueying never splices node
    names or other data into it: data goes on stdin or through argv quoted with shlex.
    """

    script: str
    timeout_s: float | None = None  # per node, enforced remotely by `timeout` and locally by our clock
    stdin: bytes | None = None
    sudo: bool = False  # run through `sudo -n` so a missing NOPASSWD rule fails at once
    # needs root on an SSH node: `sudo -n` is added unless the user the connection logs in as (ssh_config's
    # User, the inventory's ssh_user or the local user, as resolved for it) is root; a local node runs as is
    as_root: bool = False


# The lifeline: a command that takes nothing on stdin runs in its own process group (setsid), with stdin from
# /dev/null, while a watcher in another group reads the SSH channel's stdin. jueying keeps that stdin open for
# as long as it wants the command; when it closes it (Ctrl-C, a deadline) or the connection drops (jueying
# killed, network cut), the watcher kills the command's whole group: TERM, then KILL after KILL_AFTER_S.
# sshd cannot do this for us: it refuses "signal" requests without privilege separation (root logins).
_LIFELINE = (
    'exec 3<&0; setsid sh -c "$1" </dev/null 3<&- & c=$!; '
    'setsid sh -c \'cat >/dev/null; kill -s TERM -- -"$1"; sleep "$2"; kill -s KILL -- -"$1"\' w "$c" "$2" '
    '<&3 >/dev/null 2>&1 3<&- & w=$!; exec 3<&-; '
    'wait "$c" 2>/dev/null; rc=$?; kill -s TERM -- -"$w" 2>/dev/null; exit "$rc"'
)


def wrap_command(command: Command) -> str:
    """The exact string handed to the remote shell: sudo -n / timeout wrappers around `sh -c SCRIPT`, inside
    the lifeline when the command takes no stdin (see `lifeline`)."""
    argv = ["sh", "-c", command.script]
    if command.timeout_s:
        argv = ["timeout", "-k", str(KILL_AFTER_S), f"{command.timeout_s:g}", *argv]
    if command.sudo:
        argv = ["sudo", "-n", "--", *argv]
    if not lifeline(command):
        return shlex.join(argv)
    # `exec`: the command itself leads the new session and group (timeout then keeps its children there).
    return shlex.join(["sh", "-c", _LIFELINE, "jueying", "exec " + shlex.join(argv), str(KILL_AFTER_S)])


def lifeline(command: Command) -> bool:
    """Whether the command runs inside the lifeline: those that take no stdin (their stdin is the lifeline)."""
    return command.stdin is None


CANCEL_GRACE_S = 3.0  # after a cancel, how long a command's last output is awaited while its group is killed


class Cancel:
    """Set once to ask every running command of a fan-out to stop now (Ctrl-C, a global deadline): transports
    stop the command on the node and return what it printed so far, with `reason` as the outcome's error."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "cancelled"

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout_s: float) -> bool:
        return self._event.wait(timeout_s)


class Transport(Protocol):
    def run(self, node: Node, command: Command, deadline: float, cancel: Cancel | None = None) -> Outcome:
        """Run one command on one node; never raises for node trouble and never passes `deadline`
        (a time.monotonic() value). When `cancel` is set, stop the command on the node and return soon."""
        ...

    def close(self) -> None:
        """Close anything kept open between runs."""
        ...


class Stream(Protocol):
    """A command left running on a node, stdin open (the probe's serve mode), read without blocking.

    `fileno()` becomes readable when output arrives or the command ends, so one thread can poll() a
    thousand streams. No method raises for node trouble: a lost connection shows in what they return.
    """

    def fileno(self) -> int:
        """The descriptor to poll() for POLLIN: readable when stdout or stderr has data or the command ended."""
        ...

    def send(self, data: bytes) -> bool:
        """Write to the command's stdin; False when the stream is gone."""
        ...

    def read(self) -> tuple[bytes, bytes]:
        """(stdout, stderr) available now, without waiting (empty bytes when there is none)."""
        ...

    def finished(self) -> bool:
        """The command closed its output or the connection is gone (read() first: data may remain)."""
        ...

    def connected(self) -> bool:
        """Whether the connection under the stream is still up (the command may have ended)."""
        ...

    def exit_code(self, wait_s: float = 0.2) -> int | None:
        """The exit code of a finished command, waiting up to `wait_s` seconds for it to arrive; None when
        there is none (killed by a signal, or the connection was lost)."""
        ...

    def close(self) -> None:
        """Close the stream; the connection under it stays kept (StreamingTransport.drop closes that)."""
        ...


class StreamError(Exception):
    """A stream could not be opened; `outcome` says why, in the node outcome vocabulary."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.error)
        self.outcome = outcome


class StreamingTransport(Transport, Protocol):
    """A Transport that can also leave a command running on a node over a kept connection (status --watch)."""

    def open_stream(self, node: Node, command: Command, deadline: float) -> Stream:
        """Start `command` on the node and leave it running with stdin open (`command.stdin` already sent);
        bounded by `deadline` (a time.monotonic() value). Raises StreamError, carrying the node's outcome,
        when it cannot."""
        ...

    def drop(self, node: Node) -> None:
        """Close the kept connection to a node that stopped answering: its next use connects afresh."""
        ...


def remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
