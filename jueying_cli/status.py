"""Node summaries for `jueying status`: pure functions of facts, no I/O.

A summary is what one status row shows; its `state` says at a glance whether the node needs a look:
ok, degraded (lost GPUs, fewer GPUs than expected, unreadable GPU fields), no_driver (NVML not usable).
"""

from __future__ import annotations

from dataclasses import dataclass

from jueying_cli.models import Facts, GpuFacts

# Node states that mean the node answered.
UP_STATES = frozenset({"ok", "degraded", "no_driver", "drained"})

# Fields whose loss makes a GPU's telemetry untrustworthy (not merely an unsupported extra).
_ESSENTIAL_FIELDS = frozenset({"name", "uuid", "memory", "utilization", "temperature_c"})


@dataclass(frozen=True)
class ModelCount:
    model: str
    gpus: int


@dataclass(frozen=True)
class NodeSummary:
    node: str
    state: str
    reason: str
    gpus_present: int
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
    collected_at_unix: float


def _sum(values: list[float]) -> float | None:
    return sum(values) if values else None


def _healthy(gpu: GpuFacts) -> bool:
    return not gpu.lost


def summarize(node: str, facts: Facts, expected_gpus: int | None = None) -> NodeSummary:
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
    return NodeSummary(
        node=node,
        state=state,
        reason=reason,
        gpus_present=len(gpus),
        gpus_expected=expected_gpus,
        gpus_lost=len(lost),
        gpu_models=tuple(ModelCount(model, sum(1 for g in gpus if g.name == model))
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


def node_state(facts: Facts, expected_gpus: int | None) -> tuple[str, str]:
    """(state, reason): the first thing an operator should know about this node's GPUs."""
    if facts.nvml.status not in ("ok", "skipped"):
        if expected_gpus == 0:
            return "ok", ""
        return "no_driver", facts.nvml.message or facts.nvml.status
    lost = [g.index for g in facts.gpus if g.lost]
    present = len(facts.gpus) - len(lost)
    if lost:
        return "degraded", "GPU " + ",".join(str(i) for i in lost) + " lost"
    if expected_gpus is not None and present < expected_gpus:
        return "degraded", f"{present} of {expected_gpus} GPUs present"
    broken = sorted({e.gpu for e in facts.errors
                     if e.gpu is not None and e.field in _ESSENTIAL_FIELDS and e.error != "NOT_SUPPORTED"})
    if broken:
        return "degraded", "GPU " + ",".join(str(i) for i in broken) + " telemetry unreadable"
    return "ok", ""


def totals(summaries: list[NodeSummary]) -> dict[str, object]:
    """The summary line's numbers: nodes up/total and GPUs healthy/total by model."""
    by_model: dict[str, list[int]] = {}
    for s in summaries:
        for mc in s.gpu_models:
            entry = by_model.setdefault(mc.model, [0, 0])
            entry[0] += mc.gpus
            entry[1] += 1
    return {
        "nodes_total": len(summaries),
        "nodes_up": sum(1 for s in summaries if s.state in UP_STATES),
        "nodes_ok": sum(1 for s in summaries if s.state == "ok"),
        "gpus_healthy": sum(s.gpus_present for s in summaries),
        "gpus_total": sum(s.gpus_present + s.gpus_lost for s in summaries),
        "gpu_models": [{"model": m, "gpus_healthy": v[0], "nodes": v[1]} for m, v in sorted(by_model.items())],
    }


def summary_line(t: dict[str, object]) -> str:
    models = t["gpu_models"]
    assert isinstance(models, list)
    text = ", ".join(f"{m['gpus_healthy']}x {m['model']} on {m['nodes']} node(s)" for m in models) or "no GPUs"
    return (f"nodes up {t['nodes_up']}/{t['nodes_total']}, "
            f"GPUs healthy {t['gpus_healthy']}/{t['gpus_total']} ({text})")
