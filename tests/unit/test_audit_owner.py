"""Who may settle a pending audit entry (store.audit.settle_refusal), and the per-node locks (store.NodeLocks),
with real processes: a live one, one that ended, a zombie, a reused pid, another host, and a lock holder
killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jueying_cli.store import AuditEntry, RunOwner, Settlement, Store
from jueying_cli.store.audit import OTHER_HOST_AGE_S, process_alive, process_started_at, settle_refusal
from jueying_cli.store.lock import NodeLocks
from tests.conftest import REPO

ME = RunOwner.current()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def owner_of(proc: subprocess.Popen[bytes]) -> RunOwner:
    started = process_started_at(proc.pid)
    assert started is not None
    return RunOwner(proc.pid, ME.host, started)


def test_a_live_run_on_this_host_is_never_settled(sleeper: subprocess.Popen[bytes]) -> None:
    why = settle_refusal(owner_of(sleeper), time.time() - 10 * OTHER_HOST_AGE_S, ME, time.time())
    assert why == f"run pid {sleeper.pid} on this host is still running"  # however old the entry


def test_a_run_that_ended_is_settled_and_so_is_a_zombie(sleeper: subprocess.Popen[bytes]) -> None:
    owner = owner_of(sleeper)
    sleeper.kill()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{sleeper.pid}/stat").read_text().split(") ")[1][0] != "Z":  # killed, not yet reaped
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not process_alive(owner.pid, owner.started_at)
    assert settle_refusal(owner, time.time(), ME, time.time()) is None
    sleeper.wait()
    assert settle_refusal(owner, time.time(), ME, time.time()) is None


def test_a_reused_pid_is_another_process(sleeper: subprocess.Popen[bytes]) -> None:
    owner = owner_of(sleeper)
    assert process_alive(owner.pid, owner.started_at + 0.5)  # the kernel's boot time moves a little
    older = RunOwner(owner.pid, owner.host, owner.started_at - 30)  # the entry's run started 30 s before it
    assert settle_refusal(older, time.time(), ME, time.time()) is None


def test_this_runs_own_entries_and_another_hosts() -> None:
    now = time.time()
    assert settle_refusal(ME, now, ME, now) == "this run's own"
    elsewhere = RunOwner(1, ME.host + "-other", 1.0)
    assert "another host's entries are settled once 24 h old" in str(settle_refusal(elsewhere, now - 3600, ME, now))
    assert settle_refusal(elsewhere, now - OTHER_HOST_AGE_S, ME, now) is None
    assert settle_refusal(None, now, ME, now) is None  # written before schema 2: no run recorded


def test_pending_filters_by_node_and_finish_counts(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    try:
        ids = store.audit.intent([AuditEntry(at=1.0, actor="ops", action="drain", node=n, backend="builtin")
                                       for n in ("n1", "n2", "n3")])
        assert [e.node for e in store.audit.pending(["n3", "n1"])] == ["n1", "n3"]
        assert store.audit.finish([Settlement(ids[0], "done"), Settlement(ids[1], "done")]) == 2
        assert store.audit.finish([Settlement(ids[0], "not_done"), Settlement(ids[2], "done")]) == 1
        assert [(e.node, e.result) for e in store.audit.log()] == [("n1", "done"), ("n2", "done"),
                                                                      ("n3", "done")]
    finally:
        store.close()


HOLD = """
import sys, time
from pathlib import Path
from jueying_cli.store.lock import NodeLocks
locks = NodeLocks(Path(sys.argv[1]))
assert locks.try_lock("gpu01")
print("held", flush=True)
time.sleep(60)
"""


def test_a_node_lock_excludes_other_runs_and_dies_with_its_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "locks")], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        mine = NodeLocks(tmp_path / "locks")
        assert not mine.try_lock("gpu01")
        assert mine.holder("gpu01").startswith(f"pid {holder.pid} since ")
        assert mine.try_lock("gpu02") and mine.try_lock("gpu02")  # another node; and ours again
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        assert mine.try_lock("gpu01")  # the kernel freed the dead run's lock
        other = NodeLocks(tmp_path / "locks")  # independent opens conflict, even within one process
        assert not other.try_lock("gpu01")
        mine.release_all()
        assert other.try_lock("gpu01")
        other.release_all()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
