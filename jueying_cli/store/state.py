"""`Store`: the state database as callers open and close it, one attribute per table family."""

from __future__ import annotations

from pathlib import Path

from jueying_cli.store.audit import Audit
from jueying_cli.store.db import Database, default_path, open_database
from jueying_cli.store.drills import DrillJournals
from jueying_cli.store.flap import Flap
from jueying_cli.store.history import History
from jueying_cli.store.ledger import Ledger
from jueying_cli.store.lock import NodeLocks, RunLock
from jueying_cli.store.snapshots import Snapshots


class Store:
    """Open (create, migrate) the state database at `path` (default: default_path()); close() when done.

    Raises StateDbError for a database written by a newer jueying, without touching it, and for one SQLite
    cannot use (naming the file and what to do). `readonly`: never write (log, history)."""

    def __init__(self, path: Path | None = None, *, readonly: bool = False) -> None:
        self.path = path or default_path()
        self.db: Database = open_database(self.path, readonly=readonly)
        self.history = History(self.db)
        self.flap = Flap(self.db)
        self.ledger = Ledger(self.db)
        self.audit = Audit(self.db)
        self.snapshots = Snapshots(self.db)
        self.drills = DrillJournals(self.db)
        # per-node change locks, in a directory beside the database file (state.db.locks/)
        self.node_locks = NodeLocks(self.path.with_name(self.path.name + ".locks"))

    def cap_lock(self) -> RunLock:
        """The lock a run holds from checking max_unavailable until its drains are made (not yet taken)."""
        return RunLock(self.node_locks.directory / "cap.lock")

    def drill_locks(self) -> NodeLocks:
        """Per-node locks a drill holds for its whole run (state.db.locks/drill/): two drills never act on
        one node at once. Apart from the change locks, so the drill's own drains can take those."""
        return NodeLocks(self.node_locks.directory / "drill")

    def close(self) -> None:
        self.node_locks.release_all()
        self.db.close()
