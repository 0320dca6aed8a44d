"""`jueying capacity` on the simulated cluster: live facts over SSH, the builtin scheduler's drains (and a real
Slurm's), the check set's confirmed results, datasheet throughput, the N+1 floor, power and energy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import CANARY, assert_detector_works, open_in_chromium, page_requests
from tests.cluster import SimCluster
from tests.conftest import Result, run_jueying
from tests.machine import sim_checks_yaml
from tests.nvmlsim import default_state

NAMES = [f"cap{i:02d}" for i in range(1, 9)]
H100_BF16 = 989.5  # dense TFLOPS per H100 SXM (audit/datasheets.py)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("capacity-cluster"), len(NAMES), prefix="cap", first_octets=(127, 93),
                    gpu_lib_dir=nvml_lib) as sim:
        yield sim


@pytest.fixture
def env(cluster: SimCluster, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Racks r1 cap[01-03], r2 cap[04-06], r3 cap[07-08]; sites A cap[01-06], B cap[07-08]; partitions train
    cap[01-04], infer cap[05-08]; cap08 is a spare. Builtin scheduler; restores every node after."""
    checks = tmp_path / "checks.yaml"
    checks.write_text(sim_checks_yaml())
    lines = ["vars:", "  ssh_user: root", "  scheduler: builtin", "  expected_gpus: 8", "  max_unavailable: 8",
             "nodes:"]
    for i, node in enumerate(cluster.nodes, start=1):
        rack = "r1" if i <= 3 else "r2" if i <= 6 else "r3"
        site = "A" if i <= 6 else "B"
        part = "train" if i <= 4 else "infer"
        role = ", role: spare, spare_pool: p" if i == 8 else ""
        lines.append(f"  {node.name}: {{address: {node.address}, rack: {rack}, site: {site}, partition: {part}{role}}}")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("\n".join(lines) + "\n")
    yield {**cluster.client_env(), "JUEYING_INVENTORY": str(inventory), "JUEYING_CHECKS": str(checks),
           "JUEYING_STATE_DB": str(tmp_path / "state.db")}
    for node in cluster.nodes:
        node.write_gpu_state(default_state())
        node.start()
        (node.dir / "drained").unlink(missing_ok=True)


def jy(env: dict[str, str], *args: str) -> Result:
    return run_jueying([*args, "--connect-timeout", "3"] if args[0] != "drain" else list(args), env)


def group(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(g for g in doc["data"]["groups"] if g["group"] == name)
    return found


def test_a_healthy_fleet_counts_every_gpu_and_sums_datasheet_throughput(env: dict[str, str]) -> None:
    result = jy(env, "capacity", "--json")
    assert result.rc == 0, result.stderr
    doc = result.json()
    total = doc["data"]["total"]
    assert total["gpus"] == {"healthy": 56, "degraded": 0, "drained": 0, "down": 0, "unreachable": 0}
    assert total["spare_gpus"]["healthy"] == 8 and total["spare_nodes"]["healthy"] == 1
    assert total["peak_tflops_dense"]["bf16"] == pytest.approx(56 * H100_BF16)
    assert total["peak_tflops_dense"]["fp64"] == pytest.approx(56 * 34)
    assert total["unknown_models"] == []
    # the simulated H100s draw 70 W of a 700 W limit each (64 GPUs: spares draw too)
    assert total["power_watts"] == pytest.approx(64 * 70) and total["power_limit_watts"] == pytest.approx(64 * 700)
    assert total["tflops_per_kw"]["bf16"] == pytest.approx(H100_BF16 / 0.7, rel=1e-3)
    assert [g["group"] for g in doc["data"]["groups"]] == ["NVIDIA H100 80GB HBM3"]


def test_faults_drains_and_a_stopped_node_are_counted_apart(env: dict[str, str], cluster: SimCluster) -> None:
    cluster.node("cap02").set_gpus(**{"gpu.1.lost": 1})
    cluster.node("cap03").set_gpus(**{"gpu.4.ecc_uncorrected_volatile": 2})
    drained = jy(env, "drain", "cap05", "--reason", "capacity test")
    assert drained.rc == 0, drained.stderr
    cluster.node("cap04").stop()
    result = jy(env, "capacity", "--json", "--by", "rack", "--floor", "16")
    assert result.rc == 1, result.stderr  # a node gave no facts, and the floor does not survive losing site A
    doc = result.json()
    states = {n["node"]: (n["state"], n["gpus"]) for n in doc["data"]["nodes"]}
    assert states["cap01"][0] == "healthy"
    assert states["cap02"] == ("degraded", {"healthy": 7, "degraded": 0, "drained": 0, "down": 1, "unreachable": 0})
    assert states["cap03"] == ("degraded", {"healthy": 7, "degraded": 1, "drained": 0, "down": 0, "unreachable": 0})
    assert states["cap04"] == ("unreachable", {"healthy": 0, "degraded": 0, "drained": 0, "down": 0,
                                               "unreachable": 8})
    assert states["cap05"][0] == "drained" and states["cap05"][1]["drained"] == 8
    total = doc["data"]["total"]
    assert total["gpus"] == {"healthy": 38, "degraded": 1, "drained": 8, "down": 1, "unreachable": 8}
    assert total["nodes"] == {"healthy": 3, "degraded": 2, "drained": 1, "down": 0, "unreachable": 1}
    assert total["peak_tflops_dense"]["bf16"] == pytest.approx(38 * H100_BF16)
    assert group(doc, "r1")["gpus"]["healthy"] == 22 and group(doc, "r2")["gpus"]["healthy"] == 8
    assert group(doc, "r3")["spare_gpus"]["healthy"] == 8 and group(doc, "r3")["gpus"]["healthy"] == 8
    floor = doc["data"]["floor"]
    assert floor["healthy_schedulable_gpus"] == 38 and floor["met"] is False
    losses = {x["level"]: x for x in floor["losses"]}
    assert (losses["rack"]["largest"], losses["rack"]["remaining_gpus"], losses["rack"]["above_floor"]) == \
        ("r1", 16, True)
    assert (losses["site"]["largest"], losses["site"]["remaining_gpus"], losses["site"]["above_floor"]) == \
        ("A", 8, False)
    table = jy(env, "capacity", "--by", "partition", "--floor", "8")
    assert table.rc == 1  # cap04 gave no facts (the floor itself holds)
    assert "floor 8 GPUs holds: 38 healthy schedulable now" in table.stdout
    assert "losing site A (30 healthy GPUs): 8 left, above the floor" in table.stdout
    lines = {line.split()[0]: line for line in table.stdout.splitlines() if line.strip()}
    assert lines["train"].split()[1:3] == ["1/2/0/0/1", "22/1/0/1/8"]
    assert lines["infer"].split()[1:3] == ["2/0/1/0/0", "16/0/8/0/0"]


def test_energy_and_healthy_gpus_per_day_come_from_the_history(env: dict[str, str], cluster: SimCluster) -> None:
    assert jy(env, "capacity", "--json").rc == 0
    # 0.1 kWh more per GPU on cap01 (360 MJ in millijoules), and a driver reload on cap02 (the counter restarts)
    cluster.node("cap01").set_gpus(**{f"gpu.{g}.energy_mj": 3_600_000_000 + 360_000_000 for g in range(8)})
    cluster.node("cap02").set_gpus(**{f"gpu.{g}.energy_mj": 36_000_000 for g in range(8)})
    assert jy(env, "capacity", "--json").rc == 0
    doc = jy(env, "capacity", "--json", "--since", "1h", "--by", "rack").json()
    # cap01: 8 x 0.1 kWh; cap02: reset, then 8 x 0.01 kWh since the reload
    assert group(doc, "r1")["energy_kwh"] == pytest.approx(0.8 + 0.08)
    assert group(doc, "r2")["energy_kwh"] == pytest.approx(0.0)
    trend = doc["data"]["trend"]
    assert len(trend) == 1 and trend[0]["healthy_gpus"] == 64  # every node's GPUs, spares included


def test_unknown_models_are_listed_not_guessed(env: dict[str, str], cluster: SimCluster) -> None:
    cluster.node("cap07").set_gpus(**{f"gpu.{g}.name": "NVIDIA Imaginary X9" for g in range(8)})
    doc = jy(env, "capacity", "--json").json()
    x9 = group(doc, "NVIDIA Imaginary X9")
    assert x9["unknown_models"] == ["NVIDIA Imaginary X9"] and x9["peak_tflops_dense"] == {}
    assert doc["data"]["total"]["peak_tflops_dense"]["bf16"] == pytest.approx(48 * H100_BF16)
    table = jy(env, "capacity")
    assert "no datasheet figures for: NVIDIA Imaginary X9 (left out of the sums)" in table.stdout


def test_bad_options_exit_2(env: dict[str, str]) -> None:
    for args in (["--by", "row"], ["--since", "yesterday"], ["--floor", "-1"]):
        result = jy(env, "capacity", *args)
        assert result.rc == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ with a real Slurm deciding drained and down

SLURM_NAMES = [f"scap{i:02d}" for i in range(1, 5)]


@pytest.fixture(scope="module")
def slurm_sim(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("capacity-slurm-sim"), len(SLURM_NAMES), prefix="scap",
                    first_octets=(127, 95), gpu_lib_dir=nvml_lib) as sim:
        yield sim


def test_slurm_drained_and_down_nodes(slurm_sim: SimCluster, tmp_path: Path,
                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.slurm import SlurmCluster

    checks = tmp_path / "checks.yaml"
    checks.write_text(sim_checks_yaml())
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("vars: {ssh_user: root, scheduler: slurm, expected_gpus: 8}\nnodes:\n" + "".join(
        f"  {n.name}: {{address: {n.address}}}\n" for n in slurm_sim.nodes))
    with SlurmCluster(tmp_path_factory.mktemp("capacity-slurm"), SLURM_NAMES) as slurm:
        slurm.scontrol("update", "NodeName=scap02", "State=DRAIN", "Reason=maintenance window")
        slurm.scontrol("update", "NodeName=scap03", "State=DOWN", "Reason=psu failed")
        env = {**slurm_sim.client_env(), **slurm.env, "JUEYING_INVENTORY": str(inventory),
               "JUEYING_CHECKS": str(checks), "JUEYING_STATE_DB": str(tmp_path / "state.db")}
        result = run_jueying(["capacity", "--json", "--connect-timeout", "3"], env)
        slurm.scontrol("create", "PartitionName=train", "Nodes=scap[01-02]", "State=UP")
        slurm.scontrol("create", "PartitionName=infer", "Nodes=scap[02-04]", "State=UP")
        partitioned = run_jueying(["capacity", "--json", "--by", "partition", "--no-history", "--connect-timeout",
                                   "3"], env).json()["data"]
    assert result.rc == 0, result.stderr
    by_partition = {g["group"]: g["gpus"] for g in partitioned["groups"]}
    doc = result.json()
    states = {n["node"]: (n["state"], n["reason"]) for n in doc["data"]["nodes"]}
    assert states == {"scap01": ("healthy", ""), "scap02": ("drained", "maintenance window"),
                      "scap03": ("down", "psu failed"), "scap04": ("healthy", "")}
    assert doc["data"]["total"]["gpus"] == {"healthy": 16, "degraded": 0, "drained": 8, "down": 8, "unreachable": 0}
    # by partition: Slurm's own, made here with scontrol; a node in two partitions counts in both, the total once
    assert by_partition["gpu"] == {"healthy": 16, "degraded": 0, "drained": 8, "down": 8, "unreachable": 0}
    assert by_partition["train"]["healthy"] == 8 and by_partition["train"]["drained"] == 8
    assert by_partition["infer"] == {"healthy": 8, "degraded": 0, "drained": 8, "down": 8, "unreachable": 0}
    assert partitioned["total"]["gpus"] == doc["data"]["total"]["gpus"]
    groups = {n["node"]: n["groups"] for n in partitioned["nodes"]}
    assert groups == {"scap01": ["gpu", "train"], "scap02": ["gpu", "infer", "train"], "scap03": ["gpu", "infer"],
                      "scap04": ["gpu", "infer"]}


def test_a_check_that_needs_two_runs_counts_once_check_has_confirmed_it(env: dict[str, str], cluster: SimCluster,
                                                                        tmp_path: Path) -> None:
    checks = Path(env["JUEYING_CHECKS"])
    checks.write_text(sim_checks_yaml() + "  ecc_uncorrected: {confirm_runs: 2}\n")
    cluster.node("cap03").set_gpus(**{"gpu.4.ecc_uncorrected_volatile": 2})

    def cap03() -> str:
        doc = jy(env, "capacity", "--json", "-w", "cap[01-03]").json()
        state: str = next(n["state"] for n in doc["data"]["nodes"] if n["node"] == "cap03")
        return state

    assert cap03() == "healthy"  # seen by capacity itself only: pending, and capacity never counts runs
    assert cap03() == "healthy"
    assert jy(env, "check", "-w", "cap[01-03]").rc == 0  # one check run: pending 1/2, exit OK
    assert cap03() == "healthy"  # capacity agrees with that check: it does not confirm on its own behalf
    assert jy(env, "check", "-w", "cap[01-03]").rc == 2  # the second run confirms it: CRITICAL
    assert cap03() == "degraded"


# ------------------------------------------------------------------ Markdown and HTML reports, with the trend


def seed_history(env: dict[str, str], days: dict[int, dict[str, tuple[str, int]]]) -> dict[str, int]:
    """Copy the last recorded collection to `days` ago (noon UTC), changing (status, gpus_present) per node as
    given; returns {UTC day: healthy GPUs expected} for the seeded days. Written with jueying's own store."""
    import dataclasses
    import time

    from jueying_cli.store import Store

    store = Store(Path(env["JUEYING_STATE_DB"]))
    try:
        last = {node: store.history.read(node, limit=1)[-1] for node in NAMES}
        expected: dict[str, int] = {}
        today = int(time.time() // 86400) * 86400
        for ago, changes in days.items():
            at = today - ago * 86400 + 12 * 3600
            rows = []
            for node, row in last.items():
                status, present = changes.get(node, (row.status, row.gpus_present or 0))
                rows.append(dataclasses.replace(row, collected_at=at, status=status, gpus_present=present))
            store.history.record(rows, retention_days=0)
            expected[time.strftime("%Y-%m-%d", time.gmtime(at))] = sum(
                r.gpus_present or 0 for r in rows if r.status in ("ok", "degraded"))
        return expected
    finally:
        store.close()


HOSTILE_GPU = f'X9 "<img src={CANARY}>\'\x1b[2J'


def test_html_report_charts_the_trend_loads_nothing_and_escapes(env: dict[str, str], cluster: SimCluster,
                                                                tmp_path: Path) -> None:
    assert_detector_works(tmp_path)
    cluster.node("cap07").set_gpus(**{f"gpu.{g}.name": HOSTILE_GPU for g in range(8)})
    assert jy(env, "capacity", "--json").rc == 0  # one collection in history
    expected = seed_history(env, {3: {}, 2: {"cap03": ("unreachable", 0)}, 1: {"cap05": ("ok", 4)}})
    assert list(expected.values()) == [64, 56, 60]
    report = tmp_path / "capacity.html"
    result = jy(env, "capacity", "--since", "4d", "--floor", "8", "--format", "html", "-o", str(report))
    assert result.rc == 0, result.stderr
    assert result.stdout == ""
    dom, urls = open_in_chromium(report, tmp_path, "--dump-dom")
    assert page_requests(urls) == set(), urls
    for tag in ("<script", "<img", "<link", "<iframe", "href="):
        assert tag not in dom.lower(), tag
    # the hostile model name is text, its control characters made visible
    assert f"<td>X9 \"&lt;img src={CANARY}&gt;'\\x1b[2J</td>" in dom
    # the chart: one bar per day with its value, the seeded days and today's collection
    assert dom.count('class="bar"') == 4 and "<svg" in dom
    for day, gpus in expected.items():
        assert f"<title>{day}: {gpus} healthy GPUs</title>" in dom and f"<td>{day}</td><td>{gpus}</td>" in dom
    assert 'id="groups"' in dom and 'id="throughput"' in dom and 'id="floor"' in dom and 'id="datasheets"' in dom
    assert "floor 8 GPUs holds: 56 healthy schedulable now" in dom
    assert "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet" in dom  # as text
    shot = tmp_path / "capacity.png"
    open_in_chromium(report, tmp_path, f"--screenshot={shot}", "--window-size=1200,1400")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_report_has_the_trend_as_sparkline_and_table(env: dict[str, str], tmp_path: Path) -> None:
    assert jy(env, "capacity", "--json").rc == 0
    expected = seed_history(env, {2: {"cap01": ("unreachable", 0), "cap02": ("unreachable", 0)}, 1: {}})
    result = jy(env, "capacity", "--since", "3d", "--format", "markdown")
    assert result.rc == 0, result.stderr
    text = result.stdout
    assert text.startswith("# jueying capacity, ")
    assert "`▁██` 48 .. 64 (min 48, max 64)" in text  # two days ago 48, yesterday 64, today 64
    for day, gpus in expected.items():
        assert f"| {day} | {gpus} |" in text
    assert "| NVIDIA H100 80GB HBM3 | 7/0/0/0/0 | 56/0/0/0/0 |" in text
    out = tmp_path / "capacity.md"
    assert jy(env, "capacity", "--since", "3d", "-o", str(out)).rc == 0  # the table format, written as Markdown
    assert out.read_text().startswith("# jueying capacity, ")
    plain = jy(env, "capacity", "--format", "markdown")
    assert "No trend: run with `--since DURATION`" in plain.stdout
    assert jy(env, "capacity", "--format", "pdf").rc == 2
