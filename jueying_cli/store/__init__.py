"""jueying's state: a SQLite database in WAL mode with a schema version (history of key facts, flap state,
the builtin drain ledger, the audit log), and the run lock that lives beside it.

`Store` opens it; `store.history`, `store.flap`, `store.ledger` and `store.audit` read and write one table
family each, with the dataclasses below in and out. Only `store.db` imports sqlite3.
"""

from jueying_cli.store.audit import AuditEntry, RunOwner, Settlement
from jueying_cli.store.db import LATEST_VERSION, MIGRATIONS, default_path
from jueying_cli.store.flap import FindingKey, FindingState, SeenFinding
from jueying_cli.store.history import HistoryRow
from jueying_cli.store.ledger import LedgerEntry
from jueying_cli.store.snapshots import Snapshot
from jueying_cli.store.state import Store

__all__ = ["LATEST_VERSION", "MIGRATIONS", "AuditEntry", "FindingKey", "FindingState", "HistoryRow", "LedgerEntry",
           "RunOwner", "SeenFinding", "Settlement", "Snapshot", "Store", "default_path"]
