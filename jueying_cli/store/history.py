"""facts_history: the key facts of every collection, per node, kept for a retention period (days)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jueying_cli.store.db import Database

DEFAULT_RETENTION_DAYS = 30.0


def retention_days_from_env() -> float:
    """$JUEYING_HISTORY_DAYS (days; 0 keeps everything), else 30; a value that is not a number is ignored."""
    text = os.environ.get("JUEYING_HISTORY_DAYS", "")
    try:
        return float(text) if text else DEFAULT_RETENTION_DAYS
    except ValueError:
        return DEFAULT_RETENTION_DAYS


@dataclass(frozen=True)
class HistoryRow:
    """One node's key facts from one collection; None where the node did not say."""

    node: str
    collected_at: float  # unix s, the node's own clock (or ours if it did not answer)
    status: str  # outcome status, or the node state when it answered
    reason: str | None
    gpus_present: int | None
    gpus_lost: int | None
    ecc_uncorrected_volatile: int | None  # summed over GPUs
    ecc_corrected_volatile: int | None
    ecc_uncorrected_aggregate: int | None
    ecc_corrected_aggregate: int | None
    remapped_rows_pending: int | None  # GPUs with a pending remap
    driver_version: str | None
    cuda_driver_version: str | None
    kernel: str | None
    energy_consumed_j: float | None = None  # NVML total-energy counters summed over GPUs (reset on driver load)
    power_watts: float | None = None  # summed over GPUs
    power_limit_watts: float | None = None  # enforced limits summed over GPUs


_COLUMNS = tuple(f.name for f in fields(HistoryRow))
# Built from the dataclass's field names (constant identifiers); every value is bound with "?".
_INSERT = (f"INSERT INTO facts_history ({', '.join(_COLUMNS)}) "  # noqa: S608 - constant identifiers only
           f"VALUES ({', '.join('?' for _ in _COLUMNS)})")
_SELECT = (f"SELECT {', '.join(_COLUMNS)} FROM facts_history WHERE node = ? "  # noqa: S608 - constant identifiers
           "ORDER BY collected_at DESC, id DESC LIMIT ?")


_SELECT_SINCE = (f"SELECT {', '.join(_COLUMNS)} FROM facts_history "  # noqa: S608 - constant identifiers
                 "WHERE node = ? AND collected_at >= ? ORDER BY collected_at, id")


class History:
    def __init__(self, db: Database) -> None:
        self._db = db

    @staticmethod
    def retention_days() -> float:
        """Days rows are kept ($JUEYING_HISTORY_DAYS or 30; 0 keeps everything)."""
        return retention_days_from_env()

    def record(self, rows: Iterable[HistoryRow], retention_days: float | None = None) -> int:
        """Append one collection (all nodes, one transaction) and drop rows older than the retention
        (days; default $JUEYING_HISTORY_DAYS or 30; 0 keeps everything). Returns the rows written."""
        if retention_days is None:
            retention_days = retention_days_from_env()
        values = [tuple(getattr(r, c) for c in _COLUMNS) for r in rows]
        with self._db.transaction() as tx:
            tx.executemany(_INSERT, values)
            if retention_days > 0:
                tx.execute("DELETE FROM facts_history WHERE collected_at < ?",
                           (time.time() - retention_days * 86400,))
        return len(values)

    def read_since(self, nodes: Iterable[str], since: float) -> dict[str, list[HistoryRow]]:
        """Each node's rows collected at or after `since` (unix s), oldest first."""
        wanted = list(dict.fromkeys(nodes))
        found: dict[str, list[HistoryRow]] = {n: [] for n in wanted}
        for node in wanted:
            rows = self._db.read(_SELECT_SINCE, (node, since))
            found[node] = [HistoryRow(*row) for row in rows]
        return found

    def read(self, node: str, limit: int = 1000) -> list[HistoryRow]:
        """A node's rows, oldest first (the newest `limit`)."""
        return [HistoryRow(*row) for row in reversed(self._db.read(_SELECT, (node, limit)))]
