"""node_snapshots: a node's audited attributes and identity (a JSON text the caller writes), kept each time
they change, so `jueying audit` can say what changed and whether a GPU board was swapped since last time."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jueying_cli.store.db import Database


@dataclass(frozen=True)
class Snapshot:
    node: str
    collected_at: float  # unix s, the node's own clock
    doc: str  # JSON text; store/ never reads inside it


class Snapshots:
    def __init__(self, db: Database) -> None:
        self._db = db

    def record(self, rows: Iterable[Snapshot], retention_days: float) -> int:
        """Keep each row whose doc differs from the node's latest stored one (one transaction); drop rows older
        than the retention (days, 0 keeps all) except each node's latest, which later runs compare with.
        Returns the rows written."""
        written = 0
        with self._db.transaction() as tx:
            for row in rows:
                last = tx.execute("SELECT doc FROM node_snapshots WHERE node = ? ORDER BY collected_at DESC, id DESC "
                                  "LIMIT 1", (row.node,)).fetchone()
                if last is not None and last[0] == row.doc:
                    continue
                tx.execute("INSERT INTO node_snapshots (node, collected_at, doc) VALUES (?, ?, ?)",
                           (row.node, row.collected_at, row.doc))
                written += 1
            if retention_days > 0:
                tx.execute("DELETE FROM node_snapshots WHERE collected_at < ? AND id NOT IN "
                           "(SELECT max(id) FROM node_snapshots GROUP BY node)",
                           (time.time() - retention_days * 86400,))
        return written

    def latest(self, node: str) -> Snapshot | None:
        rows = self._db.read("SELECT node, collected_at, doc FROM node_snapshots WHERE node = ? "
                             "ORDER BY collected_at DESC, id DESC LIMIT 1", (node,))
        return Snapshot(*rows[0]) if rows else None

    def since(self, node: str, since: float) -> list[Snapshot]:
        """The node's snapshots from `since` (unix s) on, preceded by the last one before it (what the first
        change in the window changed from), oldest first."""
        before = self._db.read("SELECT node, collected_at, doc FROM node_snapshots WHERE node = ? AND "
                               "collected_at < ? ORDER BY collected_at DESC, id DESC LIMIT 1", (node, since))
        after = self._db.read("SELECT node, collected_at, doc FROM node_snapshots WHERE node = ? AND "
                              "collected_at >= ? ORDER BY collected_at, id", (node, since))
        return [Snapshot(*r) for r in (*before, *after)]
