"""The status table's health columns from the check levels in Prometheus (checks.exported)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from jueying_cli.checks.exported import check_findings
from jueying_cli.inventory.model import Node
from jueying_cli.render.health import health_by_node
from jueying_cli.status.summary import HealthFinding
from jueying_cli.vocab import Level


def health_by_node_from(url: str, nodes: Sequence[Node], *, confirm_runs: Callable[[str, Node], int],
                        timeout_s: float = 30.0) -> dict[str, list[HealthFinding]]:
    """Each node's non-OK check results as Prometheus holds them, for the status table's health columns
    (reachability is the row's own state there). The message says what Prometheus can: the level and where."""
    findings, _ = check_findings(url, nodes, unreachable=Level.UNKNOWN, confirm_runs=confirm_runs,
                                 timeout_s=timeout_s)
    health = health_by_node(findings)
    return {node: [HealthFinding(f.check, f.level, f.gpu, _short(f.level, f.gpu), f.confirmed, f.runs,
                                 f.confirm_runs) for f in found] for node, found in health.items()}


def _short(level: Level, gpu: int | None) -> str:
    where = "the node" if gpu is None else f"GPU {gpu}"
    return f"{level.name} on {where} (from Prometheus, which keeps no message: `jueying check` says more)"
