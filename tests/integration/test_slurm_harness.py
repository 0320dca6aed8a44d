"""The Slurm test cluster (tests/slurm) is a real Slurm: drain, resume and draining behave as on a cluster.

Everything is observed with Debian's own client commands (scontrol, sinfo, squeue, srun) run with only
``cluster.env`` added, the way jueying and an operator see it. Fixtures take down every process they
start, also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.slurm import SlurmCluster  # noqa: E402

pytestmark = [
    pytest.mark.harness,  # the test harness's own tests (tests/conftest.py reports them apart)
    pytest.mark.skipif(
        os.geteuid() != 0
        or not all(Path(p).exists() for p in ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged"))
        or not all(shutil.which(tool) for tool in ("sinfo", "scontrol", "sbatch", "unshare")),
        reason="needs root and Debian's slurmctld, slurmd, slurm-client and munge",
    ),
    pytest.mark.timeout(120),
]

NODES = ("node01", "node02", "node03", "node04")


def client(cluster: SlurmCluster, *argv: str) -> str:
    """A Slurm client command with this process's environment plus only ``cluster.env``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run(list(argv), env={**env, **cluster.env}, capture_output=True, text=True, timeout=30,
                          check=False)
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc.stdout


def short_states(cluster: SlurmCluster) -> dict[str, str]:
    """sinfo's short state per node (%t: idle, drain, drng, alloc, ...)."""
    out = client(cluster, "sinfo", "-h", "-N", "-o", "%N %t")
    return dict(line.split() for line in out.splitlines())


def pgrep(pattern: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if line.strip() and "pgrep" not in line]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    slurm = SlurmCluster(tmp_path_factory.mktemp("slurm"), NODES)
    try:
        slurm.up(timeout_s=60)
        yield slurm
    finally:
        slurm.down()


@pytest.fixture
def clean(cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """Each test leaves no job behind and every node idle again, even when it fails."""
    try:
        yield cluster
    finally:
        cluster.cancel_all()
        for name in NODES:
            cluster.start_node(name)  # a node a test stopped runs again (does nothing to a running one)
        for name in NODES:
            if cluster.node_state(name)["reason"]:
                cluster.scontrol("update", f"NodeName={name}", "State=RESUME")
        cluster.wait_nodes("idle", timeout_s=20)


def test_up_shows_every_node_idle(clean: SlurmCluster) -> None:
    cluster = clean
    assert cluster.env == {"SLURM_CONF": str(cluster.conf_path)}
    assert short_states(cluster) == dict.fromkeys(NODES, "idle")
    conf = cluster.conf_path.read_text()
    assert f"AuthInfo=socket={cluster.munge_socket}" in conf
    assert "ClusterName=jytest" in conf
    assert client(cluster, "scontrol", "show", "config").count(f"SLURM_CONF              = {cluster.conf_path}") == 1
    partitions = client(cluster, "sinfo", "-h", "-o", "%P %D %a")
    assert partitions.split() == ["gpu*", "4", "up"]


def test_drain_and_resume(clean: SlurmCluster) -> None:
    cluster = clean
    before = int(time.time())
    cluster.scontrol("update", "NodeName=node02", "State=DRAIN", "Reason=jueying: test")
    state = cluster.node_state("node02")
    assert "DRAIN" in state["state"] and state["sinfo"] == "drained"
    assert state["reason"] == "jueying: test"
    assert state["reason_user"] == "root"
    # an order of timestamps (Slurm stamps whole seconds), not a duration: nothing here depends on load
    assert state["reason_time"] is not None and before - 1 <= state["reason_time"] <= time.time() + 1
    assert short_states(cluster)["node02"] == "drain"
    assert client(cluster, "sinfo", "-h", "-R", "-o", "%n|%E|%u").splitlines() == ["node02|jueying: test|root"]
    assert {n: s for n, s in short_states(cluster).items() if n != "node02"} == dict.fromkeys(
        ("node01", "node03", "node04"), "idle")

    cluster.scontrol("update", "NodeName=node02", "State=RESUME")
    state = cluster.node_state("node02")
    assert "DRAIN" not in state["state"] and state["reason"] == "" and state["reason_user"] == ""
    # Slurm marks a resumed node NOT_RESPONDING ("idle*") until it answers the ping RESUME triggers.
    assert state["sinfo"] in ("idle", "idle*")
    cluster.wait_nodes("idle", nodes=["node02"], timeout_s=60)
    state = cluster.node_state("node02")
    assert state["state"] == ["IDLE"] and state["sinfo"] == "idle"
    assert short_states(cluster)["node02"] == "idle"


def test_drain_waits_for_the_running_job(clean: SlurmCluster) -> None:
    cluster = clean
    job = cluster.submit_sleep("node03", 30)
    out = client(cluster, "squeue", "-h", "-j", job, "-o", "%T %N")
    assert out.split() == ["RUNNING", "node03"]
    assert cluster.node_state("node03")["state"] == ["ALLOCATED"]

    cluster.scontrol("update", "NodeName=node03", "State=DRAIN", "Reason=jueying: drain busy node")
    state = cluster.node_state("node03")
    assert state["state"] == ["ALLOCATED", "DRAIN"] and state["sinfo"] == "draining"
    assert short_states(cluster)["node03"] == "drng"
    time.sleep(1.0)  # the job keeps running: the node stays draining, not drained
    assert cluster.node_state("node03")["sinfo"] == "draining"
    assert client(cluster, "squeue", "-h", "-j", job, "-o", "%T").strip() == "RUNNING"

    cluster.cancel_all()
    cluster.wait_nodes("drained", nodes=["node03"], timeout_s=60)
    state = cluster.node_state("node03")
    assert state["state"] == ["IDLE", "DRAIN"] and state["reason"] == "jueying: drain busy node"
    assert short_states(cluster)["node03"] == "drain"


def test_jobs_run_on_their_node(clean: SlurmCluster) -> None:
    """srun from the host reaches a node's slurmd; the job sees the node's own hostname."""
    out = client(clean, "srun", "-w", "node04", "-N", "1", "hostname")
    assert out.strip() == "node04"
    out = client(clean, "srun", "-N", "4", "-w", "node[01-04]", "--ntasks-per-node=1", "hostname")
    assert sorted(out.split()) == list(NODES)


def test_stop_and_start_a_node(clean: SlurmCluster) -> None:
    cluster = clean
    pattern = f"slurmd -D -N node04 -f {cluster.conf_path}"
    assert len([line for line in pgrep(pattern) if "/usr/sbin/slurmd" in line.split()[1]]) == 1
    cluster.stop_node("node04")
    assert [line for line in pgrep(pattern) if "/usr/sbin/slurmd" in line.split()[1]] == []
    cluster.start_node("node04")
    cluster.wait_nodes("idle", timeout_s=20)
    assert client(cluster, "srun", "-w", "node04", "hostname").strip() == "node04"


def _running_in(directory: Path) -> list[psutil.Process]:
    """Processes whose working directory is ``directory``, compared as files, not as path strings: a
    process in another mount namespace under a chroot shows its cwd by the path from the real root."""
    want = os.stat(directory)
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError):
            if os.path.samestat(os.stat(f"/proc/{proc.pid}/cwd"), want):
                found.append(proc)
    return found


def test_down_leaves_no_process(tmp_path: Path, cluster: SlurmCluster) -> None:
    """A second cluster beside the first: its own nodes only, and down() ends all of it, job steps too."""
    other = SlurmCluster(tmp_path / "other", ("nodeA", "nodeB"), cluster_name="other", partition="batch")
    try:
        other.up(timeout_s=60)
        assert set(other.sinfo_states()) == {"nodeA", "nodeB"}
        assert other.ctld_port != cluster.ctld_port
        other.submit_sleep("nodeA", 300)
        steps = _running_in(other.jobs_dir)
        deadline = time.monotonic() + 10
        while not steps and time.monotonic() < deadline:  # RUNNING comes before the batch step starts
            time.sleep(0.1)
            steps = _running_in(other.jobs_dir)
        assert steps, "the job's processes run on this host"
        stepd = [p for p in (s.parent() for s in steps) if p is not None and p.name() == "slurmstepd"]
        assert stepd, "the job's batch script (exec sleep) runs under a slurmstepd"
        assert pgrep(str(other.base_dir)), "daemons name base_dir on their command line"
    finally:
        other.down()
    assert pgrep(str(other.base_dir)) == []
    assert other.stray_processes() == []
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in steps + stepd)
    other.down()  # idempotent
    # The first cluster did not notice.
    assert short_states(cluster) == dict.fromkeys(NODES, "idle")
