"""audit: append-only log of every state change jueying made or tried. An entry is written `pending` before
acting and settled after, so a crash mid-action leaves a trace to reconcile."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jueying_cli.store.db import Database


@dataclass(frozen=True)
class AuditEntry:
    at: float  # unix s the entry was written
    actor: str
    action: str  # vocab.ChangeKind
    node: str
    backend: str
    reason: str | None = None
    before_state: str | None = None
    before_reason: str | None = None
    after_state: str | None = None
    after_reason: str | None = None
    result: str = "pending"  # vocab.AuditResult
    message: str | None = None
    run_id: str | None = None
    id: int | None = None  # set once stored


@dataclass(frozen=True)
class Settlement:
    """How a pending entry ended: result (done, failed, not_done), the state seen after, and why."""

    id: int
    result: str
    after_state: str | None = None
    after_reason: str | None = None
    message: str | None = None  # None keeps the message written with the intent


_COLUMNS = ("id", "at", "actor", "action", "node", "backend", "reason", "before_state", "before_reason",
            "after_state", "after_reason", "result", "message", "run_id")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM audit"  # noqa: S608 - constant identifiers only


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    (entry_id, at, actor, action, node, backend, reason, before_state, before_reason, after_state, after_reason,
     result, message, run_id) = row
    return AuditEntry(at, actor, action, node, backend, reason, before_state, before_reason, after_state,
                      after_reason, result, message, run_id, entry_id)


class Audit:
    def __init__(self, db: Database) -> None:
        self._db = db

    def intent(self, entries: Iterable[AuditEntry]) -> list[int]:
        """Write entries as `pending` before acting; their ids."""
        ids = []
        with self._db.transaction() as tx:
            for e in entries:
                cur = tx.execute(
                    "INSERT INTO audit (at, actor, action, node, backend, reason, before_state, before_reason, "
                    "after_state, after_reason, result, message, run_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                    (e.at, e.actor, e.action, e.node, e.backend, e.reason, e.before_state, e.before_reason,
                     e.after_state, e.after_reason, e.message, e.run_id))
                ids.append(int(cur.lastrowid or 0))
        return ids

    def finish(self, settlements: Iterable[Settlement]) -> None:
        """Settle entries written by intent(); an entry no longer pending is left as it is."""
        with self._db.transaction() as tx:
            tx.executemany("UPDATE audit SET result = ?, after_state = ?, after_reason = ?, "
                           "message = COALESCE(?, message) WHERE id = ? AND result = 'pending'",
                           [(s.result, s.after_state, s.after_reason, s.message, s.id) for s in settlements])

    def pending(self) -> list[AuditEntry]:
        """Every entry still `pending`, oldest first."""
        return [_entry(row) for row in self._db.read(f"{_SELECT} WHERE result = 'pending' ORDER BY id")]

    def log(self, node: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest `limit` entries (for one node, or all), oldest first."""
        where, params = ("WHERE node = ?", [node]) if node else ("", [])
        rows = self._db.read(f"{_SELECT} {where} ORDER BY id DESC LIMIT ?", [*params, limit])
        return [_entry(row) for row in reversed(rows)]
