"""max_unavailable: how many nodes may be out of service at once, counting nodes already down or drained."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from jueying_cli.errors import CapExceeded
from jueying_cli.inventory.model import Inventory
from jueying_cli.scheduler.base import NodeState

DEFAULT_MAX_UNAVAILABLE_PCT = 10.0


@dataclass(frozen=True)
class Cap:
    limit: int  # most nodes that may be unavailable at once
    total: int  # nodes the scheduler(s) know
    unavailable: int  # already down, draining or drained
    source: str  # where the limit comes from, for messages

    def check(self, adding: int) -> None:
        if self.unavailable + adding > self.limit:
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
