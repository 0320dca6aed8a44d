"""History rows for the state database: the key facts of one collection, and what changed between them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from jueying_cli.facts.collected import NodeFacts
from jueying_cli.facts.model import Facts, GpuFacts
from jueying_cli.status.summary import node_state
from jueying_cli.store import HistoryRow


def history_row(node: str, facts: Facts | None, outcome_status: str, outcome_error: str | None,
                expected_gpus: int | None = None) -> HistoryRow:
    """The key facts of one collection, as stored in the history table."""
    if facts is None:
        return HistoryRow(node, time.time(), outcome_status, outcome_error, None, None, None, None, None, None,
                          None, None, None, None)

    def ecc(key: str) -> int | None:
        values = [g.ecc_errors.get(key) for g in facts.gpus if not g.lost]
        known = [v for v in values if isinstance(v, int)]
        return sum(known) if known else None

    state, reason = node_state(facts, expected_gpus)
    return HistoryRow(
        node=node, collected_at=facts.collected_at_unix, status=state, reason=reason or None,
        gpus_present=sum(1 for g in facts.gpus if not g.lost), gpus_lost=sum(1 for g in facts.gpus if g.lost),
        ecc_uncorrected_volatile=ecc("uncorrected_volatile"), ecc_corrected_volatile=ecc("corrected_volatile"),
        ecc_uncorrected_aggregate=ecc("uncorrected_aggregate"), ecc_corrected_aggregate=ecc("corrected_aggregate"),
        remapped_rows_pending=sum(1 for g in facts.gpus if g.remapped_rows.get("pending") is True),
        driver_version=facts.nvml.driver_version, cuda_driver_version=facts.nvml.cuda_driver_version,
        kernel=facts.host.kernel,
        energy_consumed_j=_sum_gpus(facts, _energy_j),
        power_watts=_sum_gpus(facts, lambda g: g.power_watts),
        power_limit_watts=_sum_gpus(facts, lambda g: g.power_limit_watts),
    )


def _energy_j(gpu: GpuFacts) -> float | None:
    return None if gpu.energy_consumed_mj is None else gpu.energy_consumed_mj / 1000


def _sum_gpus(facts: Facts, value: Callable[[GpuFacts], float | None]) -> float | None:
    """A value summed over the GPUs that are not lost; None when no GPU reported it."""
    known = [v for v in (value(g) for g in facts.gpus if not g.lost) if v is not None]
    return round(sum(known), 3) if known else None


_TRACKED = ("status", "reason", "gpus_present", "gpus_lost", "ecc_uncorrected_volatile", "ecc_corrected_volatile",
            "ecc_uncorrected_aggregate", "ecc_corrected_aggregate", "remapped_rows_pending", "driver_version",
            "cuda_driver_version", "kernel")


def history_changes(rows: list[HistoryRow]) -> list[HistoryRow]:
    """The first row, then every row whose key facts differ from the row before it."""
    changes: list[HistoryRow] = []
    previous: tuple[object, ...] | None = None
    for row in rows:
        key = tuple(getattr(row, f) for f in _TRACKED)
        if key != previous:
            changes.append(row)
        previous = key
    return changes


def history_rows(results: Sequence[NodeFacts]) -> list[HistoryRow]:
    """One history row per node of a collection (nodes that gave no facts keep their outcome)."""
    return [history_row(r.name, r.facts, r.outcome.status, r.outcome.error, r.node.expected_gpus) for r in results]
