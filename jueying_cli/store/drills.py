"""Drill journals: one row per `jueying drill run`, its JSON journal replaced whole (one transaction) after
every step and before each action starts, so a run killed at any moment leaves what `drill recover` needs."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from jueying_cli.store.db import Database


@dataclass(frozen=True)
class DrillRow:
    run_id: str
    drill: str
    started_at: float  # unix seconds
    updated_at: float
    status: str  # vocab.DrillStatus
    rollback_status: str  # vocab.RollbackStatus
    targets: str
    run_pid: int
    run_host: str
    journal: dict[str, Any]


_COLUMNS = "run_id, drill, started_at, updated_at, status, rollback_status, targets, run_pid, run_host, journal"
_INSERT = f"INSERT OR REPLACE INTO drill_runs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608 - constants
_SELECT = f"SELECT {_COLUMNS} FROM drill_runs"  # noqa: S608 - constant identifiers only


def _row(raw: tuple[Any, ...]) -> DrillRow:
    return DrillRow(raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7], raw[8], json.loads(raw[9]))


class DrillJournals:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, journal: dict[str, Any]) -> None:
        """Insert or replace the run's row from its journal (run_id, drill.name, status, rollback_status,
        targets, pid, host, started_at are read from it)."""
        targets = ",".join(sorted({n for t in journal.get("targets_resolved", {}).values() for n in t["nodes"]}))
        with self.db.transaction() as conn:
            conn.execute(
                _INSERT,
                (journal["run_id"], journal["drill"]["name"], journal["started_at"], time.time(),
                 journal["status"], journal["rollback_status"], targets, journal["pid"], journal["host"],
                 json.dumps(journal, sort_keys=True)))

    def get(self, run_id: str) -> DrillRow | None:
        rows = self.db.read(_SELECT + " WHERE run_id = ?", (run_id,))
        return _row(rows[0]) if rows else None

    def latest(self, limit: int = 50) -> list[DrillRow]:
        """Newest first."""
        return [_row(r) for r in self.db.read(
            _SELECT + " ORDER BY started_at DESC, run_id DESC LIMIT ?", (limit,))]
