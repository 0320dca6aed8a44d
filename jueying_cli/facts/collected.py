"""What one collection gave for one node: its outcome, and its facts when the outcome is ok and valid."""

from __future__ import annotations

from dataclasses import dataclass

from jueying_cli.facts.model import Facts
from jueying_cli.inventory.model import Node
from jueying_cli.outcome import Outcome


@dataclass(frozen=True)
class NodeFacts:
    node: Node
    outcome: Outcome
    facts: Facts | None  # None: the node gave no (valid) facts; `outcome` says why

    @property
    def name(self) -> str:
        return self.node.name
