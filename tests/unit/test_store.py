"""The state database: history rows, retention, and a writer killed mid-transaction."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from jueying_cli.status.history import history_changes
from jueying_cli.store import HistoryRow, Store
from tests.conftest import REPO


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


def test_a_writer_killed_mid_transaction_leaves_nothing_half_written(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    Store(db).history.record([row("n1", time.time())])
    writer = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
sys.path.insert(0, {str(REPO)!r})
from jueying_cli.store import Store, HistoryRow
store = Store(__import__('pathlib').Path({str(db)!r}))
with store.db.transaction() as tx:
    for i in range(5000):
        tx.execute("INSERT INTO facts_history (node, collected_at, status) VALUES (?, ?, 'ok')",
                   ("x%d" % i, time.time()))
    print("inserted", flush=True)
    time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "inserted"
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait(timeout=30)
    check = sqlite3.connect(db)
    try:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert check.execute("SELECT COUNT(*) FROM facts_history").fetchone() == (1,)
    finally:
        check.close()
    store = Store(db)  # and the database is still writable
    store.history.record([row("n1", time.time())])
    assert len(store.history.read("n1")) == 2
    store.close()
