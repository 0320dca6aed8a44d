"""max_unavailable: how many nodes may be out of service at once, counting nodes already down or drained.

Down means what the backend says: Slurm's DOWN/FAIL/NOT_RESPONDING; for builtin nodes, no answer to a marker
read within a short timeout (scheduler.all_states). A node already counted (down or drained) costs nothing
more when it is drained."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from jueying_cli.errors import CapExceeded
from jueying_cli.inventory.model import Inventory
from jueying_cli.scheduler.base import NodeState
from jueying_cli.vocab import SchedulerState

DEFAULT_MAX_UNAVAILABLE_PCT = 10.0
T = TypeVar("T")


@dataclass(frozen=True)
class Cap:
    limit: int  # most nodes that may be unavailable at once
    total: int  # nodes the scheduler(s) know
    source: str  # where the limit comes from, for messages
    drained: frozenset[str] = frozenset()  # draining or drained (builtin: per the ledger or the node's marker)
    down: Mapping[str, str] = field(default_factory=dict)  # node -> why it counts as down (not drained)

    @property
    def unavailable(self) -> int:
        """Already down, draining or drained."""
        return len(self.drained) + len(self.down)

    def counted(self, node: str) -> bool:
        """Already counted as unavailable: draining it takes nothing more out."""
        return node in self.drained or node in self.down

    def breakdown(self) -> str:
        """`4 already unavailable: 1 drained, 3 down (2 unreachable, 1 timeout)`."""
        text = f"{self.unavailable} already unavailable: {len(self.drained)} drained, {len(self.down)} down"
        if self.down:
            kinds = Counter(why.split(":", 1)[0] for why in self.down.values())
            text += " (" + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
            text += ")"
        return text

    def exceeded_by(self, adding: int) -> bool:
        return self.unavailable + adding > self.limit

    def check(self, adding: int) -> None:
        if self.exceeded_by(adding):
            raise CapExceeded(
                f"draining {adding} more node(s) would make {self.unavailable + adding} of {self.total} unavailable "
                f"({self.breakdown()}), over max_unavailable {self.limit} ({self.source}); "
                "use --force to override (automation never does)")


def cap_for(inventory: Inventory, states: Mapping[str, NodeState]) -> Cap:
    """The limit from the inventory variables max_unavailable (a count) and max_unavailable_pct (a percentage
    of the nodes the scheduler knows): the stricter of those set; 10 % when neither is. Never below 1 node,
    so one bad node can always be taken out."""
    counts = [int(n.vars["max_unavailable"]) for n in inventory.nodes.values() if "max_unavailable" in n.vars]
    pcts = [float(n.vars["max_unavailable_pct"]) for n in inventory.nodes.values() if "max_unavailable_pct" in n.vars]
    total = len(states)
    limits: list[tuple[int, str]] = []
    if counts:
        limits.append((min(counts), "max_unavailable"))
    if pcts or not counts:
        pct = min(pcts) if pcts else DEFAULT_MAX_UNAVAILABLE_PCT
        limits.append((math.floor(total * pct / 100), f"{pct:g}% of {total}" + ("" if pcts else ", the default")))
    limit, source = min(limits)
    drained = frozenset(n for n, s in states.items()
                        if s.drain or s.state in (SchedulerState.DRAINED, SchedulerState.DRAINING))
    down = {n: (s.raw or str(s.state)) + (f": {s.reason}" if s.reason else "")
            for n, s in states.items() if s.unavailable and n not in drained}
    return Cap(limit=max(1, limit), total=total, source=source, drained=drained, down=down)


class OverCap(StrEnum):
    """What a drain does when it would pass max_unavailable."""

    REFUSE = "refuse"  # nothing is drained: CapExceeded (an operator's `drain` and `failover`)
    HOLD_BACK = "hold_back"  # drain up to the cap, hold the rest back (automation: it never forces)
    FORCE = "force"  # drain them all, and say so in the audit log (`--force`)


def admit(cap: Cap, adding: Sequence[T], over_cap: OverCap) -> tuple[list[T], list[T]]:
    """(admitted, held back) of the drains in `adding` (nodes not yet counted unavailable), in order."""
    if over_cap == OverCap.FORCE:
        return list(adding), []
    if over_cap == OverCap.REFUSE:
        cap.check(len(adding))
        return list(adding), []
    budget = max(0, cap.limit - cap.unavailable)
    return list(adding[:budget]), list(adding[budget:])
