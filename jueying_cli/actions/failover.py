"""Failover: replace a failed node by a healthy spare from its pool, with rollback of every promote step.

Order: drain the failed node (a failed node must not take jobs, and it stays drained whatever happens
next), run the role's steps in order (each on the failed node, the spare, or this machine), verify, and
record. If a step or the verification fails, the steps already done are undone in reverse order and the
report says exactly what state was left.

Failover playbook (`playbooks/failover/<role>.yaml`, or --playbook):

    role: compute
    steps:
      - name: fence the old node
        on: failed            # failed | spare | local
        run: systemctl stop train-agent
        undo: systemctl start train-agent
        timeout: 60           # seconds (default 60)
    verify:
      - name: spare serves
        on: spare
        run: systemctl is-active train-agent

Each command runs through /bin/sh on its target with JUEYING_FAILED_NODE and JUEYING_SPARE_NODE set.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jueying_cli.errors import BadInputError
from jueying_cli.inventory.model import Inventory, Node
from jueying_cli.outcome import Outcome
from jueying_cli.transport.base import Command, Transport
from jueying_cli.yamlfile import LocatedDict, LocatedList, line_of, load_yaml

DEFAULT_STEP_TIMEOUT_S = 60.0
TARGETS = ("failed", "spare", "local")


@dataclass(frozen=True)
class Step:
    name: str
    on: str
    run: str
    undo: str | None = None
    timeout_s: float = DEFAULT_STEP_TIMEOUT_S


@dataclass(frozen=True)
class FailoverPlaybook:
    role: str
    steps: tuple[Step, ...]
    verify: tuple[Step, ...]
    source: str


def _step(item: Any, path: Path, where: str, *, verify: bool) -> Step:
    if not isinstance(item, LocatedDict):
        raise BadInputError("must be a mapping with name, on, run", path=str(path), line=line_of(item), field=where)
    allowed = {"name", "on", "run", "timeout"} | (set() if verify else {"undo"})
    for key in item:
        if key not in allowed:
            raise BadInputError(f"unknown key {key!r} (expected {', '.join(sorted(allowed))})", path=str(path),
                                line=item.line_of(key), field=f"{where}.{key}")
    for key in ("name", "on", "run"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise BadInputError("is required and must be text", path=str(path), line=item.line_of(key),
                                field=f"{where}.{key}")
    if item["on"] not in TARGETS:
        raise BadInputError(f"must be one of {', '.join(TARGETS)}", path=str(path), line=item.line_of("on"),
                            field=f"{where}.on")
    undo = item.get("undo")
    if undo is not None and not isinstance(undo, str):
        raise BadInputError("must be text", path=str(path), line=item.line_of("undo"), field=f"{where}.undo")
    timeout = item.get("timeout", DEFAULT_STEP_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise BadInputError("must be a positive number of seconds", path=str(path), line=item.line_of("timeout"),
                            field=f"{where}.timeout")
    return Step(name=item["name"], on=item["on"], run=item["run"], undo=undo, timeout_s=float(timeout))


def load_playbook(path: Path) -> FailoverPlaybook:
    """Parse and validate the whole playbook before anything runs (file:line on every error)."""
    doc = load_yaml(path)
    if not isinstance(doc, LocatedDict):
        raise BadInputError("must be a mapping with role, steps, verify", path=str(path), line=line_of(doc))
    for key in doc:
        if key not in ("role", "steps", "verify"):
            raise BadInputError(f"unknown key {key!r} (expected role, steps, verify)", path=str(path),
                                line=doc.line_of(key), field=key)
    steps = doc.get("steps")
    if not isinstance(steps, LocatedList) or not steps:
        raise BadInputError("must be a non-empty list of steps", path=str(path), line=doc.line_of("steps"),
                            field="steps")
    verify = doc.get("verify") or LocatedList()
    if not isinstance(verify, list):
        raise BadInputError("must be a list of checks", path=str(path), line=doc.line_of("verify"), field="verify")
    return FailoverPlaybook(
        role=str(doc.get("role", "")),
        steps=tuple(_step(s, path, f"steps[{i}]", verify=False) for i, s in enumerate(steps)),
        verify=tuple(_step(s, path, f"verify[{i}]", verify=True) for i, s in enumerate(verify)),
        source=str(path),
    )


def find_playbook(explicit: str | None, role: str, inventory: Inventory) -> Path:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise BadInputError("failover playbook not found", path=str(path), field="--playbook")
        return path
    candidates = [Path("playbooks/failover") / f"{role}.yaml"]
    if inventory.source:
        candidates.insert(0, Path(inventory.source).parent / "playbooks" / "failover" / f"{role}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise BadInputError(f"no failover playbook for role {role!r} (looked for "
                        f"{', '.join(str(c) for c in candidates)}); give one with --playbook", field="--playbook")


def spare_candidates(inventory: Inventory, failed: Node) -> tuple[list[Node], list[tuple[str, str]]]:
    """Spares from the failed node's pool with the same GPU model and count: (candidates, rejected with why)."""
    pool = failed.vars.get("spare_pool")
    if not pool:
        raise BadInputError(f"{failed.name} has no spare_pool in the inventory", field="spare_pool")
    candidates, rejected = [], []
    for node in inventory.nodes.values():
        if node.name == failed.name or node.vars.get("spare_pool") != pool or node.vars.get("role") != "spare":
            continue
        for key in ("gpu_model", "expected_gpus"):
            if node.vars.get(key) != failed.vars.get(key):
                rejected.append((node.name, f"{key} {node.vars.get(key)!r} != {failed.vars.get(key)!r}"))
                break
        else:
            candidates.append(node)
    return candidates, rejected


@dataclass
class StepRecord:
    step: Step
    phase: str  # run, verify, undo
    target: str
    outcome: Outcome


@dataclass
class FailoverReport:
    failed: str
    spare: str | None
    result: str = "planned"  # planned, done, rolled_back, rollback_incomplete
    left: str = ""
    records: list[StepRecord] = field(default_factory=list)


def _target(step: Step, failed: Node, spare: Node, local: Node) -> Node:
    return {"failed": failed, "spare": spare, "local": local}[step.on]


def _script(command: str, failed: Node, spare: Node) -> str:
    return (f"JUEYING_FAILED_NODE={shlex.quote(failed.name)} JUEYING_SPARE_NODE={shlex.quote(spare.name)}; "
            f"export JUEYING_FAILED_NODE JUEYING_SPARE_NODE; {command}")


def run_steps(playbook: FailoverPlaybook, failed: Node, spare: Node, transport: Transport,
              on_record: Callable[[StepRecord], None] | None = None) -> FailoverReport:
    """Run the steps, then verify; on any failure undo the done steps in reverse order."""
    local = Node(name="localhost", vars={"local": True})
    report = FailoverReport(failed=failed.name, spare=spare.name)
    done: list[Step] = []

    def execute(step: Step, command: str, phase: str) -> bool:
        node = _target(step, failed, spare, local)
        outcome = transport.run(node, Command(script=_script(command, failed, spare), timeout_s=step.timeout_s),
                                time.monotonic() + step.timeout_s + 30)
        record = StepRecord(step, phase, node.name, outcome)
        report.records.append(record)
        if on_record:
            on_record(record)
        return outcome.ok

    failure = None
    for step in playbook.steps:
        if not execute(step, step.run, "run"):
            failure = f"step '{step.name}' failed"
            break
        done.append(step)
    if failure is None:
        for check in playbook.verify:
            if not execute(check, check.run, "verify"):
                failure = f"verification '{check.name}' failed"
                break
    if failure is None:
        report.result = "done"
        report.left = f"{failed.name} drained; {spare.name} promoted ({len(done)} steps)"
        return report
    not_undone = []
    for step in reversed(done):
        if step.undo is None:
            not_undone.append(f"{step.name} (no undo)")
        elif not execute(step, step.undo, "undo"):
            not_undone.append(step.name)
    if not_undone:
        report.result = "rollback_incomplete"
        report.left = (f"{failure}; NOT undone: {', '.join(not_undone)}; {failed.name} stays drained; "
                       "finish by hand")
    else:
        report.result = "rolled_back"
        report.left = (f"{failure}; {len(done)} done step(s) undone; {failed.name} stays drained, "
                       f"{spare.name} as it was")
    return report


def describe_plan(playbook: FailoverPlaybook, failed: str, spare: str) -> list[str]:
    lines = [f"1. drain {failed} (kept drained whatever happens next)"]
    for i, step in enumerate(playbook.steps, start=2):
        target = {"failed": failed, "spare": spare, "local": "this machine"}[step.on]
        undo = f" (undo: {step.undo})" if step.undo else " (no undo)"
        lines.append(f"{i}. {step.name} on {target}: {step.run}{undo}")
    for check in playbook.verify:
        target = {"failed": failed, "spare": spare, "local": "this machine"}[check.on]
        lines.append(f"   verify: {check.name} on {target}: {check.run}")
    return lines


def healthy_spare(candidates: Sequence[Node], verdicts: Mapping[str, str | None]) -> Node | None:
    """The first candidate whose health verdict is None (healthy)."""
    return next((n for n in candidates if verdicts.get(n.name) is None), None)
