"""ssh_config through the real CLI, on real sshd nodes (tests/cluster): an `Include`d file gives the nodes
their addresses, a `Match host` block the port one of them listens on, a `Match originalhost` block
`StrictHostKeyChecking accept-new` for one node; the real `ssh` client reads the same file to the same
effect. A bad line in an included file stops the run with exit 2 and names file:line."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import SimCluster
from tests.conftest import run_jueying

pytestmark = pytest.mark.skipif(
    shutil.which("ssh") is None or not Path("/usr/sbin/sshd").exists() or shutil.which("unshare") is None,
    reason="needs the OpenSSH client and server, and unshare",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("sshconfig"), 3, prefix="sc", digits=1, first_octets=(127, 74),
                    ports={"sc2": 2222}) as sim:
        yield sim


def _files(cluster: SimCluster, tmp: Path) -> tuple[Path, Path, Path]:
    """(ssh_config, inventory, sc3's own known_hosts, empty). The addresses are only in the included file, so
    `Match host` sees them (OpenSSH matches Match host against the HostName set so far)."""
    conf_d = tmp / "conf.d"
    conf_d.mkdir()
    (conf_d / "nodes.conf").write_text("".join(f"Host {n.name}\n  HostName {n.address}\n" for n in cluster.nodes))
    fresh = tmp / "known_hosts_sc3"
    fresh.write_text("")
    config = tmp / "ssh_config"
    config.write_text(
        f"Include {conf_d}/*.conf\n"
        f"Match host {cluster.node('sc2').address}\n  Port 2222\n"
        f"Match originalhost SC3\n  StrictHostKeyChecking accept-new\n  UserKnownHostsFile {fresh}\n"
        "Host sc1\n  HostKeyAlias sc1\nHost sc2\n  HostKeyAlias sc2\n"  # the cluster's known_hosts names nodes
        f"Host sc*\n  User root\n  IdentityFile {cluster.client_key_path}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {cluster.known_hosts_path}\n  GlobalKnownHostsFile /dev/null\n  ConnectTimeout 5\n")
    inventory = tmp / "inventory.yaml"
    inventory.write_text("nodes:\n  sc1: {}\n  sc2: {}\n  sc3: {}\n")
    return config, inventory, fresh


def test_included_hosts_and_match_blocks_are_honoured_by_the_cli_as_by_ssh(cluster: SimCluster,
                                                                          tmp_path: Path) -> None:
    config, inventory, fresh = _files(cluster, tmp_path)
    result = run_jueying(["run", "-w", "sc[1-3]", "--json", "--", "hostname"],
                         {"JUEYING_SSH_CONFIG": str(config), "JUEYING_INVENTORY": str(inventory), "SSH_AUTH_SOCK": ""})
    nodes = {n["node"]: n for n in result.json()["data"]["nodes"]}
    assert {name: (n["status"], n["stdout"]) for name, n in nodes.items()} == {
        "sc1": ("ok", "sc1\n"), "sc2": ("ok", "sc2\n"), "sc3": ("ok", "sc3\n")}, nodes
    assert result.rc == 0
    recorded = fresh.read_text().split()
    assert recorded[:2] == [cluster.node("sc3").address, "ssh-ed25519"], recorded  # accept-new, as OpenSSH's TOFU

    fresh.write_text("")  # the real client, same file: the same hosts, ports and host-key decisions
    for node in cluster.nodes:
        ssh = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", node.name, "hostname"],
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                             env={"PATH": "/usr/bin:/bin"})
        assert (ssh.returncode, ssh.stdout) == (0, f"{node.name}\n"), ssh.stderr
    assert fresh.read_text().split()[:2] == recorded[:2]


def test_without_the_match_block_the_node_on_another_port_is_unreachable(cluster: SimCluster, tmp_path: Path) -> None:
    config, inventory, _ = _files(cluster, tmp_path)
    config.write_text(config.read_text().replace("  Port 2222\n", ""))
    result = run_jueying(["run", "-w", "sc2", "--json", "--connect-timeout", "3", "--", "hostname"],
                         {"JUEYING_SSH_CONFIG": str(config), "JUEYING_INVENTORY": str(inventory), "SSH_AUTH_SOCK": ""})
    node = result.json()["data"]["nodes"][0]
    assert node["status"] == "unreachable" and ":22" in node["error"], node


def test_a_bad_line_in_an_included_file_is_exit_2_naming_file_and_line(cluster: SimCluster, tmp_path: Path) -> None:
    config, inventory, _ = _files(cluster, tmp_path)
    bad = tmp_path / "conf.d" / "zz-bad.conf"
    bad.write_text("Host sc9\n  Port 0\n")
    result = run_jueying(["run", "-w", "sc1", "--", "hostname"],
                         {"JUEYING_SSH_CONFIG": str(config), "JUEYING_INVENTORY": str(inventory)})
    assert result.rc == 2, result.stderr
    assert f"{bad}:2: Bad port '0'." in result.stderr
    assert "Traceback" not in result.stderr
