"""`jueying capacity` as one function: facts, scheduler states and the check set in, a CapacityReport out.

The health checks run on the live facts (pure); a non-OK result counts once it is confirmed: its check needs
only one run (confirm_runs 1), or the state database shows `jueying check` already confirmed it at that level
(checks.flap.read_findings). Capacity never writes the flap state: only `jueying check` counts runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from jueying_cli.audit.capacity import CapacityReport, NodeReading, Problem, build_capacity, classify, reading_of
from jueying_cli.checks import CheckConfig
from jueying_cli.checks.flap import read_findings
from jueying_cli.facts.collected import NodeFacts
from jueying_cli.inventory.model import Inventory
from jueying_cli.scheduler.base import NodeState
from jueying_cli.vocab import Level

if TYPE_CHECKING:
    from jueying_cli.store import Store


def confirmed_problems(results: Sequence[NodeFacts], config: CheckConfig, inventory: Inventory,
                       store: Store | None, now: float) -> dict[str, list[Problem]]:
    """Each node's confirmed WARNING and CRITICAL results, counted as `jueying status` counts them
    (checks.flap.read_findings)."""
    found: dict[str, list[Problem]] = {}
    for f in read_findings(results, config, inventory, store, now=now):
        c = f.result
        if f.confirmed and c.level in (Level.WARNING, Level.CRITICAL):
            found.setdefault(c.node, []).append(Problem(c.level, c.check, c.gpu))
    return found


def run_capacity(results: Sequence[NodeFacts], inventory: Inventory, *, scheduler: Mapping[str, NodeState | None],
                 config: CheckConfig, store: Store | None, by: str, floor: int | None,
                 since: tuple[str, float] | None, now: float | None = None) -> CapacityReport:
    """Capacity from live facts (one collection over SSH or on this machine)."""
    now = time.time() if now is None else now
    problems = confirmed_problems(results, config, inventory, store, now)
    return capacity_of([reading_of(r) for r in results], problems, scheduler=scheduler, store=store, by=by,
                       floor=floor, since=since, now=now)


def capacity_of(readings: Sequence[NodeReading], problems: Mapping[str, Sequence[Problem]], *,
                scheduler: Mapping[str, NodeState | None], store: Store | None, by: str, floor: int | None,
                since: tuple[str, float] | None, now: float,
                energy_kwh: Mapping[str, float | None] | None = None) -> CapacityReport:
    """The report from node readings (facts or Prometheus) and their confirmed problems. A node that gave no
    facts counts its expected_gpus, else the GPUs its last recorded collection saw. `energy_kwh`: each node's
    energy over `since` when the caller has it (Prometheus); otherwise from the history store, which also
    gives the healthy GPUs per day."""
    known: dict[str, int | None] = {}
    if store is not None:
        for r in readings:
            if r.gpus is None:
                rows = [row for row in store.history.read(r.name, limit=50) if row.gpus_present is not None]
                known[r.name] = rows[-1].gpus_present if rows else None
    nodes = [classify(r, scheduler.get(r.name), problems.get(r.name, []), by=by, known_gpus=known.get(r.name))
             for r in readings]
    history = None
    if since is not None and store is not None and energy_kwh is None:
        history = store.history.read_since([r.name for r in readings], now - since[1])
    return build_capacity(nodes, readings, by=by, floor=floor, history=history, since=since[0] if since else None,
                          now=now, energy=energy_kwh)
