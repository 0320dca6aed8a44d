"""`jueying capacity --source prometheus=URL`: the node readings capacity needs, from a Prometheus server that
scrapes jueying exporters, instead of one SSH round trip per node.

Two or three instant queries: the GPUs that answered (dcgm-exporter's families, matched to the inventory by
`Hostname`, which jueying's exporter sets to the node's inventory name) with their power draw and enforced
limit, each node's own state, lost GPUs and staleness (jueying_node_*); the confirmed check levels
(checks.exported); with --since, each GPU's energy over the window (`increase()` of the total-energy counter,
which Prometheus corrects for counter resets). A node without fresh series, whose exporter kept its last
values (stale), or that the exporter could not collect, gives no reading: it is counted unreachable (or down,
when its scheduler says so), never healthy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from jueying_cli.audit.capacity import GpuReading, NodeReading, Problem
from jueying_cli.checks.exported import NO_DATA, STALE, check_findings
from jueying_cli.checks.flap import REACHABILITY
from jueying_cli.inventory.model import Node
from jueying_cli.transport.promql import query, reading
from jueying_cli.vocab import Level, NodeStatus

GPU_FAMILIES = ("FB_TOTAL", "POWER_USAGE", "POWER_MGMT_LIMIT")
QUERY = ('max by (__name__, Hostname, gpu, modelName) ({__name__=~"DCGM_FI_DEV_(' + "|".join(GPU_FAMILIES) + ')"})'
         ' or max by (__name__, node) ({__name__=~"jueying_node_(gpus_lost|stale)"})'
         ' or max by (__name__, node, state) (jueying_node_state == 1)')
ENERGY_QUERY = "sum by (Hostname) (increase(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[{window}s]))"
# A node's own states in which it answered with facts (drained and draining are the scheduler's word).
_ANSWERED = frozenset({str(NodeStatus.OK), str(NodeStatus.DEGRADED), str(NodeStatus.NO_DRIVER)})
MJ_PER_KWH = 3.6e9


@dataclass
class _Gpu:
    name: str | None = None
    power: float | None = None
    limit: float | None = None


@dataclass
class _Seen:
    state: str | None = None
    stale: bool = False
    lost: int = 0
    gpus: dict[int, _Gpu] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportedCapacity:
    readings: list[NodeReading]
    problems: dict[str, list[Problem]]
    energy_kwh: dict[str, float | None] | None  # None: --since not asked


def read_capacity(url: str, nodes: Sequence[Node], *, confirm_runs: Callable[[str, Node], int],
                  since_s: float | None, timeout_s: float = 30.0) -> ExportedCapacity:
    """The readings, confirmed problems and (with `since_s`, seconds) energy of the selected nodes."""
    seen: dict[str, _Seen] = {}
    results, _ = query(url, QUERY, timeout_s)
    for item in results:
        labels, value = _sample(item)
        if labels is not None and value is not None:
            _take(seen, labels, value)
    readings = [_reading(node, seen.get(node.name)) for node in nodes]
    findings, _ = check_findings(url, nodes, unreachable=Level.UNKNOWN, confirm_runs=confirm_runs,
                                 timeout_s=timeout_s)
    problems: dict[str, list[Problem]] = {}
    for f in findings:
        c = f.result
        if f.confirmed and c.check != REACHABILITY and c.level in (Level.WARNING, Level.CRITICAL):
            problems.setdefault(c.node, []).append(Problem(c.level, c.check, c.gpu))
    energy = None if since_s is None else _energy(url, nodes, since_s, timeout_s)
    return ExportedCapacity(readings, problems, energy)


def _sample(item: Mapping[str, object]) -> tuple[dict[str, str] | None, float | None]:
    metric, value = item.get("metric"), item.get("value")
    if not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2:
        return None, None
    number = reading(value[1])
    if number is None:
        return None, None
    return {str(k): str(v) for k, v in metric.items()}, number


def _take(seen: dict[str, _Seen], labels: dict[str, str], value: float) -> None:
    name = labels.get("__name__", "")
    if name.startswith("DCGM_FI_DEV_"):
        index = labels.get("gpu", "")
        if not index.isdigit():
            return
        gpu = seen.setdefault(labels.get("Hostname", ""), _Seen()).gpus.setdefault(int(index), _Gpu())
        gpu.name = labels.get("modelName") or gpu.name
        if name == "DCGM_FI_DEV_POWER_USAGE":
            gpu.power = value
        elif name == "DCGM_FI_DEV_POWER_MGMT_LIMIT":
            gpu.limit = value
        return
    node = seen.setdefault(labels.get("node", ""), _Seen())
    if name == "jueying_node_state":
        node.state = labels.get("state")
    elif name == "jueying_node_stale":
        node.stale = value == 1.0
    elif name == "jueying_node_gpus_lost":
        node.lost = int(value)


def _reading(node: Node, seen: _Seen | None) -> NodeReading:
    if seen is None or seen.state is None:
        return NodeReading(node, None, why=NO_DATA, status=str(NodeStatus.NO_DATA))
    if seen.stale:
        return NodeReading(node, None, why=STALE, status="stale")
    if seen.state not in _ANSWERED:
        return NodeReading(node, None, why=f"{seen.state} (the exporter's last collection)", status=seen.state)
    gpus = tuple(GpuReading(i, g.name, g.power, g.limit) for i, g in sorted(seen.gpus.items()))
    return NodeReading(node, gpus, seen.lost)


def _energy(url: str, nodes: Sequence[Node], since_s: float, timeout_s: float) -> dict[str, float | None]:
    """kWh per node over the last `since_s` seconds; None for a node Prometheus has no energy series for."""
    results, _ = query(url, ENERGY_QUERY.format(window=max(1, int(since_s))), timeout_s)
    by_host: dict[str, float] = {}
    for item in results:
        labels, value = _sample(item)
        if labels is not None and value is not None:
            by_host[labels.get("Hostname", "")] = value
    return {n.name: (by_host[n.name] / MJ_PER_KWH if n.name in by_host else None) for n in nodes}
