"""`jueying capacity`: how much healthy compute the fleet has, by group, and whether it survives losing its
largest rack or site. Pure functions of facts, scheduler states, confirmed check results and history rows.

A node is, in this order: down (its scheduler says down), unreachable (it gave no facts), drained (drained or
draining), degraded (it answered with lost or missing GPUs, or a confirmed WARNING/CRITICAL check result), or
healthy. Its GPUs follow it, except on a node in service: a lost GPU, or one missing against expected_gpus,
counts as down; a GPU with a confirmed check result (or every GPU, for a node-wide CRITICAL one) as degraded.
Nodes whose inventory `role` is `spare` are counted apart and never in the throughput or the floor.
The GPUs of a node that gave no facts are its expected_gpus, else its last recorded count, else unknown (0).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jueying_cli.audit.attributes import most_common_model
from jueying_cli.audit.datasheets import PRECISIONS, peak_tflops
from jueying_cli.facts.collected import NodeFacts
from jueying_cli.inventory.model import Node
from jueying_cli.scheduler.base import NodeState
from jueying_cli.store import HistoryRow
from jueying_cli.vocab import HealthClass, Level, SchedulerState

GROUP_BY = ("model", "site", "rack", "partition")
UNGROUPED = "-"  # a node the inventory gives no site/rack/partition
CLASSES = tuple(HealthClass)
# Checks whose findings are lost or missing GPUs, which are counted as down already: they make the node degraded
# but do not make its remaining GPUs degraded.
COUNTED = frozenset({"nvml", "gpu_count"})


@dataclass(frozen=True)
class Problem:
    """A confirmed non-OK check result: its level and check, on one GPU (None: the whole node)."""

    level: Level
    check: str
    gpu: int | None


@dataclass(frozen=True)
class NodeCapacity:
    node: str
    groups: tuple[str, ...]  # one, except --by partition: every Slurm partition the node is in
    spare: bool
    state: HealthClass
    reason: str
    gpus: dict[HealthClass, int]
    models: dict[str, int]  # healthy GPUs by NVML name
    power_watts: float | None
    power_limit_watts: float | None  # of the healthy GPUs
    power_limit_all_watts: float | None  # of every GPU present

    @property
    def group(self) -> str:
        """The groups as one name (`gpu,debug` for a node in two partitions)."""
        return ",".join(self.groups)


def _counts() -> dict[HealthClass, int]:
    return dict.fromkeys(CLASSES, 0)


@dataclass(frozen=True)
class GpuReading:
    """What capacity needs of one GPU that answered (a lost GPU is only counted: NodeReading.lost)."""

    index: int
    name: str | None
    power_watts: float | None
    power_limit_watts: float | None


@dataclass(frozen=True)
class NodeReading:
    """One node as capacity reads it, from its facts (reading_of) or from Prometheus (capacity_prometheus):
    the GPUs that answered and how many are lost; `gpus` None when the node gave no facts, `why` saying why."""

    node: Node
    gpus: tuple[GpuReading, ...] | None
    lost: int = 0
    why: str = ""
    status: str = ""  # with no facts: the outcome (unreachable, timeout, ...; no_data, stale from Prometheus)

    @property
    def name(self) -> str:
        return self.node.name


def reading_of(r: NodeFacts) -> NodeReading:
    if r.facts is None:
        return NodeReading(r.node, None, why=r.outcome.error or r.outcome.status, status=str(r.outcome.status))
    present = tuple(GpuReading(g.index, g.name, g.power_watts, g.power_limit_watts) for g in r.facts.gpus
                    if not g.lost)
    return NodeReading(r.node, present, len(r.facts.gpus) - len(present))


def classify(r: NodeReading, scheduler: NodeState | None, problems: Sequence[Problem], *, by: str,
             known_gpus: int | None) -> NodeCapacity:
    node = r.node
    spare = node.vars.get("role") == "spare"
    groups = _groups(r, by, scheduler)
    expected = node.expected_gpus
    if r.gpus is None:
        gpus_total = expected if expected is not None else (known_gpus or 0)
        state = HealthClass.DOWN if scheduler is not None and scheduler.state == SchedulerState.DOWN \
            else HealthClass.UNREACHABLE
        counts = _counts()
        counts[state] = gpus_total
        return NodeCapacity(node.name, groups, spare, state, r.why, counts, {}, None, None, None)
    present = list(r.gpus)
    lost = r.lost
    missing = max(0, (expected or 0) - len(present) - lost)
    power = [g.power_watts for g in present if g.power_watts is not None]
    limits = [g.power_limit_watts for g in present if g.power_limit_watts is not None]
    counts = _counts()
    if scheduler is not None and (scheduler.state == SchedulerState.DOWN or scheduler.drain
                                  or scheduler.state in (SchedulerState.DRAINED, SchedulerState.DRAINING)):
        state = HealthClass.DOWN if scheduler.state == SchedulerState.DOWN and not scheduler.drain \
            else HealthClass.DRAINED
        counts[state] = len(present) + lost + missing
        return NodeCapacity(node.name, groups, spare, state, scheduler.reason or scheduler.raw or str(scheduler.state),
                            counts, {}, _sum(power), None, _sum(limits))
    node_wide = [p for p in problems if p.gpu is None and p.level == Level.CRITICAL and p.check not in COUNTED]
    per_gpu = {p.gpu for p in problems if p.gpu is not None and p.level in (Level.WARNING, Level.CRITICAL)
               and p.check not in COUNTED}
    degraded_gpus = present if node_wide else [g for g in present if g.index in per_gpu]
    healthy = [g for g in present if g not in degraded_gpus]
    counts[HealthClass.DOWN] = lost + missing
    counts[HealthClass.DEGRADED] = len(degraded_gpus)
    counts[HealthClass.HEALTHY] = len(healthy)
    reasons = []
    if lost:
        reasons.append(f"{lost} GPU(s) lost")
    if missing:
        reasons.append(f"{missing} GPU(s) missing of {expected}")
    reasons += sorted({f"{p.check} {p.level.name}" + ("" if p.gpu is None else f" GPU {p.gpu}")
                       for p in problems if p.level in (Level.WARNING, Level.CRITICAL)})
    state = HealthClass.DEGRADED if (lost or missing or degraded_gpus or any(
        p.level in (Level.WARNING, Level.CRITICAL) for p in problems)) else HealthClass.HEALTHY
    models: dict[str, int] = {}
    for g in healthy:
        models[g.name or "unknown"] = models.get(g.name or "unknown", 0) + 1
    healthy_limits = [g.power_limit_watts for g in healthy if g.power_limit_watts is not None]
    return NodeCapacity(node.name, groups, spare, state, "; ".join(reasons), counts, models, _sum(power),
                        _sum(healthy_limits), _sum(limits))


def _sum(values: Sequence[float]) -> float | None:
    return round(sum(values), 3) if values else None


def _groups(r: NodeReading, by: str, scheduler: NodeState | None) -> tuple[str, ...]:
    """The node's group: its GPU model, or the inventory's site, rack or partition variable; by partition,
    the partitions its scheduler puts it in come first (Slurm: every one, a node may be in several)."""
    if by == "model":
        if r.gpus:
            return (most_common_model(g.name for g in r.gpus),)
        pinned = r.node.vars.get("gpu_model")
        return (pinned if isinstance(pinned, str) and pinned else "unknown",)
    if by == "partition" and scheduler is not None and scheduler.partitions:
        return tuple(sorted(set(scheduler.partitions)))
    value = r.node.vars.get(by)
    return (str(value),) if value not in (None, "") else (UNGROUPED,)


@dataclass
class GroupCapacity:
    """One group's figures (or the total): nodes and GPUs by class, in service and spare."""

    name: str
    nodes: dict[HealthClass, int] = field(default_factory=_counts)
    gpus: dict[HealthClass, int] = field(default_factory=_counts)
    spare_nodes: dict[HealthClass, int] = field(default_factory=_counts)
    spare_gpus: dict[HealthClass, int] = field(default_factory=_counts)
    healthy_models: dict[str, int] = field(default_factory=dict)
    power_watts: float = 0.0
    power_limit_watts: float = 0.0  # every GPU present
    healthy_power_limit_watts: float = 0.0
    energy_kwh: float | None = None

    def add(self, n: NodeCapacity) -> None:
        nodes, gpus = (self.spare_nodes, self.spare_gpus) if n.spare else (self.nodes, self.gpus)
        nodes[n.state] += 1
        for cls, count in n.gpus.items():
            gpus[cls] += count
        if not n.spare:
            for model, count in n.models.items():
                self.healthy_models[model] = self.healthy_models.get(model, 0) + count
            self.healthy_power_limit_watts += n.power_limit_watts or 0.0
        self.power_watts += n.power_watts or 0.0
        self.power_limit_watts += n.power_limit_all_watts or 0.0

    def to_json(self) -> dict[str, Any]:
        tflops, unknown = peak_tflops(self.healthy_models)
        kw = self.healthy_power_limit_watts / 1000
        return {
            "group": self.name,
            "nodes": {str(k): v for k, v in self.nodes.items()},
            "gpus": {str(k): v for k, v in self.gpus.items()},
            "spare_nodes": {str(k): v for k, v in self.spare_nodes.items()},
            "spare_gpus": {str(k): v for k, v in self.spare_gpus.items()},
            "healthy_gpus_by_model": dict(sorted(self.healthy_models.items())),
            "peak_tflops_dense": {p: tflops[p] for p in PRECISIONS if p in tflops},
            "unknown_models": unknown,
            "power_watts": round(self.power_watts, 1),
            "power_limit_watts": round(self.power_limit_watts, 1),
            "healthy_power_limit_watts": round(self.healthy_power_limit_watts, 1),
            "tflops_per_kw": {p: round(tflops[p] / kw, 2) for p in PRECISIONS if p in tflops} if kw > 0 else {},
            "energy_kwh": None if self.energy_kwh is None else round(self.energy_kwh, 3),
        }


@dataclass(frozen=True)
class Loss:
    """Losing the largest rack (or site): which one, its healthy schedulable GPUs, what is left."""

    level: str  # rack or site
    largest: str | None  # None: the inventory names no rack (site) for these nodes
    lost_gpus: int
    remaining_gpus: int
    above_floor: bool | None


@dataclass(frozen=True)
class CapacityReport:
    by: str
    groups: list[GroupCapacity]
    total: GroupCapacity
    nodes: list[NodeCapacity]
    floor: int | None
    losses: list[Loss]
    trend: list[tuple[str, int]] | None  # (UTC day, healthy GPUs at the end of that day)
    since: str | None
    generated_at_unix: float

    @property
    def schedulable_healthy(self) -> int:
        return self.total.gpus[HealthClass.HEALTHY]

    @property
    def floor_met(self) -> bool | None:
        """None without --floor; else whether the floor holds now and after every loss the inventory describes."""
        if self.floor is None:
            return None
        return self.schedulable_healthy >= self.floor and all(x.above_floor is not False for x in self.losses)

    def to_json(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "groups": [g.to_json() for g in self.groups],
            "total": self.total.to_json(),
            "nodes": [{"node": n.node, "group": n.group, "groups": list(n.groups), "spare": n.spare, "state": n.state,
                       "reason": n.reason, "gpus": {str(k): v for k, v in n.gpus.items()}} for n in self.nodes],
            "floor": None if self.floor is None else {
                "gpus": self.floor, "healthy_schedulable_gpus": self.schedulable_healthy, "met": self.floor_met,
                "losses": [{"level": x.level, "largest": x.largest, "lost_gpus": x.lost_gpus,
                            "remaining_gpus": x.remaining_gpus, "above_floor": x.above_floor} for x in self.losses]},
            "trend": None if self.trend is None else [{"day": d, "healthy_gpus": n} for d, n in self.trend],
            "since": self.since,
        }


def build_capacity(nodes: Sequence[NodeCapacity], readings: Sequence[NodeReading], *, by: str, floor: int | None,
                   history: Mapping[str, Sequence[HistoryRow]] | None, since: str | None,
                   now: float | None = None, energy: Mapping[str, float | None] | None = None) -> CapacityReport:
    """Groups, total, losses and trend. Energy per node from `energy` (kWh, when given) or from `history`."""
    groups: dict[str, GroupCapacity] = {}
    total = GroupCapacity("total")
    for n in nodes:
        for name in n.groups:  # a node in several partitions counts in each; in the total once
            groups.setdefault(name, GroupCapacity(name)).add(n)
        total.add(n)
    if energy is None and history is not None:
        energy = {node: energy_kwh(rows) for node, rows in history.items()}
    if energy is not None:
        for g in [*groups.values(), total]:
            members = [n.node for n in nodes if g is total or g.name in n.groups]
            known = [energy[m] for m in members if energy.get(m) is not None]
            g.energy_kwh = sum(e for e in known if e is not None) if known else None
    losses = [] if floor is None else [_loss(level, nodes, readings, floor, total.gpus[HealthClass.HEALTHY])
                                       for level in ("rack", "site")]
    trend = healthy_per_day(history) if history is not None else None
    return CapacityReport(by, [groups[k] for k in sorted(groups)], total, list(nodes), floor, losses, trend, since,
                          time.time() if now is None else now)


def _loss(level: str, nodes: Sequence[NodeCapacity], readings: Sequence[NodeReading], floor: int,
          healthy: int) -> Loss:
    where = {r.name: r.node.vars.get(level) for r in readings}
    per: dict[str, int] = {}
    for n in nodes:
        place = where.get(n.node)
        if place not in (None, "") and not n.spare:
            per[str(place)] = per.get(str(place), 0) + n.gpus[HealthClass.HEALTHY]
    if not per:
        return Loss(level, None, 0, healthy, None)
    largest = min(per, key=lambda k: (-per[k], k))
    remaining = healthy - per[largest]
    return Loss(level, largest, per[largest], remaining, remaining >= floor)


def energy_kwh(rows: Sequence[HistoryRow]) -> float | None:
    """Energy over the rows (oldest first) from the GPUs' total-energy counters: the sum of the increases; a
    counter that went down was reset (driver reloaded), and its new value is the energy since. None without two
    readings."""
    readings = [r.energy_consumed_j for r in rows if r.energy_consumed_j is not None]
    if len(readings) < 2:
        return None
    joules = 0.0
    for before, after in itertools.pairwise(readings):
        joules += after - before if after >= before else after
    return joules / 3.6e6


def healthy_per_day(history: Mapping[str, Sequence[HistoryRow]]) -> list[tuple[str, int]]:
    """Per UTC day, the GPUs present on nodes whose last row that day said ok or degraded, summed over nodes."""
    days: dict[str, dict[str, int]] = {}
    for node, rows in history.items():
        for r in rows:
            day = time.strftime("%Y-%m-%d", time.gmtime(r.collected_at))
            healthy = r.gpus_present or 0 if r.status in ("ok", "degraded") else 0
            days.setdefault(day, {})[node] = healthy  # rows are oldest first: the day's last row wins
    return [(day, sum(per.values())) for day, per in sorted(days.items())]


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[int]) -> str:
    """A one-line chart of `values` (block characters, lowest to highest)."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    return "".join(SPARK[0 if span == 0 else round((v - low) / span * (len(SPARK) - 1))] for v in values)
