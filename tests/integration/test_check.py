"""`jueying check` against simulated nodes: faults injected into GPU state files and kernel logs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
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

    xid = r[("cn02", "xid", 1)]
    assert xid["level"] == "CRITICAL" and xid["action"] == "reboot" and "79" in str(xid["message"])
    ecc = r[("cn03", "ecc_uncorrected", 1)]
    assert ecc["level"] == "CRITICAL" and ecc["action"] == "reset_gpu" and "2" in str(ecc["message"])
    remap = r[("cn04", "remapped_rows", 5)]
    assert remap["level"] in ("WARNING", "CRITICAL") and remap["action"] == "reset_gpu"
    assert "pending" in str(remap["message"])
    temp = r[("cn05", "temperature", 6)]
    assert temp["level"] == "CRITICAL" and "88" in str(temp["message"]) and "87" in str(temp["message"])
    assert temp["confirmed"] is True and temp["consecutive_runs"] == 2
    nvlink = r[("cn06", "nvlink", 0)]
    assert nvlink["level"] == "CRITICAL" and "3" in str(nvlink["message"])
    pcie = r[("cn07", "pcie_link", 2)]
    assert pcie["level"] == "WARNING" and "3" in str(pcie["message"])
    count = r[("cn08", "gpu_count", None)]
    assert count["level"] == "CRITICAL" and "7" in str(count["message"]) and "8" in str(count["message"])
    # Unsupported fields never raise a CRITICAL
    cn09 = [x for (node, _, _), x in r.items() if node == "cn09"]
    assert cn09 and not [x for x in cn09 if x["level"] == "CRITICAL"]
    assert any(x["level"] == "UNKNOWN" for x in cn09)
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
    result = jy(healthy, db, "check", "--quiet", "--prometheus", str(prom))
    assert result.rc == 2
    families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    levels = {(s.labels["node"], s.labels["check"]): s.value for s in families["jueying_check_level"].samples}
    assert levels[("cn06", "xid")] == 2 and levels[("cn01", "xid")] == 0
    nodes = {s.labels["node"]: s.value for s in families["jueying_node_level"].samples}
    assert nodes["cn06"] == 2 and nodes["cn05"] == 0 and len(nodes) == NODES
    assert [s.value for s in families["jueying_check_exit_code"].samples] == [2]
    assert not list(prom.parent.glob(".*tmp"))  # no temporary file left behind


def test_overlapping_runs_do_not_pile_up(healthy: SimCluster, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    healthy.node("cn10").freeze()  # makes the first run last its connect timeout
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    env.update(healthy.client_env(), JUEYING_STATE_DB=str(db), PYTHONPATH=str(REPO), JUEYING_CHECKS=str(CHECKS[-1]))
    first = subprocess.Popen([sys.executable, "-m", "jueying_cli", "check", "--connect-timeout", "4", "--quiet"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        second = jy(healthy, db, "check", "--quiet")
        assert second.rc == 3
        assert "UNKNOWN" in second.stdout and "another run holds" in second.stdout
        third = jy(healthy, db, "check", "--quiet", "--lock-wait", "30", "--connect-timeout", "4")
        assert third.rc == 3  # it waited for the first run, then ran (the frozen node is unknown)
        assert "reachability" in third.stdout
        out, _ = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 3 and "cn10" in out


def test_a_bad_check_file_names_file_line_and_field(healthy: SimCluster, tmp_path: Path) -> None:
    bad = tmp_path / "checks.yaml"
    bad.write_text("checks:\n  temperature:\n    margin_c: 5\n    margn: 3\n")
    result = jy(healthy, tmp_path / "state.db", "check", "--checks", str(bad))
    assert result.rc == 2
    assert f"{bad}:4" in result.stderr and "margn" in result.stderr
