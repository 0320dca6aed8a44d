"""The state database's schema version: a database written by 5e03a8e's code (user_version 0, see
tests/data/state/make_5e03a8e_db.py) is stamped and migrated with every row kept, a second open writes
nothing, a database from a newer jueying is refused byte-for-byte untouched, and processes creating one
database at the same moment all succeed."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jueying_cli.errors import ExitCode, StateDbError
from jueying_cli.store import (
    LATEST_VERSION,
    MIGRATIONS,
    AuditEntry,
    FindingKey,
    FindingState,
    HistoryRow,
    LedgerEntry,
    RunOwner,
    SeenFinding,
    Settlement,
    Store,
)
from jueying_cli.store.audit import process_started_at
from tests.conftest import REPO, run_jueying

LEGACY = REPO / "tests" / "data" / "state" / "state-5e03a8e.db"
TABLES = ("facts_history", "check_state", "node_clean", "ledger", "audit")
NEW_AUDIT_COLUMNS = ["run_pid", "run_host", "run_started_at"]

# Exactly what make_5e03a8e_db.py wrote, as raw rows in column order.
RAW = {
    "facts_history": [
        (1, "gpu001", 1_790_000_000.0, "ok", None, 8, 0, 0, 3, 0, 17, 0, "550.54.15", "12.4", "6.1.0-18-amd64"),
        (2, "gpu001", 1_790_000_060.0, "degraded", "GPU 3 lost", 7, 1, 0, 3, 0, 17, 1, "550.54.15", "12.4",
         "6.1.0-18-amd64"),
        (3, "gpu002", 1_790_000_000.0, "unreachable", "connection refused", None, None, None, None, None, None,
         None, None, None, None),
    ],
    "check_state": [("gpu001", "ecc", 3, "ECC_DBE", 2, 2, 1_790_000_000.0, 1_790_000_060.0)],
    "node_clean": [("gpu001", 0), ("gpu002", 2)],
    "ledger": [("gpu003", 1, "jueying: xid 79 [ops]", "ops", 1_790_000_100.0),
               ("gpu004", 0, None, None, 1_790_000_110.0)],
    "audit": [
        (1, 1_790_000_100.0, "ops", "drain", "gpu003", "builtin", "jueying: xid 79 [ops]", "in service", None,
         "drained (jueying ledger)", "jueying: xid 79 [ops]", "done", None, "run1"),
        (2, 1_790_000_200.0, "cron", "drain", "gpu005", "slurm", "jueying: auto: ecc ECC_DBE gpu3 [jueying-check]",
         "IDLE", None, None, None, "pending", None, "run2"),
    ],
}
ORDER = {"facts_history": "id", "check_state": "node, check_name, gpu, code", "node_clean": "node",
         "ledger": "node", "audit": "id"}
AUDIT_1 = AuditEntry(1_790_000_100.0, "ops", "drain", "gpu003", "builtin", "jueying: xid 79 [ops]", "in service",
                     None, "drained (jueying ledger)", "jueying: xid 79 [ops]", "done", None, "run1", 1, None)
AUDIT_2 = AuditEntry(1_790_000_200.0, "cron", "drain", "gpu005", "slurm",
                     "jueying: auto: ecc ECC_DBE gpu3 [jueying-check]", "IDLE", None, None, None, "pending", None,
                     "run2", 2, None)


def raw(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read with plain sqlite3, not through the code under test."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def columns(path: Path, table: str) -> list[str]:
    return [row[1] for row in raw(path, f"PRAGMA table_info({table})")]


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    shutil.copyfile(LEGACY, path)
    assert raw(path, "PRAGMA user_version") == [(0,)]  # the fixture is what we think it is
    assert "run_pid" not in columns(path, "audit")
    return path


def test_migrations_are_numbered_one_by_one() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))
    assert LATEST_VERSION == 4


def test_a_5e03a8e_database_is_migrated_and_keeps_every_row(legacy: Path) -> None:
    store = Store(legacy)
    try:
        assert store.db.user_version() == LATEST_VERSION
        assert store.history.read("gpu001") == [HistoryRow(*r[1:]) for r in RAW["facts_history"][:2]]
        assert store.history.read("gpu002") == [HistoryRow(*RAW["facts_history"][2][1:])]
        assert store.flap.findings("gpu001") == [
            FindingState(FindingKey("gpu001", "ecc", 3, "ECC_DBE"), 2, 2, 1_790_000_000.0, 1_790_000_060.0)]
        assert (store.flap.clean_runs("gpu001"), store.flap.clean_runs("gpu002")) == (0, 2)
        assert store.ledger.read(["gpu003", "gpu004", "gpu005"]) == {
            "gpu003": LedgerEntry("gpu003", True, "jueying: xid 79 [ops]", "ops", 1_790_000_100.0),
            "gpu004": LedgerEntry("gpu004", False, None, None, 1_790_000_110.0)}
        assert store.audit.log() == [AUDIT_1, AUDIT_2]
        assert store.audit.pending() == [AUDIT_2]
    finally:
        store.close()
    assert raw(legacy, "PRAGMA user_version") == [(LATEST_VERSION,)]
    assert raw(legacy, "PRAGMA journal_mode") == [("wal",)]
    assert raw(legacy, "PRAGMA integrity_check") == [("ok",)]
    for table in TABLES:
        assert raw(legacy, f"SELECT * FROM {table} ORDER BY {ORDER[table]}") == [
            (*row, None, None, None) if table in ("audit", "facts_history") else row for row in RAW[table]], table
    assert columns(legacy, "audit")[-3:] == NEW_AUDIT_COLUMNS
    assert raw(legacy, "SELECT run_pid, run_host, run_started_at FROM audit") == [(None, None, None)] * 2


def test_a_new_database_gets_the_same_schema_as_a_migrated_one(legacy: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "new" / "state.db"
    Store(fresh).close()
    Store(legacy).close()
    assert raw(fresh, "PRAGMA user_version") == [(LATEST_VERSION,)]
    for table in TABLES:
        assert raw(fresh, f"PRAGMA table_info({table})") == raw(legacy, f"PRAGMA table_info({table})"), table
    assert raw(fresh, "SELECT type, name FROM sqlite_master ORDER BY name") == raw(
        legacy, "SELECT type, name FROM sqlite_master ORDER BY name")


def test_the_migrated_database_takes_new_writes(legacy: Path) -> None:
    now = time.time()
    store = Store(legacy)
    try:
        store.history.record([HistoryRow("gpu001", now, "ok", None, 8, 0, 0, 3, 0, 17, 0, "560.28.03", "12.6",
                                         "6.1.0-18-amd64")], retention_days=0)
        assert [r.collected_at for r in store.history.read("gpu001")] == [1_790_000_000.0, 1_790_000_060.0, now]
        ecc, xid = FindingKey("gpu001", "ecc", 3, "ECC_DBE"), FindingKey("gpu001", "xid", None, "XID_79")
        assert store.flap.track_findings(["gpu001"], [SeenFinding(ecc, 2), SeenFinding(xid, 2)], now) == {
            ecc: 3, xid: 1}
        assert [f.key for f in store.flap.findings("gpu001")] == [ecc, xid]
        assert store.flap.track_clean({"gpu002": True, "gpu001": False}) == {"gpu002": 3, "gpu001": 0}
        store.ledger.write(["gpu004"], drained=True, reason="jueying: fan [ops]", user="ops", now=now)
        assert store.ledger.read(["gpu004"])["gpu004"] == LedgerEntry("gpu004", True, "jueying: fan [ops]", "ops",
                                                                      now)
        [new_id] = store.audit.intent([AuditEntry(at=now, actor="ops", action="drain", node="gpu004",
                                                  backend="builtin", reason="jueying: fan [ops]", run_id="run3")])
        store.audit.finish([Settlement(new_id, "done", "drained (jueying ledger)", "jueying: fan [ops]"),
                            Settlement(2, "not_done", "IDLE", None, "settled after an interrupted run")])
    finally:
        store.close()
    store = Store(legacy)  # and it is all there after a reopen
    try:
        entries = store.audit.log()
        assert entries[:1] == [AUDIT_1]
        assert (entries[1].result, entries[1].message, entries[1].owner) == (
            "not_done", "settled after an interrupted run", None)
        me = entries[2].owner
        assert me is not None and (me.pid, me.host) == (os.getpid(), socket.gethostname())
        assert me.started_at == process_started_at(os.getpid()) and 0 < me.started_at <= time.time()
        assert (entries[2].id, entries[2].result, entries[2].run_id) == (new_id, "done", "run3")
        assert store.audit.pending() == []
    finally:
        store.close()
    assert raw(legacy, f"SELECT run_pid, run_host, run_started_at FROM audit WHERE id = {new_id}") == [
        (os.getpid(), socket.gethostname(), me.started_at)]
    assert raw(legacy, "SELECT gpu FROM check_state WHERE code = 'XID_79'") == [(-1,)]


def test_an_intent_keeps_the_owner_it_is_given(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    try:
        other = RunOwner(4242, "ctl02", 1_790_000_000.5)
        store.audit.intent([AuditEntry(at=1.0, actor="ops", action="drain", node="n1", backend="slurm", owner=other)])
        assert [e.owner for e in store.audit.pending()] == [other]
    finally:
        store.close()


def test_opening_a_current_database_again_writes_nothing(legacy: Path) -> None:
    Store(legacy).close()
    before = files(legacy.parent)
    assert sorted(before) == ["state.db"]  # the last close checkpointed and removed the WAL
    reader = sqlite3.connect(legacy)  # held open, so the WAL stays and shows any frame a second open writes
    try:
        reader.execute("SELECT COUNT(*) FROM audit").fetchall()
        store = Store(legacy)
        assert store.db.user_version() == LATEST_VERSION
        store.close()
        assert (legacy.parent / "state.db-wal").stat().st_size == 0
    finally:
        reader.close()
    assert files(legacy.parent) == before


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_a_database_from_a_newer_jueying_is_refused_untouched(legacy: Path, journal: str) -> None:
    if journal == "wal":
        Store(legacy).close()  # migrated, then a newer jueying moved it on
    db = sqlite3.connect(legacy)
    db.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    db.close()
    assert raw(legacy, "PRAGMA journal_mode") == [(journal,)]
    before = files(legacy.parent)
    with pytest.raises(StateDbError) as refused:
        Store(legacy)
    assert refused.value.exit_code == ExitCode.BAD_INPUT
    assert f"schema version {LATEST_VERSION + 1} is newer" in str(refused.value)
    assert str(legacy) in str(refused.value)
    assert files(legacy.parent) == before
    cli = run_jueying(["history", "gpu001"], env={"JUEYING_STATE_DB": str(legacy)})
    assert cli.rc == int(ExitCode.BAD_INPUT), cli
    assert "newer than this jueying knows" in cli.stderr
    assert files(legacy.parent) == before


def test_tables_that_are_not_jueyings_are_not_stamped(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, at REAL)")
    db.close()
    with pytest.raises(StateDbError, match=r"audit lacks columns"):
        Store(path)
    assert raw(path, "PRAGMA user_version") == [(0,)]
    assert columns(path, "audit") == ["id", "at"]
    assert raw(path, "SELECT name FROM sqlite_master WHERE type = 'table'") == [("audit",)]


_OPENER = r"""
import sys, time, traceback
from pathlib import Path
sys.path.insert(0, REPO)
from jueying_cli.store import HistoryRow, Store
me, n, rounds, base = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
failed = 0
for r in range(rounds):
    (base / f"ready-{r}-{me}").touch()
    deadline = time.monotonic() + 60
    while len(list(base.glob(f"ready-{r}-*"))) < n:  # every opener waits here, then all go at once
        if time.monotonic() > deadline:
            sys.exit("barrier timeout")
        time.sleep(0.0005)
    try:
        store = Store(base / f"db{r}.db")
        store.history.record([HistoryRow(f"p{me}", time.time(), "ok", *[None] * 11)], retention_days=0)
        store.close()
    except Exception:
        failed += 1
        traceback.print_exc()
print("failed", failed)
"""


def test_processes_creating_one_database_at_once_all_succeed(tmp_path: Path) -> None:
    """Four processes open each of 60 brand-new files at the same moment (5e03a8e's code lost a few of
    these to `database is locked` at PRAGMA journal_mode = WAL)."""
    openers, rounds = 4, 60
    script = _OPENER.replace("REPO", repr(str(REPO)))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i), str(openers), str(rounds), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(openers)]
    try:
        outputs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert (p.returncode, out.strip()) == (0, "failed 0"), err[-2000:]
    for r in range(rounds):
        path = tmp_path / f"db{r}.db"
        assert raw(path, "PRAGMA user_version") == [(LATEST_VERSION,)]
        assert raw(path, "SELECT node FROM facts_history ORDER BY node") == [(f"p{i}",) for i in range(openers)]
        assert columns(path, "audit")[-3:] == NEW_AUDIT_COLUMNS
