"""`jueying status`, `inventory` and `history` over SSH: the probe shipped to real sshd nodes with simulated GPUs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import SimCluster
from tests.conftest import REPO, Result, next_envelope, run_jueying, start_watch, stop_watch

NODES = 12


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("status-cluster"), NODES, prefix="gpu", first_octets=(127, 62),
                    gpu_lib_dir=nvml_lib) as sim:
        yield sim


@pytest.fixture
def state_db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


def jy(cluster: SimCluster, *args: str, db: Path | None = None, inventory: Path | None = None,
       timeout: float = 120) -> Result:
    env = cluster.client_env()
    if inventory is not None:
        env["JUEYING_INVENTORY"] = str(inventory)
    if db is not None:
        env["JUEYING_STATE_DB"] = str(db)
    return run_jueying(list(args), env, timeout=timeout)


def nodes_of(result: Result) -> dict[str, dict[str, object]]:
    return {n["node"]: n for n in result.json()["data"]["nodes"]}


def test_status_over_ssh_with_lost_missing_stopped_and_frozen_nodes(cluster: SimCluster, state_db: Path) -> None:
    lost, fewer, stopped, frozen = (cluster.node(n) for n in ("gpu03", "gpu04", "gpu05", "gpu06"))
    lost.set_gpus(**{"gpu.2.lost": 1})
    fewer.set_gpus(gpu_count=7)
    stopped.stop()
    frozen.freeze()
    try:
        table = jy(cluster, "status", "--connect-timeout", "3", db=state_db)
        doc = jy(cluster, "status", "--json", "--no-fold", "--connect-timeout", "3", db=state_db)
    finally:
        lost.write_gpu_state(_default_state())
        fewer.write_gpu_state(_default_state())
        stopped.start()
        frozen.thaw()
    assert table.rc == 1 and doc.rc == 1
    lines = table.stdout.splitlines()
    # problems first: unreachable, timeout, degraded ...; healthy nodes folded into one row
    assert lines[1].startswith("gpu05") and "unreachable" in lines[1] and "refused" in lines[1]
    assert lines[2].startswith("gpu06") and "timeout" in lines[2]
    degraded = {line.split()[0]: line for line in lines[3:5]}
    assert "degraded (GPU 2 lost)" in degraded["gpu03"] and "7/8 (1 lost)" in degraded["gpu03"]
    assert "degraded (7 of 8 GPUs present)" in degraded["gpu04"] and " 7/8 " in degraded["gpu04"]
    assert lines[5].startswith("gpu[01-02,07-12] (8)") and " ok " in lines[5] and " 8/8 " in lines[5]
    assert "nodes up 10/12, GPUs healthy 78/79 (78x NVIDIA H100 80GB HBM3 on 10 node(s))" in table.stdout

    nodes = nodes_of(doc)
    assert len(nodes) == NODES
    assert nodes["gpu05"]["state"] == "unreachable" and nodes["gpu05"]["gpus_present"] is None
    assert nodes["gpu06"]["state"] == "timeout"
    assert nodes["gpu03"]["state"] == "degraded" and nodes["gpu03"]["gpus_lost"] == 1
    assert nodes["gpu04"]["gpus_present"] == 7 and nodes["gpu04"]["gpus_expected"] == 8
    assert all(nodes[f"gpu{i:02d}"]["state"] == "ok" for i in (1, 2, 7, 8, 9, 10, 11, 12))
    envelope = doc.json()
    assert envelope["status"] == "partial"
    assert {(e["node"], e["status"]) for e in envelope["errors"]} == {("gpu05", "unreachable"), ("gpu06", "timeout")}


def _default_state() -> dict[str, str]:
    from tests.nvmlsim import default_state

    return default_state()


def test_status_json_schema(cluster: SimCluster, state_db: Path) -> None:
    doc = jy(cluster, "status", "--json", "--gpus", "-w", "gpu[01-02]", db=state_db).json()
    assert set(doc) == {"schema_version", "command", "generated_at", "status", "data", "errors"}
    assert doc["status"] == "ok" and doc["errors"] == []
    node_keys = {"node", "state", "reason", "gpus_present", "gpus_expected", "gpus_lost", "gpu_models",
                 "utilization_avg_pct", "utilization_max_pct", "gpu_memory_used_bytes", "gpu_memory_total_bytes",
                 "hottest_gpu_c", "hottest_gpu_index", "power_watts", "power_limit_watts", "load1", "cpu_threads",
                 "host_memory_used_bytes", "host_memory_total_bytes", "collected_at_unix", "stale", "nodes",
                 "scheduler", "scheduler_state", "drain_reason", "health", "health_check", "health_gpu", "problems",
                 "pending", "gpus_with_problems", "hottest_gpu_node", "utilization_max_node", "load1_node"}
    for node in doc["data"]["nodes"]:
        assert set(node) == node_keys
        assert isinstance(node["gpus_present"], int) and isinstance(node["collected_at_unix"], float)
        assert node["scheduler"] == "builtin" and node["scheduler_state"] == "idle"
    assert doc["data"]["summary"] == {"nodes_total": 2, "nodes_up": 2, "nodes_ok": 2, "gpus_healthy": 16,
                                      "gpus_total": 16, "gpu_models": [{"model": "NVIDIA H100 80GB HBM3",
                                                                        "gpus_healthy": 16, "nodes": 2}],
                                      "nodes_by_health": {"ok": 2, "warning": 0, "critical": 0, "unknown": 0},
                                      "nodes_pending": 0}
    gpus = doc["data"]["gpus"]
    assert len(gpus) == 16 and {g["node"] for g in gpus} == {"gpu01", "gpu02"}
    assert all(isinstance(g["temperature_c"], int) and g["uuid"].startswith("GPU-") for g in gpus)
    assert {(g["health"], g["health_check"]) for g in gpus} == {("OK", None)}


def test_inventory_over_ssh(cluster: SimCluster, state_db: Path) -> None:
    table = jy(cluster, "inventory", "-w", "gpu[01-03]")
    assert table.rc == 0
    rows = [line for line in table.stdout.splitlines() if line.startswith("gpu")]
    assert len(rows) == 3 and all("8x NVIDIA H100 80GB HBM3" in r and "550.127.05" in r for r in rows)
    doc = jy(cluster, "inventory", "--json", "-w", "gpu07").json()
    facts = doc["data"]["nodes"][0]["facts"]
    assert facts["host"]["hostname"] == "gpu07"  # collected on the node, not on the controller
    assert len(facts["gpus"]) == 8 and facts["probe"]["ssh_client"]


@pytest.fixture(scope="module")
def odd_cluster(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    """odd1 prints garbage, odd2 a facts document of another schema, odd3 runs the real probe."""
    base = tmp_path_factory.mktemp("odd-cluster")
    bindir = base / "bin"
    bindir.mkdir()
    real = sys.executable
    (bindir / "python3").write_text(
        "#!/bin/sh\n"
        'case "$(hostname)" in\n'
        "  odd1) echo 'Segmentation fault? no: just not JSON'; exit 0;;\n"
        '  odd2) echo \'{"schema": 99, "host": {}}\'; exit 0;;\n'
        f'  *) exec {real} "$@";;\n'
        "esac\n")
    (bindir / "python3").chmod(0o755)
    path = f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    with SimCluster(base, 3, prefix="odd", digits=1, first_octets=(127, 63), gpu_lib_dir=nvml_lib,
                    extra_env={"PATH": path}) as sim:
        yield sim


@pytest.fixture(scope="module")
def bare_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    """A node whose PATH has sh and timeout but no python3 at all."""
    base = tmp_path_factory.mktemp("bare-cluster")
    bindir = base / "bin"
    bindir.mkdir()
    for tool in ("sh", "timeout", "hostname"):
        (bindir / tool).symlink_to(subprocess.check_output(["sh", "-c", f"command -v {tool}"], text=True).strip())
    with SimCluster(base, 1, prefix="bare", digits=1, first_octets=(127, 64), extra_env={"PATH": str(bindir)}) as sim:
        yield sim


def test_garbage_and_foreign_output_is_failed_never_a_crash(odd_cluster: SimCluster, state_db: Path) -> None:
    result = jy(odd_cluster, "status", "--json", db=state_db)
    assert result.rc == 1
    nodes = nodes_of(result)
    assert nodes["odd1"]["state"] == "failed" and "not JSON" in str(nodes["odd1"]["reason"])
    assert nodes["odd2"]["state"] == "failed" and "schema is 99" in str(nodes["odd2"]["reason"])
    assert nodes["odd3"]["state"] == "ok" and nodes["odd3"]["gpus_present"] == 8


def test_a_node_without_python3_is_failed_with_that_reason(bare_cluster: SimCluster, state_db: Path) -> None:
    result = jy(bare_cluster, "status", "--json", db=state_db)
    assert result.rc == 1
    node = nodes_of(result)["bare1"]
    assert node["state"] == "failed" and node["reason"] == "jueying: python3 not found on PATH"


def test_history_records_a_change_between_two_runs(cluster: SimCluster, state_db: Path) -> None:
    node = cluster.node("gpu09")
    assert jy(cluster, "status", "-w", "gpu09", db=state_db).rc == 0
    node.set_gpus(**{"gpu.5.lost": 1, "gpu.1.ecc_uncorrected_volatile": 4})
    try:
        assert jy(cluster, "status", "-w", "gpu09", db=state_db).rc == 0
    finally:
        node.write_gpu_state(_default_state())
    doc = jy(cluster, "history", "gpu09", "--json", db=state_db).json()
    rows = doc["data"]["rows"]
    assert doc["data"]["collections"] == 2 and len(rows) == 2
    assert (rows[0]["status"], rows[0]["gpus_lost"], rows[0]["ecc_uncorrected_volatile"]) == ("ok", 0, 0)
    assert (rows[1]["status"], rows[1]["gpus_lost"], rows[1]["ecc_uncorrected_volatile"]) == ("degraded", 1, 4)
    assert rows[1]["reason"] == "GPU 5 lost" and rows[1]["gpus_present"] == 7
    table = jy(cluster, "history", "gpu09", db=state_db)
    assert "degraded (GPU 5 lost)" in table.stdout and "2 change(s) shown of 2 collection(s)" in table.stdout


def test_two_concurrent_runs_both_complete_and_the_database_stays_consistent(cluster: SimCluster,
                                                                            state_db: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    env.update(cluster.client_env(), JUEYING_STATE_DB=str(state_db), PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-m", "jueying_cli", "status", "--json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outputs]
    for out, _ in outputs:
        assert len(json.loads(out)["data"]["nodes"]) == NODES
    db = sqlite3.connect(state_db)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        counts = dict(db.execute("SELECT node, COUNT(*) FROM facts_history GROUP BY node").fetchall())
    finally:
        db.close()
    assert counts == {f"gpu{i:02d}": 2 for i in range(1, NODES + 1)}


def _envelopes(stream: str) -> list[dict[str, object]]:
    decoder = json.JSONDecoder()
    docs, pos = [], 0
    while pos < len(stream):
        while pos < len(stream) and stream[pos].isspace():
            pos += 1
        if pos >= len(stream):
            break
        doc, pos = decoder.raw_decode(stream, pos)
        docs.append(doc)
    return docs


def _read_envelope(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    text = ""
    while not text.endswith("}\n"):  # an envelope ends with a closing brace at column 0
        line = proc.stdout.readline()
        assert line, "watch ended early"
        text += line
    return text


def test_watch_reuses_connections_between_refreshes(cluster: SimCluster, state_db: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    env.update(cluster.client_env(), JUEYING_STATE_DB=str(state_db), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "jueying_cli", "status", "--watch", "1", "--count", "3",
                             "--json", "-w", "gpu01"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    node = cluster.node("gpu01")
    try:
        _read_envelope(proc)
        sessions_after_first = set(_node_processes(node, direct=True))
        _read_envelope(proc)
        sessions_after_second = set(_node_processes(node, direct=True))
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    # The same sshd connection process served both refreshes: no new handshake.
    assert sessions_after_first and sessions_after_first == sessions_after_second
    # Without --watch, nothing stays connected after the run.
    assert jy(cluster, "status", "-w", "gpu01", db=state_db).rc == 0
    assert _node_processes(node) == []


def _node_processes(node: object, *, direct: bool = False) -> list[int]:
    """Processes under the node's sshd listener: every descendant, or (direct) the per-connection sshds."""
    listener = node.pid  # type: ignore[attr-defined]
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        pid, ppid = (int(x) for x in line.split())
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(listener, []))
    if direct:
        return todo
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def test_watch_shows_a_node_that_misses_a_refresh_as_stale(cluster: SimCluster, state_db: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    env.update(cluster.client_env(), JUEYING_STATE_DB=str(state_db), PYTHONPATH=str(REPO))
    # gpu11's session is stopped between the first refresh and the second: the 5 s interval is over 10x what
    # finding and stopping its processes takes, so the second refresh always finds it stopped
    proc = subprocess.Popen([sys.executable, "-m", "jueying_cli", "status", "--watch", "5", "--count", "2",
                             "--deadline", "3", "--json", "-w", "gpu[10-11]"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hung = cluster.node("gpu11")
    frozen: list[int] = []
    try:
        _read_envelope(proc)
        frozen = _node_processes(hung)  # the kept session's sshd and its children: the connection hangs
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        rest, _ = proc.communicate(timeout=60)
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert frozen, "no session processes found under the node's sshd"
    second = _envelopes(rest)[-1]
    nodes = {n["node"]: n for n in second["data"]["nodes"]}  # type: ignore[index]
    assert nodes["gpu11"]["stale"] is True and nodes["gpu11"]["gpus_present"] == 8
    assert nodes["gpu10"]["stale"] is False


def _python_pids(node: object) -> set[int]:
    """python3 processes under the node's sshd: the kept probe of a watch."""
    found = set()
    for pid in _node_processes(node):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip().startswith("python"):
                found.add(pid)
    return found


def _watch(cluster: SimCluster, state_db: Path, *args: str) -> subprocess.Popen[str]:
    return start_watch({**cluster.client_env(), "JUEYING_STATE_DB": str(state_db)}, *args)


def _next_nodes(proc: subprocess.Popen[str]) -> dict[str, dict[str, Any]]:
    return {n["node"]: n for n in next_envelope(proc)["data"]["nodes"]}


def _wait_until(check: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def _refreshes_until(proc: subprocess.Popen[str], done: Callable[[dict[str, Any]], bool],
                     most: int) -> list[dict[str, Any]]:
    """gpu07's row from each next refresh, until `done` holds for it or `most` refreshes were read."""
    seen = [_next_nodes(proc)["gpu07"]]
    while not done(seen[-1]) and len(seen) < most:
        seen.append(_next_nodes(proc)["gpu07"])
    return seen


def test_watch_keeps_one_probe_per_node_and_sees_faults_live(cluster: SimCluster, state_db: Path) -> None:
    node = cluster.node("gpu07")
    watch_started = time.monotonic()
    proc = _watch(cluster, state_db, "--watch", "1", "--count", "12", "-w", "gpu[07-08]")
    try:
        first = _next_nodes(proc)
        probes = _python_pids(node)
        assert first["gpu07"]["state"] == "ok" and len(probes) == 1
        node.set_gpus(**{"gpu.2.lost": 1})
        # Seen within a few refreshes (the one under way may predate the change; on a busy machine a refresh
        # can miss its deadline and show the last values, stale): up to 5 of the 11 left, not a fixed number.
        seen = _refreshes_until(proc, lambda n: n["state"] == "degraded" and n["reason"] == "GPU 2 lost"
                                and n["gpus_present"] == 7, 5)
        assert seen[-1]["state"] == "degraded" and seen[-1]["gpus_present"] == 7, seen
        node.write_gpu_state(_default_state())
        seen = _refreshes_until(proc, lambda n: n["state"] == "ok" and n["gpus_present"] == 8 and not n["stale"], 5)
        assert seen[-1]["state"] == "ok" and seen[-1]["gpus_present"] == 8 and seen[-1]["stale"] is False, seen
        # The same probe process answered every refresh: no new python3, no new handshake, NVML kept open
        # and initialised again after the lost GPU.
        assert _python_pids(node) == probes
    finally:
        node.write_gpu_state(_default_state())
        stop_watch(proc)
    watch_lasted = time.monotonic() - watch_started
    assert proc.returncode == 0
    # Ending the watch leaves nothing behind on the nodes.
    assert _wait_until(lambda: not _node_processes(node)), _node_processes(node)
    history = jy(cluster, "history", "gpu07", "--json", db=state_db).json()
    # The watch records history too, but at most once a minute (watch.HISTORY_EVERY_S): its first refresh,
    # then one more per full minute it ran (none in a normal run of ~12 s), never one per refresh (12).
    assert 1 <= history["data"]["collections"] <= 1 + int(watch_lasted // 60), (history["data"], watch_lasted)


def test_watch_reports_garbage_and_a_missing_python3_on_every_refresh(odd_cluster: SimCluster,
                                                                     bare_cluster: SimCluster,
                                                                     state_db: Path) -> None:
    refreshes_of = {}
    for sim in (odd_cluster, bare_cluster):
        proc = _watch(sim, state_db, "--watch", "0.5", "--count", "2")
        try:
            refreshes_of[sim] = [_next_nodes(proc), _next_nodes(proc)]
            proc.communicate(timeout=30)
        finally:
            stop_watch(proc)
        assert proc.returncode == 1  # some nodes failed
    for nodes in refreshes_of[odd_cluster]:
        assert nodes["odd1"]["state"] == "failed" and "not a facts frame" in str(nodes["odd1"]["reason"])
        assert nodes["odd2"]["state"] == "failed" and "not a facts frame" in str(nodes["odd2"]["reason"])
        assert nodes["odd3"]["state"] == "ok" and nodes["odd3"]["gpus_present"] == 8
    for nodes in refreshes_of[bare_cluster]:
        assert nodes["bare1"]["state"] == "failed" and nodes["bare1"]["reason"] == "jueying: python3 not found on PATH"


def test_watch_replaces_a_hung_probe_and_the_node_comes_back(cluster: SimCluster, state_db: Path) -> None:
    node = cluster.node("gpu12")
    proc = _watch(cluster, state_db, "--watch", "1", "--deadline", "3", "-t", "4", "--count", "20", "-w", "gpu12")
    frozen: list[int] = []
    try:
        assert _next_nodes(proc)["gpu12"]["state"] == "ok"
        hung_probe = _python_pids(node)
        frozen = _node_processes(node)  # the kept connection's sshd and the probe: they stop answering
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        states = []
        for _ in range(12):
            row = _next_nodes(proc)["gpu12"]
            states.append((row["state"], row["stale"]))
            if states[-1] == ("ok", False) and any(stale for _, stale in states):
                break
        # Shown stale (last values) while the probe hangs, never blocking the screen; after the probe timeout
        # the connection is dropped and a new one, with a new probe, brings the node back.
        assert ("ok", True) in states and states[-1] == ("ok", False), states
        assert _python_pids(node) - set(frozen) and not hung_probe & (_python_pids(node) - set(frozen))
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        stop_watch(proc)
    assert proc.returncode == 0
    assert _wait_until(lambda: not _node_processes(node)), _node_processes(node)
