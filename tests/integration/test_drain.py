"""drain / resume / log and check --drain/--resume, against a real Slurm and against the builtin ledger.

The Slurm nodes (slurmd -N node01..node06) and the simulated sshd nodes share names, so one inventory
drives both: the facts come over SSH from the sshd nodes, drains go to slurmctld.
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

import pytest

from tests.cluster import SimCluster
from tests.conftest import REPO, Result, run_jueying
from tests.machine import sim_checks_yaml
from tests.nvmlsim import default_state
from tests.slurm import SlurmCluster

NAMES = [f"node{i:02d}" for i in range(1, 7)]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("drain-sim"), len(NAMES), prefix="node", first_octets=(127, 66),
                    gpu_lib_dir=nvml_lib) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    with SlurmCluster(tmp_path_factory.mktemp("drain-slurm"), NAMES) as cluster:
        yield cluster


def _inventory(sim: SimCluster, path: Path, backend: str, extra_vars: str = "") -> Path:
    lines = ["vars:", "  ssh_user: root", f"  scheduler: {backend}", "  max_unavailable: 3", extra_vars,
             "groups:", "  gpu:", '    nodes: "node[01-06]"', "    vars: {expected_gpus: 8}", "nodes:"]
    lines += [f"  {n.name}: {{address: {n.address}}}" for n in sim.nodes]
    path.write_text("\n".join(line for line in lines if line) + "\n")
    return path


@pytest.fixture(params=["slurm", "builtin"])
def env(request: pytest.FixtureRequest, sim: SimCluster, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Everything a jueying process needs for one backend, with a fresh state DB; restores the cluster."""
    backend = request.param
    variables = {**sim.client_env(), "JUEYING_STATE_DB": str(tmp_path / "state.db"),
                 "JUEYING_INVENTORY": str(_inventory(sim, tmp_path / "inventory.yaml", backend)),
                 "JUEYING_BACKEND": backend}
    slurm_cluster = None
    if backend == "slurm":
        slurm_cluster = request.getfixturevalue("slurm")
        variables.update(slurm_cluster.env)
    yield variables
    for node in sim.nodes:
        node.write_gpu_state(default_state())
        node.clear_kernel_log()
        marker = node.dir / "drained"
        if marker.exists():
            marker.unlink()
    if slurm_cluster is not None:
        slurm_cluster.cancel_all()
        for name in NAMES:  # resuming a node that is not drained is an error in Slurm: ignore those
            slurm_cluster.run("scontrol", "update", f"NodeName={name}", "State=RESUME", check=False)
        slurm_cluster.wait_nodes("idle", timeout_s=30)


def jy(env: dict[str, str], *args: str, timeout: float = 120) -> Result:
    return run_jueying(list(args), env, timeout=timeout)


def drained_reason(env: dict[str, str], node: str) -> str | None:
    """What the backend itself says, not what jueying printed."""
    if env["JUEYING_BACKEND"] == "slurm":
        out = subprocess.run(["scontrol", "show", "node", "-o", node], env={**os.environ, **env},
                             capture_output=True, text=True, check=True).stdout
        if "DRAIN" not in out.split("State=")[1].split()[0]:
            return None
        return out.split(" Reason=")[1].rsplit(" [", 1)[0]
    if not Path(env["JUEYING_STATE_DB"]).exists():
        return None
    db = sqlite3.connect(env["JUEYING_STATE_DB"])
    try:
        row = db.execute("SELECT drained, reason FROM ledger WHERE node = ?", (node,)).fetchone()
    except sqlite3.OperationalError:  # no ledger yet: nothing was ever drained
        row = None
    finally:
        db.close()
    return row[1] if row and row[0] else None


def audit(env: dict[str, str]) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = jy(env, "log", "--json", "-n", "500").json()["data"]["entries"]
    return entries


def test_drain_is_recorded_idempotent_and_resumable(env: dict[str, str], sim: SimCluster) -> None:
    first = jy(env, "drain", "node02", "--reason", "xid 79 on GPU 3, OPS-1")
    assert first.rc == 0, first.stderr
    assert first.stdout.startswith("node02: drained:")
    assert drained_reason(env, "node02") == "xid 79 on GPU 3, OPS-1 [jueying:root]"
    if env["JUEYING_BACKEND"] == "builtin":  # marked on the node itself for other tooling
        assert (sim.node("node02").dir / "drained").read_text().strip() == "xid 79 on GPU 3, OPS-1 [jueying:root]"

    again = jy(env, "drain", "node02", "--reason", "something else")
    assert again.rc == 0
    assert "unchanged: already drained by root at" in again.stdout and "xid 79" in again.stdout
    assert drained_reason(env, "node02") == "xid 79 on GPU 3, OPS-1 [jueying:root]"  # changed nothing

    updated = jy(env, "drain", "node02", "--reason", "RMA ticket 77", "--update-reason")
    assert updated.rc == 0 and "reason updated" in updated.stdout
    assert drained_reason(env, "node02") == "RMA ticket 77 [jueying:root]"

    dry = jy(env, "resume", "node02", "--dry-run")
    assert dry.rc == 0 and "would resume" in dry.stdout
    assert drained_reason(env, "node02") is not None

    back = jy(env, "resume", "node02")
    assert back.rc == 0 and "resumed" in back.stdout
    assert drained_reason(env, "node02") is None

    entries = [e for e in audit(env) if e["node"] == "node02"]
    assert [(e["action"], e["result"]) for e in entries] == [("drain", "done"), ("update_reason", "done"),
                                                             ("resume", "done")]
    assert entries[0]["actor"] == "root" and entries[0]["reason"] == "xid 79 on GPU 3, OPS-1 [jueying:root]"
    assert entries[0]["after_reason"] == "xid 79 on GPU 3, OPS-1 [jueying:root]"


def test_a_reason_is_required(env: dict[str, str]) -> None:
    result = jy(env, "drain", "node01")
    assert result.rc == 2 and "a reason is required" in result.stderr
    assert drained_reason(env, "node01") is None


def foreign_drain(env: dict[str, str], sim: SimCluster, node: str) -> str | None:
    """The drain as the backend shows it to anyone: Slurm's reason, or the builtin marker on the node."""
    if env["JUEYING_BACKEND"] == "slurm":
        return drained_reason(env, node)
    marker = sim.node(node).dir / "drained"
    return marker.read_text().strip() if marker.exists() else None


def test_resume_leaves_foreign_drains_alone_unless_forced(env: dict[str, str], slurm: SlurmCluster,
                                                          sim: SimCluster) -> None:
    """Builtin: a drain known only by the node's marker (another admin's tooling) is seen by resume, refused
    without --force and lifted with it (it counted for max_unavailable already)."""
    if env["JUEYING_BACKEND"] == "slurm":
        slurm.scontrol("update", "NodeName=node03", "State=DRAIN", "Reason=hw: PSU fan, vendor case 991")
    else:  # another admin's tooling marks the node itself (the builtin backend's marker), jueying never saw it
        (sim.node("node03").dir / "drained").write_text("hw: PSU fan, vendor case 991\n")
    refused = jy(env, "resume", "node03")
    assert refused.rc == 1
    assert "not a jueying drain: --force to resume" in refused.stdout
    assert foreign_drain(env, sim, "node03") == "hw: PSU fan, vendor case 991"  # left alone
    forced = jy(env, "resume", "node03", "--force")
    assert forced.rc == 0 and "resumed" in forced.stdout
    assert foreign_drain(env, sim, "node03") is None
    assert audit(env)[-1]["message"] == "forced: not a jueying drain"


def test_drain_leaves_a_foreign_drain_and_its_reason_alone(env: dict[str, str], slurm: SlurmCluster,
                                                           sim: SimCluster) -> None:
    """Another admin drained node03 (scontrol, or the builtin marker written by their tooling): jueying's
    drain must not replace their reason with its own (a later resume of "its" drain would lift theirs)."""
    if env["JUEYING_BACKEND"] == "slurm":
        slurm.scontrol("update", "NodeName=node03", "State=DRAIN", "Reason=hw: PSU fan, vendor case 991")
    else:
        (sim.node("node03").dir / "drained").write_text("hw: PSU fan, vendor case 991\n")
    again = jy(env, "drain", "node03", "-r", "maintenance")
    assert again.rc == 0, again.stdout + again.stderr
    assert again.stdout.startswith("node03: unchanged: already drained"), again.stdout
    assert "hw: PSU fan, vendor case 991" in again.stdout, again.stdout
    assert foreign_drain(env, sim, "node03") == "hw: PSU fan, vendor case 991"
    assert jy(env, "resume", "node03").rc == 1  # still theirs: not resumed without --force
    assert foreign_drain(env, sim, "node03") == "hw: PSU fan, vendor case 991"


def test_the_cap_refuses_a_drain_past_max_unavailable(env: dict[str, str]) -> None:
    assert jy(env, "drain", "node[01-02]", "-r", "maintenance").rc == 0
    refused = jy(env, "drain", "node[03-04]", "-r", "maintenance")
    assert refused.rc == 1
    assert "max_unavailable 3" in refused.stderr and "would make 4 of 6 unavailable" in refused.stderr
    assert drained_reason(env, "node03") is None and drained_reason(env, "node04") is None
    forced = jy(env, "drain", "node[03-04]", "-r", "maintenance", "--force")
    assert forced.rc == 0
    assert drained_reason(env, "node04") is not None
    assert jy(env, "resume", "node[01-04]").rc == 0


def test_drain_wait_for_running_jobs(env: dict[str, str], slurm: SlurmCluster, sim: SimCluster) -> None:
    if env["JUEYING_BACKEND"] == "slurm":
        job = slurm.submit_sleep("node05", 4)
        short = jy(env, "drain", "node05", "-r", "wait test", "--wait", "--timeout", "60")
        assert short.rc == 0, short.stdout + short.stderr
        assert "drained: no jobs left" in short.stdout
        # The job was RUNNING when the drain began (submit_sleep waits for that); when the drain says no jobs are
        # left, Slurm must agree: the job completed (or, accounting off, already left the queue: "") and no job
        # of any state is on node05.
        assert slurm.job_state(job) in ("COMPLETED", ""), slurm.job_state(job)
        assert slurm.run("squeue", "-h", "-w", "node05", "-o", "%i %T", check=False).stdout.strip() == ""
        long_job = slurm.submit_sleep("node06", 60)
        timed_out = jy(env, "drain", "node06", "-r", "wait test", "--wait", "--timeout", "2", "--json")
        assert timed_out.rc == 1
        wait = timed_out.json()["data"]["wait"]
        assert wait["outcome"] == "timeout" and wait["blocking_jobs"] == {"node06": [long_job]}
    else:
        # builtin: the jobs are the GPUs' compute processes; an idle node drains at once
        idle = jy(env, "drain", "node05", "-r", "wait test", "--wait", "--timeout", "10")
        assert idle.rc == 0 and "drained: no jobs left" in idle.stdout


def test_check_drains_and_resumes_automatically(env: dict[str, str], sim: SimCluster, tmp_path: Path) -> None:
    checks = tmp_path / "checks.yaml"
    checks.write_text(sim_checks_yaml())
    env = {**env, "JUEYING_CHECKS": str(checks)}
    sim.node("node04").add_kernel_log("NVRM: Xid (PCI:0000:18:00): 79, pid=77, GPU has fallen off the bus.")
    sim.node("node05").set_gpus(**{"gpu.2.ecc_uncorrected_volatile": 1})
    jy(env, "drain", "node01", "-r", "manual maintenance")  # an operator's drain: automation never resumes it
    first = jy(env, "check", "--drain", "--resume", "--resume-after", "2", "--json")
    assert first.rc == 2
    actions = {(a["node"], a["action"]): a for a in first.json()["data"]["actions"]}
    assert actions[("node04", "drain")]["result"] == "drained"
    assert actions[("node05", "drain")]["result"] == "drained"
    assert drained_reason(env, "node04") == "xid XID_79 gpu0 [jueying-check]"
    assert drained_reason(env, "node05", ).startswith("ecc_uncorrected ")
    # the fault goes away; two clean runs later the node is back, the manual drain stays
    sim.node("node04").clear_kernel_log()
    sim.node("node05").set_gpus(**{"gpu.2.ecc_uncorrected_volatile": 0})
    second = jy(env, "check", "--drain", "--resume", "--resume-after", "2", "--json")
    waiting = {a["node"]: a for a in second.json()["data"]["actions"]}
    assert waiting["node04"]["result"] == "waiting" and waiting["node04"]["note"] == "1/2 clean runs"
    third = jy(env, "check", "--drain", "--resume", "--resume-after", "2", "--json")
    resumed = {a["node"]: a["result"] for a in third.json()["data"]["actions"]}
    assert resumed == {"node04": "resumed", "node05": "resumed"}
    assert drained_reason(env, "node04") is None
    assert drained_reason(env, "node01") == "manual maintenance [jueying:root]"
    actors = {(e["node"], e["action"]): e["actor"] for e in audit(env)}
    assert actors[("node04", "drain")] == "jueying-check" and actors[("node04", "resume")] == "jueying-check"


def _sinfo(env: dict[str, str], *args: str) -> str:
    """The real `sinfo` of the test cluster, as an operator would type it."""
    return subprocess.run(["sinfo", *args], env={**os.environ, **env}, capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.parametrize("env", ["slurm"], indirect=True)
def test_sinfo_r_shows_the_operators_words_and_resume_knows_both_layouts(env: dict[str, str], sim: SimCluster,
                                                                        tmp_path: Path) -> None:
    """`sinfo -R` cuts REASON at 20 characters: they are the operator's words, jueying's tag comes last. Drains
    written by earlier versions (`jueying: ... [user]`, `jueying: auto: ...`) are still jueying's own."""
    words = "xid 79 on GPU 3, ticket OPS-1234"
    assert jy(env, "drain", "node02", "-r", words).rc == 0
    lines = _sinfo(env, "-R").splitlines()
    assert lines[0].split() == ["REASON", "USER", "TIMESTAMP", "NODELIST"]
    row = next(line for line in lines if line.endswith("node02"))
    assert row.startswith(words[:20] + " "), row  # the default layout, %20E: the operator's 20 characters
    full = _sinfo(env, "-h", "-R", "-o", "%n|%200E").splitlines()
    assert f"node02|{words} [jueying:root]" in [line.rstrip() for line in full]

    def scontrol(node: str, reason: str) -> None:
        subprocess.run(["scontrol", "update", f"NodeName={node}", "State=DRAIN", f"Reason={reason}"],
                       env={**os.environ, **env}, check=True)

    scontrol("node03", "jueying: old layout [ops]")  # written by an earlier jueying
    scontrol("node04", "jueying: auto: xid XID_79 gpu0 [jueying-check]")  # an earlier check --drain
    scontrol("node05", "maintenance [jueying:ops] by hand")  # the tag must END the reason
    scontrol("node06", "psu swap")  # an operator's own scontrol drain
    status = {n["node"]: n for n in jy(env, "status", "--json", "--no-history").json()["data"]["nodes"]}
    assert status["node03"]["drain_reason"] == "jueying: old layout [ops]"

    checks = tmp_path / "checks.yaml"
    checks.write_text(sim_checks_yaml())
    auto = jy({**env, "JUEYING_CHECKS": str(checks)}, "check", "--resume", "--resume-after", "1", "--json")
    assert {(a["node"], a["result"]) for a in auto.json()["data"]["actions"]} == {("node04", "resumed")}
    assert drained_reason(env, "node04") is None
    assert drained_reason(env, "node02") == f"{words} [jueying:root]"  # an operator's jueying drain stays

    foreign = jy(env, "resume", "node[05-06]")
    assert foreign.rc == 1 and "not a jueying drain" in foreign.stdout, foreign
    assert drained_reason(env, "node05") == "maintenance [jueying:ops] by hand"
    ours = jy(env, "resume", "node[02-03]")
    assert ours.rc == 0, ours
    assert drained_reason(env, "node02") is None and drained_reason(env, "node03") is None
    assert [line for line in _sinfo(env, "-h", "-R", "-o", "%n").split() if line in ("node02", "node03")] == []


def test_automation_never_exceeds_the_cap(env: dict[str, str], sim: SimCluster, tmp_path: Path) -> None:
    checks = tmp_path / "checks.yaml"
    checks.write_text(sim_checks_yaml())
    env = {**env, "JUEYING_CHECKS": str(checks)}
    for name in NAMES:  # a bad check (or a bad day) flags every node
        sim.node(name).set_gpus(**{"gpu.0.ecc_uncorrected_volatile": 5})
    result = jy(env, "check", "--drain", "--json")
    outcome = [a["result"] for a in result.json()["data"]["actions"]]
    assert outcome.count("drained") == 3 and outcome.count("held back") == 3
    assert sum(drained_reason(env, n) is not None for n in NAMES) == 3


def test_sigkill_mid_drain_leaves_log_and_backend_consistent(env: dict[str, str], sim: SimCluster,
                                                             tmp_path: Path) -> None:
    victims = "node[01-04]"
    full = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    full.update(env, PYTHONPATH=str(REPO))
    if env["JUEYING_BACKEND"] == "slurm":
        # scontrol that applies the update and then dawdles: jueying is killed after the scheduler acted
        # but before it recorded the result.
        bindir = tmp_path / "bin"
        bindir.mkdir()
        real = subprocess.run(["sh", "-c", "command -v scontrol"], capture_output=True, text=True).stdout.strip()
        applied = tmp_path / "update-applied"
        # it dawdles while jueying lives (at most 30 s): once jueying is killed it ends too, leaving nothing behind
        dawdle = 'i=0; while kill -0 "$PPID" 2>/dev/null && [ "$i" -lt 600 ]; do sleep 0.05; i=$((i + 1)); done'
        (bindir / "scontrol").write_text(f'#!/bin/sh\n{real} "$@"; rc=$?\n'
                                         f'case "$*" in *update*) echo "$*" >> {applied}; {dawdle};; esac\n'
                                         'exit $rc\n')
        (bindir / "scontrol").chmod(0o755)
        full["PATH"] = f"{bindir}:{full['PATH']}"
    else:
        sim.node("node03").freeze()  # the builtin drain goes node by node and hangs on node03's handshake
    proc = subprocess.Popen([sys.executable, "-m", "jueying_cli", "drain", victims, "-r", "kill test",
                             "--force", "--connect-timeout", "30"], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        if env["JUEYING_BACKEND"] == "slurm":  # killed while scontrol dawdles after applying the update
            while not applied.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert applied.exists(), "scontrol update never ran"
        else:  # the cap's marker reads wait out their short timeout on the hung node03; then node01-02 drain
            # (marker on the node first, ledger after); killed while it hangs on node03's handshake
            while drained_reason(env, "node02") is None and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert drained_reason(env, "node02") is not None, "node02 was never drained"
        assert proc.poll() is None, proc.communicate()  # still inside its run (scontrol or node03 hang)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if env["JUEYING_BACKEND"] == "builtin":
            sim.node("node03").thaw()
    db = sqlite3.connect(env["JUEYING_STATE_DB"])
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        pending = db.execute("SELECT node FROM audit WHERE result = 'pending'").fetchall()
    finally:
        db.close()
    assert sorted(p[0] for p in pending) == ["node01", "node02", "node03", "node04"]  # intent was written first
    # The next command settles the log against what the backend shows.
    settle = jy(env, "resume", victims, "--dry-run")
    assert "settled 4 audit entries" in settle.stderr
    entries = {e["node"]: e for e in audit(env) if e["action"] == "drain"}
    for node in ("node01", "node02", "node03", "node04"):
        actually = drained_reason(env, node) is not None
        assert entries[node]["result"] == ("done" if actually else "not_done"), (node, entries[node])
    if env["JUEYING_BACKEND"] == "slurm":
        assert all(entries[n]["result"] == "done" for n in ("node01", "node02", "node03", "node04"))
    else:  # node by node: the first two were done, the hung one and the next were not
        assert [entries[n]["result"] for n in ("node01", "node02", "node03", "node04")] == [
            "done", "done", "not_done", "not_done"]
    assert jy(env, "resume", victims).rc == 0
    assert json.loads(jy(env, "log", "--json").stdout)["data"]["entries"][-1]["result"] == "done"


PLAYBOOK = """\
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
  - name: start the service
    on: spare
    run: test ! -e "$JUEYING_NODE_STATE_DIR/break"
    timeout: 20
verify:
  - name: the spare says whom it replaces
    on: spare
    run: grep -q "replaces $JUEYING_FAILED_NODE" "$JUEYING_NODE_STATE_DIR/promoted"
"""


@pytest.fixture
def failover_env(env: dict[str, str], sim: SimCluster, tmp_path: Path) -> Iterator[dict[str, str]]:
    inventory = tmp_path / "failover.yaml"
    lines = ["vars:", "  ssh_user: root", f"  scheduler: {env['JUEYING_BACKEND']}", "  max_unavailable: 3",
             "  expected_gpus: 8", '  gpu_model: "NVIDIA H100 80GB HBM3"', "  spare_pool: rack1",
             "groups:", "  compute:", '    nodes: "node[01-04]"', "    vars: {role: compute}",
             "  spares:", '    nodes: "node[05-06]"', "    vars: {role: spare}", "nodes:"]
    lines += [f"  {n.name}: {{address: {n.address}}}" for n in sim.nodes]
    inventory.write_text("\n".join(lines) + "\n")
    playbook = tmp_path / "compute.yaml"
    playbook.write_text(PLAYBOOK)
    checks = tmp_path / "checks.yaml"
    checks.write_text(sim_checks_yaml())
    yield {**env, "JUEYING_INVENTORY": str(inventory), "JUEYING_CHECKS": str(checks), "PLAYBOOK": str(playbook)}
    for name in ("node02", "node03", "node06"):
        for leftover in ("fenced", "promoted", "break"):
            (sim.node(name).dir / leftover).unlink(missing_ok=True)


def test_failover_rolls_back_a_failing_step_and_keeps_the_failed_node_drained(
        failover_env: dict[str, str], sim: SimCluster) -> None:
    sim.node("node05").set_gpus(**{"gpu.4.lost": 1})  # an unhealthy spare is never chosen
    (sim.node("node06").dir / "break").write_text("")  # the service will not start on the spare
    result = jy(failover_env, "failover", "node02", "--playbook", failover_env["PLAYBOOK"], "--yes", "--json",
                "-r", "xid 79")
    assert result.rc == 1, result.stderr
    data = result.json()["data"]
    assert data["spare"] == "node06" and data["result"] == "rolled_back"
    verdicts = {row["spare"]: row["verdict"] for row in data["spares"]}
    assert verdicts["node06"] == "healthy" and "CRITICAL" in verdicts["node05"]
    assert [(s["phase"], s["step"]) for s in data["steps"]] == [
        ("run", "fence the old node"), ("run", "promote the spare"), ("run", "start the service"),
        ("undo", "promote the spare"), ("undo", "fence the old node")]
    assert not (sim.node("node02").dir / "fenced").exists()
    assert not (sim.node("node06").dir / "promoted").exists()
    assert "node02 stays drained" in data["left"]
    assert drained_reason(failover_env, "node02") == "xid 79 (failover to node06) [jueying:root]"
    entry = [e for e in audit(failover_env) if e["action"] == "failover"][-1]
    assert entry["node"] == "node02" and entry["after_state"] == "rolled_back" and entry["result"] == "failed"


def test_failover_onto_a_healthy_spare(failover_env: dict[str, str], sim: SimCluster) -> None:
    plan = jy(failover_env, "failover", "node03", "--playbook", failover_env["PLAYBOOK"], "--dry-run")
    assert plan.rc == 0 and "1. drain node03" in plan.stdout and "promote the spare on node05" in plan.stdout
    assert drained_reason(failover_env, "node03") is None  # a dry run changes nothing
    refused = jy(failover_env, "failover", "node03", "--playbook", failover_env["PLAYBOOK"])
    assert refused.rc == 2 and "--yes" in refused.stderr  # no terminal to confirm on
    result = jy(failover_env, "failover", "node03", "--playbook", failover_env["PLAYBOOK"], "--yes")
    assert result.rc == 0, result.stdout + result.stderr
    assert "failover done: node03 drained; node05 promoted (3 steps)" in result.stdout
    assert (sim.node("node05").dir / "promoted").read_text().strip() == "replaces node03"
    assert (sim.node("node03").dir / "fenced").exists()
    entry = [e for e in audit(failover_env) if e["action"] == "failover"][-1]
    assert entry["result"] == "done" and entry["after_state"] == "done"
    (sim.node("node05").dir / "promoted").unlink()
