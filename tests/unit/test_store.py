"""The state database: history rows, retention, and a `jueying status` killed mid-write."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jueying_cli.status.history import history_changes
from jueying_cli.store import HistoryRow, Store
from tests.conftest import REPO, run_jueying


def row(node: str, at: float, status: str = "ok", lost: int = 0, driver: str = "550.127.05") -> HistoryRow:
    return HistoryRow(node, at, status, None, 8 - lost, lost, 0, 0, 0, 0, 0, driver, "12.4", "6.1")


def test_history_keeps_order_and_retention_drops_old_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    now = time.time()
    store.history.record([row("n1", now - 40 * 86400), row("n2", now - 40 * 86400)])
    store.history.record([row("n1", now - 10), row("n2", now - 10)])
    assert [r.collected_at for r in store.history.read("n1")] == [now - 10]  # 40-day-old rows dropped (30-day default)
    store.history.record([row("n1", now - 5, "degraded", lost=1)], retention_days=0)
    store.history.record([row("n1", now - 400 * 86400)], retention_days=0)  # 0 keeps everything
    assert [r.status for r in store.history.read("n1")] == ["ok", "ok", "degraded"]
    store.close()


def test_history_changes_shows_first_and_every_change() -> None:
    rows = [row("n", 1), row("n", 2), row("n", 3, "degraded", 1), row("n", 4, "degraded", 1), row("n", 5),
            row("n", 6, driver="560.1")]
    assert [r.collected_at for r in history_changes(rows)] == [1, 3, 5, 6]


NODES = 150  # unreachable nodes (a closed port on 127.0.0.1: refused at once), plus this machine


@pytest.fixture
def killable_status(tmp_path: Path) -> dict[str, str]:
    """An inventory of NODES nodes that refuse at once and this machine: `jueying status` records NODES + 1
    history rows in about a second, spread over several database pages (so its write takes many syscalls)."""
    with socket.socket() as sock:  # a port nothing listens on: connect() is refused, nothing leaves loopback
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(f"vars: {{address: 127.0.0.1, ssh_port: {port}}}\nnodes:\n"
                         + "".join(f"  n{i:03d}: {{}}\n" for i in range(NODES)) + "  here: {local: true}\n")
    (tmp_path / "ssh_config").write_text("")
    return {"JUEYING_INVENTORY": str(inventory), "JUEYING_SSH_CONFIG": str(tmp_path / "ssh_config"),
            "JUEYING_STATE_DB": str(tmp_path / "state.db")}


def _status_under_strace(env: dict[str, str], trace: Path, kill_at: int | None) -> None:
    """`jueying status` traced on its writes to the state DB (-P: the file and its WAL); with `kill_at`,
    strace delivers SIGKILL as the process enters its kill_at-th such write (a moment chosen, not a race)."""
    db = env["JUEYING_STATE_DB"]
    inject = ["-e", f"inject=pwrite64:signal=SIGKILL:when={kill_at}"] if kill_at else []
    argv = ["strace", "-f", "-qq", "-y", "-o", str(trace), "-P", db, "-P", f"{db}-wal", "-e", "trace=pwrite64",
            *inject, sys.executable, "-m", "jueying_cli", "status", "--no-fold"]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    full_env.update(env, PYTHONPATH=str(REPO))
    subprocess.run(argv, env=full_env, capture_output=True, timeout=300, check=False, cwd=REPO)


def _writes(trace: Path) -> list[str]:
    """The file of each write, in order, from strace's log ("...-wal" or the database itself)."""
    return [line.split("<", 1)[1].split(">", 1)[0] for line in trace.read_text().splitlines()
            if "pwrite64(" in line]


def _history_rows(env: dict[str, str], node: str) -> int:
    """How many collections `jueying history` shows for the node (it must read the database without error)."""
    shown = run_jueying(["history", node, "--all", "--json", "-n", "1000"], env)
    assert shown.rc == 0, shown.stderr
    return len(shown.json()["data"]["rows"])


def test_a_status_killed_mid_write_leaves_all_or_none_of_its_rows(killable_status: dict[str, str],
                                                                  tmp_path: Path) -> None:
    """SIGKILL a real `jueying status` at a spread of moments inside its history write: while the commit's WAL
    frames are written (its rows must all be missing) and while the WAL is copied into the database after the
    commit (all present). After each, the database is intact and `jueying history` reads it."""
    assert shutil.which("strace"), "strace is needed (scripts/test installs it)"
    env, db = killable_status, killable_status["JUEYING_STATE_DB"]
    first = run_jueying(["status"], env)  # creates the database (its schema is not this test's subject)
    assert first.rc == 1 and _history_rows(env, "n000") == 1, first.stderr
    _status_under_strace(env, tmp_path / "full.trace", None)  # one whole run, to learn its writes
    writes = _writes(tmp_path / "full.trace")
    in_wal = sum(1 for w in writes if w.endswith("-wal"))
    assert in_wal >= 8 and len(writes) > in_wal, writes  # a commit of many writes, then a checkpoint
    expected = 2  # collections recorded so far
    kill_points = sorted({1, in_wal // 2, in_wal - 1, in_wal, in_wal + 1, len(writes)})
    outcomes = []
    for k in kill_points:
        trace = tmp_path / f"kill{k}.trace"
        _status_under_strace(env, trace, k)
        assert "+++ killed by SIGKILL +++" in trace.read_text(), f"write {k} of {len(writes)} never came"
        killed_in = _writes(trace)[-1]  # the write the process was entering when it died (never made)
        check = sqlite3.connect(db)
        try:
            assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            rows = check.execute("SELECT COUNT(*) FROM facts_history").fetchone()[0]
        finally:
            check.close()
        recorded = rows - expected * (NODES + 1)
        # one transaction: every row of the run, or none (never some)
        assert recorded in (0, NODES + 1), f"killed at write {k} ({killed_in}): {recorded} rows of {NODES + 1}"
        # the commit is the run's last write to the WAL: killed before it, nothing; while checkpointing, all
        assert recorded == (0 if killed_in.endswith("-wal") else NODES + 1), (k, killed_in, recorded)
        expected += recorded // (NODES + 1)
        assert _history_rows(env, "n000") == _history_rows(env, f"n{NODES - 1:03d}") == expected
        outcomes.append(recorded)
    assert 0 in outcomes and NODES + 1 in outcomes, outcomes  # killed mid-commit and after it, both seen
    after = run_jueying(["status"], env)  # and the database is still written as before
    assert after.rc == 1 and _history_rows(env, "here") == expected + 1, after.stderr
