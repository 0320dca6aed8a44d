"""README promises of `jueying status` and `jueying history`, through the real CLI: drained and draining nodes
with their reason (builtin and Slurm), every --sort key, --no-history, one-shot -t and --deadline, Ctrl-C
without --watch, history --all and history of an unknown node.

The nodes' python3 obeys per-node files (tests/integration/promises_support.py): a probe that blocks until the
test says, a load average and a clock of the node's own.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import SimCluster
from tests.integration.promises_support import (
    Running,
    inventory,
    jy,
    node_site_env,
    probe_gate,
    reset_node,
)
from tests.slurm import SlurmCluster

NAMES = [f"node{i:02d}" for i in range(1, 5)]
Env = dict[str, str]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    base = tmp_path_factory.mktemp("promises-status")
    with SimCluster(base, len(NAMES), prefix="node", first_octets=(127, 73), gpu_lib_dir=nvml_lib,
                    extra_env=node_site_env(base)) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    with SlurmCluster(tmp_path_factory.mktemp("promises-status-slurm"), NAMES) as cluster:
        yield cluster


@pytest.fixture
def env(sim: SimCluster, tmp_path: Path) -> Iterator[Env]:
    """A builtin-backend inventory of the four nodes and this test's own state database; nodes restored after."""
    yield {**sim.client_env(), "JUEYING_STATE_DB": str(tmp_path / "state.db"), "NO_COLOR": "1",
           "JUEYING_INVENTORY": str(inventory(sim, tmp_path / "inventory.yaml", "max_unavailable: 4"))}
    for node in sim.nodes:
        reset_node(node)


@pytest.fixture
def slurm_env(env: Env, sim: SimCluster, slurm: SlurmCluster, tmp_path: Path) -> Iterator[Env]:
    """The same nodes drained through a real Slurm; jobs cancelled and nodes resumed after."""
    yield {**env, **slurm.env,
           "JUEYING_INVENTORY": str(inventory(sim, tmp_path / "slurm.yaml", "max_unavailable: 4", "scheduler: slurm"))}
    slurm.cancel_all()
    for name in NAMES:
        slurm.run("scontrol", "update", f"NodeName={name}", "State=RESUME", check=False)
    slurm.wait_nodes("idle", timeout_s=30)


def rows(env: Env, *args: str) -> dict[str, dict[str, object]]:
    result = jy(env, "status", "--json", "--no-fold", "--no-history", *args)
    assert result.rc == 0, result.stderr
    return {n["node"]: n for n in result.json()["data"]["nodes"]}


def line_of(text: str, node: str) -> str:
    """The node's row of a piped status table, its cells separated by one space."""
    return next(" ".join(line.split()) for line in text.splitlines() if line.startswith(node + " "))


# ---- drained and draining nodes, with the reason


def test_status_shows_a_drained_builtin_node_with_its_reason(env: Env) -> None:
    assert jy(env, "drain", "node02", "-r", "PSU swap, OPS-12").rc == 0
    nodes = rows(env)
    assert nodes["node02"]["state"] == "drained"
    assert nodes["node02"]["reason"] == "PSU swap, OPS-12 [jueying:root]"
    assert (nodes["node02"]["scheduler"], nodes["node02"]["scheduler_state"], nodes["node02"]["drain_reason"]) == (
        "builtin", "drained", "PSU swap, OPS-12 [jueying:root]")
    for name in ("node01", "node03", "node04"):
        assert (nodes[name]["state"], nodes[name]["scheduler_state"], nodes[name]["drain_reason"]) == (
            "ok", "idle", None)
    table = jy(env, "status", "--no-history")
    assert table.rc == 0
    assert line_of(table.stdout, "node02").startswith("node02 drained (PSU swap, OPS-12 [jueying:root]) ")
    assert table.stdout.splitlines()[1].startswith("node02 ")  # a drained node comes before healthy ones
    assert "drain/resume through builtin for node[01-04]" in table.stdout


def test_status_shows_drained_and_draining_slurm_nodes_with_their_reason(slurm_env: Env, slurm: SlurmCluster) -> None:
    job = slurm.submit_sleep("node03", 300)
    assert jy(slurm_env, "drain", "node[02-03]", "-r", "xid 79").rc == 0
    nodes = rows(slurm_env)
    reason = "xid 79 [jueying:root]"
    assert (nodes["node02"]["state"], nodes["node02"]["scheduler"], nodes["node02"]["scheduler_state"],
            nodes["node02"]["drain_reason"]) == ("drained", "slurm", "drained", reason)
    assert (nodes["node03"]["state"], nodes["node03"]["scheduler_state"], nodes["node03"]["drain_reason"]) == (
        "draining", "draining", reason)  # its job still runs
    assert nodes["node03"]["reason"] == reason
    assert (nodes["node01"]["state"], nodes["node01"]["scheduler_state"]) == ("ok", "idle")
    table = jy(slurm_env, "status", "--no-history")
    assert table.rc == 0
    assert line_of(table.stdout, "node02").startswith(f"node02 drained ({reason}) ")
    assert line_of(table.stdout, "node03").startswith(f"node03 draining ({reason}) ")
    assert "drain/resume through slurm for node[01-04]" in table.stdout
    assert slurm.job_state(job) == "RUNNING"


# ---- --sort


def test_every_sort_key_orders_the_nodes(env: Env, sim: SimCluster) -> None:
    # Each key gives its own order of the four nodes, so a key sorted by another's value would show.
    gpu0 = {  # utilisation %, temperature C, power mW, GPU memory used bytes; node03 also loses GPU 7
        "node01": (30, 70, 600_000, 20 * 10**9),
        "node02": (90, 50, 300_000, 60 * 10**9),
        "node03": (0, 60, 500_000, 80 * 10**9),
        "node04": (60, 80, 400_000, 40 * 10**9),
    }
    load = {"node01": 5, "node02": 9, "node03": 7, "node04": 3}
    clock = {"node01": -100, "node02": -300, "node03": -200, "node04": -400}  # seconds behind: older facts
    for name, (util, temp, power, used) in gpu0.items():
        node = sim.node(name)
        node.set_gpus(**{"gpu.0.utilization_gpu_pct": util, "gpu.0.temperature_c": temp, "gpu.0.power_mw": power,
                         "gpu.0.memory_used_bytes": used, "gpu.0.memory_reserved_bytes": 0})
        (node.dir / "loadavg").write_text(f"{load[name]} {load[name]} {load[name]}\n")
        (node.dir / "clock-offset").write_text(f"{clock[name]}\n")
    sim.node("node03").set_gpus(**{"gpu.7.lost": 1})
    expected = {
        "state": ["node03", "node01", "node02", "node04"],  # problems first (degraded), then by name
        "node": ["node01", "node02", "node03", "node04"],
        "util": ["node02", "node04", "node01", "node03"],
        "temp": ["node04", "node01", "node03", "node02"],
        "power": ["node01", "node03", "node04", "node02"],
        "gpu-mem": ["node03", "node02", "node04", "node01"],
        "load": ["node02", "node03", "node01", "node04"],
        "age": ["node04", "node02", "node03", "node01"],  # oldest first
    }
    assert len({tuple(order) for order in expected.values()}) == len(expected)
    for key, order in expected.items():
        if key == "temp":  # one key on screen: the table's rows in that order
            table = jy(env, "status", "--no-history", "--no-fold", "--sort", key)
            assert [line.split()[0] for line in table.stdout.splitlines()[1:5]] == order, table.stdout
            continue
        result = jy(env, "status", "--json", "--no-history", "--sort", key)
        assert result.rc == 0, result.stderr
        assert [n["node"] for n in result.json()["data"]["nodes"]] == order, key


# ---- history


def test_no_history_records_nothing_and_history_all_shows_every_collection(env: Env) -> None:
    assert jy(env, "status", "-w", "node02", "--no-history").rc == 0
    for _ in range(2):
        assert jy(env, "status", "-w", "node02").rc == 0  # recorded; nothing changes between the two
    changes = jy(env, "history", "node02")  # 2 collections: the --no-history run left none
    assert changes.rc == 0 and changes.stdout.rstrip().endswith("1 change(s) shown of 2 collection(s)")
    every = jy(env, "history", "node02", "--all", "--json")
    assert every.rc == 0
    rows_all = every.json()["data"]["rows"]
    assert every.json()["data"]["collections"] == 2 and len(rows_all) == 2
    assert rows_all[0]["collected_at"] < rows_all[1]["collected_at"]


def test_history_of_an_unknown_node_exits_0_and_says_so(env: Env) -> None:
    unknown = jy(env, "history", "gpu999")
    assert unknown.rc == 0 and unknown.stderr == ""
    assert unknown.stdout.strip() == "no history for gpu999 yet (it is recorded by jueying status)"


# ---- one-shot limits and Ctrl-C


def test_timeout_bounds_a_hung_probe_to_its_own_node(env: Env, sim: SimCluster) -> None:
    with probe_gate(sim.node("node03")):
        result = jy(env, "status", "--json", "--no-history", "-w", "node[01-03]", "-t", "2")
    assert result.rc == 1
    nodes = {n["node"]: n for n in result.json()["data"]["nodes"]}
    assert nodes["node03"]["state"] == "timeout" and nodes["node03"]["reason"] == "command exceeded 2 s"
    assert nodes["node01"]["state"] == "ok" and nodes["node02"]["state"] == "ok"
    assert result.json()["errors"] == [{"node": "node03", "status": "timeout", "message": "command exceeded 2 s"}]


def test_deadline_bounds_the_whole_run(env: Env, sim: SimCluster) -> None:
    with probe_gate(sim.node("node03")):
        result = jy(env, "status", "--json", "--no-history", "-w", "node[01-03]", "--deadline", "6")
    assert result.rc == 1
    nodes = {n["node"]: n for n in result.json()["data"]["nodes"]}
    assert nodes["node03"]["state"] == "timeout"
    assert nodes["node03"]["reason"] == "global deadline reached before it answered"  # not -t's 30 s
    assert nodes["node01"]["state"] == "ok" and nodes["node02"]["state"] == "ok"


def test_ctrl_c_without_watch_exits_130_with_what_was_gathered(env: Env, sim: SimCluster) -> None:
    with probe_gate(sim.node("node04")) as blocked:
        run = Running(env, "status", "-w", "node04", "--no-history")
        try:
            blocked()  # the probe runs on the node: jueying is waiting for it
            run.proc.send_signal(signal.SIGINT)
            result = run.finish()
        finally:
            run.stop()
    assert result.rc == 130, result.stderr
    assert line_of(result.stdout, "node04").startswith("node04 timeout (interrupted before it answered)")
    assert "nodes up 0/1" in result.stdout
