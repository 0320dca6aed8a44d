"""Which spares can replace a failed node: same spare pool, role spare, same GPU model and count, not
drained or down, reachable, and passing the health checks (no CRITICAL result)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from jueying_cli.actions.context import ActionContext
from jueying_cli.checks import CheckConfig, run_checks
from jueying_cli.collect.oneshot import collect_nodes
from jueying_cli.errors import BadInputError
from jueying_cli.inventory.model import Inventory, Node
from jueying_cli.scheduler import schedulers_for
from jueying_cli.vocab import Level, SchedulerState


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


def judge_spares(ctx: ActionContext, candidates: Sequence[Node], failed: Node, config: CheckConfig, *,
                 connect_timeout_s: float) -> dict[str, str | None]:
    """None for a healthy spare, else why not: drained, down, unreachable, wrong GPUs, or a CRITICAL check."""
    verdicts: dict[str, str | None] = {}
    for scheduler, names in schedulers_for(ctx.inventory, candidates, ctx.transport, ctx.store).values():
        for name, state in scheduler.states(names).items():
            if state.drain or state.state == SchedulerState.DOWN:
                verdicts[name] = f"{state.state}: {state.reason or ''}".strip()
    live = [c for c in candidates if c.name not in verdicts]
    if not live:
        return verdicts
    results, _ = collect_nodes(ctx.transport, live, fanout=64, deadline_s=connect_timeout_s + 40)
    answered = [(r.node, r.facts) for r in results if r.facts is not None]
    findings = run_checks(answered, config, ctx.inventory, now=time.time())
    model = failed.vars.get("gpu_model")
    for r in results:
        if r.facts is None:
            verdicts[r.name] = f"{r.outcome.status}: {r.outcome.error}"
            continue
        critical = [f for f in findings if f.node == r.name and f.level == Level.CRITICAL]
        models = {g.name or "?" for g in r.facts.gpus if not g.lost}
        if critical:
            verdicts[r.name] = f"{critical[0].check} CRITICAL: {critical[0].message}"
        elif model and models and models != {model}:
            verdicts[r.name] = f"GPUs are {', '.join(sorted(models))}, not {model}"
        else:
            verdicts[r.name] = None
    return verdicts


def healthy_spare(candidates: Sequence[Node], verdicts: Mapping[str, str | None]) -> Node | None:
    """The first candidate whose health verdict is None (healthy)."""
    return next((n for n in candidates if verdicts.get(n.name) is None), None)
