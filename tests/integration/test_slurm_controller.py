"""Slurm through a controller node: `slurm_controller: ctl01` makes jueying run scontrol/squeue on ctl01 over
SSH instead of on this machine.

Real peers on both sides:
- a real Slurm (tests/slurm: slurmctld + one `slurmd -N` per node, own munge, own ports) with nodes
  node01..node04;
- simulated SSH nodes (tests/cluster) node01..node04 with simulated GPUs (the facts come from there), and
  a separate one-node SimCluster `ctl01`: the controller host. Only ctl01's SSH sessions get the test
  cluster's SLURM_CONF (sshd `SetEnv`, through SimCluster's `extra_env`), as a real controller host has
  its own /etc/slurm. jueying itself never sends SLURM_CONF.

Nothing Slurm may run in the jueying process: it runs with a PATH that holds only tripwire `scontrol` and
`squeue` scripts (they record the call and fail), and with a SLURM_CONF that points nowhere. On ctl01,
`scontrol` and `squeue` are logging wrappers around the real ones, so the tests see that the calls did
happen there (the wrapper records the node's own hostname, from its UTS namespace).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster import SimCluster
from tests.cluster._sim import SSHD_DEFAULT_PATH
from tests.conftest import Result, run_jueying
from tests.machine import sim_checks_yaml
from tests.nvmlsim import default_state
from tests.slurm import SlurmCluster

NAMES = [f"node{i:02d}" for i in range(1, 5)]
CONTROLLER = "ctl01"
GPU_OCTETS = (127, 67)
CTL_OCTETS = (127, 68)
GPU_MODEL = "NVIDIA H100 80GB HBM3"
PLAYBOOK = """\
role: compute
steps:
  - name: promote the spare
    on: spare
    run: echo "replaces $JUEYING_FAILED_NODE" > "$JUEYING_NODE_STATE_DIR/promoted"
    undo: rm -f "$JUEYING_NODE_STATE_DIR/promoted"
verify:
  - name: the spare says whom it replaces
    on: spare
    run: grep -q "replaces $JUEYING_FAILED_NODE" "$JUEYING_NODE_STATE_DIR/promoted"
"""


def _write_tool(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    with SlurmCluster(tmp_path_factory.mktemp("ctl-slurm"), NAMES) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def gpu_nodes(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("ctl-gpus"), len(NAMES), prefix="node", first_octets=GPU_OCTETS,
                    gpu_lib_dir=nvml_lib) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def ctl_calls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where ctl01's scontrol/squeue wrappers record each call: `<hostname> <tool> <args>`."""
    return tmp_path_factory.mktemp("ctl-calls") / "calls.log"


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path, slurm: SlurmCluster,
               ctl_calls: Path) -> Iterator[SimCluster]:
    """ctl01: an sshd node whose sessions have the test Slurm's SLURM_CONF (sshd SetEnv) and logging
    scontrol/squeue wrappers first on their PATH. A healthy GPU node too, so a plain `jueying status` over
    the whole inventory is clean."""
    bindir = tmp_path_factory.mktemp("ctl-bin")
    for tool in ("scontrol", "squeue"):
        _write_tool(bindir / tool, f'echo "$(hostname) {tool} $*" >> "{ctl_calls}"\nexec /usr/bin/{tool} "$@"\n')
    env = {"SLURM_CONF": slurm.env["SLURM_CONF"],
           "PATH": f"{bindir}:{os.path.dirname(sys.executable)}:{SSHD_DEFAULT_PATH}"}
    with SimCluster(tmp_path_factory.mktemp("ctl-node"), 1, prefix="ctl", first_octets=CTL_OCTETS,
                    gpu_lib_dir=nvml_lib, extra_env=env) as cluster:
        yield cluster


@dataclass
class Setup:
    env: dict[str, str]  # for the jueying process
    local_calls: Path  # written by the tripwire scontrol/squeue if jueying ever runs one locally
    ctl_calls: Path
    gpu_nodes: SimCluster
    controller: SimCluster
    slurm: SlurmCluster

    def jy(self, *args: str) -> Result:
        return run_jueying(list(args), self.env)

    def controller_calls(self) -> list[str]:
        return self.ctl_calls.read_text().splitlines() if self.ctl_calls.exists() else []


@pytest.fixture
def setup(tmp_path: Path, slurm: SlurmCluster, gpu_nodes: SimCluster, controller: SimCluster,
          ctl_calls: Path) -> Iterator[Setup]:
    """A fresh state DB, inventory and tripwire PATH; the clusters put back in shape afterwards."""
    inventory = tmp_path / "inventory.yaml"
    lines = ["vars:", "  ssh_user: root", "  max_unavailable: 2", "groups:", "  gpu:", '    nodes: "node[01-04]"',
             f"    vars: {{scheduler: slurm, slurm_controller: {CONTROLLER}, expected_gpus: 8, "
             f'gpu_model: "{GPU_MODEL}", spare_pool: rack1}}',
             "  compute:", '    nodes: "node[01-02]"', "    vars: {role: compute}",
             "  spares:", '    nodes: "node[03-04]"', "    vars: {role: spare}", "nodes:"]
    lines += [f"  {n.name}: {{address: {n.address}}}" for n in [*gpu_nodes.nodes, *controller.nodes]]
    inventory.write_text("\n".join(lines) + "\n")
    # One ssh_config for both clusters: each Host block names its own key and known_hosts.
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(gpu_nodes.ssh_config_path.read_text() + controller.ssh_config_path.read_text())
    checks = tmp_path / "checks.yaml"  # every simulated node shares this machine's CPUs: no load check
    checks.write_text(sim_checks_yaml())
    playbook = tmp_path / "compute.yaml"
    playbook.write_text(PLAYBOOK)
    tripwire = tmp_path / "no-slurm-here"
    tripwire.mkdir()
    local_calls = tmp_path / "local-calls.log"
    for tool in ("scontrol", "squeue"):
        _write_tool(tripwire / tool, f'echo "{tool} $*" >> "{local_calls}"\nexit 97\n')
    env = {"JUEYING_INVENTORY": str(inventory), "JUEYING_SSH_CONFIG": str(ssh_config),
           "JUEYING_STATE_DB": str(tmp_path / "state.db"), "JUEYING_CHECKS": str(checks),
           "PATH": str(tripwire), "SLURM_CONF": str(tmp_path / "no-such-slurm.conf"), "NO_COLOR": "1",
           "PLAYBOOK": str(playbook)}
    ctl_calls.unlink(missing_ok=True)
    yield Setup(env, local_calls, ctl_calls, gpu_nodes, controller, slurm)
    node = controller.node(CONTROLLER)
    if not node.is_running():
        node.start()
    for sim in gpu_nodes.nodes:
        sim.write_gpu_state(default_state())
        sim.clear_kernel_log()
        (sim.dir / "promoted").unlink(missing_ok=True)
    slurm.cancel_all()
    for name in NAMES:  # resuming a node that is not drained is an error in Slurm: ignore those
        slurm.run("scontrol", "update", f"NodeName={name}", "State=RESUME", check=False)
    slurm.wait_nodes("idle", timeout_s=30)


def _no_local_slurm(setup: Setup) -> None:
    assert not setup.local_calls.exists(), "scontrol/squeue ran in the jueying process:\n" \
        + setup.local_calls.read_text()


def _drained(slurm: SlurmCluster, node: str) -> str | None:
    """The node's drain reason as Slurm itself shows it (None: not drained)."""
    state = slurm.node_state(node)
    return state["reason"] if "DRAIN" in state["state"] else None


def test_status_shows_the_slurm_drain_read_on_the_controller(setup: Setup) -> None:
    setup.slurm.scontrol("update", "NodeName=node02", "State=DRAIN", "Reason=hw: PSU fan, case 991")
    setup.slurm.wait_nodes("drained", nodes=["node02"])

    result = setup.jy("status", "--json")
    assert result.rc == 0, result.stderr
    assert "Traceback" not in result.stderr and "warning" not in result.stderr, result.stderr
    rows = {row["node"]: row for row in result.json()["data"]["nodes"]}
    assert rows["node02"]["state"] == "drained"
    assert rows["node02"]["scheduler"] == "slurm" and rows["node02"]["scheduler_state"] == "drained"
    assert rows["node02"]["drain_reason"] == "hw: PSU fan, case 991"
    assert rows["node01"]["scheduler"] == "slurm" and rows["node01"]["scheduler_state"] == "idle"
    assert rows[CONTROLLER]["scheduler"] == "builtin"  # the controller itself is not a Slurm compute node

    table = setup.jy("status", "--no-fold")
    assert table.rc == 0, table.stderr
    assert "hw: PSU fan, case 991" in table.stdout
    assert "drain/resume through" in table.stdout and "slurm for node[01-04]" in table.stdout

    watch = setup.jy("status", "--json", "--watch", "0.5", "--count", "1")  # the watch asks the same way
    assert watch.rc == 0, watch.stderr
    rows = {row["node"]: row for row in watch.json()["data"]["nodes"]}
    assert rows["node02"]["drain_reason"] == "hw: PSU fan, case 991"

    _no_local_slurm(setup)
    calls = setup.controller_calls()
    assert calls and all(call.startswith(f"{CONTROLLER} ") for call in calls), calls
    assert any(call.startswith(f"{CONTROLLER} scontrol show node -o") for call in calls), calls


def test_drain_resume_and_log_go_through_the_controller(setup: Setup) -> None:
    drained = setup.jy("drain", "node03", "-r", "xid 79 on GPU 3, OPS-1")
    assert drained.rc == 0, drained.stderr
    assert drained.stdout.startswith("node03: drained:"), drained.stdout
    assert _drained(setup.slurm, "node03") == "xid 79 on GPU 3, OPS-1 [jueying:root]"
    assert f"{CONTROLLER} scontrol update NodeName=node03 State=DRAIN" in "\n".join(setup.controller_calls())

    again = setup.jy("drain", "node03", "-r", "something else")
    assert again.rc == 0 and "unchanged: already drained" in again.stdout, again.stdout + again.stderr

    resumed = setup.jy("resume", "node03")
    assert resumed.rc == 0, resumed.stderr
    assert "node03: resumed:" in resumed.stdout
    assert _drained(setup.slurm, "node03") is None

    log = setup.jy("log", "--json")
    assert log.rc == 0, log.stderr
    entries = [(e["action"], e["node"], e["backend"], e["result"]) for e in log.json()["data"]["entries"]]
    assert entries == [("drain", "node03", "slurm", "done"), ("resume", "node03", "slurm", "done")]
    text = setup.jy("log")
    assert "drain node03 [slurm] done" in text.stdout and "reason: xid 79 on GPU 3, OPS-1 [jueying:root]" \
        in text.stdout
    assert "resume node03 [slurm] done" in text.stdout
    _no_local_slurm(setup)


def test_check_drains_and_resumes_through_the_controller(setup: Setup) -> None:
    setup.gpu_nodes.node("node04").set_gpus(**{"gpu.2.ecc_uncorrected_volatile": 1})
    first = setup.jy("check", "--drain", "--resume", "--resume-after", "2", "--json")
    assert first.rc == 2, first.stdout + first.stderr  # CRITICAL
    actions = first.json()["data"]["actions"]
    assert actions == [{"node": "node04", "action": "drain", "result": "drained",
                        "note": "ecc_uncorrected ECC_DBE_VOLATILE gpu2 [jueying-check]"}]
    assert _drained(setup.slurm, "node04") == "ecc_uncorrected ECC_DBE_VOLATILE gpu2 [jueying-check]"

    setup.gpu_nodes.node("node04").set_gpus(**{"gpu.2.ecc_uncorrected_volatile": 0})  # the fault is gone
    second = setup.jy("check", "--drain", "--resume", "--resume-after", "2", "--json")
    assert second.rc == 0, second.stdout + second.stderr
    assert second.json()["data"]["actions"] == [{"node": "node04", "action": "resume", "result": "waiting",
                                                 "note": "1/2 clean runs"}]
    assert _drained(setup.slurm, "node04") is not None
    third = setup.jy("check", "--drain", "--resume", "--resume-after", "2", "--json")
    assert third.rc == 0, third.stdout + third.stderr
    assert third.json()["data"]["actions"] == [{"node": "node04", "action": "resume", "result": "resumed",
                                                "note": "after 2 clean runs"}]
    assert _drained(setup.slurm, "node04") is None
    _no_local_slurm(setup)
    assert any(" scontrol update NodeName=node04 State=RESUME" in c for c in setup.controller_calls())


def test_failover_judges_spares_and_drains_through_the_controller(setup: Setup) -> None:
    setup.slurm.scontrol("update", "NodeName=node03", "State=DRAIN", "Reason=hw: PSU fan, case 991")
    setup.slurm.wait_nodes("drained", nodes=["node03"])
    plan = setup.jy("failover", "node01", "--playbook", setup.env["PLAYBOOK"], "--dry-run", "--json")
    assert plan.rc == 0, plan.stdout + plan.stderr
    data = plan.json()["data"]
    verdicts = {row["spare"]: row["verdict"] for row in data["spares"]}
    assert verdicts == {"node03": "drained: hw: PSU fan, case 991", "node04": "healthy"}  # Slurm's word on node03
    assert data["spare"] == "node04" and data["result"] == "planned"
    assert _drained(setup.slurm, "node01") is None  # a dry run changes nothing

    done = setup.jy("failover", "node01", "--playbook", setup.env["PLAYBOOK"], "--yes", "-r", "xid 79")
    assert done.rc == 0, done.stdout + done.stderr
    assert "failover done:" in done.stdout
    assert (setup.gpu_nodes.node("node04").dir / "promoted").read_text().strip() == "replaces node01"
    assert _drained(setup.slurm, "node01") == "xid 79 (failover to node04) [jueying:root]"
    _no_local_slurm(setup)


def test_an_unreachable_controller_is_a_clear_error_not_a_traceback(setup: Setup) -> None:
    setup.controller.node(CONTROLLER).stop()  # connections to ctl01 are refused
    gpus = "node[01-04]"  # the nodes themselves all answer

    status = setup.jy("status", "-w", gpus, "--json")
    assert status.rc == 0, status.stderr  # the scheduler is best effort in status: every node answered
    assert "Traceback" not in status.stderr
    assert "jueying: warning: slurm scheduler state unavailable: Slurm controller ctl01" in status.stderr, \
        status.stderr
    rows = {row["node"]: row for row in status.json()["data"]["nodes"]}
    assert rows["node01"]["state"] == "ok" and rows["node01"]["scheduler_state"] is None

    drain = setup.jy("drain", "node01", "-r", "maintenance")
    assert drain.rc == 1
    assert "Traceback" not in drain.stderr
    assert drain.stderr.startswith("jueying: Slurm controller ctl01"), drain.stderr
    resume = setup.jy("resume", "node01")
    assert resume.rc == 1
    assert resume.stderr.startswith("jueying: Slurm controller ctl01"), resume.stderr
    failover = setup.jy("failover", "node01", "--playbook", setup.env["PLAYBOOK"], "--dry-run")
    assert failover.rc == 1  # the spares cannot be judged without the scheduler
    assert failover.stderr.startswith("jueying: Slurm controller ctl01"), failover.stderr

    # check --drain: the check still reports (CRITICAL, Nagios 2); the drain it could not make is listed
    # as failed, with the reason, instead of turning the run into a generic error.
    setup.gpu_nodes.node("node02").set_gpus(**{"gpu.0.ecc_uncorrected_volatile": 3})
    check = setup.jy("check", "-w", gpus, "--drain", "--json")
    assert "Traceback" not in check.stderr
    assert check.rc == 2, check.stdout + check.stderr
    data = check.json()["data"]
    assert data["nodes"]["node02"] == "CRITICAL"
    [action] = data["actions"]
    assert action["node"] == "node02" and action["action"] == "drain" and action["result"] == "failed"
    assert action["note"].startswith("Slurm controller ctl01"), action
    assert "Slurm controller ctl01" in check.stderr  # and said on stderr, for cron mail

    assert all(_drained(setup.slurm, n) is None for n in NAMES)  # nothing changed in Slurm
    assert setup.jy("log", "--json").json()["data"]["entries"] == []  # nothing was attempted either
    _no_local_slurm(setup)
