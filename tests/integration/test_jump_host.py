"""Nodes behind a ProxyJump host share ONE SSH connection to it, each node's own SSH connection running in a
direct-tcpip channel of it. Real sshd jump hosts with an operator's limits (MaxSessions, MaxStartups,
AllowTcpForwarding) judge what jueying sends them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from paramiko.common import MSG_CHANNEL_CLOSE, MSG_CHANNEL_DATA

from jueying_cli.inventory.model import Node
from jueying_cli.transport.base import Command
from jueying_cli.transport.ssh.client import SshTransport
from jueying_cli.transport.ssh.options import SshOptions
from jueying_cli.vocab import OutcomeStatus
from tests.cluster import SimCluster
from tests.conftest import REPO, run_jueying

BEHIND = [f"jh{i:02d}" for i in range(2, 10)]  # eight nodes behind jh01: more than its MaxSessions/MaxStartups
# jh01: a jump host as tight as sshd allows, one session and one unauthenticated connection at a time;
# jh10: a jump host that forbids forwarding; jh11: the second hop on the way to jh12.
OPTIONS = {"jh01": {"MaxSessions": "1", "MaxStartups": "1:100:1"}, "jh10": {"AllowTcpForwarding": "no"}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("jump-cluster"), 12, prefix="jh", first_octets=(127, 85),
                    sshd_options=OPTIONS) as sim:
        yield sim


@pytest.fixture()
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "jump.yaml"
    path.write_text(
        "groups:\n"
        "  behind:\n"
        '    nodes: "jh[02-09]"\n'
        "    vars: {ssh_proxy_jump: jh01}\n"
        "  forbidden:\n"
        '    nodes: "jh11"\n'
        "    vars: {ssh_proxy_jump: jh10}\n"
        "  chained:\n"
        '    nodes: "jh12"\n'
        "    vars: {ssh_proxy_jump: 'jh01,jh11'}\n"
    )
    return path


def nodes_of(stdout: str) -> dict[str, dict[str, object]]:
    return {n["node"]: n for n in json.loads(stdout)["data"]["nodes"]}


def test_a_nodes_last_packet_never_follows_its_channel_close(cluster: SimCluster) -> None:
    """paramiko sends a channel's packet after letting go of the channel's lock (paramiko#1115): a node's
    connection closed while its last packet is on the way out put that packet after the channel's CLOSE, and
    OpenSSH disconnected the whole jump connection ("data packet referred to nonexistent channel"), losing
    every node behind the jump host. The packet is held just before it reaches the wire until the close has
    gone out (at most 2 s): a close that waits for it is correct, one that does not overtakes it, every time."""
    ssh = SshTransport(SshOptions(ssh_config_path=str(cluster.ssh_config_path)))
    deadline = time.monotonic() + 60
    try:
        jump = ssh._jump_transport(("jh01",), deadline)
        node = ssh._handshake(ssh.endpoint(Node("jh02", {"ssh_proxy_jump": "jh01"})), deadline)
        channel = getattr(node.sock, "channel", node.sock)  # the direct-tcpip channel under jh02's connection
        watched = channel.remote_chanid
        armed, held, closed = threading.Event(), threading.Event(), threading.Event()
        send = jump._send_user_message  # type: ignore[attr-defined]

        def hold_one_packet(m: paramiko.Message) -> None:
            raw = m.asbytes()
            ours = int.from_bytes(raw[1:5], "big") == watched
            if ours and raw[0] == MSG_CHANNEL_DATA and armed.is_set():
                armed.clear()
                held.set()
                closed.wait(2.0)
            send(m)
            if ours and raw[0] == MSG_CHANNEL_CLOSE:
                closed.set()

        jump._send_user_message = hold_one_packet  # type: ignore[attr-defined]
        armed.set()
        sender = threading.Thread(target=node.send_ignore)  # any packet of jh02's connection
        sender.start()
        assert held.wait(10)
        node.close()  # what a worker does once its node is done
        sender.join(10)
        jump._send_user_message = send  # type: ignore[attr-defined]
        # The jump host kept the connection: another node answers over the very same one.
        outcome = ssh.run(Node("jh03", {"ssh_proxy_jump": "jh01"}), Command("hostname"), time.monotonic() + 60)
        assert (outcome.status, outcome.stdout) == (OutcomeStatus.OK, "jh03\n"), outcome
        assert ssh._jumps[("jh01",)].transport is jump and jump.is_active(), getattr(jump, "disconnect_reason", "")
    finally:
        ssh.close()


def test_every_node_behind_a_tight_jump_host_answers_round_after_round(cluster: SimCluster,
                                                                        inventory: Path) -> None:
    """MaxSessions and MaxStartups on the jump host bound sessions and unauthenticated connections, not the
    forwarded channels of its one authenticated connection (sshd_config(5)): eight nodes behind a jump host
    allowing one of each, and one two hops away, all answer, round after round."""
    for _ in range(3):
        result = run_jueying(["run", "-i", str(inventory), "-w", "jh[02-09,12]", "--json", "--", "hostname"],
                             cluster.client_env())
        nodes = nodes_of(result.stdout)
        assert result.rc == 0, nodes
        assert {name: n["stdout"] for name, n in nodes.items()} == {n: f"{n}\n" for n in [*BEHIND, "jh12"]}


def test_a_jump_host_that_cannot_forward_says_why(cluster: SimCluster, inventory: Path) -> None:
    down = cluster.node("jh05")
    down.stop()
    try:
        result = run_jueying(["run", "-i", str(inventory), "-w", "jh[04-05,11]", "--json", "--", "hostname"],
                             cluster.client_env())
    finally:
        down.start()
    nodes = nodes_of(result.stdout)
    assert result.rc == 1
    assert nodes["jh04"]["status"] == "ok"
    # the jump host's own words, and the reason code's name
    address = cluster.node("jh05").address
    assert nodes["jh05"]["status"] == "unreachable"
    assert nodes["jh05"]["error"] == f"jump host jh01 cannot reach {address}:22: Connection refused (connect failed)"
    assert nodes["jh11"]["status"] == "unreachable"
    assert "jump host jh10 cannot reach" in str(nodes["jh11"]["error"])
    assert "administratively prohibited" in str(nodes["jh11"]["error"])


def test_a_jump_host_lost_mid_command_is_named_as_the_cause(cluster: SimCluster, inventory: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    env.update(cluster.client_env(), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "jueying_cli", "run", "-i", str(inventory), "-w", "jh[02-03]",
                             "--json", "--", "sleep 97.31"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    jump = cluster.node("jh01")
    try:
        deadline = time.monotonic() + 60
        while len(_running("^sleep 97[.]31")) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert len(_running("^sleep 97[.]31")) == 2
        jump.stop()  # the jump host goes away while both commands run
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        jump.start()
    nodes = nodes_of(out)
    assert proc.returncode == 1, err
    for name in ("jh02", "jh03"):
        assert nodes[name]["status"] == "unreachable"
        assert str(nodes[name]["error"]).startswith("lost the connection to jump host jh01: "), nodes[name]
    # the nodes' lifelines end the commands once the connection under them is gone
    deadline = time.monotonic() + 60
    while _running("^sleep 97[.]31") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running("^sleep 97[.]31") == []


def _running(marker: str) -> list[str]:
    """Processes on any node (they all live on this machine) whose command line matches `marker`."""
    found = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True, check=False).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]
