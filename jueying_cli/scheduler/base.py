"""What a scheduler backend is: the node states jueying reads, and drain/resume it asks for."""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from jueying_cli.vocab import Backend, SchedulerState

REASON_PREFIX = "jueying:"



@dataclass(frozen=True)
class NodeState:
    node: str
    state: SchedulerState  # normalised to Slurm's names, lower case
    drain: bool  # the drain flag is set (draining or drained)
    reason: str | None = None
    reason_user: str | None = None
    reason_time: float | None = None  # unix seconds
    raw: str = ""  # the backend's own words, e.g. "MIXED+DRAIN"
    jobs: tuple[str, ...] = ()  # what keeps the node busy (job ids, or GPU processes for the builtin backend)

    @property
    def owned(self) -> bool:
        """Drained by jueying (its reason carries jueying's prefix): automation may resume it."""
        return bool(self.reason and self.reason.startswith(REASON_PREFIX))

    @property
    def unavailable(self) -> bool:
        """Counts against max_unavailable: drained, draining or down."""
        return self.drain or self.state in (SchedulerState.DOWN, SchedulerState.DRAINED, SchedulerState.DRAINING)


class Scheduler(Protocol):
    name: Backend

    def states(self, nodes: Sequence[str]) -> Mapping[str, NodeState]:
        """Current state of each node (nodes the scheduler does not know are left out)."""
        ...

    def drain(self, nodes: Sequence[str], reason: str) -> None:
        """Set the drain flag with this reason (also replaces the reason of drained nodes)."""
        ...

    def resume(self, nodes: Sequence[str]) -> None:
        """Clear the drain flag."""
        ...

    def all_states(self) -> Mapping[str, NodeState]:
        """Every node the backend knows (for the cap: nodes already down or drained count)."""
        ...


def operator() -> str:
    """Who is acting: the user behind sudo when there is one."""
    for var in ("SUDO_USER", "LOGNAME", "USER"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def jueying_reason(text: str, user: str | None = None) -> str:
    """`jueying: <text> [<user>]`: the important part first (sinfo -R shows the first 20 characters)."""
    text = " ".join(text.split())
    if text.startswith(REASON_PREFIX):
        text = text[len(REASON_PREFIX):].strip()
    return f"{REASON_PREFIX} {text} [{user or operator()}]"
