"""jueying in Prometheus the way a large site runs it: `jueying exporter` on every node (node mode, started over
SSH on each simulated node: it reads that node's simulated NVML and listens on the node's own 127.x address),
a node_exporter reading `jueying check --prometheus`'s textfile on a node, a real Prometheus scraping them on
loopback, and `jueying status --source prometheus=URL` agreeing with `jueying status` over SSH node for node:
a lost GPU, a drained node (its drain state is the scheduler's, read as `status` reads it: node mode cannot
know a Slurm drain) and a stopped exporter (no_data, never healthy)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import SimCluster
from tests.cluster._sim import SimNode
from tests.conftest import REPO, run_jueying
from tests.integration.prometheus_support import (
    assert_lint_is_dcgm_only,
    builtin_inventory,
    http_get,
    prometheus,
    rows_by_node,
    wait_for,
)
from tests.machine import sim_checks_yaml
from tests.nvmlsim import default_state

pytestmark = pytest.mark.skipif(
    not all(os.path.exists(f"/usr/bin/{tool}") for tool in ("prometheus", "promtool", "prometheus-node-exporter")),
    reason="needs Debian's prometheus and prometheus-node-exporter packages (scripts/test installs them)")

NODES = 5
EXPORTER_PORT = 9835  # jueying exporter's default port, on each node's own address
NODE_EXPORTER_PORT = 9100


def on_node(sim: SimCluster, node: SimNode, script: str, timeout_s: float = 60) -> str:
    """Run a shell script on a simulated node over SSH (its session has the node's NVML, kernel log and state
    directory in the environment, from the node's sshd SetEnv); its stdout, or AssertionError."""
    proc = subprocess.run(["ssh", "-F", str(sim.ssh_config_path), node.name, script], capture_output=True,
                          text=True, timeout=timeout_s, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, f"{node.name}: {script}\n{proc.stdout}{proc.stderr}"
    return proc.stdout


class OnNode:
    """A long-running process started on a node over SSH, in the background (detached from the session,
    stdin/stdout/stderr not the session's, so the SSH session ends at once); the node's sshd is PID 1 of the
    node's PID namespace and reaps it when it ends. stop() sends SIGTERM over SSH and waits for it to be gone;
    the cluster's down() would end it with the node in any case."""

    def __init__(self, sim: SimCluster, node: SimNode, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.sim, self.node, self.name = sim, node, name
        self.log = node.dir / f"{name}.log"
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        command = " ".join(shlex.quote(a) for a in argv)
        # Only the command goes to the background (`a && b &` would background a subshell that keeps the
        # session's stdout open, and the SSH session would wait for it).
        script = (f"cd {shlex.quote(str(node.dir))} || exit 1; {assignments} nohup {command} </dev/null "
                  f">{shlex.quote(str(self.log))} 2>&1 & echo $!")
        self.pid = int(on_node(sim, node, script).strip())  # as the node sees it (its own PID namespace)

    def stop(self) -> None:
        if not self.node.is_running():
            return
        on_node(self.sim, self.node, f"kill -TERM {self.pid} 2>/dev/null; n=0; "
                f"while kill -0 {self.pid} 2>/dev/null && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; "
                f"! kill -0 {self.pid} 2>/dev/null")


def start_exporter(sim: SimCluster, node: SimNode) -> OnNode:
    """`jueying exporter --this-machine` on the node, listening on the node's own address."""
    checks = node.dir / "checks.yaml"
    checks.write_text(sim_checks_yaml())  # the default set without `load` (the nodes share this machine's CPUs)
    env = {"PYTHONPATH": str(REPO), "JUEYING_STATE_DB": str(node.dir / "exporter.db"), "JUEYING_CHECKS": str(checks)}
    return OnNode(sim, node, "exporter", [sys.executable, "-m", "jueying_cli", "exporter", "--this-machine",
                                          "--listen", f"{node.address}:{EXPORTER_PORT}", "--interval", "1",
                                          "--expected-gpus", "8"], env)




def _check_levels(stdout: str) -> tuple[dict[str, str], set[tuple[str, str, int | None, str, str]]]:
    """A check envelope's level per node, and its non-OK results as (node, check, gpu, level, action)."""
    data = json.loads(stdout)["data"]
    return data["nodes"], {(r["node"], r["check"], r["gpu"], r["level"], r["action"]) for r in data["results"]}


COMPARED = ("state", "reason", "gpus_present", "gpus_expected", "gpus_lost", "gpu_models", "scheduler",
            "scheduler_state", "drain_reason", "hottest_gpu_c", "hottest_gpu_index", "cpu_threads",
            "utilization_max_pct", "utilization_avg_pct", "gpu_memory_used_bytes", "gpu_memory_total_bytes",
            "power_watts", "power_limit_watts")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("prom-nodes"), NODES, prefix="pm", first_octets=(127, 68),
                    gpu_lib_dir=nvml_lib) as sim:
        yield sim


def test_exporters_on_the_nodes_agree_with_ssh(cluster: SimCluster, tmp_path: Path) -> None:
    checks = tmp_path / "checks.yaml"
    checks.write_text(sim_checks_yaml())
    env = {**cluster.client_env(), "JUEYING_STATE_DB": str(tmp_path / "state.db"), "JUEYING_CHECKS": str(checks),
           "JUEYING_INVENTORY": str(builtin_inventory(cluster.nodes, tmp_path / "inventory.yaml"))}
    first, lost, drained, gone = (cluster.node(n) for n in ("pm01", "pm02", "pm03", "pm05"))
    lost.set_gpus(**{"gpu.4.lost": 1})
    textfiles = first.dir / "textfile"
    textfiles.mkdir(exist_ok=True)
    started: list[OnNode] = []
    try:
        drain = run_jueying(["drain", "pm03", "--reason", "fan | noisy"], env)
        assert drain.rc == 0, drain.stderr
        exporters = {n.name: start_exporter(cluster, n) for n in cluster.nodes}
        started += exporters.values()
        # the check textfile on pm01, read by a node_exporter on pm01's address
        check = on_node(cluster, first, f"cd {shlex.quote(str(first.dir))} && PYTHONPATH={shlex.quote(str(REPO))} "
                        f"JUEYING_STATE_DB=check.db JUEYING_CHECKS=checks.yaml {shlex.quote(sys.executable)} -m "
                        f"jueying_cli check -q --prometheus textfile/jueying.prom; echo rc=$?")
        assert check.strip().endswith("rc=0"), check
        started.append(OnNode(cluster, first, "node_exporter", [
            "prometheus-node-exporter", "--collector.disable-defaults", "--collector.textfile",
            f"--collector.textfile.directory={textfiles}",
            f"--web.listen-address={first.address}:{NODE_EXPORTER_PORT}"], {}))
        targets = [f"{n.address}:{EXPORTER_PORT}" for n in cluster.nodes]
        for target in targets:
            wait_for(lambda t=target: "DCGM_FI_DEV_GPU_TEMP" in (http_get(f"http://{t}/metrics") or ""),
                     f"a first collection on {target}")
        exposition = http_get(f"http://{lost.address}:{EXPORTER_PORT}/metrics")
        assert exposition is not None and 'Hostname="pm02"' in exposition  # the node's own name (its UTS namespace)
        assert_lint_is_dcgm_only(exposition)
        with prometheus(tmp_path / "prom", {"jueying": targets,
                                            "node": [f"{first.address}:{NODE_EXPORTER_PORT}"]}) as server:
            def settled() -> bool:
                states = server.values('jueying_node_state{job="jueying"} == 1', "node")
                textfile = server.values('jueying_check_last_run_timestamp_seconds{job="node"}', "instance")
                return len(states) == NODES and server.values("jueying_node_gpus_lost", "node").get("pm02") == 1 \
                    and bool(textfile)
            wait_for(settled, "every node's exporter and the textfile in Prometheus")
            # node mode knows the node's health; the drain is the scheduler's, so no node exports it
            assert server.values('jueying_node_state{state="degraded"} == 1', "node") == {"pm02": 1}
            assert server.query("jueying_node_scheduler_state") == []
            assert server.values('jueying_node_level{job="node"} == 1', "level") == {"OK": 1}

            from_prom = run_jueying(["status", "--json", "--no-fold", "--source", f"prometheus={server.url}"], env)
            over_ssh = run_jueying(["status", "--json", "--no-fold"], env)
            assert from_prom.rc == over_ssh.rc == 0, from_prom.stderr + over_ssh.stderr
            prom_rows, ssh_rows = rows_by_node(from_prom.stdout), rows_by_node(over_ssh.stdout)
            assert set(prom_rows) == set(ssh_rows) == {n.name for n in cluster.nodes}
            for name in ssh_rows:
                assert {k: prom_rows[name][k] for k in COMPARED} == {k: ssh_rows[name][k] for k in COMPARED}, name
            assert prom_rows["pm02"]["state"] == "degraded" and prom_rows["pm02"]["reason"] == "GPU 4 lost"
            assert prom_rows["pm03"]["state"] == "drained" and "fan | noisy" in prom_rows["pm03"]["drain_reason"]
            assert prom_rows["pm01"]["state"] == "ok" and prom_rows["pm01"]["collected_at_unix"] is not None

            # check: the levels the exporters confirmed, as a check run over SSH finds them
            prom_check = run_jueying(["check", "--json", "--source", f"prometheus={server.url}"], env)
            ssh_check = run_jueying(["check", "--json", "--no-history"], env)
            assert prom_check.rc == ssh_check.rc == 2, prom_check.stdout + prom_check.stderr + ssh_check.stdout
            assert _check_levels(prom_check.stdout) == _check_levels(ssh_check.stdout)
            assert _check_levels(prom_check.stdout)[1] == {("pm02", "nvml", 4, "CRITICAL", "reboot"),
                                                           ("pm02", "gpu_count", None, "CRITICAL", "drain")}
            nagios = run_jueying(["check", "--nagios", "--source", f"prometheus={server.url}"], env)
            assert nagios.rc == 2 and nagios.stdout.startswith(
                "JUEYING CHECK CRITICAL - 2 critical, 0 warning, 0 unknown on 1 of 5 node(s) |"), nagios.stdout

            # A stopped exporter: Prometheus marks its series stale at the next failed scrape. Its node is
            # up (SSH says ok) but Prometheus has nothing fresh for it: no_data, never healthy.
            exporters["pm05"].stop()
            wait_for(lambda: "pm05" not in server.values("jueying_node_state == 1", "node"), "pm05 gone stale")
            after = run_jueying(["status", "--json", "--no-fold", "--source", f"prometheus={server.url}"], env)
            ssh_after = run_jueying(["status", "--json", "--no-fold", "-w", "pm05"], env)
            rows = rows_by_node(after.stdout)
            assert rows["pm05"]["state"] == "no_data" and rows_by_node(ssh_after.stdout)["pm05"]["state"] == "ok"
            assert after.rc == 1 and [e["node"] for e in json.loads(after.stdout)["errors"]] == ["pm05"]
            table = run_jueying(["status", "--no-fold", "--source", f"prometheus={server.url}"],
                                {**env, "NO_COLOR": "1"})
            assert "no fresh data in Prometheus" in table.stdout and "nodes up 4/5" in table.stdout
            assert gone.is_running()
            # and check says UNKNOWN for it (never OK), while the node itself is fine
            unknown = run_jueying(["check", "--json", "-w", "pm05", "--source", f"prometheus={server.url}"], env)
            assert unknown.rc == 3, unknown.stdout + unknown.stderr
            [result] = json.loads(unknown.stdout)["data"]["results"]
            assert (result["check"], result["level"]) == ("reachability", "UNKNOWN")
            assert "no fresh data" in result["message"]
            assert run_jueying(["check", "-q", "--no-history", "-w", "pm05"], env).rc == 0
    finally:
        for process in reversed(started):
            process.stop()
        run_jueying(["resume", "pm03"], env)
        (drained.dir / "drained").unlink(missing_ok=True)
        lost.write_gpu_state(default_state())
    for process in started:  # each one gone: its port no longer answers
        port = EXPORTER_PORT if process.name == "exporter" else NODE_EXPORTER_PORT
        assert http_get(f"http://{process.node.address}:{port}/metrics", timeout_s=2) is None
