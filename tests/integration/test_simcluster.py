"""The simulated cluster (tests/cluster) behaves like real nodes to the real OpenSSH client.

Every fault is observed through ``ssh -F <cluster ssh_config>``, the way jueying and a person see it.
Each test puts back what it changed; fixtures take down every process they start.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.cluster import SimCluster  # noqa: E402

pytestmark = [
    pytest.mark.harness,  # the test harness's own tests (tests/conftest.py reports them apart)
    pytest.mark.skipif(
        os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists() or shutil.which("unshare") is None,
        reason="needs root, /usr/sbin/sshd and unshare",
    ),
]

# Own address ranges, so these tests can run beside other suites that use the default 127.77.
OCTETS = (127, 79)
DOWN_OCTETS = (127, 80)
SCRIPT_OCTETS = "127.81"
# SimCluster moves every cluster by this many /16 blocks (several checkouts testing at once).
SHIFT = int(os.environ.get("JUEYING_SIM_OCTET_SHIFT", "0") or 0)
NODES = 8


def ssh(
    cluster: SimCluster, name: str, command: str, *options: str, timeout: float = 30.0
) -> tuple[int, str, str, float]:
    """Run the real ssh client; return (exit code, stdout, stderr, seconds)."""
    argv = ["ssh", "-F", str(cluster.ssh_config_path), *options, name, command]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def pgrep(pattern: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip() and "pgrep" not in line]


def assert_healthy(cluster: SimCluster, name: str) -> None:
    rc, out, err, _ = ssh(cluster, name, "hostname")
    assert (rc, out.strip()) == (0, name), err


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    sim = SimCluster(tmp_path_factory.mktemp("sim"), NODES, first_octets=OCTETS)
    try:
        sim.up()
        yield sim
    finally:
        sim.down()


def test_files_describe_the_cluster(cluster: SimCluster) -> None:
    assert cluster.nodeset == "node[01-08]"
    assert [n.address for n in cluster.nodes[:2]] == [f"127.{79 + SHIFT}.0.1", f"127.{79 + SHIFT}.0.2"]
    inventory = yaml.safe_load(cluster.inventory_path.read_text())
    assert inventory["vars"]["ssh_user"] == "root"
    assert inventory["groups"]["all_sim"]["nodes"] == "node[01-08]"
    assert inventory["groups"]["all_sim"]["vars"]["expected_gpus"] == 8
    assert inventory["nodes"]["node08"] == {"address": f"127.{79 + SHIFT}.0.8"}
    known = cluster.known_hosts_path.read_text().splitlines()
    assert [line.split()[0] for line in known] == [n.name for n in cluster.nodes]
    assert len({line.split()[2] for line in known}) == NODES, "every node has its own host key"
    assert cluster.client_env() == {
        "JUEYING_SSH_CONFIG": str(cluster.ssh_config_path),
        "JUEYING_INVENTORY": str(cluster.inventory_path),
        "JUEYING_CHECKS": str(cluster.checks_path),
    }
    assert cluster.checks_path.is_file()
    assert cluster.node("node03").state_path == cluster.base_dir / "nodes" / "node03" / "gpu.state"


def test_each_node_has_its_own_hostname(cluster: SimCluster) -> None:
    for node in cluster.nodes:
        assert_healthy(cluster, node.name)
    assert socket.gethostname() not in {n.name for n in cluster.nodes}, "host's own name unchanged"


def test_session_environment(cluster: SimCluster) -> None:
    node = cluster.node("node02")
    rc, out, err, _ = ssh(
        cluster,
        node.name,
        "python3 -c 'import os,sys;print(os.environ[\"JUEYING_NVMLSIM_STATE\"]);print(sys.executable)'",
    )
    assert rc == 0, err
    state, python = out.split()
    assert state == str(node.state_path)
    assert Path(python).resolve() == Path(sys.executable).resolve()


def test_set_gpus_rewrites_the_state_file(cluster: SimCluster) -> None:
    node = cluster.node("node07")
    original = node.read_gpu_state()
    try:
        node.set_gpus(gpu_count=7, **{"gpu.3.lost": 1})
        state = node.read_gpu_state()
        assert state["gpu_count"] == "7" and state["gpu.3.lost"] == "1"
        assert {k: v for k, v in state.items() if k not in ("gpu_count", "gpu.3.lost")} == {
            k: v for k, v in original.items() if k not in ("gpu_count", "gpu.3.lost")
        }
        rc, out, _, _ = ssh(cluster, node.name, 'cat "$JUEYING_NVMLSIM_STATE"')
        assert rc == 0 and "gpu.3.lost" in out
    finally:
        node.write_gpu_state(original)
    assert node.read_gpu_state() == original


def test_stopped_node_refuses(cluster: SimCluster) -> None:
    node = cluster.node("node03")
    node.stop()
    try:
        assert node.status() == "stopped"
        rc, _, err, seconds = ssh(cluster, node.name, "hostname")
        assert rc == 255 and "Connection refused" in err
        # refused at once, not left to the cluster's 5 s ConnectTimeout (the message says so); the bound only
        # catches a hang (~0.1 s expected; the figure itself is not this test's business)
        assert seconds < 20
    finally:
        node.start()
    assert_healthy(cluster, node.name)


def test_frozen_node_hangs_in_banner_exchange(cluster: SimCluster) -> None:
    node = cluster.node("node04")
    node.freeze()
    try:
        assert node.status() == "frozen"
        rc, _, err, seconds = ssh(cluster, node.name, "hostname", "-o", "ConnectTimeout=2", timeout=60)
        assert rc == 255
        assert "banner exchange" in err and "timed out" in err, err
        assert "refused" not in err
        assert 1.5 < seconds < 30  # it waited for ConnectTimeout (2 s), and did not hang past 10x it
    finally:
        node.thaw()
    assert_healthy(cluster, node.name)


def test_blackholed_node_times_out_on_connect(cluster: SimCluster) -> None:
    node = cluster.node("node05")
    node.blackhole()
    try:
        assert node.status() == "running+blackholed"
        with pytest.raises(TimeoutError), socket.create_connection((node.address, node.port), timeout=1):
            pass
        rc, _, err, seconds = ssh(cluster, node.name, "hostname", "-o", "ConnectTimeout=2", timeout=60)
        assert rc == 255 and "Connection timed out" in err, err
        assert "banner" not in err and "refused" not in err
        assert 1.5 < seconds < 30  # it waited for ConnectTimeout (2 s), and did not hang past 10x it
        assert_healthy(cluster, "node06")  # only that node is affected
    finally:
        node.unblackhole()
    assert_healthy(cluster, node.name)


def test_changed_host_key_fails_verification(cluster: SimCluster) -> None:
    node = cluster.node("node06")
    before = cluster.known_hosts_path.read_text()
    node.change_host_key()
    try:
        assert cluster.known_hosts_path.read_text() == before
        rc, _, err, _ = ssh(cluster, node.name, "hostname")
        assert rc == 255
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in err and "Host key verification failed" in err
    finally:
        node.trust_host_key()
    assert_healthy(cluster, node.name)


def test_forgotten_host_key_is_unknown(cluster: SimCluster) -> None:
    node = cluster.node("node08")
    node.forget_host_key()
    try:
        assert node.name not in cluster.known_hosts_path.read_text().split()
        rc, _, err, _ = ssh(cluster, node.name, "hostname")
        assert rc == 255
        assert "No ED25519 host key is known for node08" in err and "Host key verification failed" in err
    finally:
        node.trust_host_key()
    assert_healthy(cluster, node.name)


def test_down_stops_everything(tmp_path: Path) -> None:
    """down() ends listeners, frozen ones, open sessions and black holes, and can run twice."""
    sim = SimCluster(tmp_path / "down", 3, first_octets=DOWN_OCTETS)
    session: subprocess.Popen[bytes] | None = None
    try:
        sim.up()
        listeners = {str(n.pid) for n in sim.nodes}
        assert len(listeners) == 3 and listeners <= {line.split()[0] for line in pgrep(str(sim.base_dir))}
        session = subprocess.Popen(
            ["ssh", "-F", str(sim.ssh_config_path), "node01", "exec sleep 77.5"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not pgrep("^sleep 77.5") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pgrep("^sleep 77.5"), "remote session did not start"
        sim.node("node02").freeze()
        sim.node("node03").blackhole()
        sim.down()
        assert pgrep(str(sim.base_dir)) == []
        assert pgrep("^sleep 77.5") == [], "session processes of the nodes are gone too"
        assert session.wait(timeout=10) == 255
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        assert sim.nft_table not in tables
        sim.down()
        assert all(n.status() == "stopped" for n in sim.nodes)
    finally:
        sim.down()
        if session is not None and session.poll() is None:
            session.kill()
            session.wait()


def test_script_up_status_down(tmp_path: Path) -> None:
    script = REPO / "scripts" / "sim-cluster"
    state = tmp_path / "script"
    run = [sys.executable, str(script)]
    try:
        up = subprocess.run(
            [*run, "up", "3", "--dir", str(state), "--octets", SCRIPT_OCTETS],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert up.returncode == 0, up.stderr
        assert f"export JUEYING_SSH_CONFIG={state / 'ssh_config'}" in up.stdout
        assert f"ssh -F {state / 'ssh_config'} node01 hostname" in up.stdout
        assert sum("[listener]" in line for line in pgrep(str(state))) == 3, "nodes outlive the script"
        out = subprocess.run(
            ["ssh", "-F", str(state / "ssh_config"), "node02", "hostname"], capture_output=True, text=True
        )
        assert out.stdout.strip() == "node02"
        status = subprocess.run([*run, "status", "--dir", str(state)], capture_output=True, text=True)
        states = [line.split()[-1] for line in status.stdout.splitlines()[1:4]]
        assert status.returncode == 0 and states == ["running"] * 3, status.stdout
        down = subprocess.run([*run, "down", "--dir", str(state)], capture_output=True, text=True)
        assert down.returncode == 0, down.stderr
        assert pgrep(str(state)) == []
        status = subprocess.run([*run, "status", "--dir", str(state)], capture_output=True, text=True)
        assert [line.split()[-1] for line in status.stdout.splitlines()[1:4]] == ["stopped"] * 3
    finally:
        subprocess.run([*run, "down", "--dir", str(state)], capture_output=True)
