"""Flap control and how results add up: a finding counts once it has held for its check's `confirm_runs`
consecutive runs (counted in the state database); the exit level is the worst confirmed level."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jueying_cli.checks.config import CheckConfig
from jueying_cli.checks.model import CheckResult, severity, worst
from jueying_cli.checks.run import run_checks
from jueying_cli.facts.collected import NodeFacts
from jueying_cli.inventory.model import Inventory
from jueying_cli.store import FindingKey, SeenFinding
from jueying_cli.vocab import Action, Level

if TYPE_CHECKING:
    from jueying_cli.store import Store

REACHABILITY = "reachability"  # the pseudo-check of a node that gave no facts: never waits for confirmation


@dataclass(frozen=True)
class Finding:
    """A check result with its flap-control standing."""

    result: CheckResult
    consecutive: int  # runs in a row it has held (1 for OK results)
    confirm_runs: int  # runs it must hold before it is reported

    @property
    def confirmed(self) -> bool:
        return self.consecutive >= self.confirm_runs

    @property
    def counted_level(self) -> Level:
        """Its level once confirmed; OK while pending (a pending result never changes an exit code)."""
        return self.result.level if self.confirmed else Level.OK


@dataclass(frozen=True)
class HealthReport:
    findings: list[Finding]
    exit_level: Level  # the worst confirmed level: `jueying check`'s Nagios exit code


def assess(results: Sequence[NodeFacts], config: CheckConfig, inventory: Inventory, store: Store, *,
           unreachable: Level, now: float | None = None) -> HealthReport:
    """Run the checks on the nodes that answered, give each node that did not a `reachability` result at
    `unreachable`, and count in `store` how long each problem has held."""
    now = time.time() if now is None else now
    answered = [(r.node, r.facts) for r in results if r.facts is not None]
    check_results = list(run_checks(answered, config, inventory, now=now))
    check_results += [CheckResult(node=r.name, check=REACHABILITY, level=unreachable,
                                  message=f"{r.outcome.status}: {r.outcome.error or 'no facts'}",
                                  code=r.outcome.status.upper()) for r in results if r.facts is None]
    problems = [c for c in check_results if c.level != Level.OK]
    counts = store.flap.track_findings([r.name for r in results],
                                       [SeenFinding(_key(c), int(c.level)) for c in problems], now)
    nodes = {r.name: r.node for r in results}
    findings = []
    for c in check_results:
        if c.level == Level.OK:
            findings.append(Finding(c, 1, 1))
            continue
        confirm = 1 if c.check == REACHABILITY else config.confirm_runs(c.check, nodes[c.node], inventory)
        findings.append(Finding(c, counts.get(_key(c), 1), confirm))
    return HealthReport(findings, worst(f.result.level for f in findings if f.confirmed))


def read_findings(results: Sequence[NodeFacts], config: CheckConfig, inventory: Inventory, store: Store | None, *,
                  now: float) -> list[Finding]:
    """The checks on the nodes that answered, each non-OK result counted as the last `jueying check` counted
    it, without writing the flap state (`status`, `capacity`): a result whose check needs one run is
    confirmed now; one that needs N runs is confirmed when the state database shows it held at this level
    for N runs already (the last check confirmed it, and it is still seen), else it is pending with the
    runs stored (at least 1: it is seen now). Reading never confirms a problem on the reader's own behalf,
    and never advances or resets a count. Without a store only one-run checks can be confirmed.
    Nodes that gave no facts get no result (their rows say so)."""
    answered = [(r.node, r.facts) for r in results if r.facts is not None]
    nodes = {r.name: r.node for r in results}
    stored: dict[str, dict[FindingKey, tuple[int, int]]] = {}
    findings = []
    for c in run_checks(answered, config, inventory, now=now):
        if c.level == Level.OK:
            findings.append(Finding(c, 1, 1))
            continue
        needed = config.confirm_runs(c.check, nodes[c.node], inventory)
        runs = 1
        if needed > 1 and store is not None:
            if c.node not in stored:
                stored[c.node] = {f.key: (f.level, f.consecutive) for f in store.flap.findings(c.node)}
            level, held = stored[c.node].get(_key(c), (-1, 0))
            runs = max(1, held) if level == int(c.level) else 1
        findings.append(Finding(c, runs, needed))
    return findings


def _key(c: CheckResult) -> FindingKey:
    return FindingKey(c.node, c.check, c.gpu, c.code)


def node_levels(findings: Iterable[Finding]) -> dict[str, Level]:
    """Each node's worst counted level (OK for a node whose problems are all pending)."""
    levels: dict[str, list[Level]] = {}
    for f in findings:
        levels.setdefault(f.result.node, []).append(f.counted_level)
    return {node: worst(values) for node, values in levels.items()}


def check_levels(findings: Iterable[Finding]) -> dict[tuple[str, str], Level]:
    """Each (node, check)'s worst counted level."""
    levels: dict[tuple[str, str], list[Level]] = {}
    for f in findings:
        levels.setdefault((f.result.node, f.result.check), []).append(f.counted_level)
    return {key: worst(values) for key, values in levels.items()}


def problems(findings: Iterable[Finding]) -> tuple[list[Finding], list[Finding]]:
    """(confirmed, pending) findings that are not OK."""
    found = [f for f in findings if f.result.level != Level.OK]
    return [f for f in found if f.confirmed], [f for f in found if not f.confirmed]


def ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Confirmed first, then by severity (CRITICAL first), node, check and GPU."""
    return sorted(findings, key=lambda f: (not f.confirmed, -severity(f.result.level), f.result.node,
                                           f.result.check, -1 if f.result.gpu is None else f.result.gpu))


def causes(findings: Iterable[Finding], actions: Collection[Action]) -> dict[str, CheckResult]:
    """The first confirmed CRITICAL result per node whose recommended action is one of `actions`."""
    found: dict[str, CheckResult] = {}
    for f in findings:
        r = f.result
        if f.confirmed and r.level == Level.CRITICAL and r.action in actions:
            found.setdefault(r.node, r)
    return found
