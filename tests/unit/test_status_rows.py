"""`status` rows with health, from recorded facts: which nodes fold, what a folded row names, how rows sort, and
what the summary counts (the CLI end to end is tests/integration/test_status_health.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from jueying_cli.facts.model import Facts
from jueying_cli.inventory.select import fold
from jueying_cli.status.summary import HealthFinding, NodeSummary, fold_healthy, sort_summaries, summarize, totals
from jueying_cli.vocab import Level, NodeStatus

HEALTHY: dict[str, Any] = json.loads((Path(__file__).resolve().parents[1] / "data/facts/h100-healthy.json").read_text())


def facts(temps: dict[int, int] | None = None, load1: float | None = None) -> Facts:
    doc = copy.deepcopy(HEALTHY)
    for g in doc["gpus"]:
        g["temperature_c"] = (temps or {}).get(g["index"], 40)
    if load1 is not None:
        doc["host"]["load"]["load1"] = load1
    return Facts.from_document(doc)


def finding(check: str, level: Level, gpu: int | None, *, confirmed: bool = True) -> HealthFinding:
    return HealthFinding(check, level, gpu, f"{check} says so", confirmed, 1, 1 if confirmed else 2)


def row(name: str, health: list[HealthFinding] | None = None, **kw: Any) -> NodeSummary:
    return summarize(name, facts(**kw), 8, [] if health is None else health)


def test_only_nodes_whose_every_check_is_ok_fold() -> None:
    rows = sort_summaries([
        row("n1"), row("n2", temps={3: 83}), row("n3"),
        row("n4", [finding("xid", Level.CRITICAL, 1)]),
        row("n5", [finding("temperature", Level.CRITICAL, 6, confirmed=False)]),  # pending: still its own row
        row("n6", [finding("clock", Level.UNKNOWN, None)]),  # UNKNOWN: ok, but not folded
        row("n7", [finding("persistence_mode", Level.WARNING, 0)]),
    ])
    assert [(r.node, r.state, r.health) for r in rows] == [
        ("n4", NodeStatus.DEGRADED, Level.CRITICAL), ("n7", NodeStatus.DEGRADED, Level.WARNING),
        ("n6", NodeStatus.OK, Level.UNKNOWN), ("n1", NodeStatus.OK, Level.OK), ("n2", NodeStatus.OK, Level.OK),
        ("n3", NodeStatus.OK, Level.OK), ("n5", NodeStatus.OK, Level.OK)]
    shown = fold_healthy(rows, fold)
    assert [r.node for r in shown] == ["n4", "n7", "n6", "n5", "n[1-3]"]
    folded = shown[-1]
    assert (folded.nodes, folded.health, folded.hottest_gpu_c, folded.hottest_gpu_index, folded.hottest_gpu_node) == (
        3, Level.OK, 83, 3, "n2")
    assert rows[0].reason == "xid: xid says so" and rows[0].health_check == "xid" and rows[0].health_gpu == 1


def test_a_folded_row_names_the_node_of_each_extreme() -> None:
    shown = fold_healthy(sort_summaries([row("a1", load1=3.0), row("a2", load1=9.5, temps={0: 77}), row("a3")]), fold)
    [folded] = shown
    assert (folded.load1, folded.load1_node, folded.hottest_gpu_node) == (9.5, "a2", "a2")
    assert folded.utilization_max_node is not None  # every member idle: the first by name


def test_gpus_with_confirmed_problems_are_not_healthy_in_the_totals() -> None:
    rows = [row("b1"), row("b2", [finding("ecc_uncorrected", Level.CRITICAL, 1),
                                  finding("remapped_rows", Level.WARNING, 5),
                                  finding("temperature", Level.CRITICAL, 6, confirmed=False)])]
    t = totals(rows)
    assert (t["gpus_healthy"], t["gpus_total"]) == (14, 16)
    assert t["nodes_by_health"] == {"ok": 1, "warning": 0, "critical": 1, "unknown": 0} and t["nodes_pending"] == 1
    assert rows[1].reason == "ecc_uncorrected: ecc_uncorrected says so (+1 more)"
    no_checks = summarize("c1", facts(), 8, None)  # --source prometheus: no checks ran
    assert no_checks.health is None and no_checks.state == NodeStatus.OK
