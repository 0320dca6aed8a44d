"""`jueying run` against a simulated cluster of 32 real sshd nodes on loopback addresses."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.cluster import SimCluster
from tests.conftest import REPO, Result, run_jueying

NODES = 32


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    sim = SimCluster(tmp_path_factory.mktemp("run-cluster"), NODES, prefix="node", first_octets=(127, 61),
                     gpu_lib_dir=nvml_lib)
    with sim:
        yield sim


def jy(cluster: SimCluster, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    return run_jueying(list(args), {**cluster.client_env(), **(env or {})}, timeout=timeout)


def by_node(result: Result) -> dict[str, dict[str, object]]:
    doc = result.json()
    return {n["node"]: n for n in doc["data"]["nodes"]}


def test_every_healthy_node_answers_and_each_broken_one_gets_its_own_status(cluster: SimCluster) -> None:
    stopped, frozen, holed, changed, unknown = (cluster.node(f"node0{i}") for i in range(2, 7))
    stopped.stop()
    frozen.freeze()
    holed.blackhole()
    changed.change_host_key()
    unknown.forget_host_key()
    try:
        started = time.monotonic()
        result = jy(cluster, "run", "--json", "--connect-timeout", "3", "--", "hostname; echo rc-test >&2")
        elapsed = time.monotonic() - started
    finally:
        stopped.start()
        frozen.thaw()
        holed.unblackhole()
        changed.trust_host_key()
        unknown.trust_host_key()
    assert result.rc == 1
    nodes = by_node(result)
    assert len(nodes) == NODES
    assert nodes["node02"]["status"] == "unreachable" and "refused" in str(nodes["node02"]["error"])
    assert nodes["node03"]["status"] == "timeout" and "hung" in str(nodes["node03"]["error"])
    assert nodes["node04"]["status"] == "unreachable" and "timed out" in str(nodes["node04"]["error"])
    assert nodes["node05"]["status"] == "hostkey_failed" and "CHANGED" in str(nodes["node05"]["error"])
    assert nodes["node06"]["status"] == "hostkey_failed" and "unknown" in str(nodes["node06"]["error"])
    for name in ("node02", "node03", "node04", "node05", "node06"):
        assert nodes[name]["stdout"] == "" and nodes[name]["rc"] is None  # errors never pose as output
    healthy = {name: n for name, n in nodes.items() if name not in {"node02", "node03", "node04", "node05", "node06"}}
    assert len(healthy) == NODES - 5
    for name, n in healthy.items():
        assert n["status"] == "ok" and n["rc"] == 0
        assert n["stdout"] == f"{name}\n"  # each sshd runs in its own UTS namespace
        assert n["stderr"] == "rc-test\n"
    # Every fault costs at most its own connect timeout (3 s), in parallel (~3 s expected). A wide bound: it
    # catches a fault that hangs the run (no timeout), not a serial walk (the figure is for benchmarks/).
    assert elapsed < 60
    assert {e["node"] for e in result.json()["errors"]} == {"node02", "node03", "node04", "node05", "node06"}


def test_identical_output_is_gathered_under_one_folded_nodeset(cluster: SimCluster) -> None:
    result = jy(cluster, "run", "--", "echo same; test $(hostname) != node07")
    assert result.rc == 1
    lines = result.stdout.splitlines()
    assert lines[1] == "node[01-06,08-32] (31)"
    assert lines[3] == "same"
    assert "node07 (1) exit code 1" in lines
    assert "jueying: 31/32 nodes ok" in result.stderr
    assert "jueying: failed (1): node07" in result.stderr
    assert "node07: exit code 1" in result.stderr


def test_no_gather_prefixes_each_line_and_jsonl_streams_one_object_per_node(cluster: SimCluster) -> None:
    plain = jy(cluster, "run", "-w", "node[01-03]", "--no-gather", "--", "echo a; echo b")
    assert plain.rc == 0
    assert sorted(plain.stdout.splitlines()) == sorted(f"node0{i}: {x}" for i in (1, 2, 3) for x in "ab")
    lines = jy(cluster, "run", "-w", "node[01-04]", "--jsonl", "--", "hostname").stdout.splitlines()
    objects = [json.loads(line) for line in lines]
    assert sorted(o["node"] for o in objects) == ["node01", "node02", "node03", "node04"]
    assert all(set(o) >= {"node", "status", "rc", "stdout", "stderr", "duration_s", "error"} for o in objects)


def test_accept_new_hostkeys_trusts_unknown_keys_but_never_changed_ones(cluster: SimCluster) -> None:
    unknown, changed = cluster.node("node10"), cluster.node("node11")
    unknown.forget_host_key()
    changed.change_host_key()
    try:
        result = jy(cluster, "run", "-w", "node[10-11]", "--json", "--accept-new-hostkeys", "--", "hostname")
        nodes = by_node(result)
        assert nodes["node10"]["status"] == "ok"
        assert nodes["node11"]["status"] == "hostkey_failed"
        recorded = [line for line in cluster.known_hosts_path.read_text().splitlines() if line.startswith("node10 ")]
        assert len(recorded) == 1 and recorded[0].split()[1] == "ssh-ed25519"
        again = jy(cluster, "run", "-w", "node10", "--", "hostname")  # now known, no flag needed
        assert again.rc == 0
    finally:
        unknown.trust_host_key()
        changed.trust_host_key()


def test_command_timeout_kills_the_remote_command(cluster: SimCluster) -> None:
    started = time.monotonic()
    result = jy(cluster, "run", "-w", "node[12-13]", "--json", "-t", "1", "--", "sleep 301.25; echo never")
    # ~1 s expected; the bound is wide (never flakes on a busy box) and still far below the command's 301 s
    assert time.monotonic() - started < 60
    nodes = by_node(result)
    assert all(n["status"] == "timeout" and "exceeded 1 s" in str(n["error"]) for n in nodes.values())
    # `timeout` on the node stopped it: nothing outlives the run (seen gone well before its 301 s)
    deadline = time.monotonic() + 60
    while _left_running("sleep 301.25") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _left_running("sleep 301.25") == []


def test_global_deadline_returns_what_it_has(cluster: SimCluster) -> None:
    """The deadline stops the slow nodes, keeps what they printed and leaves nothing running on them. It is
    10 s, about 10x what connecting and printing take here, so the quick node is never caught by it."""
    marker = "sleep 302.5"
    started = time.monotonic()
    result = jy(cluster, "run", "-w", "node[14-17]", "--json", "--deadline", "10", "--",
                f'if [ "$(hostname)" = node14 ]; then echo quick; else echo begun; {marker}; fi')
    elapsed = time.monotonic() - started
    assert elapsed < 100  # the deadline (10 s) ended it, never the 302.5 s the slow nodes would take
    nodes = by_node(result)
    assert nodes["node14"]["status"] == "ok" and nodes["node14"]["stdout"] == "quick\n"
    for name in ("node15", "node16", "node17"):
        assert nodes[name]["status"] == "timeout" and nodes[name]["stdout"] == "begun\n", nodes[name]
        assert "global deadline" in str(nodes[name]["error"])
    assert result.rc == 1
    assert _wait_for(lambda: not _left_running(f"^{marker}"), timeout_s=15)


def test_ctrl_c_prints_what_was_gathered_and_exits_130(cluster: SimCluster, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    env.update(cluster.client_env(), PYTHONPATH=str(REPO))
    done = tmp_path / "node18-done"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jueying_cli", "run", "-w", "node[18-21]", "--",
         f'if [ "$(hostname)" = node18 ]; then echo fast; touch {done}; else sleep 200.19; fi'],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Ctrl-C once node18 has answered and the three slow commands are seen running (not after a sleep)
        deadline = time.monotonic() + 60
        while not (done.exists() and len(_left_running("^sleep 200[.]19")) == 3) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert done.exists() and len(_left_running("^sleep 200[.]19")) == 3
        # node18's outcome is settled once jueying has closed its connection (it closes it after reading the
        # command's end): seen through jueying's own sockets, not guessed with a sleep
        node18 = cluster.node("node18").address
        assert _wait_for(lambda: node18 not in _peers(proc.pid)), "jueying never closed node18's connection"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "node18 (1)" in out and "fast" in out
    assert "timeout (3): node[19-21]" in err
    assert "interrupted" in err


def test_quoting_survives_hostile_commands(cluster: SimCluster) -> None:
    script = """printf '%s|' "it's" '$HOME' "a\\"b" 'x;y' '$(id)'; echo"""
    result = jy(cluster, "run", "-w", "node22", "--json", "--", script)
    assert by_node(result)["node22"]["stdout"] == """it's|$HOME|a"b|x;y|$(id)|\n"""
    bad = jy(cluster, "run", "-w", "node[22;reboot]", "--", "true")
    assert bad.rc == 2 and "bad node set" in bad.stderr
    missing = jy(cluster, "run", "-w", "node99", "--", "true")
    assert missing.rc == 2 and "not in the inventory: node99" in missing.stderr


def test_proxyjump_through_a_shared_jump_node(cluster: SimCluster, tmp_path: Path) -> None:
    inventory = tmp_path / "jump.yaml"
    inventory.write_text(
        "groups:\n"
        "  behind:\n"
        '    nodes: "node[24-28]"\n'
        "    vars: {ssh_proxy_jump: node23}\n"
        "  chained:\n"
        '    nodes: "node29"\n'
        "    vars: {ssh_proxy_jump: 'node23,node30'}\n"
    )
    # Six handshakes through one shared jump connection (two layers of paramiko crypto for node29) on a
    # loaded 2-core machine can pass the cluster's 5 s ConnectTimeout: this test is about routing, not speed.
    patient = tmp_path / "ssh_config"
    patient.write_text(cluster.ssh_config_path.read_text().replace("ConnectTimeout 5", "ConnectTimeout 20"))
    result = jy(cluster, "run", "-i", str(inventory), "--json", "--ssh-config", str(patient), "--connect-timeout",
                "20", "--", "hostname")
    nodes = by_node(result)
    assert result.rc == 0, nodes
    assert {name: n["stdout"] for name, n in nodes.items()} == {f"node{i}": f"node{i}\n" for i in range(24, 30)}
    jump = cluster.node("node23")
    jump.stop()
    try:
        down = jy(cluster, "run", "-i", str(inventory), "--json", "--connect-timeout", "3", "--", "hostname")
    finally:
        jump.start()
    nodes = by_node(down)
    assert all(n["status"] == "unreachable" and "jump host node23" in str(n["error"]) for n in nodes.values())


def test_ansible_inventory_works_unchanged(cluster: SimCluster, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    addresses = {n.name: n.address for n in cluster.nodes}
    hosts.write_text(
        "[gpu]\n"
        + "".join(f"node{i:02d} ansible_host={addresses[f'node{i:02d}']} ansible_user=root\n" for i in range(1, 9))
        + "[spare]\nnode[09:10]\n[cluster:children]\ngpu\nspare\n[gpu:vars]\nexpected_gpus=8\n"
    )
    result = jy(cluster, "run", "-i", str(hosts), "-w", "@cluster", "-x", "node[01-02]", "--json", "--", "hostname")
    nodes = by_node(result)
    assert result.rc == 0
    assert sorted(nodes) == [f"node{i:02d}" for i in range(3, 11)]
    listed = jy(cluster, "nodes", "-i", str(hosts), "-w", "@gpu&node[05-20]")
    assert listed.stdout.strip() == "node[05-08] (4)"


def test_nodes_command_folds_and_expands(cluster: SimCluster) -> None:
    assert jy(cluster, "nodes").stdout.strip() == f"node[01-{NODES}] ({NODES})"
    assert jy(cluster, "nodes", "-w", "@all_sim!node[01-10]").stdout.strip() == "node[11-32] (22)"
    assert jy(cluster, "nodes", "-w", "node[01-03]", "--expand").stdout.split() == ["node01", "node02", "node03"]
    assert jy(cluster, "nodes", "-w", "node[01-04]", "-x", "node02").stdout.strip() == "node[01,03-04] (3)"


def test_output_larger_than_the_ssh_window_does_not_deadlock(cluster: SimCluster) -> None:
    # paramiko#448: more than ~2 MiB unread on one stream used to hang recv_exit_status
    result = jy(cluster, "run", "-w", "node31", "--json", "-t", "60", "--",
                "head -c 5000000 /dev/zero | tr '\\0' a; head -c 3000000 /dev/zero | tr '\\0' b >&2")
    node = by_node(result)["node31"]
    assert node["status"] == "ok"
    assert len(str(node["stdout"])) == 5_000_000 and len(str(node["stderr"])) == 3_000_000


def test_hashed_known_hosts_entries_and_plain_ssh_config(cluster: SimCluster, tmp_path: Path) -> None:
    """No HostKeyAlias: the node is checked by its address, recorded hashed (ssh-keygen -H), as OpenSSH does."""
    node = cluster.node("node08")
    key = next(line.split(None, 1)[1] for line in cluster.known_hosts_path.read_text().splitlines()
               if line.startswith("node08 "))
    known = tmp_path / "known_hosts"
    known.write_text(f"{node.address} {key}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    assert node.address not in known.read_text() and known.read_text().startswith("|1|")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host node08\n  HostName {node.address}\n  User root\n  IdentityFile {cluster.client_key_path}\n"
                      f"  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n")
    ok = run_jueying(["run", "-w", "node08", "--json", "--", "hostname"],
                     {"JUEYING_INVENTORY": str(cluster.inventory_path), "JUEYING_SSH_CONFIG": str(config)})
    assert by_node(ok)["node08"]["stdout"] == "node08\n"
    known.write_text("")  # nothing recorded: refused, with a hint, never silently trusted
    refused = run_jueying(["run", "-w", "node08", "--json", "--", "hostname"],
                          {"JUEYING_INVENTORY": str(cluster.inventory_path), "JUEYING_SSH_CONFIG": str(config)})
    node08 = by_node(refused)["node08"]
    assert node08["status"] == "hostkey_failed" and "--accept-new-hostkeys" in str(node08["error"])


def _left_running(marker: str) -> list[str]:
    """Processes on any node (they all live on this machine) whose command line holds `marker`."""
    found = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True, check=False).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


def _peers(pid: int) -> set[str]:
    """Addresses the process `pid` has a TCP connection to (its own sockets only, read from /proc)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        return {c.raddr.ip for c in psutil.Process(pid).net_connections(kind="tcp") if c.raddr}
    return set()


def _wait_for(check: Callable[[], bool], timeout_s: float = 60) -> bool:
    """Poll `check` until it holds; False after `timeout_s` (a bound for a hung run, never the expected time)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _interrupt(cluster: SimCluster, args: list[str], running: str, count: int) -> tuple[int, str, str]:
    """Run jueying and press Ctrl-C once `count` processes matching `running` run on the nodes (a moment
    seen, not waited for with a sleep)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    env.update(cluster.client_env(), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "jueying_cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: proc.poll() is not None or len(_left_running(running)) >= count)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


@pytest.mark.parametrize("limit", [[], ["-t", "60"]], ids=["no-timeout", "timeout"])
def test_ctrl_c_keeps_what_arrived_and_leaves_nothing_running(cluster: SimCluster, limit: list[str]) -> None:
    marker = f"sleep 41.{len(limit)}7"
    # Ctrl-C once every node runs the sleep: each has printed "started", which must then be kept (after a
    # Ctrl-C jueying reads each command's output until the node has killed it)
    rc, out, err = _interrupt(cluster, ["run", "-w", "node[18-21]", *limit, "--",
                                        f"echo started; {marker}; echo never"], f"^{marker}", 4)
    assert rc == 130, err
    assert "node[18-21] (4) stopped before it ended" in out and "started" in out and "never" not in out
    assert "timeout (4): node[18-21]" in err and "interrupted" in err
    deadline = time.monotonic() + 10
    while _left_running(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _left_running(marker) == []


def test_a_killed_jueying_leaves_nothing_running(cluster: SimCluster) -> None:
    """SIGKILL gives jueying no chance to clean up: the dropped connection ends the lifeline on the node."""
    marker = "sleep 43.51"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    env.update(cluster.client_env(), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "jueying_cli", "run", "-w", "node[24-25]", "--", marker],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while len(_left_running(marker)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_left_running(marker)) >= 2, "the command never started"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 15
    while _left_running(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _left_running(marker) == []
