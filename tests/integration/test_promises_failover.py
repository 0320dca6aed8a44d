"""README promises of drain, resume, log and failover on their fault paths, through the real CLI on real sshd
nodes, with the builtin backend and a real Slurm: --dry-run changes nothing, Ctrl-C during --wait, failover with
no healthy spare or refused by the cap, a failing verification and a failing undo, and the audit log settled
after a `resume` or a `failover` killed with SIGKILL at a point the test chose (a step blocked on a FIFO, an
scontrol blocked on a FIFO, a node whose sshd is frozen), never after a sleep.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import SimCluster
from tests.integration.promises_support import (
    FifoGate,
    Running,
    audit_rows,
    jy,
    ledger_drained,
    markers,
    reset_node,
    scontrol_shim,
    slurm_show,
    table,
    wait_for,
)
from tests.slurm import SlurmCluster

NAMES = [f"node{i:02d}" for i in range(1, 7)]
STEP_FILES = ("fenced", "promoted")
Env = dict[str, str]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("promises-failover"), len(NAMES), prefix="node", first_octets=(127, 74),
                    gpu_lib_dir=nvml_lib) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    with SlurmCluster(tmp_path_factory.mktemp("promises-failover-slurm"), NAMES) as cluster:
        yield cluster


def _inventory(sim: SimCluster, path: Path, backend: str, max_unavailable: int) -> Path:
    lines = ["vars:", "  ssh_user: root", f"  scheduler: {backend}", f"  max_unavailable: {max_unavailable}",
             "  expected_gpus: 8", '  gpu_model: "NVIDIA H100 80GB HBM3"', "  spare_pool: rack1",
             "groups:", "  compute:", '    nodes: "node[01-04]"', "    vars: {role: compute}",
             "  spares:", '    nodes: "node[05-06]"', "    vars: {role: spare}", "nodes:"]
    lines += [f"  {n.name}: {{address: {n.address}}}" for n in sim.nodes]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def make_env(request: pytest.FixtureRequest, sim: SimCluster, tmp_path: Path) -> Iterator[Callable[..., Env]]:
    """make_env(backend, max_unavailable=3) -> a jueying environment: nodes 01-04 compute, 05-06 spares, this test's
    own state database and check set (load off: the nodes share this machine). Cluster restored after."""
    checks = tmp_path / "checks.yaml"
    checks.write_text("checks:\n  load: {enabled: false}\n")
    used_slurm: list[SlurmCluster] = []

    def make(backend: str, max_unavailable: int = 3) -> Env:
        env = {**sim.client_env(), "JUEYING_STATE_DB": str(tmp_path / "state.db"), "JUEYING_CHECKS": str(checks),
               "JUEYING_INVENTORY": str(_inventory(sim, tmp_path / f"{backend}-{max_unavailable}.yaml", backend,
                                                   max_unavailable)), "JUEYING_BACKEND": backend}
        if backend == "slurm":
            cluster = request.getfixturevalue("slurm")
            used_slurm.append(cluster)
            env.update(cluster.env)
        return env

    yield make
    for node in sim.nodes:
        reset_node(node, *STEP_FILES)
    for cluster in used_slurm[:1]:
        cluster.cancel_all()
        for name in NAMES:  # resuming a node that is not drained is an error in Slurm: ignore those
            cluster.run("scontrol", "update", f"NodeName={name}", "State=RESUME", check=False)
        cluster.wait_nodes("idle", timeout_s=30)


def db_of(env: Env) -> Path:
    return Path(env["JUEYING_STATE_DB"])


def drained(env: Env, sim: SimCluster) -> dict[str, str]:
    """{node: reason} of the drained nodes, as the backend itself shows them (not as jueying prints them)."""
    if env["JUEYING_BACKEND"] == "slurm":
        return {n: reason.rsplit(" [", 1)[0] for n, (state, reason) in slurm_show(env).items() if "DRAIN" in state}
    reasons = ledger_drained(db_of(env))
    assert {n: m.strip() for n, m in markers(sim).items()} == reasons  # the nodes' markers agree with the ledger
    return {n: str(r) for n, r in reasons.items()}


def entries(env: Env) -> list[tuple[str, str, str]]:
    return [(e["node"], e["action"], e["result"]) for e in audit_rows(db_of(env))]


def playbook(tmp_path: Path, text: str) -> str:
    path = tmp_path / "compute.yaml"
    path.write_text(text)
    return str(path)


FENCE_AND_PROMOTE = """\
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
"""


def steps_of(data: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(s["phase"], s["step"], s["target"], s["status"]) for s in data["steps"]]


# ---- --dry-run


@pytest.mark.parametrize("backend", ["builtin", "slurm"])
def test_dry_runs_change_nothing(backend: str, make_env: Callable[..., Env], sim: SimCluster, tmp_path: Path) -> None:
    env = make_env(backend)
    book = playbook(tmp_path, FENCE_AND_PROMOTE)
    assert jy(env, "drain", "node01", "-r", "before").rc == 0

    def snapshot() -> tuple[object, ...]:
        scheduler = slurm_show(env) if backend == "slurm" else None
        files = sorted(str(p) for n in sim.nodes for p in n.dir.iterdir() if p.name in (*STEP_FILES, "drained"))
        return scheduler, drained(env, sim), table(db_of(env), "ledger"), table(db_of(env), "audit"), files

    before = snapshot()
    plan = jy(env, "drain", "node[02-03]", "-r", "maintenance", "--dry-run")
    assert plan.rc == 0 and plan.stdout.splitlines() == ["node02: would drain: idle -> drain",
                                                         "node03: would drain: idle -> drain"]
    update = jy(env, "drain", "node01", "-r", "new words", "--update-reason", "--dry-run")
    assert update.rc == 0 and update.stdout.startswith("node01: would update_reason:")
    resume = jy(env, "resume", "node01", "--dry-run")
    assert resume.rc == 0 and resume.stdout.startswith("node01: would resume:")
    failover = jy(env, "failover", "node02", "--playbook", book, "--dry-run")
    assert failover.rc == 0, failover.stderr
    assert "1. drain node02" in failover.stdout and "failover planned: dry run: nothing changed" in failover.stdout
    assert snapshot() == before
    assert drained(env, sim) == {"node01": "before [jueying:root]"}


# ---- drain --wait interrupted


def test_ctrl_c_during_drain_wait_leaves_the_node_drained_and_exits_130(
        make_env: Callable[..., Env], slurm: SlurmCluster, sim: SimCluster, tmp_path: Path) -> None:
    calls = tmp_path / "scontrol.log"
    env = make_env("slurm")
    env["PATH"] = scontrol_shim(tmp_path / "bin", log=calls)
    job = slurm.submit_sleep("node04", 600)
    run = Running(env, "drain", "node04", "-r", "job ends soon", "--wait", "--timeout", "3000")
    try:
        run.wait_stderr("jueying: waiting up to 3000 s for jobs on 1 node(s) to end")
        asked = calls.read_text().count("show node")
        wait_for(lambda: calls.read_text().count("show node") > asked, "the wait to ask Slurm for the node's state")
        run.proc.send_signal(signal.SIGINT)  # Ctrl-C
        result = run.finish()
    finally:
        run.stop()
    assert result.rc == 130, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("node04: drained: ")
    assert lines[1].startswith("wait aborted (the nodes stay drained) after ")
    assert lines[2:] == [f"  node04: {job}"]
    assert drained(env, sim) == {"node04": "job ends soon [jueying:root]"}
    assert entries(env) == [("node04", "drain", "done")]  # the log was settled before the wait
    assert slurm.job_state(job) == "RUNNING"  # draining never touches running jobs


# ---- failover: exit 1 without a healthy spare or when the cap refuses


def test_failover_exits_1_when_no_spare_is_healthy(make_env: Callable[..., Env], sim: SimCluster,
                                                  tmp_path: Path) -> None:
    env = make_env("builtin")
    sim.node("node05").set_gpus(**{"gpu.3.lost": 1})
    assert jy(env, "drain", "node06", "-r", "spare under repair").rc == 0
    result = jy(env, "failover", "node02", "--playbook", playbook(tmp_path, FENCE_AND_PROMOTE), "--yes", "--json")
    assert result.rc == 1, result.stderr
    doc = result.json()
    assert doc["status"] == "error"
    data = doc["data"]
    assert (data["result"], data["spare"], data["left"], data["steps"]) == (
        "no_spare", None, "no healthy spare available", [])
    verdicts = {row["spare"]: row["verdict"] for row in data["spares"]}
    assert "CRITICAL" in verdicts["node05"]
    assert verdicts["node06"] == "drained: spare under repair [jueying:root]"
    assert drained(env, sim) == {"node06": "spare under repair [jueying:root]"}  # node02 was not drained
    assert entries(env) == [("node06", "drain", "done")]  # no failover was tried


def test_failover_exits_1_when_the_cap_refuses_the_drain(make_env: Callable[..., Env], sim: SimCluster,
                                                        tmp_path: Path) -> None:
    env = make_env("builtin", max_unavailable=1)
    assert jy(env, "drain", "node01", "-r", "psu").rc == 0
    result = jy(env, "failover", "node02", "--playbook", playbook(tmp_path, FENCE_AND_PROMOTE), "--yes")
    assert result.rc == 1
    assert ("would make 2 of 6 unavailable (1 already unavailable: 1 drained, 0 down), over max_unavailable 1 "
            "(max_unavailable)"
            in result.stderr)
    assert drained(env, sim) == {"node01": "psu [jueying:root]"}
    assert entries(env) == [("node01", "drain", "done")]
    assert not any((n.dir / f).exists() for n in sim.nodes for f in STEP_FILES)  # no step ran


# ---- failover: rollback reported exactly


def test_a_failing_verification_undoes_every_step_and_the_failed_node_stays_drained(
        make_env: Callable[..., Env], sim: SimCluster, tmp_path: Path) -> None:
    env = make_env("builtin")
    book = playbook(tmp_path, FENCE_AND_PROMOTE + """\
verify:
  - name: the spare serves
    on: spare
    run: grep -q serving "$JUEYING_NODE_STATE_DIR/promoted"
""")
    result = jy(env, "failover", "node02", "--playbook", book, "--yes", "--json", "-r", "xid 79")
    assert result.rc == 1, result.stderr
    data = result.json()["data"]
    assert (data["spare"], data["result"]) == ("node05", "rolled_back")
    assert steps_of(data) == [("run", "fence the old node", "node02", "ok"),
                              ("run", "promote the spare", "node05", "ok"),
                              ("verify", "the spare serves", "node05", "failed"),
                              ("undo", "promote the spare", "node05", "ok"),
                              ("undo", "fence the old node", "node02", "ok")]
    assert data["left"] == ("verification 'the spare serves' failed; 2 done step(s) undone; node02 stays drained, "
                            "node05 as it was")
    assert not (sim.node("node02").dir / "fenced").exists() and not (sim.node("node05").dir / "promoted").exists()
    assert drained(env, sim) == {"node02": "xid 79 (failover to node05) [jueying:root]"}
    log = audit_rows(db_of(env))
    assert [(e["node"], e["action"], e["result"]) for e in log] == [
        ("node02", "failover", "failed"), ("node02", "drain", "done")]
    assert (log[0]["after_state"], log[0]["message"]) == ("rolled_back", data["left"])


def test_a_failing_undo_is_reported_and_the_other_steps_are_still_undone(
        make_env: Callable[..., Env], sim: SimCluster, tmp_path: Path) -> None:
    env = make_env("builtin")
    note = tmp_path / "local-note"
    book = playbook(tmp_path, f"""\
role: compute
steps:
  - name: note it here
    on: local
    run: echo "$JUEYING_FAILED_NODE" > {note}
  - name: fence the old node
    on: failed
    run: echo fenced > "$JUEYING_NODE_STATE_DIR/fenced"
    undo: rm -f "$JUEYING_NODE_STATE_DIR/fenced"
  - name: promote the spare
    on: spare
    run: echo promoted > "$JUEYING_NODE_STATE_DIR/promoted"
    undo: exit 4
  - name: start the service
    on: spare
    run: exit 3
""")
    result = jy(env, "failover", "node03", "--playbook", book, "--yes", "--json")
    assert result.rc == 1, result.stderr
    data = result.json()["data"]
    assert data["result"] == "rollback_incomplete"
    assert steps_of(data) == [("run", "note it here", "localhost", "ok"),
                              ("run", "fence the old node", "node03", "ok"),
                              ("run", "promote the spare", "node05", "ok"),
                              ("run", "start the service", "node05", "failed"),
                              ("undo", "promote the spare", "node05", "failed"),
                              ("undo", "fence the old node", "node03", "ok")]
    assert [s["rc"] for s in data["steps"]] == [0, 0, 0, 3, 4, 0]
    assert data["left"] == ("step 'start the service' failed; NOT undone: promote the spare, note it here (no undo); "
                            "node03 stays drained; finish by hand")
    assert not (sim.node("node03").dir / "fenced").exists()  # undone after the failed undo
    assert (sim.node("node05").dir / "promoted").exists() and note.read_text() == "node03\n"  # left as reported
    assert drained(env, sim) == {"node03": "failover to node05 [jueying:root]"}
    log = audit_rows(db_of(env))
    assert [(e["result"], e["after_state"]) for e in log if e["action"] == "failover"] == [
        ("failed", "rollback_incomplete")]


# ---- the audit log after a SIGKILL


@pytest.mark.parametrize("backend", ["builtin", "slurm"])
def test_a_killed_resume_is_settled_by_the_next_command(backend: str, make_env: Callable[..., Env], sim: SimCluster,
                                                        tmp_path: Path) -> None:
    env = make_env(backend)
    assert jy(env, "drain", "node[01-03]", "-r", "kill test").rc == 0
    gate = FifoGate(tmp_path, "scontrol")
    if backend == "slurm":  # scontrol resumes all three, then blocks before jueying hears back
        env["PATH"] = scontrol_shim(tmp_path / "bin", log=tmp_path / "scontrol.log",
                                    block_on="*update*State=RESUME*", gate=gate)
    else:  # node by node: node01 is resumed, then the handshake with node02 hangs
        sim.node("node02").freeze()
    run = Running(env, "resume", "node[01-03]", "--connect-timeout", "300")
    try:
        if backend == "slurm":
            gate.wait_blocked("scontrol to block after resuming")
        else:
            wait_for(lambda: "node01" not in ledger_drained(db_of(env)), "node01 to be resumed")
        run.proc.send_signal(signal.SIGKILL)
        assert run.finish().rc == -signal.SIGKILL
    finally:
        run.stop()
        if backend == "slurm":
            gate.end()
        else:
            sim.node("node02").thaw()
    assert [e for e in entries(env) if e[1] == "resume"] == [
        ("node01", "resume", "pending"), ("node02", "resume", "pending"), ("node03", "resume", "pending")]

    settle = jy(env, "resume", "node[01-03]", "--dry-run")
    assert "settled 3 audit entries left pending by an interrupted run" in settle.stderr
    settled = {e["node"]: e for e in audit_rows(db_of(env)) if e["action"] == "resume"}
    if backend == "slurm":
        assert [settled[n]["result"] for n in ("node01", "node02", "node03")] == ["done", "done", "done"]
        assert drained(env, sim) == {}
    else:
        assert [settled[n]["result"] for n in ("node01", "node02", "node03")] == ["done", "not_done", "not_done"]
        assert drained(env, sim) == {"node02": "kill test [jueying:root]", "node03": "kill test [jueying:root]"}
    assert all(e["message"] == "settled after an interrupted run" for e in settled.values())


def test_a_failover_killed_in_a_step_is_settled_by_the_next_command(make_env: Callable[..., Env], sim: SimCluster,
                                                                    tmp_path: Path) -> None:
    env = make_env("builtin")
    gate = FifoGate(tmp_path, "step")
    book = playbook(tmp_path, FENCE_AND_PROMOTE + f"""\
  - name: hand over
    on: spare
    run: {json.dumps(gate.command)}
    timeout: 300
""")
    run = Running(env, "failover", "node02", "--playbook", book, "--yes")
    try:
        gate.wait_blocked("the failover's third step to block")
        run.proc.send_signal(signal.SIGKILL)
        assert run.finish().rc == -signal.SIGKILL
    finally:
        run.stop()
        gate.end()  # its node may have killed it already: its SSH connection died with jueying
    assert entries(env) == [("node02", "failover", "pending"), ("node02", "drain", "done")]

    settle = jy(env, "resume", "node02", "--dry-run")
    assert "settled 1 audit entry left pending by an interrupted run" in settle.stderr
    # which of its steps ran is not known: the failover is settled `unknown` (README: interrupted runs)
    assert entries(env) == [("node02", "failover", "unknown"), ("node02", "drain", "done")]
    assert audit_rows(db_of(env))[0]["message"] == ("settled after an interrupted run: how far the failover's steps "
                                                    "got is not known; check the spare and the failed node")
    assert drained(env, sim) == {"node02": "failover to node05 [jueying:root]"}  # it stays drained


def test_a_failover_killed_before_its_drain_is_settled_unknown_and_its_drain_not_done(
        make_env: Callable[..., Env], sim: SimCluster, tmp_path: Path) -> None:
    env = make_env("builtin")
    sim.node("node02").freeze()  # the drain's marker write hangs in the handshake with the failed node
    run = Running(env, "failover", "node02", "--playbook", playbook(tmp_path, FENCE_AND_PROMOTE), "--yes",
                  "--connect-timeout", "300")
    try:
        wait_for(lambda: ("node02", "drain", "pending") in entries(env), "the failover's drain to start")
        run.proc.send_signal(signal.SIGKILL)
        assert run.finish().rc == -signal.SIGKILL
    finally:
        run.stop()
        sim.node("node02").thaw()
    assert entries(env) == [("node02", "failover", "pending"), ("node02", "drain", "pending")]
    settle = jy(env, "resume", "node02", "--dry-run")
    assert "settled 2 audit entries" in settle.stderr
    assert drained(env, sim) == {}
    assert entries(env) == [("node02", "failover", "unknown"), ("node02", "drain", "not_done")]
