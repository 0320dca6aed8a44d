"""The state database file: opening it, its transactions and its schema version. The only module that
imports sqlite3; the table modules get a `Database` and speak SQL through it.

Safe for cron and a person at once: WAL lets readers run beside one writer, writers wait (busy timeout)
instead of failing, and every write is one `BEGIN IMMEDIATE` transaction, so a crash mid-write leaves
either all of it or none.

The schema version is `PRAGMA user_version`. Each migration runs in its own immediate transaction that
re-reads the version first, so two processes opening an old (or brand-new) database at once apply each
step exactly once. A database from a newer jueying is refused before anything is written to it.

Every SQLite error (a damaged or foreign file, a file jueying may not write, a full disk) comes out as a
StateDbError naming the file and what to do (the CLI exits 2; `jueying check` says UNKNOWN). Commands that
only read (log, history) open the file read-only (`file:...?mode=ro`), so a database they may not write
still answers them; a missing file reads as an empty one and is not created.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from jueying_cli.errors import StateDbError

BUSY_TIMEOUT_MS = 30_000
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
T = TypeVar("T")


def default_path() -> Path:
    """$JUEYING_STATE_DB, else $XDG_STATE_HOME/jueying/state.db (~/.local/state/...)."""
    explicit = os.environ.get("JUEYING_STATE_DB")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "jueying" / "state.db"


# ---------------------------------------------------------------- migrations

_V1_TABLES = """
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

# The columns version 1 has; an unversioned database must have at least these to be taken as version 1.
_V1_COLUMNS = {
    "facts_history": {"id", "node", "collected_at", "status", "reason", "gpus_present", "gpus_lost",
                      "ecc_uncorrected_volatile", "ecc_corrected_volatile", "ecc_uncorrected_aggregate",
                      "ecc_corrected_aggregate", "remapped_rows_pending", "driver_version", "cuda_driver_version",
                      "kernel"},
    "check_state": {"node", "check_name", "gpu", "code", "level", "consecutive", "first_seen", "last_seen"},
    "node_clean": {"node", "clean_runs"},
    "ledger": {"node", "drained", "reason", "user", "since"},
    "audit": {"id", "at", "actor", "action", "node", "backend", "reason", "before_state", "before_reason",
              "after_state", "after_reason", "result", "message", "run_id"},
}


def _v1_tables(db: sqlite3.Connection) -> None:
    """The layout from before schema versions. A database written then (user_version 0) already has the
    tables, so this only checks their columns and the caller stamps it 1; an empty one gets them."""
    for statement in (s.strip() for s in _V1_TABLES.split(";")):
        if statement:
            db.execute(statement)
    for table, wanted in _V1_COLUMNS.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if not wanted <= have:
            raise StateDbError(f"table {table} lacks columns {sorted(wanted - have)}: not a state database "
                               "this jueying can migrate; nothing migrated")


def _v2_audit_owner(db: sqlite3.Connection) -> None:
    """Audit entries name the run that wrote them (pid, host, process start in unix s), so a later
    reconcile can settle only a dead run's pending entries. Old rows keep NULL: owner unknown."""
    db.execute("ALTER TABLE audit ADD COLUMN run_pid INTEGER")
    db.execute("ALTER TABLE audit ADD COLUMN run_host TEXT")
    db.execute("ALTER TABLE audit ADD COLUMN run_started_at REAL")


def _v3_drill_runs(db: sqlite3.Connection) -> None:
    """Drill journals (`jueying drill`): one row per run, its JSON journal replaced whole after every step
    (and before each action starts), so a run killed at any point leaves what `drill recover` needs."""
    db.execute("""CREATE TABLE drill_runs (
        run_id TEXT PRIMARY KEY,
        drill TEXT NOT NULL,
        started_at REAL NOT NULL,            -- unix seconds
        updated_at REAL NOT NULL,
        status TEXT NOT NULL,                -- running, completed, failed, aborted, interrupted, skipped
        rollback_status TEXT NOT NULL,       -- pending, not_needed, succeeded, failed, skipped
        targets TEXT NOT NULL,               -- folded node set of every target, for `drill list`
        run_pid INTEGER NOT NULL,
        run_host TEXT NOT NULL,
        journal TEXT NOT NULL                -- the JSON journal document
    )""")
    db.execute("CREATE INDEX drill_runs_started ON drill_runs (started_at)")


def _v4_fleet_audit(db: sqlite3.Connection) -> None:
    """For `jueying audit --since` and `jueying capacity`: facts_history keeps each collection's GPU energy
    counter and power (summed over the node's GPUs), and node_snapshots keeps a node's audited attributes and
    identity (versions, serials, UUIDs, counts) each time they change. Old rows keep NULL: not recorded.
    Its own function so the migration can be renumbered when branches merge."""
    db.execute("ALTER TABLE facts_history ADD COLUMN energy_consumed_j REAL")  # NVML counter since driver load
    db.execute("ALTER TABLE facts_history ADD COLUMN power_watts REAL")
    db.execute("ALTER TABLE facts_history ADD COLUMN power_limit_watts REAL")
    db.execute("""CREATE TABLE IF NOT EXISTS node_snapshots (
        id INTEGER PRIMARY KEY,
        node TEXT NOT NULL,
        collected_at REAL NOT NULL,      -- unix seconds, the node's own clock
        doc TEXT NOT NULL                -- JSON: audited attributes and identity, written only when changed
    )""")
    db.execute("CREATE INDEX IF NOT EXISTS node_snapshots_node_time ON node_snapshots (node, collected_at)")


@dataclass(frozen=True)
class Migration:
    version: int  # user_version once applied
    summary: str
    apply: Callable[[sqlite3.Connection], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "history, flap state, clean runs, ledger, audit (an unversioned database is stamped)", _v1_tables),
    Migration(2, "audit: run_pid, run_host, run_started_at (the run that wrote the entry)", _v2_audit_owner),
    Migration(3, "drill_runs: drill journals", _v3_drill_runs),
    Migration(4, "facts_history: energy and power; node_snapshots: audited attributes and identity over time",
              _v4_fleet_audit),
)
LATEST_VERSION = MIGRATIONS[-1].version


# ---------------------------------------------------------------- the connection

class Database:
    """One connection to the state database, at LATEST_VERSION. Not shared between threads."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock up front, so two writers queue instead of deadlocking."""
        try:
            with _immediate(self._conn) as conn:
                yield conn
        except sqlite3.Error as exc:
            raise _usable_error(exc, self.path) from exc

    def read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Rows of one query in its own (autocommit) read transaction."""
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _usable_error(exc, self.path) from exc

    def user_version(self) -> int:
        """The schema version (PRAGMA user_version): LATEST_VERSION once opened."""
        return _version(self._conn)

    def close(self) -> None:
        self._conn.close()


def open_database(path: Path, *, readonly: bool = False) -> Database:
    """Open (creating if need be) and migrate to LATEST_VERSION; StateDbError for a newer database, and for
    a file SQLite cannot use (damaged, not SQLite, not writable...), naming the file and what to do.

    `readonly` (log, history): a missing file reads as an empty database (in memory) and is not created; a
    file this process may not write (permissions, a read-only mount) is opened with mode=ro and never
    written. One it may write is opened as usual, so its WAL files are cleaned up on close as always."""
    try:
        if readonly and not _writable(path):
            return _open_readonly(path)
        return _open_writable(path)
    except sqlite3.Error as exc:
        raise _usable_error(exc, path) from exc
    except OSError as exc:
        raise StateDbError(f"cannot open the state database: {exc.strerror or exc}; set JUEYING_STATE_DB to a "
                           "file in a directory you can write", path=str(path)) from exc


def _writable(path: Path) -> bool:
    """Whether this process may write the file and create files beside it (the -wal and -shm files)."""
    return path.exists() and os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """mode=ro; a WAL database in a directory we may not write (no -shm file to share) only opens as immutable
    (no locking: fine for reading a log, and what SQLite offers for read-only media)."""
    uri = path.resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        _retry_busy(lambda: _version(conn))
    except sqlite3.OperationalError as exc:
        conn.close()
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_CANTOPEN:
            raise
        conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
    return conn


def _open_readonly(path: Path) -> Database:
    if not path.exists():
        return _empty_in_memory(path)
    conn = _connect_readonly(path)
    try:
        version = _retry_busy(lambda: _version(conn))
        _refuse_newer(version, path)
        if version < LATEST_VERSION:
            raise StateDbError(f"schema version {version} must be upgraded to {LATEST_VERSION} before it can be "
                               "read, which needs write access: run `jueying status` once as a user who can "
                               "write it", path=str(path))
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()  # reads the schema: damage shows here
    except BaseException:
        conn.close()
        raise
    return Database(conn, path)


def _empty_in_memory(path: Path) -> Database:
    """Nothing recorded yet: an empty database at LATEST_VERSION that lives as long as the connection."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    _migrate(conn, path)
    return Database(conn, path)


def _open_writable(path: Path) -> Database:
    """The busy timeout comes with the connection (sqlite3.connect's timeout sets it before the first
    statement). The first statement only reads the version, so a newer database is refused untouched."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        _refuse_newer(_retry_busy(lambda: _version(conn)), path)
        # Switching to WAL takes an exclusive lock, and SQLite can answer SQLITE_BUSY there without
        # calling the busy handler (two processes opening a new file at once): wait for it ourselves.
        _retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchall())
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across a process crash
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return Database(conn, path)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    seen = _version(conn)
    for migration in MIGRATIONS:
        if migration.version <= seen:  # the usual case, all of them: no write lock taken at all
            continue
        with _immediate(conn):
            version = _version(conn)  # again, under the write lock: another process may have been first
            _refuse_newer(version, path)
            if version >= migration.version:
                continue
            migration.apply(conn)
            conn.execute(f"PRAGMA user_version = {int(migration.version)}")


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _refuse_newer(version: int, path: Path) -> None:
    if version > LATEST_VERSION:
        raise StateDbError(f"schema version {version} is newer than this jueying knows ({LATEST_VERSION}): "
                           "upgrade jueying, or point JUEYING_STATE_DB at another file; left unchanged",
                           path=str(path))


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (disk full, I/O error)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_WHAT_TO_DO = {
    sqlite3.SQLITE_NOTADB: "not a SQLite database, or its header is damaged",
    sqlite3.SQLITE_CORRUPT: "the file is damaged",
}


def _usable_error(exc: sqlite3.Error, path: Path) -> Exception:
    """A StateDbError saying what is wrong with the file and what to do; programming errors stay as they are."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return exc
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in _WHAT_TO_DO:
        return StateDbError(
            f"state database unusable: {_WHAT_TO_DO[code]} ({exc}). Move it aside (mv {path} {path}.damaged) "
            "and jueying starts a new one, or set JUEYING_STATE_DB to another file; the history, check "
            "counts, builtin drain ledger and audit log in the old file are then not read", path=str(path))
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN):
        return StateDbError(f"cannot write the state database ({exc}): jueying needs write access to the file "
                            "and its directory (log and history only read it); fix the permissions or set "
                            "JUEYING_STATE_DB to a writable file", path=str(path))
    if code in _BUSY_CODES:
        return StateDbError(f"state database busy for over {BUSY_TIMEOUT_MS // 1000} s ({exc}): another jueying "
                            "holds it; try again", path=str(path))
    if code == sqlite3.SQLITE_FULL:
        return StateDbError(f"state database: disk full ({exc}); free space and try again", path=str(path))
    return StateDbError(f"state database error ({exc}); if it persists, move the file aside and jueying starts "
                        "a new one", path=str(path))


def _retry_busy(step: Callable[[], T]) -> T:
    """Run `step`, retrying while SQLite says busy/locked, for up to the busy timeout (backoff 1-50 ms)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.001
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _BUSY_CODES or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
