"""max_unavailable: how many nodes may be out of service at once, counting nodes already down or drained."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from jueying_cli.errors import CapExceeded
from jueying_cli.inventory.model import Inventory
from jueying_cli.scheduler.base import NodeState

DEFAULT_MAX_UNAVAILABLE_PCT = 10.0
T = TypeVar("T")


@dataclass(frozen=True)
class Cap:
    limit: int  # most nodes that may be unavailable at once
    total: int  # nodes the scheduler(s) know
    unavailable: int  # already down, draining or drained
    source: str  # where the limit comes from, for messages

    def exceeded_by(self, adding: int) -> bool:
        return self.unavailable + adding > self.limit

    def check(self, adding: int) -> None:
        if self.exceeded_by(adding):
            raise CapExceeded(
                f"draining {adding} more node(s) would make {self.unavailable + adding} of {self.total} unavailable "
                f"({self.unavailable} already down or drained), over max_unavailable {self.limit} ({self.source}); "
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
    return Cap(limit=max(1, limit), total=total, unavailable=sum(1 for s in states.values() if s.unavailable),
               source=source)


class OverCap(StrEnum):
    """What a drain does when it would pass max_unavailable."""

    REFUSE = "refuse"  # nothing is drained: CapExceeded (an operator's `drain` and `failover`)
    HOLD_BACK = "hold_back"  # drain up to the cap, hold the rest back (automation: it never forces)
    FORCE = "force"  # drain them all, and say so in the audit log (`--force`)


def admit(cap: Cap, adding: Sequence[T], over_cap: OverCap) -> tuple[list[T], list[T]]:
    """(admitted, held back) of the drains in `adding`, in order, under `cap`."""
    if over_cap == OverCap.FORCE:
        return list(adding), []
    if over_cap == OverCap.REFUSE:
        cap.check(len(adding))
        return list(adding), []
    budget = max(0, cap.limit - cap.unavailable)
    return list(adding[:budget]), list(adding[budget:])
