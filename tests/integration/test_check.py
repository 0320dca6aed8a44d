"""`jueying check` against simulated nodes: faults injected into GPU state files and kernel logs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster import SimCluster
from tests.conftest import REPO, Result, run_jueying
from tests.machine import root_filesystem_listed, sim_checks_yaml
from tests.nvmlsim import default_state

NODES = 10


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("check-cluster"), NODES, prefix="cn", first_octets=(127, 65),
                    gpu_lib_dir=nvml_lib) as sim:
        yield sim


@pytest.fixture
def healthy(cluster: SimCluster) -> Iterator[SimCluster]:
    """Every node back to the default healthy state after the test."""
    yield cluster
    for node in cluster.nodes:
        node.write_gpu_state(default_state())
        node.clear_kernel_log()
        if not node.is_running():
            node.start()
        if node.is_frozen():
            node.thaw()


@pytest.fixture(scope="module")
def checks_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default set without `load` (and without `filesystem` in a chroot): see sim_checks_yaml."""
    path = tmp_path_factory.mktemp("checks") / "checks.yaml"
    path.write_text(sim_checks_yaml())
    return path


CHECKS: list[Path] = []


@pytest.fixture(autouse=True)
def _use_checks_file(checks_file: Path) -> Iterator[None]:
    CHECKS.append(checks_file)
    yield
    CHECKS.pop()


def jy(cluster: SimCluster, db: Path, *args: str, timeout: float = 120) -> Result:
    env = {**cluster.client_env(), "JUEYING_STATE_DB": str(db), "JUEYING_CHECKS": str(CHECKS[-1])}
    return run_jueying(list(args), env, timeout=timeout)


def results_of(result: Result) -> dict[tuple[str, str, int | None], dict[str, object]]:
    data = result.json()["data"]
    return {(r["node"], r["check"], r["gpu"]): r for r in data["results"]}


def test_a_healthy_cluster_is_ok_and_quiet(healthy: SimCluster, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    quiet = jy(healthy, db, "check", "--quiet")
    assert quiet.rc == 0, quiet.stderr
    assert quiet.stdout == ""
    table = jy(healthy, db, "check")
    assert table.rc == 0
    assert table.stdout.strip().splitlines()[-1].startswith("jueying check OK - 0 critical, 0 warning, 0 unknown")
    verbose = jy(healthy, db, "check", "-v", "--json").json()["data"]["results"]
    assert {r["level"] for r in verbose} == {"OK"}
    expected = {"nvml", "gpu_count", "xid", "ecc_uncorrected", "temperature", "nvlink", "remapped_rows", "pcie_link",
                "clocks_events"}
    if root_filesystem_listed():  # in a chroot the probe sees no local filesystem, and the check is off
        expected.add("filesystem")
    assert {r["check"] for r in verbose} >= expected


def test_injected_faults_get_their_level_message_and_action(healthy: SimCluster, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    n = {node.name: node for node in healthy.nodes}
    n["cn02"].add_kernel_log("NVRM: Xid (PCI:0000:2a:00): 79, pid=4242, name=python3, GPU has fallen off the bus.")
    n["cn03"].set_gpus(**{"gpu.1.ecc_uncorrected_volatile": 2})
    n["cn04"].set_gpus(**{"gpu.5.remapped_rows_pending": 1})
    n["cn05"].set_gpus(**{"gpu.6.temperature_c": 88})  # slowdown threshold is 87 °C
    n["cn06"].set_gpus(**{"gpu.0.nvlink_down": "3"})
    n["cn07"].set_gpus(**{"gpu.2.utilization_gpu_pct": 95, "gpu.2.pcie_gen_current": 3})
    n["cn08"].set_gpus(gpu_count=7)
    n["cn09"].set_gpus(**{"fail.nvmlDeviceGetRemappedRows": "NOT_SUPPORTED",
                          "fail.nvmlDeviceGetTotalEccErrors": "NOT_SUPPORTED",
                          "fail.nvmlDeviceGetTemperature": "NOT_SUPPORTED"})
    first = jy(healthy, db, "check", "--json", "-v")
    second = jy(healthy, db, "check", "--json", "-v")  # noisy checks (temperature, pcie) need 2 runs
    assert second.rc == 2, second.stderr
    r = results_of(second)

    def verdict(key: tuple[str, str, int | None]) -> tuple[object, ...]:
        x = r[key]
        return x["level"], x["code"], x["action"], x["value"], x["threshold"]

    assert verdict(("cn02", "xid", 1)) == ("CRITICAL", "XID_79", "reboot", 1, None)
    assert str(r[("cn02", "xid", 1)]["message"]).startswith("XID 79 (GPU has fallen off the bus) on GPU 1: once ")
    assert verdict(("cn03", "ecc_uncorrected", 1)) == ("CRITICAL", "ECC_DBE_VOLATILE", "reset_gpu", 2, 0)
    assert str(r[("cn03", "ecc_uncorrected", 1)]["message"]).startswith("GPU 1: 2 uncorrected ECC errors ")
    # README: remapped_rows "pending → WARNING" (pending_level: warning by default)
    assert verdict(("cn04", "remapped_rows", 5)) == ("WARNING", "ROW_REMAP_PENDING", "reset_gpu", None, None)
    assert "GPU 5: a row remap is pending" in str(r[("cn04", "remapped_rows", 5)]["message"])
    temp = r[("cn05", "temperature", 6)]
    assert verdict(("cn05", "temperature", 6)) == ("CRITICAL", "TEMP_SLOWDOWN", "drain", 88, 87)
    assert str(temp["message"]).startswith("GPU 6: 88 °C >= 87 °C ")
    assert temp["confirmed"] is True and temp["consecutive_runs"] == 2
    assert verdict(("cn06", "nvlink", 0)) == ("CRITICAL", "NVLINK_DOWN", "reset_gpu", 1, 0)
    assert "1 of 18 NVLinks inactive (link 3)" in str(r[("cn06", "nvlink", 0)]["message"])
    assert verdict(("cn07", "pcie_link", 2)) == ("WARNING", "PCIE_DOWNTRAINED", "drain", 3, 5)
    assert "Gen3 x16 while busy, capable of Gen5 x16" in str(r[("cn07", "pcie_link", 2)]["message"])
    assert verdict(("cn08", "gpu_count", None)) == ("CRITICAL", "GPU_MISSING", "drain", 7, 8)
    assert str(r[("cn08", "gpu_count", None)]["message"]).startswith("7 of 8 expected GPUs present")
    # Unsupported fields never raise a CRITICAL: each unreadable one is UNKNOWN, for every GPU
    cn09 = {(check, gpu): x for (node, check, gpu), x in r.items() if node == "cn09"}
    assert not [x for x in cn09.values() if x["level"] in ("CRITICAL", "WARNING")]
    unknown = {key for key, x in cn09.items() if x["level"] == "UNKNOWN"}
    assert unknown == {(check, gpu) for check in ("ecc_uncorrected", "ecc_corrected", "temperature")
                       for gpu in range(8)}
    assert all(cn09[key]["code"] == "NO_DATA" and "NOT_SUPPORTED" in str(cn09[key]["message"]) for key in unknown)
    # every other node's non-OK results are exactly the injected ones
    injected = {("cn02", "xid", 1), ("cn03", "ecc_uncorrected", 1), ("cn04", "remapped_rows", 5),
                ("cn05", "temperature", 6), ("cn06", "nvlink", 0), ("cn07", "pcie_link", 2),
                ("cn08", "gpu_count", None)}
    assert {k for k, x in r.items() if x["level"] != "OK" and k[0] != "cn09"} == injected
    # healthy nodes stay OK
    assert {x["level"] for (node, _, _), x in r.items() if node in ("cn01", "cn10")} == {"OK"}

    # In the first run the noisy checks were still pending and did not count yet.
    f = results_of(first)
    assert f[("cn05", "temperature", 6)]["confirmed"] is False
    assert f[("cn02", "xid", 1)]["confirmed"] is True

    table = jy(healthy, db, "check")
    assert table.rc == 2
    lines = table.stdout.splitlines()
    assert lines[-1].startswith("jueying check CRITICAL - ")
    assert any(line.startswith("cn02") and "xid" in line and "CRITICAL" in line and "reboot" in line
               for line in lines)


def test_exit_codes_follow_nagios(healthy: SimCluster, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    node = healthy.node("cn01")
    node.set_gpus(**{"gpu.0.persistence_mode": 0})
    warn = jy(healthy, db, "check", "-w", "cn01")
    assert warn.rc == 1 and "WARNING" in warn.stdout
    node.stop()
    unknown = jy(healthy, db, "check", "-w", "cn[01-02]", "--connect-timeout", "3")
    assert unknown.rc == 3
    critical = jy(healthy, db, "check", "-w", "cn[01-02]", "--connect-timeout", "3", "--unreachable", "critical")
    assert critical.rc == 2
    assert "reachability" in critical.stdout and "refused" in critical.stdout


def test_flap_control_suppresses_a_one_off_and_reports_a_persistent_result(healthy: SimCluster,
                                                                          tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    node = healthy.node("cn04")
    node.set_gpus(**{"gpu.3.temperature_c": 90})
    spike = jy(healthy, db, "check", "--quiet", "-w", "cn04")
    assert spike.rc == 0 and spike.stdout == ""  # seen once: pending, not reported
    node.set_gpus(**{"gpu.3.temperature_c": 40})
    gone = jy(healthy, db, "check", "--quiet", "-w", "cn04")
    assert gone.rc == 0 and gone.stdout == ""
    node.set_gpus(**{"gpu.3.temperature_c": 90})
    assert jy(healthy, db, "check", "--quiet", "-w", "cn04").rc == 0  # first of a new streak
    held = jy(healthy, db, "check", "--quiet", "-w", "cn04")
    assert held.rc == 2
    assert held.stdout.startswith("cn04 gpu3 temperature CRITICAL: ")


def test_prometheus_textfile_parses(healthy: SimCluster, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    db = tmp_path / "state.db"
    healthy.node("cn06").add_kernel_log("NVRM: Xid (PCI:0000:18:00): 48, pid=1, DBE detected.")
    prom = tmp_path / "textfile" / "jueying.prom"
    prom.parent.mkdir()
    # A scrape in progress holds last run's file open: it must go on reading that whole file, and the next
    # scrape must find the whole new one (a temporary file renamed over it, never the same file rewritten).
    old_text = "# an earlier run's complete file\njueying_check_exit_code 0\n"
    prom.write_text(old_text)
    old_inode = prom.stat().st_ino
    before = time.time()
    with prom.open(encoding="utf-8") as scrape_in_progress:
        result = jy(healthy, db, "check", "--quiet", "--prometheus", str(prom))
        after = time.time()
        assert scrape_in_progress.read() == old_text
    assert result.rc == 2
    assert prom.stat().st_ino != old_inode
    assert prom.stat().st_mode & 0o777 == 0o644  # node_exporter runs as another user
    families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    levels = {(s.labels["node"], s.labels["check"]): s.value for s in families["jueying_check_level"].samples}
    assert levels[("cn06", "xid")] == 2 and levels[("cn01", "xid")] == 0
    nodes = {s.labels["node"]: s.value for s in families["jueying_node_level"].samples}
    assert nodes["cn06"] == 2 and nodes["cn05"] == 0 and len(nodes) == NODES
    assert [s.value for s in families["jueying_check_exit_code"].samples] == [2]
    assert set(families) == {"jueying_check_level", "jueying_node_level", "jueying_check_last_run_timestamp_seconds",
                             "jueying_check_duration_seconds", "jueying_check_exit_code"}
    [stamp] = [s.value for s in families["jueying_check_last_run_timestamp_seconds"].samples]
    assert before <= stamp <= after + 1  # written with 3 decimals
    [duration] = [s.value for s in families["jueying_check_duration_seconds"].samples]
    assert 0 < duration <= after - before
    assert not list(prom.parent.glob(".*tmp"))  # no temporary file left behind


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {timeout_s} s"
        time.sleep(0.05)


def _has_open(pid: int, path: Path) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    targets = set()
    for fd in fds:
        with contextlib.suppress(OSError):
            targets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return str(path) in targets


def test_overlapping_runs_do_not_pile_up(healthy: SimCluster, tmp_path: Path) -> None:
    """The first run is held inside its run (cn10 frozen, a connect timeout far longer than the test) until the
    test thaws cn10: the moments below are seen, not guessed."""
    db = tmp_path / "state.db"
    lock = db.parent / "check.lock"
    healthy.node("cn10").freeze()
    # The cluster's ssh_config says ConnectTimeout 5, and the shorter of it and --connect-timeout holds: without
    # this copy the first run would give up on cn10 after 5 s, however long the test took to get there.
    patient = tmp_path / "ssh_config"
    patient.write_text(healthy.ssh_config_path.read_text().replace("ConnectTimeout 5", "ConnectTimeout 300"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    env.update(healthy.client_env(), JUEYING_STATE_DB=str(db), PYTHONPATH=str(REPO), JUEYING_CHECKS=str(CHECKS[-1]),
               JUEYING_SSH_CONFIG=str(patient))

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "jueying_cli", "check", "--quiet", *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start("--connect-timeout", "300")
    third: subprocess.Popen[str] | None = None
    try:
        _wait_for(lambda: lock.exists() and lock.read_text().startswith(f"pid {first.pid} "), "locked by the first")
        second = jy(healthy, db, "check", "--quiet")
        assert second.rc == 3
        assert "UNKNOWN" in second.stdout and "another run holds" in second.stdout
        assert f"pid {first.pid}" in second.stdout
        assert first.poll() is None  # the first still runs: cn10 is still frozen

        third = start("--lock-wait", "300", "--connect-timeout", "60")
        # It opens the lock file, then waits for the lock (or, broken, gives up at once: seen too).
        _wait_for(lambda: third.poll() is not None or _has_open(third.pid, lock), "waiting for the lock")
        assert third.poll() is None and first.poll() is None, third.communicate()
        healthy.node("cn10").thaw()  # the first run ends; then the third takes the lock and runs
        out1, err1 = first.communicate(timeout=300)
        out3, err3 = third.communicate(timeout=300)
    finally:
        for proc in (first, third):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert first.returncode == 0, (out1, err1)  # cn10 answered once thawed
    assert third.returncode == 0, (out3, err3)  # it waited instead of giving up: all OK and quiet
    assert out3 == ""
    assert lock.read_text().startswith(f"pid {third.pid} ")  # the last to hold the lock was the third


def test_a_bad_check_file_names_file_line_and_field(healthy: SimCluster, tmp_path: Path) -> None:
    bad = tmp_path / "checks.yaml"
    bad.write_text("checks:\n  temperature:\n    margin_c: 5\n    margn: 3\n")
    result = jy(healthy, tmp_path / "state.db", "check", "--checks", str(bad))
    assert result.rc == 2
    assert f"{bad}:4" in result.stderr and "margn" in result.stderr
