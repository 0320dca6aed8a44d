"""The Transport protocol: how a command reaches a node, and its limits."""

from __future__ import annotations

import shlex
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


def wrap_command(command: Command) -> str:
    """The exact string handed to the remote shell: sudo -n / timeout wrappers around `sh -c SCRIPT`."""
    argv = ["sh", "-c", command.script]
    if command.timeout_s:
        argv = ["timeout", "-k", str(KILL_AFTER_S), f"{command.timeout_s:g}", *argv]
    if command.sudo:
        argv = ["sudo", "-n", "--", *argv]
    return shlex.join(argv)


class Transport(Protocol):
    def run(self, node: Node, command: Command, deadline: float) -> Outcome:
        """Run one command on one node; never raises for node trouble and never passes `deadline`
        (a time.monotonic() value)."""
        ...

    def close(self) -> None:
        """Close anything kept open between runs."""
        ...


def remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
