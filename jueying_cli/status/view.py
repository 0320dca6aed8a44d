"""The status of a whole collection: one row per node with what its scheduler says, sorted and folded,
the totals line, and the nodes that gave no facts. Pure once the scheduler states are read."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jueying_cli.errors import JueyingError
from jueying_cli.facts.collected import NodeFacts
from jueying_cli.facts.model import Facts
from jueying_cli.inventory.model import Inventory, Node
from jueying_cli.inventory.select import fold as fold_names
from jueying_cli.scheduler import schedulers_for
from jueying_cli.scheduler.base import NodeState
from jueying_cli.status.summary import (
    HealthFinding,
    NodeSummary,
    fold_healthy,
    sort_summaries,
    summarize,
    totals,
    unanswered,
    with_scheduler,
)
from jueying_cli.vocab import Backend, OutcomeStatus

if TYPE_CHECKING:
    from jueying_cli.store import Store
    from jueying_cli.transport.base import Transport


@dataclass(frozen=True)
class SchedulerView:
    """What the backend that drains a node says of it (None: the backend does not know the node)."""

    backend: Backend
    state: NodeState | None


@dataclass(frozen=True)
class StatusView:
    """One refresh of `jueying status`: every row (sorted), the rows to show (folded when asked), the totals,
    the facts of the nodes that answered, the nodes that gave no facts (or only stale ones)."""

    rows: list[NodeSummary]
    shown: list[NodeSummary]
    totals: dict[str, object]
    answered: list[tuple[str, Facts]]
    missing: list[NodeFacts]
    scheduler: Mapping[str, SchedulerView]
    nodes_total: int
    health: Mapping[str, Sequence[HealthFinding]] | None = None  # non-OK check results by node; None: not run

    @property
    def backends(self) -> dict[Backend, str]:
        """Each backend with the folded set of nodes it drains."""
        names: dict[Backend, list[str]] = {}
        for name, view in self.scheduler.items():
            names.setdefault(view.backend, []).append(name)
        return {backend: fold_names(members) for backend, members in sorted(names.items())}


def scheduler_states(inventory: Inventory, selected: Sequence[Node], transport: Transport,
                     store: Store) -> tuple[dict[str, SchedulerView], list[str]]:
    """({node: SchedulerView}, warnings): one scontrol call per Slurm controller, the ledger for builtin
    nodes. Best effort: a backend that cannot be asked gives a warning and the status is still shown."""
    found: dict[str, SchedulerView] = {}
    warnings: list[str] = []
    for backend, (scheduler, names) in schedulers_for(inventory, selected, transport, store).items():
        try:
            states = scheduler.states(names)
        except JueyingError as exc:
            warnings.append(f"{backend} scheduler state unavailable: {exc}")
            continue
        for name in names:
            found[name] = SchedulerView(backend, states.get(name))
    return found, warnings


def rows_for(results: Sequence[NodeFacts], stale: frozenset[str] = frozenset(),
             scheduler: Mapping[str, SchedulerView] | None = None,
             health: Mapping[str, Sequence[HealthFinding]] | None = None) -> list[NodeSummary]:
    """One summary row per node, in the order given; `health`: each node's non-OK check results (None: the
    checks were not run, and rows carry no health)."""
    rows = []
    for r in results:
        if r.facts is not None:
            row = summarize(r.name, r.facts, r.node.expected_gpus, None if health is None else health.get(r.name, ()))
            row = dataclasses.replace(row, stale=True) if r.name in stale else row
        else:
            row = unanswered(r.name, r.outcome.status, r.outcome.error or r.outcome.status, r.node.expected_gpus)
        view = (scheduler or {}).get(r.name)
        if view is not None:
            row = with_scheduler(row, view.backend, view.state)
        rows.append(row)
    return rows


def build_view(results: Sequence[NodeFacts], *, sort: str, fold: bool, stale: frozenset[str] = frozenset(),
               scheduler: Mapping[str, SchedulerView] | None = None,
               health: Mapping[str, Sequence[HealthFinding]] | None = None) -> StatusView:
    rows = sort_summaries(rows_for(results, stale, scheduler, health), sort)
    return StatusView(
        rows=rows,
        shown=fold_healthy(rows, fold_names) if fold else rows,
        totals=totals(rows),
        answered=[(r.name, r.facts) for r in results if r.facts is not None],
        missing=[r for r in results if r.facts is None or r.name in stale],
        scheduler=scheduler or {},
        nodes_total=len(results),
        health=health,
    )


def merge_stale(results: Sequence[NodeFacts], last: dict[str, NodeFacts]) -> tuple[list[NodeFacts], frozenset[str]]:
    """`status --watch`: a node that missed this refresh's deadline keeps its last answer, marked stale;
    fresh answers are remembered in `last`."""
    merged = []
    stale: set[str] = set()
    for r in results:
        if r.facts is not None:
            last[r.name] = r
            merged.append(r)
        elif r.outcome.status == OutcomeStatus.TIMEOUT and r.name in last:
            merged.append(last[r.name])
            stale.add(r.name)
        else:
            merged.append(r)
    return merged, frozenset(stale)
