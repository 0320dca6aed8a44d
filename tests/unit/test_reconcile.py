"""actions.apply.reconcile against a real state database and the builtin backend on local nodes (markers in a
temporary JUEYING_NODE_STATE_DIR, written by the real local transport): what it settles, and what it leaves."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jueying_cli.actions.apply import reconcile
from jueying_cli.inventory.model import Node
from jueying_cli.scheduler.builtin import BuiltinScheduler
from jueying_cli.store import AuditEntry, RunOwner, Store
from jueying_cli.store.audit import process_started_at
from jueying_cli.transport.local import LocalTransport
from jueying_cli.vocab import Backend


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setenv("JUEYING_NODE_STATE_DIR", str(tmp_path / "node"))
    opened = Store(tmp_path / "state.db")
    yield opened
    opened.close()


def gone_owner() -> RunOwner:
    """A run that has ended: a process started and reaped here."""
    proc = subprocess.Popen(["sleep", "0"])
    started = process_started_at(proc.pid) or time.time()
    proc.wait()
    return RunOwner(proc.pid, RunOwner.current().host, started)


def entry(node: str, action: str, owner: RunOwner, reason: str | None = "jueying: x [ops]") -> AuditEntry:
    return AuditEntry(at=time.time(), actor="ops", action=action, node=node, backend="builtin", reason=reason,
                      owner=owner)


def test_settles_dead_entries_from_the_marker_and_leaves_what_it_cannot_tell(store: Store, tmp_path: Path) -> None:
    local = {name: Node(name, {"local": True}) for name in ("n1", "n2")}
    builtin = BuiltinScheduler(store, LocalTransport(), local)
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "drained").write_text("jueying: x [ops]\n")  # the dead run wrote the marker, not the row
    dead = gone_owner()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        live = RunOwner(sleeper.pid, dead.host, process_started_at(sleeper.pid) or 0.0)
        store.audit.intent([entry("n1", "drain", dead), entry("n2", "failover", dead),
                            entry("gone", "drain", dead), entry("n1", "resume", live, None)])
        done = reconcile(store, {Backend.BUILTIN: builtin})
    finally:
        sleeper.kill()
        sleeper.wait()
    assert done.settled == 2
    log = {(e.node, e.action): e for e in store.audit.log()}
    assert (log["n1", "drain"].result, log["n1", "drain"].after_reason) == ("done", "jueying: x [ops]")
    assert store.ledger.read(["n1"])["n1"].reason == "jueying: x [ops]"  # the ledger caught up with the marker
    assert log["n2", "failover"].result == "unknown"
    assert log["gone", "drain"].result == "pending"  # not in the inventory: its marker cannot be read
    assert log["n1", "resume"].result == "pending"  # a live run's
    left = {e.node: why for e, why in done.left}
    assert left["gone"] == "its marker could not be read (unknown: not in the inventory); it is settled once the " \
                           "node answers"
    assert left["n1"] == f"run pid {sleeper.pid} on this host is still running"


def test_leaves_entries_of_a_node_another_run_is_changing(store: Store) -> None:
    builtin = BuiltinScheduler(store, LocalTransport(), {"n1": Node("n1", {"local": True})})
    store.audit.intent([entry("n1", "drain", gone_owner())])
    other = Store(store.path)  # another run: its own opens of the lock files
    try:
        assert other.node_locks.try_lock("n1")
        done = reconcile(store, {Backend.BUILTIN: builtin})
        assert done.settled == 0 and done.left[0][1].startswith("another run is changing it (pid ")
        other.node_locks.release(["n1"])
        assert reconcile(store, {Backend.BUILTIN: builtin}).settled == 1
    finally:
        other.close()
    assert [e.result for e in store.audit.log()] == ["not_done"]  # no marker: the drain was never made
