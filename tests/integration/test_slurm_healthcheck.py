"""Slurm runs `jueying check --drain` itself, as its HealthCheckProgram (slurm.conf), the way sites run NHC: every
HealthCheckInterval each slurmd runs the program, which checks its own node (SLURMD_NODENAME) with a state
database of that node's own, and drains it when a confirmed CRITICAL result recommends it. The shipped
lose-one-gpu-node drill, run from the controller with no cron at all, must see Slurm's health check drain the
victim within its objective, and put everything back.

Real peers: slurmctld and one slurmd per node name (tests/slurm), sshd nodes with the simulated NVML.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import SimCluster
from tests.conftest import REPO, run_jueying
from tests.machine import sim_checks_yaml
from tests.nvmlsim import default_state
from tests.slurm import SlurmCluster

NAMES = ["hc1", "hc2", "hc3"]
PLAYBOOK = REPO / "playbooks" / "drills" / "lose-one-gpu-node.yaml"
INTERVAL_S = 5  # HealthCheckInterval


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("hc-sim"), len(NAMES), prefix="hc", start_index=1, digits=1,
                    first_octets=(127, 71), gpu_lib_dir=nvml_lib) as cluster:
        yield cluster


def health_check_program(path: Path, env: dict[str, str], workdir: Path) -> Path:
    """The script slurmd runs: jueying on this node's name, its own state database, always exit 0 (slurmd
    waits for 0 before a starting node registers; draining is the script's verdict, not its exit code)."""
    keep = {k: v for k, v in env.items() if k.startswith(("JUEYING_", "SLURM_"))}
    keep.update(PYTHONPATH=str(REPO), HOME=os.environ.get("HOME", "/root"),
                PATH=f"{os.path.dirname(sys.executable)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(keep.items()))
    path.write_text(f"""#!/bin/sh
node="${{SLURMD_NODENAME:-}}"
[ -n "$node" ] || {{ env > {shlex.quote(str(workdir / "no-node-name.env"))}; exit 0; }}
mkdir -p {shlex.quote(str(workdir))}/"$node"
env -i {assignments} JUEYING_STATE_DB={shlex.quote(str(workdir))}/"$node"/state.db \\
    {shlex.quote(sys.executable)} -m jueying_cli check -q --drain -w "$node" --lock-wait 30 \\
    >> {shlex.quote(str(workdir))}/"$node"/check.log 2>&1
echo "$(date +%s) rc=$?" >> {shlex.quote(str(workdir))}/"$node"/runs
exit 0
""")
    path.chmod(0o755)
    return path


def test_slurm_health_check_drains_the_drill_victim_and_the_drill_puts_it_back(
        sim: SimCluster, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("vars: {ssh_user: root, scheduler: slurm, expected_gpus: 8, max_unavailable: 2}\nnodes:\n"
                         + "".join(f"  {n.name}: {{address: {n.address}}}\n" for n in sim.nodes))
    checks = tmp_path / "checks.yaml"
    checks.write_text(sim_checks_yaml())
    base = {**sim.client_env(), "JUEYING_INVENTORY": str(inventory), "JUEYING_CHECKS": str(checks)}
    workdir = tmp_path / "nodes"
    workdir.mkdir()
    slurm_base = tmp_path_factory.mktemp("hc-slurm")
    program = health_check_program(tmp_path / "jueying-healthcheck", {**base, **_slurm_env(slurm_base)}, workdir)
    conf = [f"HealthCheckProgram={program}", f"HealthCheckInterval={INTERVAL_S}", "HealthCheckNodeState=ANY"]
    with SlurmCluster(slurm_base, NAMES, extra_conf=conf) as slurm:
        assert _slurm_env(slurm_base).items() <= slurm.env.items(), "the script's Slurm environment moved"
        env = {**base, **slurm.env, "JUEYING_STATE_DB": str(tmp_path / "controller.db")}
        try:
            result = run_jueying(["drill", "run", str(PLAYBOOK), "--yes", "--json", "--var", "gpu_floor=8"], env,
                                 timeout=600)
            runs = {n: (workdir / n / "runs").read_text().count("\n") if (workdir / n / "runs").exists() else 0
                    for n in NAMES}
            assert not (workdir / "no-node-name.env").exists(), (workdir / "no-node-name.env").read_text()
            assert result.rc == 0, result.stderr[-3000:] + result.stdout[-4000:]
            journal = result.json()["data"]
            victim = journal["targets_resolved"]["victim"]["nodes"][0]
            detect = journal["objectives"]["time_to_detect"]
            assert detect["met"] is True and detect["value_s"] < 300
            # Slurm's own health check did it: the victim's drain is in that node's own audit log
            log = run_jueying(["log", "--json"], {**env, "JUEYING_STATE_DB": str(workdir / victim / "state.db")})
            entries = [(e["node"], e["action"], e["actor"], e["result"]) for e in log.json()["data"]["entries"]]
            assert (victim, "drain", "jueying-check", "done") in entries, entries
            assert all(count >= 1 for count in runs.values()), runs  # every slurmd ran the program
            assert slurm.wait_nodes("idle", timeout_s=60)  # all back in service
        finally:
            for node in sim.nodes:
                node.write_gpu_state(default_state())
                for overlay in (node.dir / "inject").glob("*") if (node.dir / "inject").exists() else []:
                    overlay.unlink(missing_ok=True)


def _slurm_env(base: Path) -> dict[str, str]:
    """What SlurmCluster(base).env will be for the client commands (the script is written before it starts)."""
    return {"SLURM_CONF": str(base.resolve() / "etc" / "slurm.conf")}
