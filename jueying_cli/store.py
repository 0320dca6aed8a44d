"""jueying's state: a SQLite database in WAL mode (history of key facts; more tables as features land).

Safe for cron and a person at once: WAL lets readers run beside one writer, writers wait (busy timeout)
instead of failing, and each collection is written in one transaction, so a crash mid-write leaves
either the whole run or none of it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RETENTION_DAYS = 30.0
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS facts_history (
    id INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    collected_at REAL NOT NULL,          -- unix seconds, the node's own clock (or ours if unreachable)
    status TEXT NOT NULL,                -- outcome status, or the node state when it answered
    reason TEXT,
    gpus_present INTEGER,
    gpus_lost INTEGER,
    ecc_uncorrected_volatile INTEGER,    -- summed over GPUs
    ecc_corrected_volatile INTEGER,
    ecc_uncorrected_aggregate INTEGER,
    ecc_corrected_aggregate INTEGER,
    remapped_rows_pending INTEGER,       -- GPUs with a pending remap
    driver_version TEXT,
    cuda_driver_version TEXT,
    kernel TEXT
);
CREATE INDEX IF NOT EXISTS facts_history_node_time ON facts_history (node, collected_at);
CREATE TABLE IF NOT EXISTS check_state (
    node TEXT NOT NULL,
    check_name TEXT NOT NULL,
    gpu INTEGER NOT NULL,                -- -1 when the finding is not about one GPU
    code TEXT NOT NULL,
    level INTEGER NOT NULL,
    consecutive INTEGER NOT NULL,        -- runs in a row this finding was seen at this level
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (node, check_name, gpu, code)
)
"""


def retention_days_from_env() -> float:
    text = os.environ.get("JUEYING_HISTORY_DAYS", "")
    try:
        return float(text) if text else DEFAULT_RETENTION_DAYS
    except ValueError:
        return DEFAULT_RETENTION_DAYS


def default_path() -> Path:
    """$JUEYING_STATE_DB, else $XDG_STATE_HOME/jueying/state.db (~/.local/state/...)."""
    explicit = os.environ.get("JUEYING_STATE_DB")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "jueying" / "state.db"


@dataclass(frozen=True)
class HistoryRow:
    node: str
    collected_at: float
    status: str
    reason: str | None
    gpus_present: int | None
    gpus_lost: int | None
    ecc_uncorrected_volatile: int | None
    ecc_corrected_volatile: int | None
    ecc_uncorrected_aggregate: int | None
    ecc_corrected_aggregate: int | None
    remapped_rows_pending: int | None
    driver_version: str | None
    cuda_driver_version: str | None
    kernel: str | None


_COLUMNS = ("node", "collected_at", "status", "reason", "gpus_present", "gpus_lost", "ecc_uncorrected_volatile",
            "ecc_corrected_volatile", "ecc_uncorrected_aggregate", "ecc_corrected_aggregate",
            "remapped_rows_pending", "driver_version", "cuda_driver_version", "kernel")


# Built from the constant column list above; every value is bound with "?".
_INSERT = (f"INSERT INTO facts_history ({', '.join(_COLUMNS)}) "  # noqa: S608 - constant identifiers only
           f"VALUES ({', '.join('?' for _ in _COLUMNS)})")
_SELECT = (f"SELECT {', '.join(_COLUMNS)} FROM facts_history WHERE node = ? "  # noqa: S608 - constant identifiers
           "ORDER BY collected_at DESC, id DESC LIMIT ?")


class Store:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across a process crash
        with self.transaction() as db:
            for statement in _split(_SCHEMA):
                db.execute(statement)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock up front, so two writers queue instead of deadlocking."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def record_history(self, rows: Iterable[HistoryRow], retention_days: float | None = None) -> int:
        """Append one collection (all nodes, one transaction) and drop rows older than the retention
        (days; default $JUEYING_HISTORY_DAYS or 30; 0 keeps everything)."""
        if retention_days is None:
            retention_days = retention_days_from_env()
        values = [tuple(getattr(r, c) for c in _COLUMNS) for r in rows]
        with self.transaction() as db:
            db.executemany(_INSERT, values)
            if retention_days > 0:
                db.execute("DELETE FROM facts_history WHERE collected_at < ?",
                           (time.time() - retention_days * 86400,))
        return len(values)

    def track_findings(self, nodes: Iterable[str], findings: Iterable[tuple[str, str, int, str, int]],
                       now: float) -> dict[tuple[str, str, int, str], int]:
        """Flap control: record this run's non-OK findings (node, check, gpu, code, level) for `nodes` and
        return how many consecutive runs each has held. Findings of these nodes not seen now are forgotten,
        so a result must hold without a break to count; other nodes' state is left alone."""
        current = {(n, c, g, code): level for n, c, g, code, level in findings}
        counts: dict[tuple[str, str, int, str], int] = {}
        with self.transaction() as db:
            for node in set(nodes):
                rows = db.execute("SELECT check_name, gpu, code, level, consecutive FROM check_state WHERE node = ?",
                                  (node,)).fetchall()
                previous = {(node, c, g, code): (level, n) for c, g, code, level, n in rows}
                for key in previous.keys() - current.keys():
                    db.execute("DELETE FROM check_state WHERE node = ? AND check_name = ? AND gpu = ? AND code = ?",
                               key)
            for key, level in current.items():
                row = db.execute("SELECT level, consecutive FROM check_state WHERE node = ? AND check_name = ? "
                                 "AND gpu = ? AND code = ?", key).fetchone()
                count = row[1] + 1 if row is not None and row[0] == level else 1
                db.execute("INSERT INTO check_state (node, check_name, gpu, code, level, consecutive, first_seen, "
                           "last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node, check_name, gpu, code) DO "
                           "UPDATE SET level = excluded.level, consecutive = excluded.consecutive, "
                           "last_seen = excluded.last_seen, first_seen = CASE WHEN excluded.consecutive = 1 "
                           "THEN excluded.first_seen ELSE check_state.first_seen END",
                           (*key, level, count, now, now))
                counts[key] = count
        return counts

    def history(self, node: str, limit: int = 1000) -> list[HistoryRow]:
        """A node's rows, oldest first (the newest `limit`)."""
        cur = self._db.execute(_SELECT, (node, limit))
        return [HistoryRow(*row) for row in reversed(cur.fetchall())]

    def close(self) -> None:
        self._db.close()


def _split(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
