"""`jueying status` shows the health the checks see: the worst confirmed level and its check, from the same check
set and flap state as `jueying check`, one row per node with a problem, per GPU with `--gpus`, in `--watch` too.

Faults are injected as test_check.py does: the simulated NVML's state file and the node's kernel log. The flap
state is the real one `jueying check` writes; status only reads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import SimCluster
from tests.conftest import Result, next_envelope, run_jueying, start_watch, stop_watch
from tests.machine import sim_checks_yaml
from tests.nvmlsim import default_state

XID_79 = "NVRM: Xid (PCI:0000:2a:00): 79, pid=4242, name=python3, GPU has fallen off the bus."


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("status-health"), 6, prefix="hl", first_octets=(127, 96),
                    gpu_lib_dir=nvml_lib) as sim:
        yield sim


@pytest.fixture
def faulty(cluster: SimCluster) -> Iterator[SimCluster]:
    """hl02 XID 79 on GPU 1; hl03 GPU 6 at 88 °C (slowdown 87 °C, temperature needs 2 runs); hl04 3 uncorrected
    ECC errors on GPU 1; hl05 a row-remap failure on GPU 5; hl01 and hl06 healthy (hl06's GPU 2 at 70 °C, the
    hottest healthy GPU). Every node back to healthy after."""
    n = {node.name: node for node in cluster.nodes}
    n["hl02"].add_kernel_log(XID_79)
    n["hl03"].set_gpus(**{"gpu.6.temperature_c": 88})
    n["hl04"].set_gpus(**{"gpu.1.ecc_uncorrected_volatile": 3})
    n["hl05"].set_gpus(**{"gpu.5.remapped_rows_failure": 1})
    n["hl06"].set_gpus(**{"gpu.2.temperature_c": 70})
    yield cluster
    for node in cluster.nodes:
        node.write_gpu_state(default_state())
        node.clear_kernel_log()


def jy(cluster: SimCluster, db: Path, *args: str) -> Result:
    return run_jueying([*args, "--connect-timeout", "3"], {**cluster.client_env(), "JUEYING_STATE_DB": str(db)})


def rows_of(result: Result) -> dict[str, dict[str, Any]]:
    assert result.rc == 0, result.stderr
    return {r["node"]: r for r in result.json()["data"]["nodes"]}


def line_of(table: str, node: str) -> str:
    found = [line for line in table.splitlines() if line.split(" ", 1)[0] == node]
    assert len(found) == 1, table
    return found[0]


def test_each_faulty_node_has_its_own_row_with_its_level(faulty: SimCluster, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    rows = rows_of(jy(faulty, db, "status", "--json"))
    verdict = {n: (r["state"], r["health"], r["health_check"], r["health_gpu"]) for n, r in rows.items()}
    assert verdict == {
        "hl01": ("ok", "OK", None, None),
        "hl02": ("degraded", "CRITICAL", "xid", 1),
        "hl03": ("ok", "OK", None, None),  # temperature needs 2 runs of jueying check: pending, not confirmed
        "hl04": ("degraded", "CRITICAL", "ecc_uncorrected", 1),
        "hl05": ("degraded", "CRITICAL", "remapped_rows", 5),
        "hl06": ("ok", "OK", None, None),
    }
    assert rows["hl02"]["reason"].startswith("xid: XID 79 (GPU has fallen off the bus) on GPU 1")
    assert [(p["check"], p["level"], p["gpu"], p["confirmed"]) for p in rows["hl04"]["problems"]] == [
        ("ecc_uncorrected", "CRITICAL", 1, True)]
    assert [(p["check"], p["level"], p["gpu"], p["confirmed"], p["runs"], p["confirm_runs"])
            for p in rows["hl03"]["pending"]] == [("temperature", "CRITICAL", 6, False, 1, 2)]
    summary = jy(faulty, db, "status", "--json").json()["data"]["summary"]
    assert summary["gpus_healthy"] == 48 - 3  # the three GPUs with a confirmed problem are not healthy
    assert summary["nodes_by_health"] == {"ok": 3, "warning": 0, "critical": 3, "unknown": 0}
    assert summary["nodes_pending"] == 1

    table = jy(faulty, db, "status")
    assert table.rc == 0, table.stderr
    for node, check, gpu in (("hl02", "xid", 1), ("hl04", "ecc_uncorrected", 1), ("hl05", "remapped_rows", 5)):
        line = line_of(table.stdout, node)
        assert f"CRITICAL {check} gpu{gpu}" in line and line.split()[1] == "degraded", line
    assert "pending CRITICAL temperature gpu6 (1/2)" in line_of(table.stdout, "hl03")
    # only the two healthy nodes fold, and the folded row names where its hottest GPU is
    folded = line_of(table.stdout, "hl[01,06]")
    assert "(2)" in folded and " OK " in folded and "70°C (hl06 gpu2)" in folded, folded
    assert any(line.startswith("nodes up 6/6, GPUs healthy 45/48 ") and line.endswith(
        "; checks: 3 critical, 0 warning, 0 unknown node(s), 1 with pending results")
        for line in table.stdout.splitlines()), table.stdout


def test_status_agrees_with_the_last_check_and_never_counts_runs(faulty: SimCluster, tmp_path: Path) -> None:
    db = tmp_path / "state.db"

    def hl03() -> dict[str, Any]:
        return rows_of(jy(faulty, db, "status", "--json", "-w", "hl03"))["hl03"]

    for _ in range(3):  # status alone never confirms: its own sightings are not runs
        assert hl03()["health"] == "OK" and hl03()["pending"][0]["runs"] == 1
    first = jy(faulty, db, "check", "--json", "-w", "hl03")
    assert first.rc == 0  # the first check run: pending 1/2, not counted; status's reads did not count either
    assert [(r["consecutive_runs"], r["confirmed"]) for r in first.json()["data"]["results"]] == [(1, False)]
    assert hl03()["health"] == "OK"  # as that check said
    assert jy(faulty, db, "check", "-w", "hl03").rc == 2  # the second run confirms it
    row = hl03()
    assert (row["state"], row["health"], row["health_check"], row["health_gpu"]) == (
        "degraded", "CRITICAL", "temperature", 6)
    assert row["reason"].startswith("temperature: GPU 6: 88 °C >= 87 °C")
    third = jy(faulty, db, "check", "--json", "-w", "hl03").json()["data"]["results"]
    assert [r["consecutive_runs"] for r in third] == [3]  # status's reads in between changed no count


def test_gpus_view_shows_each_gpus_confirmed_level(faulty: SimCluster, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    table = jy(faulty, db, "status", "--gpus", "-w", "hl[01,04,05]")
    assert table.rc == 0, table.stderr
    state = {(line.split()[0], line.split()[1]): line.rstrip().rsplit("  ", 1)[-1].strip()
             for line in table.stdout.splitlines()[1:] if line.startswith("hl")}
    assert state[("hl04", "1")] == "CRITICAL ecc_uncorrected"
    assert state[("hl05", "5")] == "CRITICAL remapped_rows"
    assert state[("hl04", "0")] == "ok" and state[("hl01", "1")] == "ok"
    gpus = {(g["node"], g["index"]): g for g in jy(faulty, db, "status", "--gpus", "--json").json()["data"]["gpus"]}
    assert (gpus[("hl04", 1)]["health"], gpus[("hl04", 1)]["health_check"]) == ("CRITICAL", "ecc_uncorrected")
    assert gpus[("hl04", 1)]["problems"][0]["message"].startswith("GPU 1: 3 uncorrected ECC errors")
    assert (gpus[("hl04", 0)]["health"], gpus[("hl04", 0)]["problems"]) == ("OK", [])
    assert gpus[("hl03", 6)]["health"] == "OK" and gpus[("hl03", 6)]["pending"][0]["check"] == "temperature"


def test_the_check_set_is_the_one_given(faulty: SimCluster, tmp_path: Path) -> None:
    """--checks FILE (and $JUEYING_CHECKS) as for jueying check: without the xid check, hl02 is healthy and folds."""
    db = tmp_path / "state.db"
    checks = tmp_path / "no-xid.yaml"
    checks.write_text(sim_checks_yaml() + "  xid: {enabled: false}\n")
    rows = rows_of(jy(faulty, db, "status", "--json", "--checks", str(checks), "-w", "hl[01-02]"))
    assert (rows["hl02"]["state"], rows["hl02"]["health"]) == ("ok", "OK")
    table = jy(faulty, db, "status", "--checks", str(checks), "-w", "hl[01-02]")
    assert line_of(table.stdout, "hl[01-02]")
    bad = tmp_path / "bad.yaml"
    bad.write_text("checks:\n  xid: {enabld: false}\n")
    wrong = jy(faulty, db, "status", "--checks", str(bad))
    assert wrong.rc == 2 and "bad.yaml:2" in wrong.stderr and "Traceback" not in wrong.stderr


def test_watch_shows_health_on_every_refresh(faulty: SimCluster, tmp_path: Path) -> None:
    env = {**faulty.client_env(), "JUEYING_STATE_DB": str(tmp_path / "state.db")}
    proc = start_watch(env, "--watch", "1", "--count", "2", "-w", "hl[01-02,04]", "--connect-timeout", "3")
    try:
        for _ in range(2):
            rows = {n["node"]: n for n in next_envelope(proc)["data"]["nodes"]}
            assert {n: (r["state"], r["health"], r["health_check"]) for n, r in rows.items()} == {
                "hl01": ("ok", "OK", None), "hl02": ("degraded", "CRITICAL", "xid"),
                "hl04": ("degraded", "CRITICAL", "ecc_uncorrected")}
        proc.communicate(timeout=60)  # --count 2: it ends on its own
    finally:
        stop_watch(proc)
    assert proc.returncode == 0
