"""ledger: the builtin scheduler's drain state, one row per node it ever drained or resumed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jueying_cli.store.db import Database

_CHUNK = 500  # names bound per query, well under SQLite's host-parameter limit


@dataclass(frozen=True)
class LedgerEntry:
    node: str
    drained: bool
    reason: str | None  # the full `jueying: ... [user]` reason while drained
    user: str | None
    since: float  # unix s of the last change


class Ledger:
    def __init__(self, db: Database) -> None:
        self._db = db

    def read(self, nodes: Iterable[str]) -> dict[str, LedgerEntry]:
        """The entries of these nodes, by node; a node never drained through the ledger is absent."""
        wanted = list(nodes)
        found: dict[str, LedgerEntry] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start:start + _CHUNK]
            marks = ", ".join("?" for _ in chunk)  # placeholders only; the names are bound
            query = f"SELECT node, drained, reason, user, since FROM ledger WHERE node IN ({marks})"  # noqa: S608
            for node, drained, reason, user, since in self._db.read(query, chunk):
                found[node] = LedgerEntry(node, bool(drained), reason, user, since)
        return found

    def write(self, nodes: Iterable[str], *, drained: bool, reason: str | None, user: str | None,
              now: float) -> None:
        """Set these nodes drained (with reason and user) or in service, since `now` (unix s); one transaction."""
        with self._db.transaction() as tx:
            tx.executemany("INSERT INTO ledger (node, drained, reason, user, since) VALUES (?, ?, ?, ?, ?) "
                           "ON CONFLICT (node) DO UPDATE SET drained = excluded.drained, reason = excluded.reason, "
                           "user = excluded.user, since = excluded.since",
                           [(n, int(drained), reason, user, now) for n in nodes])
