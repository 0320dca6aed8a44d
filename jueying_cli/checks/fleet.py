"""Fleet checks: one look across every answered node, for drift that no single node can see."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from jueying_cli.checks.gpu_base import no_gpus_result
from jueying_cli.checks.model import CheckResult, NodeContext
from jueying_cli.vocab import Level


def _majority(values: Sequence[str]) -> str | None:
    """The value held by strictly more members than any other; None on a tie (no majority to follow)."""
    ranked = Counter(values).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def _split(values: Sequence[str], noun: str) -> str:
    return ", ".join(f"{value} on {count} {noun}" for value, count in Counter(values).most_common())


def _node_field(members: Sequence[NodeContext], label: str, code: str,
                get: Callable[[NodeContext], str | None]) -> list[CheckResult]:
    """A WARNING for each node whose value differs from the majority (every node when there is none)."""
    values = {ctx.node.name: value for ctx in members if (value := get(ctx)) is not None}
    if len(values) < 2:
        return []
    majority = _majority(list(values.values()))
    found = []
    for ctx in members:
        mine = values.get(ctx.node.name)
        if mine is None or mine == majority:
            continue
        if majority is None:
            text = f"{label} {mine}: no majority across {len(values)} nodes ({_split(list(values.values()), 'nodes')})"
        else:
            held = sum(1 for v in values.values() if v == majority)
            text = f"{label} {mine} differs from the majority {majority} ({held} of {len(values)} nodes)"
        found.append(ctx.result("driver_consistency", Level.WARNING, text, code=code))
    return found


def _vbios(members: Sequence[NodeContext]) -> list[CheckResult]:
    """Per GPU, a WARNING when its VBIOS differs from the majority of GPUs of the same model."""
    by_model: dict[str, list[str]] = {}
    for ctx in members:
        for gpu in ctx.facts.gpus:
            if gpu.vbios_version is not None and not gpu.lost:
                by_model.setdefault(gpu.name or "?", []).append(gpu.vbios_version)
    majorities = {model: _majority(versions) for model, versions in by_model.items() if len(versions) >= 2}
    found = []
    for ctx in members:
        for gpu in ctx.facts.gpus:
            model = gpu.name or "?"
            if gpu.vbios_version is None or gpu.lost or model not in majorities:
                continue
            majority, versions = majorities[model], by_model[model]
            if gpu.vbios_version == majority:
                continue
            if majority is None:
                text = f"GPU {gpu.index}: VBIOS {gpu.vbios_version}, no majority across {len(versions)} {model} " \
                       f"GPUs ({_split(versions, 'GPUs')})"
            else:
                held = versions.count(majority)
                text = f"GPU {gpu.index}: VBIOS {gpu.vbios_version} differs from the majority {majority} " \
                       f"({held} of {len(versions)} {model} GPUs)"
            found.append(ctx.result("driver_consistency", Level.WARNING, text, gpu=gpu.index, code="VBIOS_DRIFT"))
    return found


def check_driver_consistency(members: Sequence[NodeContext]) -> list[CheckResult]:
    """Driver, CUDA driver and per-model VBIOS versions agree across the selection (majority wins)."""
    name = "driver_consistency"
    with_driver = [ctx for ctx in members if ctx.facts.nvml.driver_version is not None]
    drift = (_node_field(with_driver, "driver", "DRIVER_DRIFT", lambda c: c.facts.nvml.driver_version)
             + _node_field(with_driver, "CUDA driver", "CUDA_DRIFT", lambda c: c.facts.nvml.cuda_driver_version)
             + _vbios(with_driver))
    by_node: dict[str, list[CheckResult]] = {}
    for result in drift:
        by_node.setdefault(result.node, []).append(result)
    results: list[CheckResult] = []
    for ctx in members:
        nvml = ctx.facts.nvml
        if ctx.node.name in by_node:
            results.extend(by_node[ctx.node.name])
        elif nvml.driver_version is None:
            results.append(no_gpus_result(ctx, name) if nvml.status != "ok"
                           else ctx.result(name, Level.UNKNOWN, "driver version not reported", code="NO_DATA"))
        elif len(with_driver) < 2:
            results.append(ctx.result(name, Level.OK, f"driver {nvml.driver_version}: no other node to compare with",
                                      code="OK"))
        else:
            results.append(ctx.result(name, Level.OK, f"driver {nvml.driver_version}, CUDA "
                                                      f"{nvml.cuda_driver_version or '?'} and VBIOS match the "
                                                      f"majority of {len(with_driver)} nodes", code="OK"))
    return results
