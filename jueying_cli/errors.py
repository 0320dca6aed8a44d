"""One exception tree and the exit codes the CLI turns them into.

Only `jueying_cli.cli` maps exceptions to exit codes; everything else raises.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of every command except `jueying check` (which speaks Nagios)."""

    OK = 0
    NODES_FAILED = 1  # some nodes failed, timed out or were unreachable
    BAD_INPUT = 2  # bad usage, bad inventory / playbook / config file
    DRILL_ABORTED = 3  # `drill run`/`recover`: a guard aborted the drill; its rollback succeeded
    DRILL_ROLLBACK_FAILED = 4  # `drill run`/`recover`: the rollback failed, a person must act (wins over all)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


class JueyingError(Exception):
    """Base of every error jueying raises on purpose; its message is shown to the user as is."""

    exit_code: ExitCode = ExitCode.NODES_FAILED


class BadInputError(JueyingError):
    """A file or option the user gave is wrong. Carries where, so the user can fix it."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.path = path
        self.line = line
        self.field = field
        where = ""
        if path:
            where = path + (f":{line}" if line else "") + ": "
        what = f"{field}: " if field else ""
        super().__init__(f"{where}{what}{message}")


class FactsError(JueyingError):
    """A node answered with something that is not a valid facts document."""


class SchedulerError(JueyingError):
    """The scheduler refused or could not be asked; the message carries its own words."""


class CapExceeded(JueyingError):
    """A drain would take more nodes out of service than max_unavailable allows."""


class LockBusy(JueyingError):
    """Another run holds the run lock; the message says which process."""


class StateDbError(BadInputError):
    """The state database cannot be used as it is: written by a newer jueying (refused before anything is
    written to it, so the file is left as it was), or tables that are not jueying's (nothing migrated)."""
