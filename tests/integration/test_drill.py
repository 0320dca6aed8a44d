"""`jueying drill` end to end against the simulated cluster of real sshd nodes (simulated NVML per node) with
the builtin scheduler, and `jueying check --drain` running beside it as cron would.

What is checked is what the nodes and the scheduler say afterwards (the GPU state file, the ledger, the
node-side undo files), not only what the drill printed.
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

NAMES = [f"dn{i}" for i in range(1, 5)]
PLAYBOOK = REPO / "playbooks" / "drills" / "lose-one-gpu-node.yaml"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("drill-sim"), len(NAMES), prefix="dn", first_octets=(127, 67),
                    digits=1, gpu_lib_dir=nvml_lib) as cluster:
        yield cluster


@pytest.fixture
def env(sim: SimCluster, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Inventory (builtin scheduler, 8 GPUs a node), check set, a fresh state DB; the cluster restored after."""
    lines = ["vars:", "  ssh_user: root", "  scheduler: builtin", "  max_unavailable: 3", "  expected_gpus: 8",
             "nodes:"] + [f"  {n.name}: {{address: {n.address}}}" for n in sim.nodes]
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("\n".join(lines) + "\n")
    checks = tmp_path / "checks.yaml"
    checks.write_text(sim_checks_yaml())
    yield {**sim.client_env(), "JUEYING_INVENTORY": str(inventory), "JUEYING_CHECKS": str(checks),
           "JUEYING_STATE_DB": str(tmp_path / "state.db")}
    for node in sim.nodes:
        node.write_gpu_state(default_state())
        node.clear_kernel_log()
        for leftover in [node.dir / "drained", *(node.dir / "drills").glob("*")] if (node.dir / "drills").exists() \
                else [node.dir / "drained"]:
            leftover.unlink(missing_ok=True)


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


def ledger_drained(env: dict[str, str], node: str) -> bool:
    db = sqlite3.connect(env["JUEYING_STATE_DB"], timeout=30)
    try:
        row = db.execute("SELECT drained FROM ledger WHERE node = ?", (node,)).fetchone()
    except sqlite3.OperationalError:
        row = None
    finally:
        db.close()
    return bool(row and row[0])


def injected(sim: SimCluster) -> dict[str, list[str]]:
    """What the drill left on the nodes: lines in GPU state files and kernel logs, pending undo files."""
    left: dict[str, list[str]] = {}
    for node in sim.nodes:
        found = [line for line in node.state_path.read_text().splitlines() if "jueying-drill" in line]
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


def test_lose_one_gpu_node_is_detected_drained_and_restored(env: dict[str, str], sim: SimCluster) -> None:
    cron = Cron(env)
    try:
        result = jy(env, "drill", "run", str(PLAYBOOK), "--yes", "--json", "--var", "gpu_floor=16")
    finally:
        cron.stop()
    assert result.rc == 0, result.stdout[-3000:] + result.stderr[-3000:]
    journal = result.json()["data"]
    assert journal["status"] == "completed" and journal["rollback_status"] == "succeeded"
    victim = journal["targets_resolved"]["victim"]["nodes"][0]
    assert isinstance(journal["targets_resolved"]["victim"]["seed"], int)  # the random pick's seed is recorded
    detect = journal["timings"]["time_to_detect"]
    assert 0 < detect <= 300 and journal["objectives"]["time_to_detect"]["met"] is True
    assert [e["name"] for e in journal["rollbacks"]] == ["undo lose-gpu-0", "resume-victim"]
    # the nodes themselves: no fault left, the victim back in service, nothing pending on the node
    assert injected(sim) == {}
    assert not ledger_drained(env, victim)
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
