"""Node summaries for `jueying status`: pure functions of facts, no I/O.

A summary is what one status row shows; its `state` says at a glance whether the node needs a look:
ok, degraded (lost GPUs, fewer GPUs than expected, unreadable GPU fields, or a confirmed WARNING or CRITICAL
health check result), no_driver (NVML not usable). Its `health` is the worst confirmed level of the health
checks (the same set and flap state as `jueying check`, read by the caller: see checks.flap.read_findings).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jueying_cli.facts.model import Facts, GpuFacts
from jueying_cli.scheduler.base import NodeState
from jueying_cli.vocab import ANSWERED, Backend, Level, NodeStatus, OutcomeStatus, SchedulerState

# Fields whose loss makes a GPU's telemetry untrustworthy (not merely an unsupported extra).
_ESSENTIAL_FIELDS = frozenset({"name", "uuid", "memory", "utilization", "temperature_c"})


@dataclass(frozen=True)
class ModelCount:
    model: str
    gpus: int


@dataclass(frozen=True)
class HealthFinding:
    """A non-OK health check result as `status` shows it: `confirmed` as the last `jueying check` counted it,
    else pending, `runs` being the consecutive runs `jueying check` has seen it hold (at least 1: seen now)."""

    check: str
    level: Level
    gpu: int | None  # None: about the whole node
    message: str
    confirmed: bool
    runs: int
    confirm_runs: int


def _by_severity(findings: list[HealthFinding]) -> tuple[HealthFinding, ...]:
    return tuple(sorted(findings, key=lambda f: (-f.level.severity, f.check, -1 if f.gpu is None else f.gpu)))


# Levels that make an answering node `degraded` and its GPU not healthy (UNKNOWN only keeps it from folding).
_PROBLEM_LEVELS = (Level.WARNING, Level.CRITICAL)


@dataclass(frozen=True)
class NodeSummary:
    node: str
    state: NodeStatus
    reason: str
    gpus_present: int | None  # None: the node did not answer
    gpus_expected: int | None
    gpus_lost: int
    gpu_models: tuple[ModelCount, ...]  # healthy GPUs per model
    utilization_avg_pct: float | None
    utilization_max_pct: int | None
    gpu_memory_used_bytes: int | None
    gpu_memory_total_bytes: int | None
    hottest_gpu_c: int | None
    hottest_gpu_index: int | None
    power_watts: float | None
    power_limit_watts: float | None
    load1: float | None
    cpu_threads: int | None
    host_memory_used_bytes: int | None
    host_memory_total_bytes: int | None
    collected_at_unix: float | None
    stale: bool = False  # shown from an earlier refresh: this one missed its deadline
    nodes: int = 1  # > 1 for a folded row of identical healthy nodes
    scheduler: Backend | None = None  # the backend that drains this node
    scheduler_state: SchedulerState | None = None  # what it says: idle, allocated, mixed, draining, drained, down
    drain_reason: str | None = None
    health: Level | None = None  # worst confirmed check level; None: no facts, or no checks run (--source prometheus)
    health_check: str | None = None  # the check that gave it (the first, by check name, when several did)
    health_gpu: int | None = None  # the GPU it is about (None: the node)
    problems: tuple[HealthFinding, ...] = ()  # every confirmed non-OK result, worst first
    pending: tuple[HealthFinding, ...] = ()  # non-OK results not yet confirmed (flap control)
    gpus_with_problems: int = 0  # present GPUs with a confirmed WARNING or CRITICAL result of their own
    # In a folded row, the node each extreme shown comes from:
    hottest_gpu_node: str | None = None
    utilization_max_node: str | None = None
    load1_node: str | None = None


def _sum(values: list[float]) -> float | None:
    return sum(values) if values else None


def _healthy(gpu: GpuFacts) -> bool:
    return not gpu.lost


def summarize(node: str, facts: Facts, expected_gpus: int | None = None,
              health: Sequence[HealthFinding] | None = None) -> NodeSummary:
    """One node's row; `health` is its non-OK check results (None: the checks were not run)."""
    bad_gpus = {f.gpu for f in health or () if f.confirmed and f.gpu is not None and f.level in _PROBLEM_LEVELS}
    gpus = [g for g in facts.gpus if _healthy(g)]
    lost = [g for g in facts.gpus if g.lost]
    utils = [g.utilization_gpu_pct for g in gpus if g.utilization_gpu_pct is not None]
    temps = [(g.temperature_c, g.index) for g in gpus if g.temperature_c is not None]
    used = [g.memory_used_bytes for g in gpus if g.memory_used_bytes is not None]
    total = [g.memory_total_bytes for g in gpus if g.memory_total_bytes is not None]
    power = [g.power_watts for g in gpus if g.power_watts is not None]
    limits = [g.power_limit_watts for g in gpus if g.power_limit_watts is not None]
    hottest = max(temps) if temps else None
    state, reason = node_state(facts, expected_gpus)
    row = NodeSummary(
        node=node,
        state=state,
        reason=reason,
        gpus_present=len(gpus),
        gpus_expected=expected_gpus,
        gpus_lost=len(lost),
        gpu_models=tuple(ModelCount(model, sum(1 for g in gpus if g.name == model and g.index not in bad_gpus))
                         for model in sorted({g.name for g in gpus if g.name})),
        utilization_avg_pct=(sum(utils) / len(utils)) if utils else None,
        utilization_max_pct=max(utils) if utils else None,
        gpu_memory_used_bytes=sum(used) if used else None,
        gpu_memory_total_bytes=sum(total) if total else None,
        hottest_gpu_c=hottest[0] if hottest else None,
        hottest_gpu_index=hottest[1] if hottest else None,
        power_watts=_sum(power),
        power_limit_watts=_sum(limits),
        load1=facts.host.load1,
        cpu_threads=facts.host.cpu_threads,
        host_memory_used_bytes=facts.host.memory_used_bytes,
        host_memory_total_bytes=facts.host.memory_total_bytes,
        collected_at_unix=facts.collected_at_unix,
    )
    if health is None:
        return row
    return with_health(row, health, gpus_with_problems=sum(1 for g in gpus if g.index in bad_gpus))


def with_health(row: NodeSummary, health: Sequence[HealthFinding], *, gpus_with_problems: int) -> NodeSummary:
    """A row's health columns from the node's non-OK check results: the worst confirmed level with its check
    and GPU, the problems and the pending results; a node that is ok by its own facts but has a confirmed
    WARNING or CRITICAL result is degraded, with that result as its reason. `gpus_with_problems`: present GPUs
    with a confirmed problem of their own (they are not counted healthy)."""
    problems = _by_severity([f for f in health if f.confirmed])
    worst = problems[0] if problems else None
    state, reason = row.state, row.reason
    if state == NodeStatus.OK and worst is not None and worst.level in _PROBLEM_LEVELS:
        state = NodeStatus.DEGRADED
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        reason = f"{worst.check}: {worst.message}{more}"
    return dataclasses.replace(
        row, state=state, reason=reason, health=worst.level if worst else Level.OK,
        health_check=worst.check if worst else None, health_gpu=worst.gpu if worst else None, problems=problems,
        pending=_by_severity([f for f in health if not f.confirmed]), gpus_with_problems=gpus_with_problems)


def node_state(facts: Facts, expected_gpus: int | None) -> tuple[NodeStatus, str]:
    """(state, reason): the first thing an operator should know about this node's GPUs."""
    if facts.nvml.status not in ("ok", "skipped"):
        if expected_gpus == 0:
            return NodeStatus.OK, ""
        return NodeStatus.NO_DRIVER, facts.nvml.message or facts.nvml.status
    lost = [g.index for g in facts.gpus if g.lost]
    present = len(facts.gpus) - len(lost)
    if lost:
        return NodeStatus.DEGRADED, "GPU " + ",".join(str(i) for i in lost) + " lost"
    if expected_gpus is not None and present < expected_gpus:
        return NodeStatus.DEGRADED, f"{present} of {expected_gpus} GPUs present"
    broken = sorted({e.gpu for e in facts.errors
                     if e.gpu is not None and e.field in _ESSENTIAL_FIELDS and e.error != "NOT_SUPPORTED"})
    if broken:
        return NodeStatus.DEGRADED, "GPU " + ",".join(str(i) for i in broken) + " telemetry unreadable"
    return NodeStatus.OK, ""


def totals(summaries: list[NodeSummary]) -> dict[str, object]:
    """The summary line's numbers: nodes up/total and GPUs healthy/total by model."""
    by_model: dict[str, list[int]] = {}
    for s in summaries:
        for mc in s.gpu_models:
            entry = by_model.setdefault(mc.model, [0, 0])
            entry[0] += mc.gpus
            entry[1] += s.nodes
    return {
        "nodes_total": sum(s.nodes for s in summaries),
        "nodes_up": sum(s.nodes for s in summaries if s.state in ANSWERED),
        "nodes_ok": sum(s.nodes for s in summaries if s.state == NodeStatus.OK),
        "gpus_healthy": sum(((s.gpus_present or 0) - s.gpus_with_problems) * s.nodes for s in summaries),
        "gpus_total": sum(((s.gpus_present or 0) + s.gpus_lost) * s.nodes for s in summaries),
        "gpu_models": [{"model": m, "gpus_healthy": v[0], "nodes": v[1]} for m, v in sorted(by_model.items())],
        "nodes_by_health": {level.name.lower(): sum(s.nodes for s in summaries if s.health == level)
                            for level in Level},
        "nodes_pending": sum(s.nodes for s in summaries if s.pending),
    }


def summary_line(t: dict[str, object]) -> str:
    models = t["gpu_models"]
    assert isinstance(models, list)
    text = ", ".join(f"{m['gpus_healthy']}x {m['model']} on {m['nodes']} node(s)" for m in models) or "no GPUs"
    line = (f"nodes up {t['nodes_up']}/{t['nodes_total']}, "
            f"GPUs healthy {t['gpus_healthy']}/{t['gpus_total']} ({text})")
    health = t.get("nodes_by_health")
    if isinstance(health, dict) and any(health.values()):
        counts = ", ".join(f"{health[level.name.lower()]} {level.name.lower()}"
                           for level in (Level.CRITICAL, Level.WARNING, Level.UNKNOWN))
        pending = t.get("nodes_pending")
        line += f"; checks: {counts} node(s)" + (f", {pending} with pending results" if pending else "")
    return line


def unanswered(node: str, state: OutcomeStatus, reason: str, expected_gpus: int | None = None) -> NodeSummary:
    """A row for a node that gave no facts (unreachable, timeout, failed, ...)."""
    return NodeSummary(node=node, state=NodeStatus(state), reason=reason, gpus_present=None,
                       gpus_expected=expected_gpus, gpus_lost=0, gpu_models=(), utilization_avg_pct=None,
                       utilization_max_pct=None, gpu_memory_used_bytes=None, gpu_memory_total_bytes=None,
                       hottest_gpu_c=None, hottest_gpu_index=None, power_watts=None, power_limit_watts=None, load1=None,
                       cpu_threads=None, host_memory_used_bytes=None, host_memory_total_bytes=None,
                       collected_at_unix=None)


# Problems first, in this order; then healthy nodes.
STATE_ORDER = (NodeStatus.NO_DATA, NodeStatus.UNREACHABLE, NodeStatus.TIMEOUT, NodeStatus.AUTH_FAILED,
               NodeStatus.HOSTKEY_FAILED, NodeStatus.FAILED, NodeStatus.NO_DRIVER, NodeStatus.DEGRADED,
               NodeStatus.DRAINING, NodeStatus.DRAINED, NodeStatus.OK)


def _natural(name: str) -> tuple[object, ...]:
    import re

    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


SORT_KEYS = ("state", "node", "util", "temp", "power", "gpu-mem", "load", "age")


def sort_summaries(summaries: list[NodeSummary], key: str = "state") -> list[NodeSummary]:
    """`state` (default): problems first, then by name; numeric keys: largest first, unknown last."""
    def state_rank(s: NodeSummary) -> int:
        return STATE_ORDER.index(s.state) if s.state in STATE_ORDER else 0

    if key == "node":
        return sorted(summaries, key=lambda s: _natural(s.node))
    if key == "state":
        return sorted(summaries, key=lambda s: (state_rank(s), -(s.health.severity if s.health else 0),
                                                _natural(s.node)))
    getters: dict[str, Callable[[NodeSummary], float | None]] = {
        "util": lambda s: s.utilization_avg_pct,
        "temp": lambda s: s.hottest_gpu_c,
        "power": lambda s: s.power_watts,
        "gpu-mem": lambda s: s.gpu_memory_used_bytes,
        "load": lambda s: s.load1,
        "age": lambda s: None if s.collected_at_unix is None else -s.collected_at_unix,
    }
    value = getters[key]
    return sorted(summaries, key=lambda s: (value(s) is None, -(value(s) or 0), _natural(s.node)))


def fold_healthy(summaries: list[NodeSummary], fold_name: Callable[[list[str]], str]) -> list[NodeSummary]:
    """Fold `ok` nodes that look alike (same GPU count, expectation and models) into one row each,
    with aggregate numbers; every node with a problem keeps its own row: any check result that is not OK,
    confirmed or pending, keeps a node out of a fold."""
    groups: dict[tuple[object, ...], list[NodeSummary]] = {}
    rows: list[NodeSummary] = []
    for s in summaries:
        if s.state == NodeStatus.OK and not s.stale and s.health in (None, Level.OK) and not s.pending:
            groups.setdefault((s.gpus_present, s.gpus_expected, s.gpu_models, s.health), []).append(s)
        else:
            rows.append(s)
    for members in groups.values():
        if len(members) == 1:
            rows.append(members[0])
            continue
        rows.append(_aggregate(members, fold_name([m.node for m in members])))
    return rows


def _aggregate(members: list[NodeSummary], name: str) -> NodeSummary:
    def values(attr: str) -> list[float]:
        return [v for v in (getattr(m, attr) for m in members) if v is not None]

    def total(attr: str) -> float | None:
        found = values(attr)
        return sum(found) if found else None

    def top(attr: str) -> float | None:
        found = values(attr)
        return max(found) if found else None

    def extreme(attr: str) -> NodeSummary | None:
        """The member with the highest value (the first by name on a tie), None when none has one."""
        found = [m for m in members if getattr(m, attr) is not None]
        return max(found, key=lambda m: getattr(m, attr)) if found else None

    avg = values("utilization_avg_pct")
    hottest = extreme("hottest_gpu_c")
    busiest = extreme("utilization_max_pct")
    loaded = extreme("load1")
    first = members[0]
    used = total("gpu_memory_used_bytes")
    gpu_total = total("gpu_memory_total_bytes")
    host_used = total("host_memory_used_bytes")
    host_total = total("host_memory_total_bytes")
    ages = values("collected_at_unix")
    util_max = top("utilization_max_pct")
    return NodeSummary(
        node=name, state=NodeStatus.OK, reason="", gpus_present=first.gpus_present, gpus_expected=first.gpus_expected,
        gpus_lost=0, gpu_models=tuple(ModelCount(m.model, m.gpus * len(members)) for m in first.gpu_models),
        utilization_avg_pct=sum(avg) / len(avg) if avg else None,
        utilization_max_pct=int(util_max) if util_max is not None else None,
        gpu_memory_used_bytes=int(used) if used is not None else None,
        gpu_memory_total_bytes=int(gpu_total) if gpu_total is not None else None,
        hottest_gpu_c=hottest.hottest_gpu_c if hottest else None,
        hottest_gpu_index=hottest.hottest_gpu_index if hottest else None,
        power_watts=total("power_watts"), power_limit_watts=total("power_limit_watts"),
        load1=top("load1"), cpu_threads=first.cpu_threads,
        host_memory_used_bytes=int(host_used) if host_used is not None else None,
        host_memory_total_bytes=int(host_total) if host_total is not None else None,
        collected_at_unix=min(ages) if ages else None, nodes=len(members), health=first.health,
        hottest_gpu_node=hottest.node if hottest else None, utilization_max_node=busiest.node if busiest else None,
        load1_node=loaded.node if loaded else None,
    )


def with_scheduler(row: NodeSummary, backend: Backend, state: NodeState | None) -> NodeSummary:
    """Add what the scheduler says; a drained or draining node that answered shows as `drained` with
    its reason (a node that did not answer keeps that more urgent state)."""
    if state is None:
        return dataclasses.replace(row, scheduler=backend)
    row = dataclasses.replace(row, scheduler=backend, scheduler_state=state.state, drain_reason=state.reason)
    if state.drain and row.state in (NodeStatus.OK, NodeStatus.DEGRADED, NodeStatus.NO_DRIVER):
        why = state.reason or "no reason"
        reason = f"{why}; {row.reason}" if row.reason else why
        drained = state.state == SchedulerState.DRAINED
        row = dataclasses.replace(row, state=NodeStatus.DRAINED if drained else NodeStatus.DRAINING, reason=reason)
    return row
