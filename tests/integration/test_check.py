"""`jueying check` against simulated nodes: faults injected into GPU state files and kernel logs."""

from __future__ import annotations

import contextlib
import os
import re
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


def promtool_check_metrics(text: str) -> None:
    """The real promtool is the oracle for the exposition format (and its lint)."""
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_textfile_parses(healthy: SimCluster, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    db = tmp_path / "state.db"
    healthy.node("cn06").add_kernel_log("NVRM: Xid (PCI:0000:2a:00): 48, pid=1, DBE detected.")  # GPU 1
    healthy.node("cn07").set_gpus(**{"gpu.2.lost": 1})
    healthy.node("cn05").set_gpus(**{"gpu.6.temperature_c": 88})  # confirm_runs 2: pending on the first run
    healthy.node("cn09").stop()
    prom = tmp_path / "textfile" / "jueying.prom"
    prom.parent.mkdir()
    # A scrape in progress holds last run's file open: it must go on reading that whole file, and the next
    # scrape must find the whole new one (a temporary file renamed over it, never the same file rewritten).
    old_text = "# an earlier run's complete file\njueying_check_exit_code 0\n"
    prom.write_text(old_text)
    old_inode = prom.stat().st_ino
    before = time.time()
    with prom.open(encoding="utf-8") as scrape_in_progress:
        result = jy(healthy, db, "check", "--quiet", "--prometheus", str(prom), "--connect-timeout", "3")
        after = time.time()
        assert scrape_in_progress.read() == old_text
    assert result.rc == 2, result.stdout + result.stderr
    assert prom.stat().st_ino != old_inode
    assert prom.stat().st_mode & 0o777 == 0o644  # node_exporter runs as another user
    text = prom.read_text()
    promtool_check_metrics(text)
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def series(name: str, key: str = "level") -> dict[tuple[str, ...], str]:
        """{labels but `key`: the one `key` whose value is 1}; every enum has exactly one 1 per series set."""
        ones: dict[tuple[str, ...], list[str]] = {}
        for s in families[name].samples:
            rest = tuple(v for k, v in sorted(s.labels.items()) if k != key)
            ones.setdefault(rest, [])
            assert s.value in (0.0, 1.0)
            if s.value == 1.0:
                ones[rest].append(s.labels[key])
        assert all(len(v) <= 1 for v in ones.values())
        return {k: v[0] if v else "" for k, v in ones.items()}

    # per node, check and GPU (labels sorted: check, gpu, node)
    level = series("jueying_check_level")
    assert level[("xid", "1", "cn06")] == "CRITICAL"
    assert level[("nvml", "2", "cn07")] == "CRITICAL"  # a lost GPU says which GPU
    assert level[("ecc_uncorrected", "", "cn01")] == "OK"  # a check that is OK on every GPU says so once
    assert ("xid", "", "cn06") not in level  # ... and only then
    assert level[("reachability", "", "cn09")] == "UNKNOWN"
    # pending is not OK, and not confirmed: temperature on cn05 GPU 6 held once of 2
    assert level[("temperature", "6", "cn05")] == "OK"
    pending = series("jueying_check_pending")
    assert pending[("temperature", "6", "cn05")] == "CRITICAL"
    assert pending[("xid", "1", "cn06")] == ""
    actions = {(s.labels["node"], s.labels["check"], s.labels["gpu"]): s.labels["action"]
               for s in families["jueying_check_action"].samples}
    assert actions[("cn06", "xid", "1")] == "reset_gpu" and actions[("cn07", "nvml", "2")] == "reboot"
    assert ("cn05", "temperature", "6") not in actions
    # node health (enum) apart from node state apart from the SSH outcome
    nodes = series("jueying_node_level")
    assert nodes[("cn06",)] == "CRITICAL" and nodes[("cn07",)] == "CRITICAL" and nodes[("cn05",)] == "OK"
    assert nodes[("cn09",)] == "UNKNOWN" and len(nodes) == NODES
    state = series("jueying_node_state", "state")
    assert state[("cn07",)] == "degraded" and state[("cn06",)] == "ok" and state[("cn09",)] == "unreachable"
    outcome = series("jueying_node_collection_status", "status")
    assert outcome[("cn07",)] == "ok" and outcome[("cn09",)] == "unreachable"
    lost = {s.labels["node"]: s.value for s in families["jueying_node_gpus_lost"].samples}
    assert lost["cn07"] == 1 and lost["cn06"] == 0 and "cn09" not in lost
    assert [s.value for s in families["jueying_check_exit_code"].samples] == [2]
    # every family has HELP text
    assert all(f.documentation for f in families.values())
    [stamp] = [s.value for s in families["jueying_check_last_run_timestamp_seconds"].samples]
    assert before <= stamp <= after + 1  # written with 3 decimals
    [duration] = [s.value for s in families["jueying_check_duration_seconds"].samples]
    assert 0 < duration <= after - before
    assert not list(prom.parent.glob(".*tmp"))  # no temporary file left behind


# Nagios plugin guidelines (nagios-plugins.org/doc/guidelines.html#AEN200): 'label'=value[UOM];[warn];[crit];[min];[max]
# with UOM one of s, ms, us, %, B, KB, MB, TB, c, or none; labels without = or ', or quoted.
PERFDATA = re.compile(r"^(?:'[^'=]+'|[^'=\s]+)=(-?[0-9.]+)(s|ms|us|%|B|KB|MB|TB|c)?"
                      r"(?:;(-?[0-9.:~@]*)(?:;(-?[0-9.:~@]*)(?:;(-?[0-9.]*)(?:;(-?[0-9.]*))?)?)?)?$")


def parse_nagios(stdout: str) -> tuple[str, str, dict[str, tuple[float, str]], list[str]]:
    """(level, summary, {label: (value, uom)}, long text lines), strictly by the guidelines' grammar."""
    first, *rest = stdout.splitlines()
    m = re.fullmatch(r"JUEYING CHECK (OK|WARNING|CRITICAL|UNKNOWN) - ([^|]+?)(?: \| (.*))?", first)
    assert m, first
    perf: dict[str, tuple[float, str]] = {}
    for item in (m.group(3) or "").split():
        p = PERFDATA.match(item)
        assert p, f"not perfdata per the guidelines: {item!r}"
        perf[item.split("=")[0].strip("'")] = (float(p.group(1)), p.group(2) or "")
    assert all("|" not in line for line in rest)  # a | in the long text would start long perfdata
    return m.group(1), m.group(2), perf, rest


def test_nagios_output_puts_status_and_perfdata_first(healthy: SimCluster, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    ok = jy(healthy, db, "check", "--nagios")
    level, summary, perf, rest = parse_nagios(ok.stdout)
    assert ok.rc == 0 and level == "OK" and rest == []
    assert summary == f"0 critical, 0 warning, 0 unknown on 0 of {NODES} node(s)"
    assert perf["nodes"] == (NODES, "") and perf["critical"] == (0, "") and perf["duration"][1] == "s"
    healthy.node("cn02").add_kernel_log("NVRM: Xid (PCI:0000:2a:00): 79, pid=7, name=a|b, fell off the bus.")
    healthy.node("cn03").set_gpus(**{"gpu.0.persistence_mode": 0})
    healthy.node("cn04").set_gpus(**{"gpu.3.temperature_c": 90})  # pending
    started = time.monotonic()
    bad = jy(healthy, db, "check", "--nagios")
    took = time.monotonic() - started
    level, summary, perf, rest = parse_nagios(bad.stdout)
    assert bad.rc == 2 and level == "CRITICAL"
    assert summary == f"1 critical, 1 warning, 0 unknown on 2 of {NODES} node(s); 1 pending"
    assert {k: v[0] for k, v in perf.items() if k != "duration"} == {
        "critical": 1, "warning": 1, "unknown": 0, "pending": 1, "nodes": NODES, "nodes_with_problems": 2}
    assert 0 < perf["duration"][0] <= took
    assert rest[0].startswith("cn02 gpu1 xid CRITICAL: ") and "(action: reboot)" in rest[0]
    assert rest[1].startswith("cn03 gpu0 persistence_mode WARNING: ")
    assert rest[2].startswith("cn04 gpu3 temperature CRITICAL (pending 1/2): ")
    assert len(rest) == 3
    # the default output keeps its table and its last-line summary
    table = jy(healthy, db, "check")
    assert table.stdout.splitlines()[-1].startswith("jueying check CRITICAL - ")
    assert jy(healthy, db, "check", "--nagios", "--json").rc == 2  # usage error


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
