"""README, `status --watch`: what the kept probes promise (time sync asked at most once a minute, NVML
initialised again after a driver error), the default per-refresh deadline, and a node whose sshd dies while
the watch runs.

Every watch is a real `jueying status --watch --json` process against real sshd nodes; faults are injected
on the nodes (a fake `chronyc`/`timedatectl` on their PATH that log each call, the simulated NVML's state file,
SIGSTOP of a node's session processes, the node's sshd stopped).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import SimCluster, SimNode
from tests.conftest import next_envelope, start_watch, stop_watch
from tests.integration._promises import jy, wait_until
from tests.nvmlsim import default_state

SSHD_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    base = tmp_path_factory.mktemp("promises-watch")
    bindir = base / "bin"
    bindir.mkdir()
    log = base / "timesync.log"
    # chrony is not running (chronyc fails), so the probe falls back to timedatectl: both are asked.
    (bindir / "chronyc").write_text(f'#!/bin/sh\necho "$(hostname) chronyc $*" >> {log}\nexit 1\n')
    (bindir / "timedatectl").write_text(f'#!/bin/sh\necho "$(hostname) timedatectl $*" >> {log}\necho yes\n')
    for tool in ("chronyc", "timedatectl"):
        (bindir / tool).chmod(0o755)
    path = f"{bindir}:{Path(sys.executable).parent}:{SSHD_DEFAULT_PATH}"
    with SimCluster(base / "sim", 4, prefix="kw", digits=1, first_octets=(127, 92), gpu_lib_dir=nvml_lib,
                    extra_env={"PATH": path}) as sim:
        yield sim


def env_of(cluster: SimCluster, tmp_path: Path) -> dict[str, str]:
    return {**cluster.client_env(), "JUEYING_STATE_DB": str(tmp_path / "state.db")}


def rows(proc: subprocess.Popen[str]) -> dict[str, dict[str, Any]]:
    return {n["node"]: n for n in next_envelope(proc)["data"]["nodes"]}


def session_processes(node: SimNode) -> list[int]:
    """Every process under the node's sshd listener: its connections' sshds and what they run."""
    listener = node.pid
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        pid, ppid = (int(x) for x in line.split())
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(listener or -1, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


@contextlib.contextmanager
def frozen(node: SimNode) -> Iterator[list[int]]:
    """SIGSTOP the node's session processes (the kept connection and its probe hang; sshd still listens)."""
    pids = session_processes(node)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def calls(log: Path, node: str) -> dict[str, int]:
    found = {"chronyc": 0, "timedatectl": 0}
    for line in log.read_text().splitlines():
        host, tool = line.split()[:2]
        if host == node:
            found[tool] += 1
    return found


def test_time_sync_is_asked_at_most_once_a_minute(cluster: SimCluster, tmp_path: Path) -> None:
    """One status asks chronyc and timedatectl once; a watch of 12 refreshes (6 s) asks them once too, not
    per refresh (nor after ten refreshes: the minute holds as well)."""
    log = cluster.base_dir.parent / "timesync.log"
    env = env_of(cluster, tmp_path)
    log.write_text("")
    assert jy(env, "status", "-w", "kw1").rc == 0
    assert calls(log, "kw1") == {"chronyc": 1, "timedatectl": 1}  # the fake tools are the ones asked
    log.write_text("")
    proc = start_watch(env, "--watch", "0.5", "--count", "12", "-w", "kw1")
    try:
        states = [rows(proc)["kw1"]["state"] for _ in range(12)]
        proc.communicate(timeout=60)
    finally:
        stop_watch(proc)
    assert proc.returncode == 0 and states == ["ok"] * 12
    assert calls(log, "kw1") == {"chronyc": 1, "timedatectl": 1}, log.read_text()


def test_nvml_is_initialised_again_after_a_driver_error(cluster: SimCluster, tmp_path: Path) -> None:
    """The simulated driver is set to refuse nvmlInit: the kept probe does not notice (NVML stays initialised,
    no nvmlInit per refresh). Then a read fails with a driver error: the probe initialises NVML again, and
    the refused init shows (no_driver); once the driver is back, the next init succeeds and so does the node."""
    node = cluster.node("kw2")
    proc = start_watch(env_of(cluster, tmp_path), "--watch", "0.5", "-w", "kw2")
    try:
        assert rows(proc)["kw2"]["state"] == "ok"
        node.set_gpus(init="DRIVER_NOT_LOADED")  # what the next nvmlInit would answer
        kept = [rows(proc)["kw2"] for _ in range(4)]
        assert all(r["state"] == "ok" and r["gpus_present"] == 8 and not r["stale"] for r in kept), kept
        node.set_gpus(**{"gpu.3.fail.nvmlDeviceGetUtilizationRates": "UNKNOWN"})  # an internal driver error
        seen = []
        for _ in range(20):
            seen.append(rows(proc)["kw2"])
            if seen[-1]["state"] == "no_driver":
                break
        assert seen[-1]["state"] == "no_driver" and not seen[-1]["stale"], seen
        node.write_gpu_state(default_state())
        back = []
        for _ in range(20):
            back.append(rows(proc)["kw2"])
            if back[-1]["state"] == "ok":
                break
        assert back[-1]["state"] == "ok" and back[-1]["gpus_present"] == 8, back
    finally:
        node.write_gpu_state(default_state())
        stop_watch(proc)
    assert proc.returncode == 0


def test_default_refresh_deadline(cluster: SimCluster, tmp_path: Path) -> None:
    """Without --deadline a refresh waits max(3 x SECONDS, 5 s) for a hung node, then shows it stale with its
    last values (the probe timeout, -t 120, is far off). Two watches at once: every 1 s (waits 5 s, not 3)
    and every 2.5 s (waits 7.5 s, not 5), each with a node of its own that hangs. Measured on the nodes' own
    clock: the healthy node's next collection starts when the hung refresh gives up."""
    watches = {"1": ("kw1", "kw3", 5.0), "2.5": ("kw2", "kw4", 7.5)}  # interval: healthy, hung, deadline
    procs = {interval: start_watch({**env_of(cluster, tmp_path), "JUEYING_STATE_DB": str(tmp_path / f"{hung}.db")},
                                   "--watch", interval, "-t", "120", "-w", f"{healthy},{hung}")
             for interval, (healthy, hung, _) in watches.items()}
    stale: dict[str, dict[str, Any]] = {}
    after: dict[str, dict[str, Any]] = {}
    errors = {}
    try:
        for interval, (_, hung, _) in watches.items():
            assert rows(procs[interval])[hung]["state"] == "ok"
        with frozen(cluster.node("kw3")) as pids3, frozen(cluster.node("kw4")) as pids4:
            assert pids3 and pids4, "no session processes under the nodes' sshd"
            for interval, (_, hung, _) in watches.items():
                for _ in range(5):  # the refresh under way when the node froze may still have had its answer
                    stale[interval] = rows(procs[interval])
                    if stale[interval][hung]["stale"]:
                        break
        for interval, proc in procs.items():
            after[interval] = rows(proc)  # the refresh that followed the stale one (the node answers again)
            proc.send_signal(signal.SIGINT)
            errors[interval] = proc.communicate(timeout=60)[1]
    finally:
        for proc in procs.values():
            stop_watch(proc)
    for interval, (healthy, hung, deadline_s) in watches.items():
        assert stale[interval][hung]["stale"] is True and stale[interval][hung]["gpus_present"] == 8, stale
        assert stale[interval][healthy]["stale"] is False
        waited = after[interval][healthy]["collected_at_unix"] - stale[interval][healthy]["collected_at_unix"]
        assert deadline_s - 1.0 <= waited < 10 * deadline_s, (interval, waited, deadline_s)
        assert "Traceback" not in errors[interval]  # (its exit code is the last screen's: not this test's topic)


def test_a_node_whose_sshd_dies_mid_watch(cluster: SimCluster, tmp_path: Path) -> None:
    """kw3's sshd (and every process of the node) is killed while the watch runs: kw3 is reported
    unreachable while kw1 and kw2 keep refreshing; started again, kw3 comes back; Ctrl-C ends the watch
    cleanly (no traceback, nothing left running on the nodes)."""
    dying = cluster.node("kw3")
    proc = start_watch(env_of(cluster, tmp_path), "--watch", "0.5", "-w", "kw[1-3]")
    try:
        first = rows(proc)
        assert {n: r["state"] for n, r in first.items()} == {"kw1": "ok", "kw2": "ok", "kw3": "ok"}
        dying.stop()
        during, last_seen = [], first["kw1"]["collected_at_unix"]
        for _ in range(30):
            during.append(rows(proc))
            healthy = [during[-1][n] for n in ("kw1", "kw2")]
            assert all(r["state"] == "ok" and not r["stale"] for r in healthy), during[-1]
            assert during[-1]["kw1"]["collected_at_unix"] > last_seen  # fresh values on every refresh
            last_seen = during[-1]["kw1"]["collected_at_unix"]
            if during[-1]["kw3"]["state"] == "unreachable" and len(during) >= 3:
                break
        assert during[-1]["kw3"]["state"] == "unreachable", [d["kw3"] for d in during]
        dying.start()
        back = []
        for _ in range(40):
            back.append(rows(proc)["kw3"])
            if back[-1]["state"] == "ok" and not back[-1]["stale"]:
                break
        assert back[-1]["state"] == "ok", back
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=60)
    finally:
        dying.start()
        stop_watch(proc)
    # Ends at once, without a traceback. Its exit code is the last screen's (1 if a node was stale or down
    # then): README says both "until Ctrl-C (exit 0)" and "1: some nodes failed", so only a crash is refused.
    assert proc.returncode in (0, 1), err
    assert "Traceback" not in err and "Exception" not in err, err
    for node in cluster.nodes:
        assert wait_until(lambda node=node: not session_processes(node), 20), (node.name, session_processes(node))
