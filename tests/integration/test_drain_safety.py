"""Nothing lost: drains and resumes under SIGKILL, unreachable nodes and concurrent runs.

Real peers only: sshd nodes (tests/cluster) for the builtin backend's markers, a real Slurm (tests/slurm), the
real CLI in its own process, the state database read with sqlite3. After every fault the next command runs
and the ledger (or Slurm), the markers on the nodes and the audit log must agree (`assert_agree`).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster import SimCluster
from tests.conftest import REPO, Result, run_jueying
from tests.machine import sim_checks_yaml
from tests.slurm import SlurmCluster

NAMES = [f"node{i:02d}" for i in range(1, 9)]
OCTETS = (127, 69)
# In front of mv on every simulated node: while $JUEYING_NODE_STATE_DIR/hold-marker exists, a marker write
# waits before its rename (saying so in .../held), at most 30 s: a drain that hangs on one node while the node
# still answers everything else.
HOLDING_MV = """#!/bin/sh
d="$JUEYING_NODE_STATE_DIR"
i=0
if [ -e "$d/hold-marker" ]; then : > "$d/held"; fi
while [ -e "$d/hold-marker" ] && [ "$i" -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
exec /bin/mv "$@"
"""


# In front of python3 (the probe) on every simulated node: while $JUEYING_NODE_STATE_DIR/heal-after-one-probe
# exists, the first probe reads the GPUs as they are and the second finds them healed (the file healed-state
# put in place first): a fault that goes away between `check --drain` reading a node and draining it.
HEALING_PYTHON = """#!/bin/sh
d="$JUEYING_NODE_STATE_DIR"
if [ -e "$d/heal-after-one-probe" ]; then
    if [ -e "$d/probed-once" ]; then
        cp "$d/healed-state" "$JUEYING_NVMLSIM_STATE.healing" && /bin/mv -f "$JUEYING_NVMLSIM_STATE.healing" \
            "$JUEYING_NVMLSIM_STATE"
        rm -f "$d/heal-after-one-probe" "$d/probed-once"
    else
        : > "$d/probed-once"
    fi
fi
exec %s "$@"
"""


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    bindir = tmp_path_factory.mktemp("safety-bin")
    (bindir / "mv").write_text(HOLDING_MV)
    (bindir / "mv").chmod(0o755)
    (bindir / "python3").write_text(HEALING_PYTHON % Path(sys.executable).with_name("python3"))
    (bindir / "python3").chmod(0o755)
    path = f"{bindir}:{os.path.dirname(sys.executable)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    with SimCluster(tmp_path_factory.mktemp("safety-sim"), len(NAMES), prefix="node", first_octets=OCTETS,
                    gpu_lib_dir=nvml_lib, extra_env={"PATH": path}) as cluster:
        yield cluster


def hold(sim: SimCluster, name: str) -> None:
    """The next marker write on `name` waits (hold_marker) until released."""
    (sim.node(name).dir / "hold-marker").write_text("")


def release(sim: SimCluster, name: str) -> None:
    (sim.node(name).dir / "hold-marker").unlink(missing_ok=True)


def wait_held(sim: SimCluster, name: str) -> None:
    wait_for(f"a marker write held on {name}", (sim.node(name).dir / "held").exists)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    with SlurmCluster(tmp_path_factory.mktemp("safety-slurm"), NAMES) as cluster:
        yield cluster


def write_inventory(sim: SimCluster, path: Path, backend: str, max_unavailable: int) -> Path:
    lines = ["vars:", "  ssh_user: root", f"  scheduler: {backend}", f"  max_unavailable: {max_unavailable}",
             "nodes:"]
    lines += [f"  {n.name}: {{address: {n.address}}}" for n in sim.nodes]
    path.write_text("\n".join(lines) + "\n")
    return path


def _restore(sim: SimCluster) -> None:
    for node in sim.nodes:
        if node.is_frozen():
            node.thaw()
        if not node.is_running():
            node.start()
        for leftover in ("drained", "hold-marker", "held", "heal-after-one-probe", "probed-once"):
            (node.dir / leftover).unlink(missing_ok=True)


@dataclass
class Env:
    backend: str
    vars: dict[str, str]
    sim: SimCluster
    slurm: SlurmCluster | None
    tmp: Path

    @property
    def db(self) -> Path:
        return Path(self.vars["JUEYING_STATE_DB"])

    def inventory(self, max_unavailable: int) -> None:
        write_inventory(self.sim, Path(self.vars["JUEYING_INVENTORY"]), self.backend, max_unavailable)


def make_env(request: pytest.FixtureRequest, sim: SimCluster, tmp_path: Path, backend: str) -> Iterator[Env]:
    variables = {**sim.client_env(), "JUEYING_STATE_DB": str(tmp_path / "state.db"),
                 "JUEYING_INVENTORY": str(write_inventory(sim, tmp_path / "inventory.yaml", backend, len(NAMES)))}
    slurm_cluster = None
    if backend == "slurm":
        slurm_cluster = request.getfixturevalue("slurm")
        variables.update(slurm_cluster.env)
    _restore(sim)
    yield Env(backend, variables, sim, slurm_cluster, tmp_path)
    _restore(sim)
    if slurm_cluster is not None:
        for name in NAMES:  # resuming a node that is not drained is an error in Slurm: ignore those
            slurm_cluster.run("scontrol", "update", f"NodeName={name}", "State=RESUME", check=False)
        slurm_cluster.wait_nodes("idle", timeout_s=30)


@pytest.fixture
def builtin(request: pytest.FixtureRequest, sim: SimCluster, tmp_path: Path) -> Iterator[Env]:
    yield from make_env(request, sim, tmp_path, "builtin")


@pytest.fixture(params=["builtin", "slurm"])
def env(request: pytest.FixtureRequest, sim: SimCluster, tmp_path: Path) -> Iterator[Env]:
    yield from make_env(request, sim, tmp_path, request.param)


# ---------------------------------------------------------------- running jueying

def jy(env: Env, *args: str, timeout: float = 120) -> Result:
    return run_jueying(list(args), env.vars, timeout=timeout)


def start(env: Env, *args: str, locks_traced_to: Path | None = None) -> subprocess.Popen[str]:
    """jueying left running; with `locks_traced_to`, under strace writing its flock() calls to that file
    (see wait_refused_a_lock)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    full.update(env.vars, PYTHONPATH=str(REPO))
    trace = ["strace", "-f", "-qq", "-y", "-e", "trace=flock", "-o", str(locks_traced_to)] if locks_traced_to else []
    return subprocess.Popen([*trace, sys.executable, "-m", "jueying_cli", *args], env=full, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_refused_a_lock(trace: Path, proc: subprocess.Popen[str]) -> None:
    """Until the traced run has found a lock taken (flock refused with EAGAIN): it is then waiting for the
    other run, the moment a test wants, seen rather than guessed with a sleep."""
    wait_for("the second run to find the lock taken", lambda: proc.poll() is not None or (
        trace.exists() and "EAGAIN" in trace.read_text()), timeout=60)
    assert proc.poll() is None, proc.communicate()


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> Result:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"jueying did not end within {timeout} s: {out}\n{err}") from None
    return Result(proc.returncode, out, err)


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL, and reap it (a zombie still has its /proc entry)."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# ---------------------------------------------------------------- what is true

@dataclass(frozen=True)
class Entry:
    id: int
    action: str
    node: str
    reason: str | None
    after_state: str | None
    after_reason: str | None
    result: str
    message: str | None
    run_pid: int | None


def _query(env: Env, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if not env.db.exists():
        return []
    db = sqlite3.connect(env.db, timeout=30)
    try:
        return db.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:  # no tables yet: nothing was written
        if "no such table" in str(exc):
            return []
        raise
    finally:
        db.close()


def audit(env: Env) -> list[Entry]:
    rows = _query(env, "SELECT id, action, node, reason, after_state, after_reason, result, message, run_pid "
                       "FROM audit ORDER BY id")
    return [Entry(*row) for row in rows]  # type: ignore[arg-type]


def ledger(env: Env) -> dict[str, str | None]:
    """Node -> drain reason per the builtin ledger (None: in service)."""
    found: dict[str, str | None] = dict.fromkeys(NAMES)
    for node, drained, reason in _query(env, "SELECT node, drained, reason FROM ledger"):
        found[str(node)] = str(reason) if drained else None
    return found


def markers(env: Env) -> dict[str, str | None]:
    """Node -> the reason in its marker file, read on the node's own disk (None: no marker)."""
    found: dict[str, str | None] = {}
    for node in env.sim.nodes:
        path = node.dir / "drained"
        found[node.name] = path.read_text().strip() if path.exists() else None
    return found


def slurm_drains(env: Env) -> dict[str, str | None]:
    """Node -> drain reason per slurmctld (None: not drained)."""
    assert env.slurm is not None
    found: dict[str, str | None] = dict.fromkeys(NAMES)
    for line in env.slurm.scontrol("show", "node", "-o").splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        name = fields.get("NodeName")
        if name in found and "DRAIN" in fields.get("State", ""):
            found[name] = line.split(" Reason=")[1].rsplit(" [", 1)[0]
    return found


def actual(env: Env) -> dict[str, str | None]:
    """What the backend says now; for builtin the ledger and every marker must say the same."""
    if env.backend == "slurm":
        return slurm_drains(env)
    on_nodes, in_ledger = markers(env), ledger(env)
    assert on_nodes == in_ledger, f"markers and ledger disagree:\nmarkers {on_nodes}\nledger  {in_ledger}"
    return in_ledger


def replay(entries: list[Entry]) -> dict[str, str | None]:
    """The state the log says each node is in: its `done` entries in order, from all in service. A drain
    `done` on a node the log already shows drained means two runs both drained it: refused here."""
    state: dict[str, str | None] = dict.fromkeys(NAMES)
    for e in entries:
        if e.result != "done":
            continue
        if e.action == "drain":
            assert state[e.node] is None, f"{e.node} drained twice: {e} (was {state[e.node]})"
            assert e.after_reason == e.reason, e
            state[e.node] = e.reason
        elif e.action == "update_reason":
            assert state[e.node] is not None, f"{e.node}: reason updated while in service: {e}"
            state[e.node] = e.reason
        elif e.action == "resume":
            assert state[e.node] is not None, f"{e.node} resumed while in service: {e}"
            state[e.node] = None
    return state


def assert_agree(env: Env) -> None:
    """No entry is pending, the backend (ledger = markers) shows what the log's done entries say."""
    entries = audit(env)
    pending = [e for e in entries if e.result == "pending"]
    assert not pending, f"entries left pending: {pending}"
    now = actual(env)
    logged = replay(entries)
    assert now == logged, f"the log says {logged}\nthe backend says {now}\n" + "\n".join(map(str, entries[-12:]))


# ---------------------------------------------------------------- the reported cases

def test_an_unreadable_marker_never_decides_a_pending_entry(builtin: Env) -> None:
    """SIGKILL after three of five drains, one drained node then unreachable: the next run must not write it
    back in service (its marker could not be read), and must settle it once the node answers again."""
    env, sim = builtin, builtin.sim
    hold(sim, "node04")  # node by node: node01-03 are drained, then the run hangs writing node04's marker
    run = start(env, "drain", "node[01-05]", "-r", "x")
    try:
        wait_held(sim, "node04")
    finally:
        kill(run)
    sim.node("node04").restart()  # ends the write left hanging on the node: node04 never got its marker
    release(sim, "node04")
    assert [ledger(env)[n] is not None for n in ("node01", "node02", "node03", "node04")] == [True] * 3 + [False]
    sim.node("node02").stop()  # a drained node is unreachable when the entries are settled
    other = jy(env, "drain", "node06", "-r", "y")
    assert other.rc == 0, other.stdout + other.stderr
    assert ledger(env)["node02"] == "x [jueying:root]", "the drain of an unreachable node was erased"
    results = {e.node: e.result for e in audit(env) if e.reason == "x [jueying:root]"}
    assert results == {"node01": "done", "node02": "pending", "node03": "done", "node04": "not_done",
                       "node05": "not_done"}
    assert "settled 4 audit entries" in other.stderr
    assert "1 pending audit entry left as it is: node02 (drain): its marker could not be read (unreachable" \
        in other.stderr, other.stderr
    sim.node("node02").start()
    again = jy(env, "resume", "node06")
    assert again.rc == 0, again.stderr
    assert [(e.action, e.result) for e in audit(env) if e.node == "node02"] == [("drain", "done")]
    assert_agree(env)


def test_a_live_runs_pending_entries_are_not_settled_by_another(builtin: Env) -> None:
    env, sim = builtin, builtin.sim
    hold(sim, "node03")
    first = start(env, "drain", "node[02-03]", "-r", "a")
    try:
        wait_held(sim, "node03")  # node02 drained, node03's marker being written: both entries pending
        assert [(e.node, e.result) for e in audit(env)] == [("node02", "pending"), ("node03", "pending")]
        second = jy(env, "resume", "node07")  # any command that settles pending entries when it starts
        assert second.rc == 0, second.stdout + second.stderr
        assert "settled" not in second.stderr, second.stderr
        assert f"2 pending audit entries left as they are: node02 (drain), node03 (drain): run pid {first.pid} " \
            "on this host is still running" in second.stderr, second.stderr
        mine = [e for e in audit(env) if e.run_pid == first.pid]
        assert [(e.node, e.result) for e in mine] == [("node02", "pending"), ("node03", "pending")]
    finally:
        release(sim, "node03")
    done = finish(first)
    assert done.rc == 0, done.stdout + done.stderr
    assert [(e.node, e.result) for e in audit(env) if e.run_pid == first.pid] == [
        ("node02", "done"), ("node03", "done")]
    assert_agree(env)


def test_two_runs_draining_one_node_leave_one_drain(builtin: Env, tmp_path: Path) -> None:
    env, sim = builtin, builtin.sim
    hold(sim, "node03")
    first = start(env, "drain", "node03", "-r", "a")
    second = None
    try:
        wait_held(sim, "node03")
        # The second run starts while the first is mid-way (node03 still in service in the ledger) and plans
        # a drain; the first is released once the second waits for a lock the first holds (the cap's).
        second = start(env, "drain", "node03", "-r", "b", locks_traced_to=tmp_path / "second.trace")
        wait_refused_a_lock(tmp_path / "second.trace", second)
    finally:
        release(sim, "node03")
    a = finish(first)
    assert second is not None
    b = finish(second)
    assert a.rc == 0, a.stdout + a.stderr
    assert b.rc == 0, b.stdout + b.stderr
    assert a.stdout.startswith("node03: drained:")
    assert b.stdout.startswith("node03: unchanged: already drained by root at"), b.stdout
    assert "a [jueying:root]" in b.stdout, b.stdout
    assert [(e.action, e.reason, e.result) for e in audit(env)] == [("drain", "a [jueying:root]", "done")]
    assert_agree(env)


def test_a_change_planned_on_a_state_another_run_changed_is_not_made(builtin: Env, tmp_path: Path) -> None:
    """A resume planned while another run replaces the drain's reason: under the node's lock the resume sees
    the new reason and leaves the node alone (it was decided on the old one); the log stays in order."""
    env, sim = builtin, builtin.sim
    assert jy(env, "drain", "node03", "-r", "first").rc == 0
    hold(sim, "node03")
    update = start(env, "drain", "node03", "-r", "second", "--update-reason")
    resume = None
    try:
        wait_held(sim, "node03")
        # plans from the ledger (drained, reason "first"), then waits for node03's lock
        resume = start(env, "resume", "node03", locks_traced_to=tmp_path / "resume.trace")
        wait_refused_a_lock(tmp_path / "resume.trace", resume)
    finally:
        release(sim, "node03")
    u = finish(update)
    assert resume is not None
    r = finish(resume)
    assert u.rc == 0 and "reason updated" in u.stdout, u.stdout + u.stderr
    assert r.rc == 0, r.stdout + r.stderr
    assert r.stdout.startswith("node03: unchanged: drained again by root at"), r.stdout
    assert "second [jueying:root] since this one looked; not resumed" in r.stdout, r.stdout
    assert [(e.action, e.result) for e in audit(env)] == [("drain", "done"), ("update_reason", "done")]
    assert actual(env)["node03"] == "second [jueying:root]"
    assert_agree(env)


def test_a_check_that_read_a_fault_before_a_resume_does_not_drain_the_node_again(builtin: Env,
                                                                                 tmp_path: Path) -> None:
    """`check --drain` reads facts, then a drill's rollback or an operator resumes a node: the check's drain,
    decided on facts older than that resume, is not made (`not drained`, who resumed it and when); the
    next run, on fresh facts, drains it if the fault is still there. The moment is held, not raced: the
    check waits for the cap lock (held here, as another run holds it) after it has read every node."""
    env, sim = builtin, builtin.sim
    checks = tmp_path / "checks.yaml"
    checks.write_text(sim_checks_yaml())
    env.vars["JUEYING_CHECKS"] = str(checks)
    for name in ("node02", "node03"):
        sim.node(name).set_gpus(**{"gpu.1.ecc_uncorrected_volatile": 2})
    try:
        assert jy(env, "drain", "node03", "-r", "looking at gpu1").rc == 0  # an operator's drain
        def resume() -> None:
            resumed = jy(env, "resume", "node03")
            assert resumed.rc == 0, resumed.stdout + resumed.stderr

        result = check_drain_held_at_the_cap(env, tmp_path, resume)
        actions = {a["node"]: a for a in json.loads(result.stdout)["data"]["actions"]}
        assert actions["node02"]["result"] == "drained", actions
        assert actions["node03"]["result"] == "not drained", actions
        assert actions["node03"]["note"].startswith("resumed by root at "), actions
        assert "after this run read its facts" in actions["node03"]["note"], actions
        assert actual(env)["node03"] is None
        assert [(e.node, e.action, e.result) for e in audit(env)] == [
            ("node03", "drain", "done"), ("node03", "resume", "done"), ("node02", "drain", "done")]
        # the fault is still there: the next run, on facts read after the resume, drains node03
        again = jy(env, "check", "--drain", "--json")
        assert [(a["node"], a["result"]) for a in again.json()["data"]["actions"]] == [("node03", "drained")]
        assert actual(env)["node03"] == "ecc_uncorrected ECC_DBE_VOLATILE gpu1 [jueying-check]"
        assert_agree(env)
    finally:
        for name in ("node02", "node03"):
            sim.node(name).set_gpus(**{"gpu.1.ecc_uncorrected_volatile": 0})


def check_drain_held_at_the_cap(env: Env, tmp_path: Path, meanwhile: Callable[[], object]) -> Result:
    """`check --drain --json`, held at the cap lock (taken here, as another run holds it) once it has read its
    nodes, read them again and planned a drain (seen as a refused flock, EAGAIN); `meanwhile()` runs then, and
    the check goes on when the lock is freed. Its result."""
    cap = env.db.with_name(env.db.name + ".locks") / "cap.lock"
    cap.parent.mkdir(parents=True, exist_ok=True)
    with open(cap, "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        check = start(env, "check", "--drain", "--json", locks_traced_to=tmp_path / "check.trace")
        try:
            wait_refused_a_lock(tmp_path / "check.trace", check)
            meanwhile()
        finally:
            fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    return finish(check)


@pytest.mark.parametrize("env", ["slurm"], indirect=True)
def test_a_node_resumed_with_scontrol_while_a_check_judged_it_is_not_drained_again(env: Env, tmp_path: Path) -> None:
    """The resume this time is an operator's `scontrol update State=RESUME` (no jueying audit entry): node03 was
    drained when the check looked and is in service when the check comes to drain it, so it was resumed on
    newer evidence than the check's: `not drained`. node02, in service all along, is drained."""
    assert env.slurm is not None
    checks = tmp_path / "checks.yaml"
    checks.write_text(sim_checks_yaml())
    env.vars["JUEYING_CHECKS"] = str(checks)
    for name in ("node02", "node03"):
        env.sim.node(name).set_gpus(**{"gpu.3.ecc_uncorrected_volatile": 2})
    try:
        assert jy(env, "drain", "node03", "-r", "looking at gpu3").rc == 0
        slurm = env.slurm
        result = check_drain_held_at_the_cap(
            env, tmp_path, lambda: slurm.scontrol("update", "NodeName=node03", "State=RESUME"))
        actions = {a["node"]: (a["result"], a["note"]) for a in json.loads(result.stdout)["data"]["actions"]}
        assert actions["node02"][0] == "drained", actions
        assert actions["node03"][0] == "not drained", actions
        assert actions["node03"][1].startswith("drained when this run read its facts and resumed since"), actions
        assert actual(env)["node03"] is None and actual(env)["node02"] is not None
    finally:
        for name in ("node02", "node03"):
            env.sim.node(name).set_gpus(**{"gpu.3.ecc_uncorrected_volatile": 0})


def test_a_fault_gone_when_the_node_is_read_again_is_not_drained(builtin: Env, tmp_path: Path) -> None:
    """`check --drain` reads the nodes it is about to drain again first: node04's uncorrectable ECC error is
    gone by the second read (the probe wrapper heals it), so it is not drained (`not drained`, why); node05's
    is still there, so it is; with the fault kept, the next run drains node04 too."""
    from tests.nvmlsim import write_state

    env, sim = builtin, builtin.sim
    checks = tmp_path / "checks.yaml"
    checks.write_text(sim_checks_yaml())
    env.vars["JUEYING_CHECKS"] = str(checks)
    healing, staying = sim.node("node04"), sim.node("node05")
    write_state(healing.dir / "healed-state", dict(healing.read_gpu_state()))
    try:
        for node in (healing, staying):
            node.set_gpus(**{"gpu.2.ecc_uncorrected_volatile": 4})
        (healing.dir / "heal-after-one-probe").write_text("")
        result = jy(env, "check", "--drain", "--json")
        assert result.rc == 2, result.stdout + result.stderr  # CRITICAL: what the run read first
        actions = {a["node"]: (a["result"], a["note"]) for a in result.json()["data"]["actions"]}
        assert actions["node04"] == ("not drained", "the fault was gone when the node was read again just before "
                                     "draining (the next run decides)"), actions
        assert actions["node05"][0] == "drained"
        assert not (healing.dir / "heal-after-one-probe").exists()  # the node really was read twice
        assert actual(env)["node04"] is None and actual(env)["node05"] is not None
        healing.set_gpus(**{"gpu.2.ecc_uncorrected_volatile": 4})
        again = jy(env, "check", "--drain", "--json")
        assert [(a["node"], a["result"]) for a in again.json()["data"]["actions"]] == [("node04", "drained")]
        assert_agree(env)
    finally:
        for node in (healing, staying):
            node.set_gpus(**{"gpu.2.ecc_uncorrected_volatile": 0})


def test_the_builtin_cap_counts_unreachable_and_hung_nodes(builtin: Env) -> None:
    env, sim = builtin, builtin.sim
    env.inventory(max_unavailable=5)
    sim.node("node05").stop()
    sim.node("node06").stop()
    sim.node("node07").freeze()
    (sim.node("node08").dir / "drained").write_text("by hand [jueying:ops]\n")  # drained per its marker only
    started = time.monotonic()
    dry = jy(env, "drain", "node01", "-r", "x", "--dry-run", "--json", "--connect-timeout", "2")
    # a hung node costs the check its short timeout (2 s, twice), not a hang: a bound for a hang, >=10x expected
    assert time.monotonic() - started < 60
    assert dry.rc == 0, dry.stdout + dry.stderr
    cap = dry.json()["data"]["cap"]
    assert (cap["max_unavailable"], cap["unavailable_before"], cap["total"]) == (5, 4, 8)
    assert (cap["drained_before"], cap["down_before"]) == (1, 3)
    assert sorted(cap["down"]) == ["node05", "node06", "node07"]
    assert cap["down"]["node05"].startswith("unreachable") and cap["down"]["node07"].startswith("timeout")
    sim.node("node07").thaw()
    sim.node("node07").stop()  # from here on a node that refuses at once: no timeouts to wait out
    env.inventory(max_unavailable=4)
    refused = jy(env, "drain", "node01", "-r", "x")
    assert refused.rc == 1
    assert "would make 5 of 8 unavailable" in refused.stderr, refused.stderr
    assert "4 already unavailable: 1 drained, 3 down (3 unreachable)" in refused.stderr
    assert ledger(env)["node01"] is None and markers(env)["node01"] is None
    # draining a node that is already counted as down costs the cap nothing
    (sim.node("node08").dir / "drained").unlink()
    down_one = jy(env, "drain", "node07", "-r", "gone", "--dry-run")
    assert down_one.rc == 0 and "node07: would drain" in down_one.stdout, down_one.stdout + down_one.stderr
    assert "of 8 nodes, 3 already unavailable: 0 drained, 3 down (3 unreachable)" in down_one.stderr


def test_concurrent_drains_never_pass_the_cap_together(builtin: Env, tmp_path: Path) -> None:
    """Each of two runs fits under max_unavailable 3 alone; the one that looks second must see the first's drains."""
    env, sim = builtin, builtin.sim
    env.inventory(max_unavailable=3)
    hold(sim, "node02")
    first = start(env, "drain", "node[01-02]", "-r", "a")
    second = None
    try:
        wait_held(sim, "node02")  # the first run is past its cap check: node01 drained, node02 being drained
        # its cap check waits for the first run's cap lock, held until the first's drains are made
        second = start(env, "drain", "node[03-04]", "-r", "b", locks_traced_to=tmp_path / "second.trace")
        wait_refused_a_lock(tmp_path / "second.trace", second)
    finally:
        release(sim, "node02")
    a = finish(first)
    assert second is not None
    b = finish(second)
    assert a.rc == 0, a.stdout + a.stderr
    assert b.rc == 1, b.stdout + b.stderr
    assert "would make 4 of 8 unavailable (2 already unavailable: 2 drained, 0 down)" in b.stderr, b.stderr
    assert [n for n, reason in actual(env).items() if reason] == ["node01", "node02"]
    assert_agree(env)


# ---------------------------------------------------------------- SIGKILL at many points

KILL_POINTS = 10


def test_sigkill_at_many_points_then_the_next_command_agrees(env: Env) -> None:
    """Drains and resumes of node[01-04] killed at spread-out moments (half after a delay from the start,
    half a random moment after the run's first pending entry appears); after each, the next command
    settles what the killed one left, and ledger, markers and log agree."""
    rng = random.Random(4242)  # test timing, not security
    nodes = "node[01-04]"
    timed = time.monotonic()
    assert jy(env, "drain", nodes, "-r", "warm-up").rc == 0
    full_s = time.monotonic() - timed
    assert jy(env, "resume", nodes).rc == 0
    assert_agree(env)
    seen: set[str] = set()
    for point in range(KILL_POINTS):
        action = "drain" if point % 2 == 0 else "resume"
        before = max((e.id for e in audit(env)), default=0)
        args = ("drain", nodes, "-r", f"kill {point}") if action == "drain" else ("resume", nodes)
        run = start(env, *args)
        try:
            if point % 4 < 2:  # a moment from the start: process start-up, settling, planning, acting, recording
                time.sleep(full_s * (0.3 + 0.8 * rng.random()))
            else:  # a moment after the first entry of this run: mid-action
                wait_for("the run's first entry", lambda run=run, before=before: run.poll() is not None or any(
                    e.id > before for e in audit(env)), timeout=30)
                time.sleep(rng.random() * 0.25)
        finally:
            kill(run)
        left = [e for e in audit(env) if e.id > before]
        seen.add("none" if not left else "pending" if any(e.result == "pending" for e in left) else "settled")
        if action == "drain":  # finish the job: drain what is not drained, update the reason of the rest
            follow = jy(env, "drain", nodes, "-r", f"after {point}", "--update-reason")
            expect: str | None = f"after {point} [jueying:root]"
        else:
            follow = jy(env, "resume", nodes)
            expect = None
        assert follow.rc == 0, f"point {point}: {follow.stdout}{follow.stderr}"
        assert_agree(env)
        assert set(actual(env)[n] for n in ("node01", "node02", "node03", "node04")) == {expect}
    assert "pending" in seen, seen  # at least one kill landed between an intent and its settlement


# ---------------------------------------------------------------- concurrent pairs

PAIRS = 20


def _pair(rng: random.Random, i: int) -> tuple[list[str], list[str]]:
    """Two commands over overlapping node sets that always share one node."""
    shared = rng.randrange(1, 9)
    def pick() -> str:
        others = rng.sample([n for n in range(1, 9) if n != shared], rng.randrange(0, 3))
        return "node[" + ",".join(f"{n:02d}" for n in sorted({shared, *others})) + "]"

    def command(tag: str) -> list[str]:
        kind = rng.choice(["drain", "drain", "resume", "update"])
        if kind == "resume":
            return ["resume", pick()]
        args = ["drain", pick(), "-r", f"{tag} {i}"]
        return [*args, "--update-reason"] if kind == "update" else args

    return command("a"), command("b")


def test_concurrent_pairs_agree_and_never_settle_a_live_run(env: Env) -> None:
    """PAIRS pairs of drains/resumes/reason updates started at once (builtin; Slurm: half as many, for time)."""
    rng = random.Random(2024)
    for i in range(PAIRS if env.backend == "builtin" else PAIRS // 2):
        a_args, b_args = _pair(rng, i)
        a, b = start(env, *a_args), start(env, *b_args)
        ra, rb = finish(a), finish(b)
        for args, r in ((a_args, ra), (b_args, rb)):
            assert r.rc == 0, f"pair {i}: {args}: {r.stdout}{r.stderr}"
            assert "settled" not in r.stderr, f"pair {i}: {args} settled another run's entries: {r.stderr}"
        entries = audit(env)
        assert not [e for e in entries if e.result not in ("done", "pending")], f"pair {i}: {entries}"
        assert_agree(env)
