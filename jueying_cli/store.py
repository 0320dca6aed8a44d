"""jueying's state: a SQLite database in WAL mode (history of key facts; more tables as features land).

Safe for cron and a person at once: WAL lets readers run beside one writer, writers wait (busy timeout)
instead of failing, and each collection is written in one transaction, so a crash mid-write leaves
either the whole run or none of it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
);
CREATE TABLE IF NOT EXISTS node_clean (       -- consecutive `jueying check` runs with nothing but OK
    node TEXT PRIMARY KEY,
    clean_runs INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (           -- the builtin scheduler's drain state
    node TEXT PRIMARY KEY,
    drained INTEGER NOT NULL,
    reason TEXT,
    user TEXT,
    since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (            -- append-only: every state change jueying made or tried
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,                     -- drain, resume, update_reason, failover...
    node TEXT NOT NULL,
    backend TEXT NOT NULL,
    reason TEXT,
    before_state TEXT,
    before_reason TEXT,
    after_state TEXT,
    after_reason TEXT,
    result TEXT NOT NULL,                     -- pending (written before acting), done, failed, not_done
    message TEXT,
    run_id TEXT
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


@dataclass(frozen=True)
class AuditEntry:
    at: float
    actor: str
    action: str
    node: str
    backend: str
    reason: str | None = None
    before_state: str | None = None
    before_reason: str | None = None
    after_state: str | None = None
    after_reason: str | None = None
    result: str = "pending"
    message: str | None = None
    run_id: str | None = None
    id: int | None = None


_AUDIT_COLUMNS = ("at", "actor", "action", "node", "backend", "reason", "before_state", "before_reason",
                  "after_state", "after_reason", "result", "message", "run_id", "id")


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

    def track_clean(self, clean: Mapping[str, bool]) -> dict[str, int]:
        """Count consecutive all-OK check runs per node (a run with any finding resets it to 0)."""
        counts = {}
        with self.transaction() as db:
            for node, ok in clean.items():
                row = db.execute("SELECT clean_runs FROM node_clean WHERE node = ?", (node,)).fetchone()
                count = (row[0] + 1 if row else 1) if ok else 0
                db.execute("INSERT INTO node_clean (node, clean_runs) VALUES (?, ?) ON CONFLICT (node) "
                           "DO UPDATE SET clean_runs = excluded.clean_runs", (node, count))
                counts[node] = count
        return counts

    # ---------------------------------------------------------------- builtin drain ledger

    def ledger(self, nodes: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = list(nodes)
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ", ".join("?" for _ in chunk)  # placeholders only; the names are bound
            query = f"SELECT node, drained, reason, user, since FROM ledger WHERE node IN ({marks})"  # noqa: S608
            rows = self._db.execute(query, chunk).fetchall()
            for node, drained, reason, user, since in rows:
                found[node] = {"drained": bool(drained), "reason": reason, "user": user, "since": since}
        return found

    def set_ledger(self, nodes: Iterable[str], *, drained: bool, reason: str | None, user: str | None,
                   now: float) -> None:
        with self.transaction() as db:
            db.executemany("INSERT INTO ledger (node, drained, reason, user, since) VALUES (?, ?, ?, ?, ?) "
                           "ON CONFLICT (node) DO UPDATE SET drained = excluded.drained, reason = excluded.reason, "
                           "user = excluded.user, since = excluded.since",
                           [(n, int(drained), reason, user, now) for n in nodes])

    # ---------------------------------------------------------------- audit log

    def audit_intent(self, entries: Iterable[AuditEntry]) -> list[int]:
        """Write entries as `pending` before acting, so a crash mid-action leaves a trace to reconcile."""
        ids = []
        with self.transaction() as db:
            for e in entries:
                cur = db.execute(
                    "INSERT INTO audit (at, actor, action, node, backend, reason, before_state, before_reason, "
                    "after_state, after_reason, result, message, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "'pending', ?, ?)",
                    (e.at, e.actor, e.action, e.node, e.backend, e.reason, e.before_state, e.before_reason,
                     e.after_state, e.after_reason, e.message, e.run_id))
                ids.append(int(cur.lastrowid or 0))
        return ids

    def audit_finish(self, outcomes: Iterable[tuple[int, str, str | None, str | None, str | None]]) -> None:
        """(id, result, after_state, after_reason, message) for entries written by audit_intent."""
        with self.transaction() as db:
            db.executemany("UPDATE audit SET result = ?, after_state = ?, after_reason = ?, "
                           "message = COALESCE(?, message) WHERE id = ? AND result = 'pending'",
                           [(result, state, reason, message, entry_id)
                            for entry_id, result, state, reason, message in outcomes])

    def audit_pending(self) -> list[AuditEntry]:
        rows = self._db.execute(f"SELECT {', '.join(_AUDIT_COLUMNS)} FROM audit WHERE result = 'pending' "  # noqa: S608
                                "ORDER BY id").fetchall()
        return [AuditEntry(*row) for row in rows]

    def audit_log(self, node: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest `limit` entries (for one node, or all), oldest first."""
        where, params = ("WHERE node = ?", [node]) if node else ("", [])
        rows = self._db.execute(f"SELECT {', '.join(_AUDIT_COLUMNS)} FROM audit {where} "  # noqa: S608
                                "ORDER BY id DESC LIMIT ?", [*params, limit]).fetchall()
        return [AuditEntry(*row) for row in reversed(rows)]

    def history(self, node: str, limit: int = 1000) -> list[HistoryRow]:
        """A node's rows, oldest first (the newest `limit`)."""
        cur = self._db.execute(_SELECT, (node, limit))
        return [HistoryRow(*row) for row in reversed(cur.fetchall())]

    def close(self) -> None:
        self._db.close()


def _split(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
