"""Flap control for `jueying check`: how many runs in a row each finding held (check_state), and how many
runs in a row each node was clean (node_clean), so one bad sample neither pages nor drains, and one good
sample does not resume."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jueying_cli.store.db import Database

_NO_GPU = -1  # check_state.gpu is part of the primary key, so "not about one GPU" is stored as -1


@dataclass(frozen=True)
class FindingKey:
    """What makes two runs' findings "the same": node, check, GPU index (None: not about one GPU), code."""

    node: str
    check: str
    gpu: int | None
    code: str


@dataclass(frozen=True)
class SeenFinding:
    """A non-OK finding of this run, at its level (checks.Level as int)."""

    key: FindingKey
    level: int


@dataclass(frozen=True)
class FindingState:
    """A stored finding: its level, runs in a row at that level, first and last seen (unix s)."""

    key: FindingKey
    level: int
    consecutive: int
    first_seen: float
    last_seen: float


_Row = tuple[str, str, int, str]


def _row(key: FindingKey) -> _Row:
    return key.node, key.check, _NO_GPU if key.gpu is None else key.gpu, key.code


def _key(node: str, check: str, gpu: int, code: str) -> FindingKey:
    return FindingKey(node, check, None if gpu == _NO_GPU else gpu, code)


class Flap:
    def __init__(self, db: Database) -> None:
        self._db = db

    def track_findings(self, nodes: Iterable[str], findings: Iterable[SeenFinding],
                       now: float) -> dict[FindingKey, int]:
        """Record this run's non-OK findings for `nodes` (now: unix s) and return how many consecutive runs
        each has held at its level. Findings of these nodes not seen now are forgotten, so a result must
        hold without a break to count; other nodes' state is left alone."""
        current = {_row(f.key): (f.key, f.level) for f in findings}
        counts: dict[FindingKey, int] = {}
        with self._db.transaction() as tx:
            for node in set(nodes):
                rows = tx.execute("SELECT check_name, gpu, code FROM check_state WHERE node = ?", (node,))
                gone = {(node, c, g, code) for c, g, code in rows.fetchall()} - current.keys()
                for row in gone:
                    tx.execute("DELETE FROM check_state WHERE node = ? AND check_name = ? AND gpu = ? AND code = ?",
                               row)
            for row, (key, level) in current.items():
                old = tx.execute("SELECT level, consecutive FROM check_state WHERE node = ? AND check_name = ? "
                                 "AND gpu = ? AND code = ?", row).fetchone()
                count = old[1] + 1 if old is not None and old[0] == level else 1
                tx.execute("INSERT INTO check_state (node, check_name, gpu, code, level, consecutive, first_seen, "
                           "last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node, check_name, gpu, code) DO "
                           "UPDATE SET level = excluded.level, consecutive = excluded.consecutive, "
                           "last_seen = excluded.last_seen, first_seen = CASE WHEN excluded.consecutive = 1 "
                           "THEN excluded.first_seen ELSE check_state.first_seen END",
                           (*row, level, count, now, now))
                counts[key] = count
        return counts

    def findings(self, node: str) -> list[FindingState]:
        """A node's stored findings, by check, GPU and code."""
        rows = self._db.read("SELECT node, check_name, gpu, code, level, consecutive, first_seen, last_seen "
                             "FROM check_state WHERE node = ? ORDER BY check_name, gpu, code", (node,))
        return [FindingState(_key(n, c, g, code), level, consecutive, first, last)
                for n, c, g, code, level, consecutive, first, last in rows]

    def track_clean(self, clean: Mapping[str, bool]) -> dict[str, int]:
        """{node: all OK this run} -> {node: consecutive all-OK runs} (a run with any finding resets it to 0)."""
        counts = {}
        with self._db.transaction() as tx:
            for node, ok in clean.items():
                row = tx.execute("SELECT clean_runs FROM node_clean WHERE node = ?", (node,)).fetchone()
                count = (row[0] + 1 if row else 1) if ok else 0
                tx.execute("INSERT INTO node_clean (node, clean_runs) VALUES (?, ?) ON CONFLICT (node) "
                           "DO UPDATE SET clean_runs = excluded.clean_runs", (node, count))
                counts[node] = count
        return counts

    def clean_runs(self, node: str) -> int:
        """Consecutive all-OK runs of one node as stored (0 when it never ran clean)."""
        rows = self._db.read("SELECT clean_runs FROM node_clean WHERE node = ?", (node,))
        return int(rows[0][0]) if rows else 0
