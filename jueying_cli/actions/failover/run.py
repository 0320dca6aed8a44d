"""Running a failover: drain the failed node (it stays drained whatever happens next), run the role's steps
in order (each on the failed node, the spare, or this machine), verify, record. If a step or the verification
fails, the steps already done are undone in reverse order and the report says exactly what state was left.

Each command runs through /bin/sh on its target with JUEYING_FAILED_NODE and JUEYING_SPARE_NODE set
(quoted with shlex).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from jueying_cli.actions.cap import OverCap
from jueying_cli.actions.context import ActionContext
from jueying_cli.actions.drain import ChangeResult, DrainRequest, execute, plan_drains
from jueying_cli.actions.failover.playbook import FailoverPlaybook, Step
from jueying_cli.errors import JueyingError
from jueying_cli.inventory.model import Node
from jueying_cli.outcome import Outcome
from jueying_cli.scheduler.base import jueying_reason, operator
from jueying_cli.store import AuditEntry, Settlement
from jueying_cli.transport.base import Command, Transport
from jueying_cli.vocab import AuditResult, ChangeKind


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


def undo_steps(playbook: FailoverPlaybook, failed: Node, spare: Node, transport: Transport,
               steps: list[Step] | None = None) -> list[StepRecord]:
    """Undo `steps` (default: every step of the playbook) newest first, for a failover that is to be taken
    back (a drill's rollback); steps without an undo are skipped. One record per undo run."""
    local = Node(name="localhost", vars={"local": True})
    records = []
    for step in reversed(steps if steps is not None else list(playbook.steps)):
        if step.undo is None:
            continue
        node = _target(step, failed, spare, local)
        outcome = transport.run(node, Command(script=_script(step.undo, failed, spare), timeout_s=step.timeout_s),
                                time.monotonic() + step.timeout_s + 30)
        records.append(StepRecord(step, "undo", node.name, outcome))
    return records


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




@dataclass(frozen=True)
class FailoverRequest:
    failed: Node
    spare: Node
    playbook: FailoverPlaybook
    reason: str | None  # the operator's words, if any
    force: bool  # drain the failed node even past max_unavailable


def failover(ctx: ActionContext, request: FailoverRequest,
             on_record: Callable[[StepRecord], None] | None = None) -> FailoverReport:
    """Drain the failed node (within the cap unless forced), run the playbook, and record the whole failover
    in the audit log: written `pending` before the drain, settled with the result."""
    failed, spare = request.failed, request.spare
    backend, _ = ctx.scheduler_of(failed.name)
    # The operator's words first (sinfo -R shows 20 characters), then what jueying did.
    full_reason = jueying_reason(f"{request.reason} (failover to {spare.name})" if request.reason
                                 else f"failover to {spare.name}")
    plan = plan_drains(ctx, [DrainRequest(failed.name, full_reason, f"failover to {spare.name}")],
                       over_cap=OverCap.FORCE if request.force else OverCap.REFUSE)
    entry = ctx.store.audit.intent([AuditEntry(
        at=time.time(), actor=operator(), action=ChangeKind.FAILOVER, node=failed.name, backend=backend,
        reason=full_reason, message=f"to {spare.name} ({request.playbook.source})")])[0]
    drained = execute(ctx, plan)
    broken = [row for row in drained if row.result == ChangeResult.FAILED]
    if broken:
        ctx.store.audit.finish([Settlement(entry, AuditResult.FAILED, message=f"drain failed: {broken[0].note}")])
        raise JueyingError(f"could not drain {failed.name}: {broken[0].note}; nothing else done")
    report = run_steps(request.playbook, failed, spare, ctx.transport, on_record=on_record)
    result = AuditResult.DONE if report.result == "done" else AuditResult.FAILED
    ctx.store.audit.finish([Settlement(entry, result, after_state=report.result, message=report.left)])
    return report
