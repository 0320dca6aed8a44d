"""`jueying drill` end to end against the simulated cluster of real sshd nodes (simulated NVML per node) with
the builtin scheduler, and `jueying check --drain` running beside it as cron would.

What is checked is what the nodes and the scheduler say afterwards (the GPU fault overlay files, the ledger,
the node-side undo files), not only what the drill printed.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import SimCluster
from tests.conftest import REPO, Result, run_jueying
from tests.machine import sim_checks_yaml
from tests.nvmlsim import default_state
from tests.slurm import SlurmCluster

NAMES = [f"dn{i}" for i in range(1, 5)]
PLAYBOOK = REPO / "playbooks" / "drills" / "lose-one-gpu-node.yaml"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("drill-sim"), len(NAMES), prefix="dn", first_octets=(127, 67),
                    digits=1, gpu_lib_dir=nvml_lib) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    with SlurmCluster(tmp_path_factory.mktemp("drill-slurm"), NAMES) as cluster:
        yield cluster


def make_env(sim: SimCluster, tmp_path: Path, backend: str) -> dict[str, str]:
    """Inventory (8 GPUs a node, the given scheduler), check set, a fresh state DB."""
    lines = ["vars:", "  ssh_user: root", f"  scheduler: {backend}", "  max_unavailable: 3", "  expected_gpus: 8",
             "nodes:"] + [f"  {n.name}: {{address: {n.address}}}" for n in sim.nodes]
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("\n".join(lines) + "\n")
    checks = tmp_path / "checks.yaml"
    checks.write_text(sim_checks_yaml())
    return {**sim.client_env(), "JUEYING_INVENTORY": str(inventory), "JUEYING_CHECKS": str(checks),
            "JUEYING_STATE_DB": str(tmp_path / "state.db")}


def restore(sim: SimCluster) -> None:
    for node in sim.nodes:
        node.write_gpu_state(default_state())
        node.clear_kernel_log()
        drills, overlays = node.dir / "drills", node.dir / "inject"
        for leftover in [node.dir / "drained", *(drills.glob("*") if drills.exists() else []),
                         *(overlays.glob("*") if overlays.exists() else [])]:
            leftover.unlink(missing_ok=True)


@pytest.fixture
def env(sim: SimCluster, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The builtin scheduler; the cluster restored after."""
    yield make_env(sim, tmp_path, "builtin")
    restore(sim)


@pytest.fixture(params=["builtin", "slurm"])
def any_env(request: pytest.FixtureRequest, sim: SimCluster, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The builtin scheduler, then the real Slurm harness (slurmctld + one slurmd per node name)."""
    variables = make_env(sim, tmp_path, request.param)
    cluster = None
    if request.param == "slurm":
        cluster = request.getfixturevalue("slurm")
        variables.update(cluster.env, JUEYING_BACKEND="slurm")
    yield variables
    restore(sim)
    if cluster is not None:
        cluster.cancel_all()
        for name in NAMES:
            cluster.run("scontrol", "update", f"NodeName={name}", "State=RESUME", check=False)
        cluster.wait_nodes("idle", timeout_s=30)
def jy(env: dict[str, str], *args: str, timeout: float = 300) -> Result:
    return run_jueying(list(args), env, timeout=timeout)


def popen_jueying(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    full.update(env, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "jueying_cli", *args], env=full, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


class Cron:
    """`jueying check --drain` every second, as cron runs it on a real cluster; stopped by the test."""

    def __init__(self, env: dict[str, str]) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
        full.update(env, PYTHONPATH=str(REPO))
        loop = f"while :; do {sys.executable} -m jueying_cli check --drain >/dev/null 2>&1; sleep 1; done"
        self.proc = subprocess.Popen(["sh", "-c", loop], env=full, cwd=REPO, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


def journal_rows(env: dict[str, str]) -> list[dict[str, Any]]:
    if not Path(env["JUEYING_STATE_DB"]).exists():
        return []
    db = sqlite3.connect(env["JUEYING_STATE_DB"], timeout=30)
    try:
        rows = db.execute("SELECT journal FROM drill_runs").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()
    return [json.loads(r[0]) for r in rows]


def wait_until(what: str, predicate: Any, timeout_s: float = 120.0) -> Any:
    """Poll until predicate() is truthy (a condition, not a race won by sleeping)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def drained(env: dict[str, str], node: str) -> bool:
    """What the scheduler itself says: scontrol for Slurm, the ledger for builtin."""
    if env.get("JUEYING_BACKEND") == "slurm":
        out = subprocess.run(["scontrol", "show", "node", "-o", node], env={**os.environ, **env},
                             capture_output=True, text=True, check=True).stdout
        return "DRAIN" in out.split("State=")[1].split()[0]
    db = sqlite3.connect(env["JUEYING_STATE_DB"], timeout=30)
    try:
        row = db.execute("SELECT drained FROM ledger WHERE node = ?", (node,)).fetchone()
    except sqlite3.OperationalError:
        row = None
    finally:
        db.close()
    return bool(row and row[0])


def injected(sim: SimCluster) -> dict[str, list[str]]:
    """What the drill left on the nodes: GPU fault overlay files (JUEYING_PROBE_INJECT_DIR), lines in GPU
    state files and kernel logs, pending undo files."""
    left: dict[str, list[str]] = {}
    for node in sim.nodes:
        overlays = node.dir / "inject"
        found = sorted(p.name for p in overlays.iterdir()) if overlays.exists() else []
        found += [line for line in node.state_path.read_text().splitlines() if "jueying-drill" in line]
        if node.kernel_log_path.exists():
            found += [line for line in node.kernel_log_path.read_text().splitlines() if "jueying drill" in line]
        drills = node.dir / "drills"
        if drills.exists():
            found += [p.name for p in drills.iterdir() if p.name.endswith((".undo", ".ttl", ".ttl-failed"))]
        if found:
            left[node.name] = found
    return left


def write_playbook(path: Path, method: str, *, extra: str = "", rollback: str = "") -> Path:
    path.write_text(f"""apiVersion: jueying/v1
kind: Drill
metadata: {{name: test-drill}}
targets:
  victim: {{nodes: "dn[1-4]", pick: {{mode: names, value: [dn2]}}}}
{extra}
method:
{method}
{rollback}
""")
    return path


# ---------------------------------------------------------------- the shipped drill, end to end


def test_lose_one_gpu_node_is_detected_drained_and_restored(any_env: dict[str, str], sim: SimCluster) -> None:
    env = any_env
    cron = Cron(env)
    try:
        result = jy(env, "drill", "run", str(PLAYBOOK), "--yes", "--json", "--var", "gpu_floor=16")
    finally:
        cron.stop()
    assert result.rc == 0, result.stderr[-3000:] + result.stdout[-6000:]
    journal = result.json()["data"]
    assert journal["status"] == "completed" and journal["rollback_status"] == "succeeded"
    victim = journal["targets_resolved"]["victim"]["nodes"][0]
    assert isinstance(journal["targets_resolved"]["victim"]["seed"], int)  # the random pick's seed is recorded
    detect = journal["timings"]["time_to_detect"]
    assert 0 < detect <= 300 and journal["objectives"]["time_to_detect"]["met"] is True
    assert [e["name"] for e in journal["rollbacks"]] == ["undo lose-gpu-0", "resume-victim"]
    # the nodes themselves: no fault left, the victim back in service, nothing pending on the node
    assert injected(sim) == {}
    assert not drained(env, victim)
    assert journal["steady_states"]["post_rollback"][0]["value"] == {victim: "idle"}
    listed = jy(env, "drill", "list", "--json").json()["data"]["runs"]
    assert [(r["run_id"], r["status"]) for r in listed] == [(journal["run_id"], "completed")]
    shown = jy(env, "drill", "show", journal["run_id"], "--markdown")
    assert shown.rc == 0 and "| time_to_detect |" in shown.stdout


def test_dry_run_reads_probes_and_changes_nothing(env: dict[str, str], sim: SimCluster) -> None:
    result = jy(env, "drill", "run", str(PLAYBOOK), "--dry-run")
    assert result.rc == 0, result.stderr
    assert "dry run: nothing changed" in result.stdout and "probe victim-gpu-healthy (check):" in result.stdout
    assert injected(sim) == {} and journal_rows(env) == []


def test_without_a_terminal_and_without_yes_it_refuses(env: dict[str, str], sim: SimCluster) -> None:
    result = jy(env, "drill", "run", str(PLAYBOOK))
    assert result.rc == 2 and "--yes" in result.stderr
    assert injected(sim) == {} and journal_rows(env) == []


# ---------------------------------------------------------------- rollback guarantees

FAULT_THEN_WAIT = """  - action: lose-gpu
    do: gpu_fault
    on: victim
    with: {fault: lost, gpu: 1}
    ttl: %s
    mark: fault_injected
  - action: xid-79
    do: gpu_fault
    on: victim
    with: {fault: xid, xid: 79, gpu: 2}
    ttl: %s
    mark: xid_written
  - wait_for:
      name: never
      probe: file
      with: {path: /nonexistent/jueying-drill-never}
      expect: {equals: true}
      timeout: 10m
      interval: 200ms
"""


def started_drill(env: dict[str, str], playbook: Path, marks: tuple[str, ...] = ("fault_injected", "xid_written"),
                  ) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """A drill left running, once its journal shows these marks (the deterministic moment)."""
    proc = popen_jueying(env, "drill", "run", str(playbook), "--yes", "--json")

    def reached() -> dict[str, Any] | None:
        if proc.poll() is not None:
            raise AssertionError(f"drill ended early: {proc.communicate()}")
        rows = journal_rows(env)
        return rows[0] if rows and set(marks) <= set(rows[0]["marks"]) else None

    return proc, wait_until(f"{', '.join(marks)} in the journal", reached)


@pytest.mark.parametrize(("sig", "moment"), [
    (signal.SIGINT, "fault_injected"), (signal.SIGINT, "xid_written"),
    (signal.SIGTERM, "fault_injected"), (signal.SIGTERM, "xid_written")])
def test_a_signal_mid_method_rolls_back_everything(env: dict[str, str], sim: SimCluster, tmp_path: Path,
                                                   sig: signal.Signals, moment: str) -> None:
    """At each step: after the first fault, and after the second (the method then waits)."""
    playbook = write_playbook(tmp_path / "drill.yaml", FAULT_THEN_WAIT % ("20m", "20m"))
    proc, _ = started_drill(env, playbook, (moment,))
    assert "dn2" in injected(sim)  # the fault is really on the node
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    journal = json.loads(out)["data"]
    assert journal["status"] == "interrupted" and journal["rollback_status"] == "succeeded"
    assert journal["aborted_by"] == f"interrupted by {sig.name}"
    started = [e["name"] for e in journal["run"] if not e.get("wait_for")]
    assert started[0] == "lose-gpu"  # the signal may land while the second fault is being made: then it started
    assert [e["name"] for e in journal["rollbacks"]] == [f"undo {name}" for name in reversed(started)]
    assert injected(sim) == {}


def test_sigkill_then_recover_restores_the_nodes(env: dict[str, str], sim: SimCluster, tmp_path: Path) -> None:
    playbook = write_playbook(tmp_path / "drill.yaml", FAULT_THEN_WAIT % ("20m", "20m"))
    proc, journal = started_drill(env, playbook)
    proc.kill()
    proc.communicate(timeout=30)
    assert journal_rows(env)[0]["status"] == "running"
    assert set(injected(sim)) == {"dn2"}  # killed: nothing undone yet (the TTL is 20 minutes away)
    recovered = jy(env, "drill", "recover", journal["run_id"], "--json")
    assert recovered.rc == 0, recovered.stderr
    data = recovered.json()["data"]
    assert data["status"] == "interrupted" and data["rollback_status"] == "succeeded"
    assert injected(sim) == {}
    again = jy(env, "drill", "recover", journal["run_id"])
    assert again.rc == 0 and "nothing to recover" in again.stdout


def test_recover_refuses_while_the_run_is_alive(env: dict[str, str], sim: SimCluster, tmp_path: Path) -> None:
    playbook = write_playbook(tmp_path / "drill.yaml", FAULT_THEN_WAIT % ("20m", "20m"))
    proc, journal = started_drill(env, playbook)
    try:
        busy = jy(env, "drill", "recover", journal["run_id"])
        assert busy.rc == 1 and "another drill holds dn2" in busy.stderr
        second = jy(env, "drill", "run", str(playbook), "--yes")
        assert second.rc == 1 and "another drill holds dn2" in second.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    assert injected(sim) == {}


def test_the_ttl_undoes_the_fault_on_the_node_when_the_controller_dies(env: dict[str, str], sim: SimCluster,
                                                                      tmp_path: Path) -> None:
    playbook = write_playbook(tmp_path / "drill.yaml", FAULT_THEN_WAIT % ("3s", "3s"))
    proc, _ = started_drill(env, playbook)
    proc.kill()
    proc.communicate(timeout=30)
    # nobody undoes it from here: the node's own timer does, once its 3 s have passed
    wait_until("the node-side timer to undo the faults", lambda: injected(sim) == {}, timeout_s=60)
    assert "dn2" not in injected(sim)


def test_a_failing_undo_is_reported_as_a_failure(env: dict[str, str], sim: SimCluster, tmp_path: Path) -> None:
    method = """  - action: bad-undo
    do: command
    on: victim
    with: {run: "true", undo: "echo cannot put it back >&2; exit 7"}
"""
    result = jy(env, "drill", "run", str(write_playbook(tmp_path / "drill.yaml", method)), "--yes", "--json")
    assert result.rc == 4  # the rollback failed: a person must act
    journal = result.json()["data"]
    assert journal["status"] == "failed" and journal["rollback_status"] == "failed"
    assert journal["rollbacks"][0]["status"] == "failed" and "cannot put it back" in journal["rollbacks"][0]["output"]
    # the undo is kept on the node (its timer stays armed): a person, `drill recover`, or the TTL can finish
    assert any(name.endswith(".undo") for name in injected(sim)["dn2"])


def test_a_failed_action_fails_the_run_and_later_actions_never_start(env: dict[str, str], sim: SimCluster,
                                                                    tmp_path: Path) -> None:
    method = """  - action: lose-gpu
    do: gpu_fault
    on: victim
    with: {fault: lost, gpu: 3}
  - action: refused
    do: stop_process
    on: victim
    with: {name: no-such-process-jy}
  - action: never-started
    do: gpu_fault
    on: victim
    with: {fault: ecc, gpu: 4, count: 2}
"""
    result = jy(env, "drill", "run", str(write_playbook(tmp_path / "drill.yaml", method)), "--yes", "--json")
    assert result.rc == 1
    journal = result.json()["data"]
    assert journal["status"] == "failed" and journal["rollback_status"] == "succeeded"
    assert [(e["name"], e["status"]) for e in journal["run"]] == [("lose-gpu", "succeeded"), ("refused", "failed")]
    assert "no process named" in journal["run"][1]["output"]
    assert [e["name"] for e in journal["rollbacks"]] == ["undo refused", "undo lose-gpu"]
    assert injected(sim) == {}


def test_a_guard_aborts_the_method_and_rolls_back(env: dict[str, str], sim: SimCluster, tmp_path: Path) -> None:
    flag = tmp_path / "healthy"
    flag.write_text("yes\n")
    guard = f"""guards:
  abort_when:
    - name: service-up
      probe: file
      with: {{path: "{flag}"}}
      expect: {{equals: true}}
      every: 200ms
      consecutive_failures: 2
"""
    playbook = write_playbook(tmp_path / "drill.yaml", FAULT_THEN_WAIT % ("20m", "20m"), extra=guard)
    proc, _ = started_drill(env, playbook)
    flag.unlink()  # the service the guard watches goes away
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    journal = json.loads(out)["data"]
    assert journal["status"] == "aborted" and journal["rollback_status"] == "succeeded"
    assert journal["aborted_by"] == "abort_when service-up failed 2 consecutive time(s)"
    assert injected(sim) == {}


@pytest.mark.parametrize("how", ["drained", "down"])
def test_max_unavailable_counts_nodes_already_out_and_stops_before_anything(
        env: dict[str, str], sim: SimCluster, tmp_path: Path, how: str) -> None:
    if how == "drained":
        jy(env, "drain", "dn1", "-r", "maintenance")
    else:
        sim.node("dn1").stop()  # a builtin node that does not answer counts as down
    try:
        guard = "guards:\n  max_unavailable: {count: 1}\n"
        result = jy(env, "drill", "run", str(write_playbook(tmp_path / "drill.yaml", FAULT_THEN_WAIT % (
            "20m", "20m"), extra=guard)), "--yes", "--json")
        assert result.rc == 3
        journal = result.json()["data"]
        assert journal["status"] == "aborted" and journal["rollback_status"] == "not_needed"
        assert journal["aborted_by"].startswith("max_unavailable 1: 1 of 4 nodes already unavailable")
        assert journal["run"] == [] and injected(sim) == {}
    finally:
        if how == "drained":
            jy(env, "resume", "dn1")
        else:
            sim.node("dn1").start()


def test_a_steady_state_that_does_not_hold_means_nothing_is_injected(env: dict[str, str], sim: SimCluster,
                                                                    tmp_path: Path) -> None:
    steady = """steady_state:
  probes:
    - name: victim-drained
      probe: node_state
      on: victim
      expect: {equals: drained}
      phases: [before]
"""
    result = jy(env, "drill", "run", str(write_playbook(tmp_path / "drill.yaml", FAULT_THEN_WAIT % ("20m", "20m"),
                                                         extra=steady)), "--yes", "--json")
    assert result.rc == 1
    journal = result.json()["data"]
    assert journal["status"] == "failed" and journal["run"] == [] and journal["rollback_status"] == "not_needed"
    assert injected(sim) == {}


def test_a_target_never_includes_a_drained_node_unless_asked(env: dict[str, str], sim: SimCluster,
                                                            tmp_path: Path) -> None:
    jy(env, "drain", "dn2", "-r", "maintenance")
    playbook = write_playbook(tmp_path / "drill.yaml", FAULT_THEN_WAIT % ("20m", "20m"))
    result = jy(env, "drill", "run", str(playbook), "--dry-run", "--json")
    assert result.rc == 0
    victim = result.json()["data"]["targets_resolved"]["victim"]
    assert victim["nodes"] == [] and victim["left_out_unavailable"] == ["dn2"]
    refused = jy(env, "drill", "run", str(playbook), "--yes")
    assert refused.rc == 1 and "resolved to no node" in refused.stderr
    jy(env, "resume", "dn2")


XID_AND_DRAIN = """  - action: xid-79
    do: gpu_fault
    on: victim
    with: {fault: xid, xid: 79, gpu: 0}
    mark: xid_written
  - action: drain-victim
    do: drain
    on: victim
    with: {reason: taken out by the drill}
    mark: drained
  - wait_for:
      name: never
      probe: file
      with: {path: /nonexistent/jueying-drill-never}
      expect: {equals: true}
      timeout: 10m
      interval: 200ms
"""


def test_sigkill_after_a_drain_then_recover_resumes_it_in_the_scheduler(any_env: dict[str, str], sim: SimCluster,
                                                                        tmp_path: Path) -> None:
    env = any_env
    proc = popen_jueying(env, "drill", "run", str(write_playbook(tmp_path / "d.yaml", XID_AND_DRAIN)), "--yes")
    journal = wait_until("the drain in the journal", lambda: next(
        (j for j in journal_rows(env) if "drained" in j["marks"]), None))
    assert drained(env, "dn2") and set(injected(sim)) == {"dn2"}
    proc.kill()
    proc.communicate(timeout=30)
    recovered = jy(env, "drill", "recover", journal["run_id"], "--json")
    assert recovered.rc == 0, recovered.stderr
    rollbacks = recovered.json()["data"]["rollbacks"]
    assert [(e["name"], e["status"]) for e in rollbacks] == [("undo drain-victim", "succeeded"),
                                                             ("undo xid-79", "succeeded")]
    assert not drained(env, "dn2") and injected(sim) == {}
    # the drain and its undo are in the audit log, under the drill's name
    log = jy(env, "log", "--json").json()["data"]["entries"]
    assert [(e["action"], e["actor"], e["result"]) for e in log if e["node"] == "dn2"] == [
        ("drain", "drill:test-drill", "done"), ("resume", "drill:test-drill", "done")]


def test_xid_79_drill_end_to_end(env: dict[str, str], sim: SimCluster) -> None:
    cron = Cron(env)
    try:
        result = jy(env, "drill", "run", str(REPO / "playbooks" / "drills" / "xid-79.yaml"), "--yes", "--json")
    finally:
        cron.stop()
    assert result.rc == 0, result.stderr[-3000:]
    journal = result.json()["data"]
    assert journal["objectives"]["time_to_drain"]["met"] and journal["rollback_status"] == "succeeded"
    assert all(r["tolerance_met"] for r in journal["steady_states"]["post_rollback"])
    assert injected(sim) == {}


def node_sh(env: dict[str, str], node: str, script: str) -> str:
    result = jy(env, "run", "-w", node, "--json", "--", script)
    assert result.rc == 0, result.stdout + result.stderr
    return str(result.json()["data"]["nodes"][0]["stdout"]).strip()


def test_stop_and_kill_a_process_on_the_node_and_put_it_back(env: dict[str, str], sim: SimCluster,
                                                             tmp_path: Path) -> None:
    agent = tmp_path / "jy-agent"
    agent.symlink_to("/bin/sleep")  # a process named jy-agent (its comm), like a training agent
    start = f"setsid {agent} 600 </dev/null >/dev/null 2>&1 &"
    node_sh(env, "dn2", start)
    try:
        method = f"""  - action: pause-agent
    do: stop_process
    on: victim
    with: {{name: jy-agent}}
    mark: paused
  - action: kill-agent
    do: kill_process
    on: victim
    with: {{name: jy-agent, restart: "{start}"}}
    mark: killed
  - wait_for:
      name: never
      probe: file
      with: {{path: /nonexistent/jueying-drill-never}}
      expect: {{equals: true}}
      timeout: 10m
      interval: 200ms
"""
        proc = popen_jueying(env, "drill", "run", str(write_playbook(tmp_path / "p.yaml", method)), "--yes")
        wait_until("the kill in the journal", lambda: any("killed" in j["marks"] for j in journal_rows(env)))
        assert node_sh(env, "dn2", "pgrep -x jy-agent || echo none") == "none"
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
        assert proc.returncode == 130
        # restarted by the kill's undo, then resumed (SIGCONT) by the stop's undo: running, not stopped
        states = node_sh(env, "dn2", "ps -o stat= -C jy-agent")
        assert states and all(not s.startswith("T") for s in states.split()), states
    finally:
        node_sh(env, "dn2", "pkill -x jy-agent; true")


def test_a_network_partition_is_detected_and_lifted_by_the_node_side_ttl(env: dict[str, str], sim: SimCluster,
                                                                          tmp_path: Path) -> None:
    """nftables on the node cuts the controller's SSH to it (simulated nodes share this machine's network
    namespace, so the rule names the node's own loopback address: only this node is cut). The undo over SSH
    cannot get through: the node's own timer lifts it, and the rollback then finds nothing left."""
    if subprocess.run(["nft", "list", "tables"], capture_output=True, check=False).returncode != 0:
        pytest.skip("nftables is not usable here (nft list tables failed): the partition fault cannot be made")
    victim = sim.node("dn3")
    method = f"""  - action: cut
    do: block_network
    on: victim
    with: {{address: "{victim.address}", port: 22}}
    ttl: 15s
    mark: partitioned
  - wait_for:
      name: unreachable
      probe: check
      on: victim
      with: {{check: nvml}}
      expect: {{in: [unreachable, timeout]}}
      timeout: 2m
      interval: 1s
    mark: detected
"""
    report = "report:\n  timings: {time_to_detect: [partitioned, detected]}\n  objectives: {time_to_detect: 2m}\n"
    playbook = write_playbook(tmp_path / "p.yaml", method + report).read_text().replace("[dn2]", "[dn3]")
    (tmp_path / "p.yaml").write_text(playbook)
    try:
        result = jy(env, "drill", "run", str(tmp_path / "p.yaml"), "--yes", "--json", "--connect-timeout", "2")
        assert result.rc == 0, result.stderr[-3000:]
        journal = result.json()["data"]
        assert journal["objectives"]["time_to_detect"]["met"] and journal["rollback_status"] == "succeeded"
        assert "nothing to undo" in journal["rollbacks"][0]["per_node"]["dn3"]["stdout"]
        assert node_sh(env, "dn3", "hostname") == "dn3"  # reachable again
    finally:  # whatever happened, no table of this test stays behind
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False).stdout
        for line in tables.splitlines():
            if "jueying_jy_" in line:
                rows = journal_rows(env)
                if rows and rows[0]["run_id"].replace("-", "_") in line:
                    subprocess.run(["nft", "delete", "table", *line.split()[1:]], check=False)


def test_sigkill_while_an_action_runs_then_recover_undoes_it(env: dict[str, str], sim: SimCluster,
                                                             tmp_path: Path) -> None:
    """The journal says `started` before the command is sent: killed while it runs, recover still undoes it."""
    mark = tmp_path / "agent"
    method = f"""  - action: slow-inject
    do: command
    on: victim
    with: {{run: "touch {mark}.injected; sleep 600", undo: "touch {mark}.undone"}}
    timeout: 15m
"""
    proc = popen_jueying(env, "drill", "run", str(write_playbook(tmp_path / "p.yaml", method)), "--yes")
    journal = wait_until("the action to be running on the node", lambda: next(
        (j for j in journal_rows(env) if j["run"] and j["run"][0]["status"] == "started"
         and Path(f"{mark}.injected").exists()), None))
    proc.kill()
    proc.communicate(timeout=30)
    assert not Path(f"{mark}.undone").exists()
    recovered = jy(env, "drill", "recover", journal["run_id"], "--json")
    assert recovered.rc == 0, recovered.stderr
    assert [(e["name"], e["status"]) for e in recovered.json()["data"]["rollbacks"]] == [
        ("undo slow-inject", "succeeded")]
    assert Path(f"{mark}.undone").exists() and injected(sim) == {}


FAILOVER_STEPS = """\
role: compute
steps:
  - name: fence the old node
    on: failed
    run: echo fenced > "$JUEYING_NODE_STATE_DIR/fenced"
    undo: rm -f "$JUEYING_NODE_STATE_DIR/fenced"
  - name: promote the spare
    on: spare
    run: echo "replaces $JUEYING_FAILED_NODE" > "$JUEYING_NODE_STATE_DIR/promoted"
    undo: rm -f "$JUEYING_NODE_STATE_DIR/promoted"
verify:
  - name: the spare says whom it replaces
    on: spare
    run: grep -q "replaces $JUEYING_FAILED_NODE" "$JUEYING_NODE_STATE_DIR/promoted"
"""


def test_failover_to_spare_drill_end_to_end(env: dict[str, str], sim: SimCluster, tmp_path: Path) -> None:
    """The shipped drill: the existing failover onto the healthy spare, timed, then taken back."""
    lines = ["vars:", "  ssh_user: root", "  scheduler: builtin", "  max_unavailable: 3", "  expected_gpus: 8",
             '  gpu_model: "NVIDIA H100 80GB HBM3"', "  spare_pool: rack1", "groups:",
             "  compute:", '    nodes: "dn[1-3]"', "    vars: {role: compute}",
             "  spares:", '    nodes: "dn4"', "    vars: {role: spare}", "nodes:"]
    lines += [f"  {n.name}: {{address: {n.address}}}" for n in sim.nodes]
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("\n".join(lines) + "\n")
    steps = tmp_path / "playbooks" / "failover" / "compute.yaml"  # found beside the inventory
    steps.parent.mkdir(parents=True)
    steps.write_text(FAILOVER_STEPS)
    env = {**env, "JUEYING_INVENTORY": str(inventory)}
    result = jy(env, "drill", "run", str(REPO / "playbooks" / "drills" / "failover-to-spare.yaml"), "--yes",
                "--json")
    assert result.rc == 0, result.stderr[-3000:]
    journal = result.json()["data"]
    victim = journal["targets_resolved"]["victim"]["nodes"][0]
    assert victim in ("dn1", "dn2", "dn3")
    assert journal["run"][0]["detail"] == {victim: {"spare": "dn4", "playbook": str(steps), "result": "done"}}
    assert journal["objectives"]["time_to_failover"]["met"] and journal["rollback_status"] == "succeeded"
    # taken back: no step left in place, the failed node resumed, and the audit log has it all
    assert not (sim.node("dn4").dir / "promoted").exists() and not (sim.node(victim).dir / "fenced").exists()
    assert not drained(env, victim)
    log = jy(env, "log", "--json").json()["data"]["entries"]
    assert [(e["action"], e["result"]) for e in log if e["node"] == victim] == [
        ("failover", "done"), ("drain", "done"), ("resume", "done")]


def test_slurmd_death_is_noticed_by_slurm_and_slurmd_restored(sim: SimCluster, slurm: SlurmCluster,
                                                               tmp_path: Path) -> None:
    """The slurmd-death drill against the real Slurm harness. Its slurmd processes run on this machine (one
    per node name, in their own namespaces), not on the sshd nodes, so the kill and its restart are local
    `command` actions here; the shipped playbook kills slurmd on the node itself (kill_process)."""
    import shlex

    from tests.machine import node_unshare
    from tests.slurm._cluster import MARKER, SLURMD

    env = {**make_env(sim, tmp_path, "slurm"), **slurm.env, "JUEYING_BACKEND": "slurm"}
    # The kill's pattern must match no shell of the drill's own (their command lines hold the pattern and
    # the restart): "[s]" does not match itself, and the restart names slurmd through a variable.
    restart = shlex.join(["env", f"{MARKER}={slurm.base_dir}", "setsid", *node_unshare(), "sh", "-c",
                          f"hostname dn3; s={SLURMD}; exec $s -D -N dn3 -f {shlex.quote(str(slurm.conf_path))}"]
                         ) + " </dev/null >/dev/null 2>&1 &"
    kill = shlex.join(["pkill", "-KILL", "-f", "--", f"[s]lurmd -D -N dn3 -f {slurm.conf_path}"])
    playbook = tmp_path / "slurmd-death.yaml"
    playbook.write_text(f"""apiVersion: jueying/v1
kind: Drill
metadata: {{name: slurmd-death}}
targets:
  victim: {{nodes: "dn[1-4]", pick: {{mode: names, value: [dn3]}}}}
steady_state:
  probes:
    - {{name: victim-idle, probe: node_state, on: victim, expect: {{equals: idle}}, phases: [before, post_rollback]}}
method:
  - action: kill-slurmd
    do: command
    with: {{run: {json.dumps(kill)}, undo: {json.dumps(restart)}}}
    mark: slurmd_killed
  - wait_for:
      name: slurm-marks-down
      probe: node_state
      on: victim
      expect: {{equals: down}}
      timeout: 3m
      interval: 1s
    mark: down_detected
report:
  timings: {{time_to_detect: [slurmd_killed, down_detected]}}
  objectives: {{time_to_detect: 3m}}
""")
    try:
        result = jy(env, "drill", "run", str(playbook), "--yes", "--json")
        assert result.rc == 0, result.stderr[-3000:]
        journal = result.json()["data"]
        # SlurmdTimeout is 10 s in the harness: Slurm needs at least that long to call the node down
        assert 10 <= journal["timings"]["time_to_detect"] <= 180
        assert journal["rollback_status"] == "succeeded"
        assert journal["steady_states"]["post_rollback"][0]["value"] == {"dn3": "idle"}
        assert slurm.node_state("dn3")["state"] == ["IDLE"]
    finally:
        slurm.run("scontrol", "update", "NodeName=dn3", "State=RESUME", check=False)


def test_a_target_filtered_on_health(env: dict[str, str], sim: SimCluster, tmp_path: Path) -> None:
    sim.node("dn2").set_gpus(**{"gpu.0.lost": 1})  # CRITICAL for the nvml check
    for healthy, expected in ((True, ["dn1", "dn3", "dn4"]), (False, ["dn2"])):
        playbook = write_playbook(tmp_path / "p.yaml", FAULT_THEN_WAIT % ("20m", "20m")).read_text().replace(
            "pick: {mode: names, value: [dn2]}", f"filter: {{healthy: {str(healthy).lower()}}}")
        (tmp_path / "p.yaml").write_text(playbook)
        result = jy(env, "drill", "run", str(tmp_path / "p.yaml"), "--dry-run", "--json")
        assert result.rc == 0, result.stderr
        assert result.json()["data"]["targets_resolved"]["victim"]["nodes"] == expected


QUICK = """  - action: touch
    do: command
    on: victim
    with: {run: "true"}
    mark: a
  - wait_for: {name: w, probe: command, on: victim, with: {run: "true"}, expect: {equals: 0}, timeout: 1m}
    mark: b
"""


def test_the_deadline_aborts_and_rolls_back(env: dict[str, str], sim: SimCluster, tmp_path: Path) -> None:
    playbook = write_playbook(tmp_path / "p.yaml", FAULT_THEN_WAIT % ("20m", "20m"), extra="guards: {deadline: 3s}")
    result = jy(env, "drill", "run", str(playbook), "--yes", "--json")
    assert result.rc == 3
    journal = result.json()["data"]
    assert journal["status"] == "aborted" and journal["aborted_by"] == "deadline 3 s passed"
    assert journal["rollback_status"] == "succeeded" and injected(sim) == {}


def test_a_failed_preflight_injects_nothing(env: dict[str, str], sim: SimCluster, tmp_path: Path) -> None:
    guard = ("guards:\n  preflight:\n    - {name: no-incident, probe: file, with: {path: /nonexistent/jy},"
             " expect: {equals: true}}")
    result = jy(env, "drill", "run", str(write_playbook(tmp_path / "p.yaml", FAULT_THEN_WAIT % ("20m", "20m"),
                                                         extra=guard)), "--yes", "--json")
    assert result.rc == 3
    journal = result.json()["data"]
    assert journal["status"] == "aborted" and journal["aborted_by"] == "preflight no-incident does not hold"
    assert journal["run"] == [] and journal["rollback_status"] == "not_needed" and injected(sim) == {}


def test_a_missed_objective_fails_the_drill_after_a_good_rollback(env: dict[str, str], sim: SimCluster,
                                                                  tmp_path: Path) -> None:
    report = "report:\n  timings: {t: [a, b]}\n  objectives: {t: 1ms}\n"
    result = jy(env, "drill", "run", str(write_playbook(tmp_path / "p.yaml", QUICK + report)), "--yes", "--json")
    assert result.rc == 1
    journal = result.json()["data"]
    assert journal["status"] == "failed" and journal["rollback_status"] == "succeeded"
    # b is marked when the probe that held had answered (an SSH round trip after a)
    assert journal["objectives"]["t"]["met"] is False and journal["objectives"]["t"]["value_s"] > 0.001
    shown = jy(env, "drill", "show", journal["run_id"])
    assert "t " in shown.stdout and "MISSED" in shown.stdout


def test_every_builtin_probe_reads_the_cluster_in_a_dry_run(env: dict[str, str], sim: SimCluster,
                                                            tmp_path: Path) -> None:
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(204 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sim.node("dn4").set_gpus(**{"gpu.0.lost": 1, "gpu.1.lost": 1})
        jy(env, "drain", "dn3", "-r", "maintenance")
        note = tmp_path / "note"
        note.write_text("  hello \n")
        url = f"http://127.0.0.1:{server.server_address[1]}"
        probes = f"""steady_state:
  probes:
    - {{name: state, probe: node_state, on: all, expect: {{in: [idle]}}}}
    - {{name: reason, probe: drain_reason, on: all, expect: {{equals: null}}}}
    - {{name: jobs, probe: running_jobs, on: all, expect: {{equals: 0}}}}
    - {{name: healthy, probe: gpus, with: {{count: healthy}}, expect: {{equals: 24}}}}
    - {{name: schedulable, probe: gpus, with: {{count: schedulable}}, expect: {{equals: 16}}}}
    - {{name: nvml, probe: check, on: all, with: {{check: nvml}}, expect: {{equals: ok}}}}
    - {{name: host, probe: command, on: all, with: {{run: hostname, output: stdout}}, expect: {{regex: "^dn"}}}}
    - {{name: here, probe: command, with: {{run: "exit 3"}}, expect: {{equals: 3}}}}
    - {{name: note, probe: file, with: {{path: "{note}", output: content}}, expect: {{equals: hello}}}}
    - {{name: up, probe: http, with: {{url: "{url}/ok"}}, expect: {{equals: 204}}}}
    - {{name: down, probe: http, with: {{url: "{url}/down"}}, expect: {{equals: 503}}}}
    - {{name: gone, probe: http, with: {{url: "http://127.0.0.1:1/"}}, expect: {{equals: null}}}}
"""
        text = write_playbook(tmp_path / "p.yaml", QUICK, extra=probes).read_text().replace(
            "targets:\n", "targets:\n  all: {nodes: \"dn[1-4]\", include_unavailable: true}\n")
        (tmp_path / "p.yaml").write_text(text)
        result = jy(env, "drill", "run", str(tmp_path / "p.yaml"), "--dry-run", "--json")
        assert result.rc == 0, result.stderr
        values = {p["name"]: (p["value"], p["tolerance_met"]) for p in result.json()["data"]["probes"]}
        nodes = ["dn1", "dn2", "dn3", "dn4"]
        assert values["state"] == ({"dn1": "idle", "dn2": "idle", "dn3": "drained", "dn4": "idle"}, False)
        assert values["reason"] == ({"dn1": None, "dn2": None, "dn3": "maintenance [jueying:root]", "dn4": None},
                                    False)
        assert values["jobs"] == (dict.fromkeys(nodes, 0), True)
        # dn4 has a CRITICAL check (lost GPUs): none of its GPUs count; dn3 is drained: not schedulable
        assert values["healthy"] == (24, True) and values["schedulable"] == (16, True)
        assert values["nvml"] == ({"dn1": "ok", "dn2": "ok", "dn3": "ok", "dn4": "critical"}, False)
        assert values["host"] == ({n: n for n in nodes}, True)
        assert values["here"] == (3, True) and values["note"] == ("hello", True)
        assert values["up"] == (204, True) and values["down"] == (503, True) and values["gone"] == (None, True)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        jy(env, "resume", "dn3")


def test_the_gpus_probe_counts_one_slurm_partition(sim: SimCluster, slurm: SlurmCluster, tmp_path: Path) -> None:
    """`partition:` is Slurm's own: the harness's `gpu` partition holds every node, `train` (made here) two."""
    env = {**make_env(sim, tmp_path, "slurm"), **slurm.env, "JUEYING_BACKEND": "slurm"}
    probes = """steady_state:
  probes:
    - {name: all, probe: gpus, with: {count: healthy, partition: gpu}, expect: {equals: 32}}
    - {name: train, probe: gpus, with: {count: schedulable, partition: train}, expect: {equals: 16}}
    - {name: none, probe: gpus, with: {count: healthy, partition: nosuch}, expect: {equals: 0}}
"""
    slurm.scontrol("create", "PartitionName=train", "Nodes=dn[1-2]", "State=UP")
    try:
        playbook = write_playbook(tmp_path / "p.yaml", QUICK, extra=probes)
        result = jy(env, "drill", "run", str(playbook), "--dry-run", "--json")
        assert result.rc == 0, result.stderr
        values = {p["name"]: (p["value"], p["tolerance_met"]) for p in result.json()["data"]["probes"]}
        assert {k: values[k] for k in ("all", "train", "none")} == {"all": (32, True), "train": (16, True),
                                                                  "none": (0, True)}
    finally:
        slurm.scontrol("delete", "PartitionName=train")
        restore(sim)


def test_a_drain_past_the_inventory_cap_is_refused_and_fails_the_drill(env: dict[str, str], sim: SimCluster,
                                                                      tmp_path: Path) -> None:
    method = "  - {action: drain-all, do: drain, on: victim}\n"
    text = write_playbook(tmp_path / "p.yaml", method).read_text().replace("pick: {mode: names, value: [dn2]}",
                                                                         "pick: {mode: all}")
    (tmp_path / "p.yaml").write_text(text)
    result = jy(env, "drill", "run", str(tmp_path / "p.yaml"), "--yes", "--json")
    assert result.rc == 1
    journal = result.json()["data"]
    assert journal["status"] == "failed" and "over max_unavailable 3" in journal["run"][0]["output"]
    assert journal["rollback_status"] == "succeeded"
    assert not any(drained(env, n) for n in NAMES)
    after = jy(env, "drain", "dn1", "-r", "cap lock free again")  # the refused drain left no lock behind
    assert after.rc == 0, after.stderr
    jy(env, "resume", "dn1")


# ---------------------------------------------------------------- GPU faults as the probe's overlay

LOSE_GPU_5 = """  - action: lose-gpu
    do: gpu_fault
    on: victim
    with: {fault: lost, gpu: 5}
    ttl: %s
    mark: fault_injected
  - wait_for:
      name: seen
      probe: check
      on: victim
      with: {check: nvml}
      expect: {equals: critical}
      timeout: 2m
    mark: seen
"""


def node_facts(env: dict[str, str], node: str) -> dict[str, Any]:
    """The node's facts document as `inventory --json` prints it (the probe run on the node)."""
    result = jy(env, "inventory", "-w", node, "--json")
    assert result.rc == 0, result.stderr
    return dict(result.json()["data"]["nodes"][0]["facts"])


def status_row(env: dict[str, str], node: str) -> dict[str, Any]:
    result = jy(env, "status", "-w", node, "--json")
    assert result.rc == 0, result.stderr
    return dict(result.json()["data"]["nodes"][0])


def test_a_lost_gpu_overlay_is_critical_for_check_and_degraded_for_status(env: dict[str, str], sim: SimCluster,
                                                                           tmp_path: Path) -> None:
    """The real probe on the node applies the overlay: check says CRITICAL, status degraded, the facts name
    the injected fault; the rollback removes the file and the node is healthy again."""
    hold = tmp_path / "hold"
    hold.write_text("")
    method = LOSE_GPU_5 % "20m" + f"""  - wait_for:
      name: released
      probe: file
      with: {{path: {json.dumps(str(hold))}}}
      expect: {{equals: false}}
      timeout: 5m
"""
    proc = popen_jueying(env, "drill", "run", str(write_playbook(tmp_path / "p.yaml", method)), "--yes", "--json")
    try:
        overlay = wait_until("the overlay on dn2", lambda: list((sim.node("dn2").dir / "inject").glob("*.json"))
                             if (sim.node("dn2").dir / "inject").exists() else [])
        doc = json.loads(overlay[0].read_text())
        assert doc["fault"] == "lost" and doc["gpu"] == 5 and doc["expires_at_unix"] > time.time() + 600
        assert oct((sim.node("dn2").dir / "inject").stat().st_mode & 0o777) == "0o700"
        assert oct(overlay[0].stat().st_mode & 0o777) == "0o600"
        check = jy(env, "check", "-w", "dn2", "--json")
        assert check.rc == 2, check.stdout  # Nagios CRITICAL
        row = status_row(env, "dn2")
        assert row["state"] == "degraded" and row["health"] == "CRITICAL", row
        facts = node_facts(env, "dn2")
        assert [(i["fault"], i["gpu"], i["tag"]) for i in facts["injected"]] == [("lost", 5, overlay[0].stem)]
        assert facts["gpus"][5]["lost"] is True and facts["gpus"][4]["lost"] is False
        assert jy(env, "check", "-w", "dn1", "--json").rc == 0  # only the target
    except BaseException:
        os.killpg(proc.pid, signal.SIGINT)  # a failed assertion: the drill rolls back and ends
        proc.communicate(timeout=120)
        raise
    finally:
        hold.unlink()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["data"]["rollback_status"] == "succeeded"
    assert injected(sim) == {}
    assert jy(env, "check", "-w", "dn2").rc == 0
    assert node_facts(env, "dn2")["injected"] == []


def test_an_overlay_past_its_expiry_is_ignored_and_the_ttl_removes_it(env: dict[str, str], sim: SimCluster,
                                                                      tmp_path: Path) -> None:
    overlays = sim.node("dn3").dir / "inject"
    overlays.mkdir(mode=0o700, exist_ok=True)
    (overlays / "old.json").write_text(json.dumps({"fault": "lost", "gpu": 0, "expires_at_unix": time.time() - 1}))
    assert jy(env, "check", "-w", "dn3").rc == 0
    assert node_facts(env, "dn3")["injected"] == []
    (overlays / "old.json").unlink()
    # the node-side timer removes the file when the TTL passes, with the controller gone (SIGKILL)
    proc, _ = started_drill(env, write_playbook(tmp_path / "p.yaml", LOSE_GPU_5 % "3s"), ("fault_injected",))
    proc.kill()
    proc.communicate(timeout=60)
    wait_until("the TTL timer to remove the overlay", lambda: injected(sim) == {}, timeout_s=60)
    assert jy(env, "check", "-w", "dn2").rc == 0


def _next_envelope(proc: subprocess.Popen[str]) -> dict[str, Any] | None:
    """The next `--watch --json` envelope (pretty-printed: it ends with `}` at column 0); None at the end."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line == "}\n":
            return dict(json.loads("".join(lines)))
    return None


def test_row_remap_and_xid_overlays_are_seen_by_check_and_by_the_kept_probe_of_a_watch(env: dict[str, str],
                                                                                      sim: SimCluster) -> None:
    """The overlays a drill writes, read by the real probe: row_remap_failure and xid 79 make `check` CRITICAL
    with their own codes; a `status --watch` whose kept probe started before an overlay was written sees it at
    a later refresh (the kept probe reads the overlay directory on every request, not once)."""
    overlays = sim.node("dn3").dir / "inject"
    overlays.mkdir(mode=0o700, exist_ok=True)
    later = time.time() + 600
    try:
        (overlays / "remap.json").write_text(json.dumps({"fault": "row_remap_failure", "gpu": 2,
                                                         "expires_at_unix": later}))
        (overlays / "xid.json").write_text(json.dumps({"fault": "xid", "gpu": 6, "xid": 79,
                                                       "expires_at_unix": later}))
        check = jy(env, "check", "-w", "dn3", "--json")
        assert check.rc == 2, check.stdout
        codes = {(r["check"], r["gpu"], r["code"]) for r in check.json()["data"]["results"]
                 if r["level"] == "CRITICAL"}
        assert ("remapped_rows", 2, "ROW_REMAP_FAILURE") in codes and ("xid", 6, "XID_79") in codes, codes
        for name in ("remap.json", "xid.json"):
            (overlays / name).unlink()
        watch = popen_jueying(env, "status", "-w", "dn3", "--watch", "0.5", "--count", "60", "--json")
        try:
            first = _next_envelope(watch)
            assert first is not None and first["data"]["nodes"][0]["state"] == "ok", first
            (overlays / "lost.json").write_text(json.dumps({"fault": "lost", "gpu": 1, "expires_at_unix": later}))
            states = []
            while (envelope := _next_envelope(watch)) is not None:  # bounded: --count 60
                row = envelope["data"]["nodes"][0]
                states.append(row["state"])
                if row["state"] == "degraded":
                    assert row["gpus_lost"] == 1 and row["reason"] == "GPU 1 lost", row
                    break
            assert states and states[-1] == "degraded", states
        finally:
            os.killpg(watch.pid, signal.SIGINT)
            watch.communicate(timeout=60)
    finally:
        for leftover in overlays.glob("*"):
            leftover.unlink()


def test_a_malformed_overlay_is_ignored_with_a_note(env: dict[str, str], sim: SimCluster) -> None:
    overlays = sim.node("dn4").dir / "inject"
    overlays.mkdir(mode=0o700, exist_ok=True)
    (overlays / "bad.json").write_text('{"fault": "lost", "gpu": ')
    (overlays / "odd.json").write_text(json.dumps({"fault": "melt", "gpu": 0, "expires_at_unix": 2e9}))
    (overlays / "huge.json").write_text(json.dumps({"fault": "lost", "gpu": 0, "expires_at_unix": 2e9,
                                                    "pad": "x" * 10000}))
    (overlays / "ecc.json").write_text(json.dumps({"fault": "ecc", "gpu": 1, "count": 3, "expires_at_unix": 2e9}))
    facts = node_facts(env, "dn4")
    notes = [e["message"] for e in facts["errors"] if e["field"] == "injected"]
    assert len(notes) == 3 and all("malformed, ignored" in n for n in notes), notes
    assert [(i["tag"], i["fault"], i["count"]) for i in facts["injected"]] == [("ecc", "ecc", 3)]
    assert facts["gpus"][1]["ecc_errors"]["uncorrected_volatile"] >= 3
    assert not any(g["lost"] for g in facts["gpus"])
    for path in overlays.iterdir():
        path.unlink()
