"""Run the enabled checks over answered nodes: node checks per node, then fleet checks across them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from jueying_cli.checks.config import CheckConfig
from jueying_cli.checks.model import CheckResult, CheckSpec, NodeContext
from jueying_cli.checks.registry import CHECKS
from jueying_cli.facts.model import Facts
from jueying_cli.inventory.model import Inventory, Node
from jueying_cli.vocab import Level


def _apply_level(results: list[CheckResult], params: Mapping[str, Any]) -> list[CheckResult]:
    """A check's `level` parameter sets the level of its WARNING/CRITICAL findings (never OK/UNKNOWN)."""
    wanted = params.get("level")
    if wanted is None:
        return results
    level = Level.CRITICAL if wanted == "critical" else Level.WARNING
    return [replace(r, level=level) if r.level in (Level.WARNING, Level.CRITICAL) else r for r in results]


def _failed(spec: CheckSpec, nodes: Sequence[NodeContext], exc: Exception) -> list[CheckResult]:
    """UNKNOWN for each node when a check itself fails: one bug must not hide the other checks' results."""
    return [ctx.result(spec.name, Level.UNKNOWN, f"check failed: {type(exc).__name__}: {exc}", code="CHECK_ERROR")
            for ctx in nodes]


def _run_node_check(spec: CheckSpec, ctx: NodeContext) -> list[CheckResult]:
    try:
        return _apply_level(spec.function(ctx), ctx.params)
    except Exception as exc:  # noqa: BLE001  # odd facts must never abort the run (see _failed)
        return _failed(spec, [ctx], exc)


def _run_fleet_check(spec: CheckSpec, members: Sequence[NodeContext]) -> list[CheckResult]:
    try:
        results = spec.function(members)
    except Exception as exc:  # noqa: BLE001  # as above, for the whole fleet
        return _failed(spec, members, exc)
    params = {ctx.node.name: ctx.params for ctx in members}
    return [r2 for r in results for r2 in _apply_level([r], params.get(r.node, {}))]


def run_checks(nodes: Sequence[tuple[Node, Facts]], config: CheckConfig, inventory: Inventory, *,
               now: float) -> list[CheckResult]:
    """Every enabled check on every answered node (node checks in registry order), then the fleet checks.

    `now` (unix seconds) anchors time windows such as the XID window. Never raises for odd facts: a
    check that fails reports UNKNOWN for the nodes it ran on.
    """
    contexts = [(node, facts, config.params_for(node, inventory)) for node, facts in nodes]
    results: list[CheckResult] = []
    for node, facts, params in contexts:
        for name, spec in CHECKS.items():
            if spec.scope == "node" and params[name]["enabled"]:
                results.extend(_run_node_check(spec, NodeContext(node, facts, params[name], now)))
    for name, spec in CHECKS.items():
        if spec.scope != "fleet":
            continue
        members = [NodeContext(node, facts, params[name], now) for node, facts, params in contexts
                   if params[name]["enabled"]]
        if members:
            results.extend(_run_fleet_check(spec, members))
    return results
