"""The check levels that jueying exporters (or `check --prometheus` textfiles) confirmed, read back from a
Prometheus server in one PromQL query as `jueying check` findings: for `check --source prometheus=URL` and
the health columns of `status` and `capacity` from there.

What Prometheus holds is already judged: the level of each check per node and GPU after the exporter's own
flap control (jueying_check_level), what is pending (jueying_check_pending) and the recommended action
(jueying_check_action). Nothing is counted again here and the state database is not touched. A node the
server has no fresh series for, and a node whose exporter kept its last values (stale), gets a `reachability`
result at the --unreachable level (UNKNOWN by default), so it is never OK. Prometheus keeps no message text:
each result's message says where it came from. A node exported twice (an exporter and a textfile) shows the
worse of the two levels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from jueying_cli.checks.flap import REACHABILITY, Finding
from jueying_cli.checks.model import CheckResult, worst
from jueying_cli.inventory.model import Node
from jueying_cli.transport.promql import query
from jueying_cli.vocab import Action, Level

QUERY = ('max by (__name__, node, check, gpu, level, action, state) '
         '({__name__=~"jueying_(check_level|check_pending|check_action|node_state)"} == 1) '
         'or max by (__name__, node) (jueying_node_stale)')
NO_DATA = "no fresh data in Prometheus (exporter down or not scraped)"
STALE = "stale in Prometheus: the exporter's last collection of this node did not answer in time"
FROM_PROMETHEUS = "as confirmed by the exporter (Prometheus keeps no message; run check on the node for one)"


@dataclass
class _Seen:
    state: str | None = None
    stale: bool = False
    levels: dict[tuple[str, str], list[Level]] = field(default_factory=dict)  # (check, gpu) -> confirmed levels
    pending: dict[tuple[str, str], list[Level]] = field(default_factory=dict)
    actions: dict[tuple[str, str], Action] = field(default_factory=dict)


def _level(name: str) -> Level | None:
    return Level[name] if name in Level.__members__ else None


def check_findings(url: str, nodes: Sequence[Node], *, unreachable: Level, confirm_runs: Callable[[str, Node], int],
                   timeout_s: float = 30.0) -> tuple[list[Finding], dict[str, str]]:
    """(findings as `jueying check` would report them, {node: why it has no fresh data}) for the selected
    nodes. A pending result is shown as held 1 of its check's confirm_runs (Prometheus keeps the level, not
    the count)."""
    results, _ = query(url, QUERY, timeout_s)
    seen: dict[str, _Seen] = {}
    for item in results:
        metric, value = item.get("metric"), item.get("value")
        if not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2:
            continue
        labels = {str(k): str(v) for k, v in metric.items()}
        entry = seen.setdefault(labels.get("node", ""), _Seen())
        name = labels.get("__name__", "")
        key = (labels.get("check", ""), labels.get("gpu", ""))
        level = _level(labels.get("level", ""))
        if name == "jueying_node_state":
            entry.state = labels.get("state")
        elif name == "jueying_node_stale":
            entry.stale = str(value[1]) == "1"
        elif name == "jueying_check_level" and level is not None and key[0]:
            entry.levels.setdefault(key, []).append(level)
        elif name == "jueying_check_pending" and level is not None and key[0]:
            entry.pending.setdefault(key, []).append(level)
        elif name == "jueying_check_action" and labels.get("action") in {str(a) for a in Action}:
            entry.actions[key] = Action(labels["action"])
    findings: list[Finding] = []
    missing: dict[str, str] = {}
    for node in nodes:
        found = seen.get(node.name)
        if found is None or found.state is None or not found.levels:
            missing[node.name] = NO_DATA
            findings.append(Finding(CheckResult(node.name, REACHABILITY, unreachable, NO_DATA, code="NO_DATA"), 1, 1))
            continue
        if found.stale:
            missing[node.name] = STALE
            findings.append(Finding(CheckResult(node.name, REACHABILITY, unreachable, STALE, code="STALE"), 1, 1))
        for (check, gpu), levels in sorted(found.levels.items()):
            index = int(gpu) if gpu.isdigit() else None
            held = worst(levels)
            if check == REACHABILITY and held == Level.OK:
                continue
            pending = found.pending.get((check, gpu))
            if pending:  # as `check` lists it: the pending result, not the OK it still counts as
                result = CheckResult(node.name, check, worst(pending), FROM_PROMETHEUS, gpu=index)
                findings.append(Finding(result, 1, max(2, confirm_runs(check, node))))
            if held != Level.OK or not pending:
                action = found.actions.get((check, gpu), Action.NONE) if held != Level.OK else Action.NONE
                findings.append(Finding(CheckResult(node.name, check, held, FROM_PROMETHEUS, gpu=index,
                                                    action=action), 1, 1))
    return findings, missing

