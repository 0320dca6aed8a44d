"""`jueying check --drain/--resume`: act on confirmed results, inside the cap, and say what was done.

Automatic drains end with the tag `[jueying-check]` (earlier versions: begin with `jueying: auto:`); --resume
only ever resumes those, never a drain an
operator made (even with `jueying drain`), and only after --resume-after clean runs in a row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from jueying_cli.actions.apply import Evidence
from jueying_cli.actions.cap import OverCap
from jueying_cli.actions.context import ActionContext
from jueying_cli.actions.drain import ChangeResult, DrainRequest, execute, plan_drains, plan_resumes
from jueying_cli.checks.config import CheckConfig
from jueying_cli.checks.flap import Finding, causes
from jueying_cli.checks.model import CheckResult
from jueying_cli.checks.registry import CHECKS
from jueying_cli.checks.run import run_checks
from jueying_cli.errors import SchedulerError
from jueying_cli.facts.collected import NodeFacts
from jueying_cli.inventory.model import Inventory
from jueying_cli.scheduler.base import AUTO_ACTOR, NodeState, auto_reason, is_auto_reason
from jueying_cli.vocab import Action, Backend, ChangeKind, Level

ACTOR = AUTO_ACTOR
DRAIN_ACTIONS = frozenset({Action.DRAIN, Action.RESET_GPU, Action.REBOOT, Action.RMA})
GONE_NOTE = "the fault was gone when the node was read again just before draining (the next run decides)"
# Reads the nodes about to be drained again, just before draining them: (their facts, unix s the read began).
Reread = Callable[[Sequence[str]], tuple[list[NodeFacts], float]]


@dataclass(frozen=True)
class AutoAction:
    """One thing the automation did or held back: `result` is drained, held back, not drained (its facts were
    read before the node was resumed), failed, waiting or resumed."""

    node: str
    action: ChangeKind
    result: str
    note: str


@dataclass(frozen=True)
class AutomationReport:
    actions: list[AutoAction]
    stopped: str | None = None  # why the automation stopped early (a scheduler that cannot be asked)


def automate(ctx: ActionContext, findings: Sequence[Finding], results: Sequence[NodeFacts], *, drain: bool,
             resume: bool, resume_after: int, facts_read_at: float | None = None,
             reread: tuple[Reread, CheckConfig] | None = None) -> AutomationReport:
    """Drain and/or resume as the findings say. A scheduler that cannot be asked (an unreachable
    slurm_controller) stops the automation, not the check: the drains not made are listed as failed.
    `facts_read_at` (unix s, when this run began reading facts): a node resumed since is not drained.
    `reread` (with the check set): the nodes about to be drained are read again first, and only those whose
    cause still holds are drained, so a fault removed (or a node put back) while this run was judging is
    not acted on; a node that does not answer the second read is drained on the first."""
    answered = {r.name for r in results if r.facts is not None}
    clean = {name: not any(f.result.node == name and f.result.level != Level.OK for f in findings)
             for name in answered}
    clean_runs = ctx.store.flap.track_clean(clean)
    actions: list[AutoAction] = []
    try:
        if drain:
            actions += _drain(ctx, findings, facts_read_at, reread)
        if resume:
            just_drained = {a.node for a in actions}  # judged on the states from before this run's drains
            actions += _resume(ctx, answered, clean_runs, resume_after, skip=just_drained)
    except SchedulerError as exc:
        acted = {a.node for a in actions}
        if drain:
            actions += [AutoAction(n, ChangeKind.DRAIN, "failed", str(exc))
                        for n in sorted(causes(findings, DRAIN_ACTIONS)) if n not in acted]
        return AutomationReport(actions, str(exc))
    return AutomationReport(actions)


def _drain(ctx: ActionContext, findings: Sequence[Finding], facts_read_at: float | None,
           reread: tuple[Reread, CheckConfig] | None) -> list[AutoAction]:
    """Drain nodes whose confirmed CRITICAL results recommend it, up to max_unavailable; never forced."""
    wanted = causes(findings, DRAIN_ACTIONS)
    out: list[AutoAction] = []
    if not wanted:
        return out
    # which of them are drained now, before the evidence is read (again): one resumed after this moment was
    # resumed on evidence at least as new as ours
    drained_then = frozenset(n for scheduler, names in ctx.schedulers.values()
                             for n, state in scheduler.states([x for x in names if x in wanted]).items()
                             if state is not None and state.drain)
    if reread is not None:
        fresh, facts_read_at = reread[0](sorted(wanted))
        gone = set(wanted) - still_failing(wanted, fresh, reread[1], ctx.inventory, now=facts_read_at)
        out += [AutoAction(n, ChangeKind.DRAIN, "not drained", GONE_NOTE) for n in sorted(gone)]
        wanted = {n: c for n, c in wanted.items() if n not in gone}
    evidence = None if facts_read_at is None else Evidence(facts_read_at, drained_then)
    requests = []
    for node, cause in wanted.items():
        gpu = f" gpu{cause.gpu}" if cause.gpu is not None else ""
        requests.append(DrainRequest(node, auto_reason(f"{cause.check} {cause.code}{gpu}"),
                                     cause.message, evidence))
    if not requests:
        return out
    plan = plan_drains(ctx, requests, over_cap=OverCap.HOLD_BACK)
    for row in execute(ctx, plan, actor=ACTOR):
        if row.result == ChangeResult.UNCHANGED:  # already drained (by anyone): nothing to say
            continue
        note = plan.requests[row.node].reason if row.result == ChangeResult.DRAINED else row.note
        out.append(AutoAction(row.node, ChangeKind.DRAIN, str(row.result), note))
    return out


def still_failing(wanted: Mapping[str, CheckResult], fresh: Sequence[NodeFacts], config: CheckConfig,
                  inventory: Inventory, *, now: float) -> set[str]:
    """The nodes of `wanted` whose cause (check, GPU, CRITICAL) shows again on `fresh` facts; a node that gave
    no fresh facts, and a cause from a fleet check (it needs the whole fleet to judge), count as holding."""
    answered = [(r.node, r.facts) for r in fresh if r.facts is not None]
    holding = {n for n, c in wanted.items() if c.check in CHECKS and CHECKS[c.check].scope == "fleet"}
    holding |= set(wanted) - {r.name for r in fresh if r.facts is not None}
    for c in run_checks(answered, config, inventory, now=now):
        cause = wanted.get(c.node)
        if cause is not None and c.check == cause.check and c.gpu == cause.gpu and c.level == Level.CRITICAL:
            holding.add(c.node)
    return holding


def _resume(ctx: ActionContext, answered: set[str], clean_runs: dict[str, int], resume_after: int, *,
            skip: set[str]) -> list[AutoAction]:
    """Resume this automation's own drains once the node has passed `resume_after` clean runs in a row."""
    out: list[AutoAction] = []
    ready = []
    asked: dict[Backend, Mapping[str, NodeState]] = {}  # each scheduler is asked once: the plan reuses it
    for backend, (scheduler, names) in ctx.schedulers.items():
        states = asked[backend] = scheduler.states(names)
        mine = [n for n in names if n not in skip and states.get(n) is not None and states[n].drain
                and is_auto_reason(states[n].reason)]
        for n in mine:
            runs = clean_runs.get(n, 0)
            if runs >= resume_after:
                ready.append(n)
            elif n in answered:
                out.append(AutoAction(n, ChangeKind.RESUME, "waiting", f"{runs}/{resume_after} clean runs"))
    if not ready:
        return out
    plan = plan_resumes(ctx, ready, force=False, states=asked)
    for row in execute(ctx, plan, actor=ACTOR, message=f"{resume_after} clean check runs"):
        if row.result == ChangeResult.RESUMED:
            runs = clean_runs.get(row.node, 0)
            out.append(AutoAction(row.node, ChangeKind.RESUME, "resumed", f"after {runs} clean runs"))
        elif row.result == ChangeResult.FAILED:
            out.append(AutoAction(row.node, ChangeKind.RESUME, "failed", row.note))
    return out
