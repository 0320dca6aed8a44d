"""What happened on one node: the one outcome every node gets from every command."""

from __future__ import annotations

from dataclasses import dataclass

from jueying_cli.vocab import OutcomeStatus, StopReason


@dataclass(frozen=True)
class Outcome:
    """`error` is a short reason for anything but ok; `rc` is the command's exit code when it ran."""

    node: str
    status: OutcomeStatus
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    error: str | None = None
    truncated: bool = False  # an output stream passed MAX_OUTPUT_BYTES (transport/base.py) and was cut
    stopped: StopReason | None = None  # set by the transport when it cut the command short, and why

    @property
    def ok(self) -> bool:
        return self.status == OutcomeStatus.OK
