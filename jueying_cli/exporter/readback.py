"""`jueying status --source prometheus=URL`: the status rows read back from a Prometheus server that scrapes
jueying exporters (or node_exporter reading `check --prometheus`'s textfile), in one PromQL query (HTTP API
/api/v1/query), instead of one SSH round trip per node; their health columns from the check levels
(check_readback, a second query).

The query asks for what a status row needs and no more: of the enum families only the series at 1, and the
GPU columns as the exporter already summarised them per node (jueying_node_gpu_*: about 25 series per node,
not six per GPU with their UUID and model labels, which Prometheus took seconds to select and serialise at
1,000 nodes). A node the server has no fresh series for (its exporter stopped: Prometheus marks the
series stale at once) is shown as `no_data`, never healthy. A node whose exporter kept its last values
(`jueying_node_stale 1`) is shown stale, as `status --watch` does. Drain state is the scheduler's, not the
node's: it is read from the backend as `jueying status` does, and taken from Prometheus only for nodes the
backend was not read for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from jueying_cli.inventory.model import Node
from jueying_cli.scheduler.base import NodeState
from jueying_cli.status.summary import HealthFinding, ModelCount, NodeSummary, unanswered, with_health, with_scheduler
from jueying_cli.status.view import SchedulerView
from jueying_cli.transport.promql import query, reading
from jueying_cli.vocab import ANSWERED, Backend, NodeStatus, OutcomeStatus, SchedulerState

# Enum families: only the series whose value is 1 (the current state) travel; the 0s are most of the series.
ENUM_FAMILIES = ("state", "state_reason", "scheduler_state", "drain_info")
VALUE_FAMILIES = ("gpus", "gpus_expected", "gpus_lost", "facts_timestamp_seconds", "load1", "cpu_threads",
                  "memory_used_bytes", "memory_total_bytes", "stale", "gpu_utilization_avg_percent",
                  "gpu_utilization_max_percent", "gpu_memory_used_bytes", "gpu_memory_total_bytes",
                  "gpu_temperature_max_celsius", "gpu_power_watts", "gpu_power_limit_watts", "gpu_models")
# One query. `max by` folds a node exported twice (an exporter and a textfile) into one series per value.
QUERY = ('{__name__=~"jueying_node_(' + "|".join(ENUM_FAMILIES) + ')"} == 1 or max by (__name__, node, gpu, model) '
         '({__name__=~"jueying_node_(' + "|".join(VALUE_FAMILIES) + ')"})')


@dataclass
class _Node:
    values: dict[str, float] = field(default_factory=dict)
    state: str | None = None
    reason: str = ""
    scheduler_state: str | None = None
    drain: tuple[str, str] | None = None  # (backend, reason)
    hottest: tuple[float, int] | None = None  # (degrees C, GPU index)
    models: dict[str, int] = field(default_factory=dict)  # model name -> healthy GPUs


def status_rows(url: str, nodes: Sequence[Node], timeout_s: float = 30.0,
                scheduler: Mapping[str, SchedulerView] | None = None,
                health: Mapping[str, Sequence[HealthFinding]] | None = None) -> list[NodeSummary]:
    """One status row per selected node, from one query; nodes without series are `no_data`. `health`: each
    node's non-OK check results (check_readback.health_by_node_from), for the health columns (None: none).

    The node's health comes from Prometheus. What its scheduler says comes from `scheduler` (read now from
    the backend, as `jueying status` does) for the nodes it covers, else from the scheduler families in
    Prometheus (a controller-mode exporter's), else nothing."""
    results, _ = query(url, QUERY, timeout_s)
    found: dict[str, _Node] = {}
    for item in results:
        metric = item.get("metric")
        value = item.get("value")
        if not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2:
            continue
        number = reading(value[1])
        if number is None:
            continue
        _take(found, {str(k): str(v) for k, v in metric.items()}, number)
    rows = [_row(node, found.get(node.name)) for node in nodes]
    if health is not None:
        rows = with_exported_health(rows, health)
    return [_with_scheduler(row, found.get(node.name), (scheduler or {}).get(node.name))
            for row, node in zip(rows, nodes, strict=True)]


def _take(found: dict[str, _Node], labels: dict[str, str], value: float) -> None:
    node = found.setdefault(labels.get("node", ""), _Node())
    family = labels.get("__name__", "").removeprefix("jueying_node_")
    if family == "state":
        node.state = labels.get("state")
    elif family == "state_reason":
        node.reason = labels.get("reason", "")
    elif family == "scheduler_state":
        node.scheduler_state = labels.get("state")
    elif family == "drain_info":
        node.drain = (labels.get("backend", ""), labels.get("reason", ""))
    elif family == "gpu_temperature_max_celsius":
        gpu = labels.get("gpu", "")
        node.hottest = (value, int(gpu)) if gpu.isdigit() else None
    elif family == "gpu_models":
        node.models[labels.get("model", "")] = int(value)
    elif family in VALUE_FAMILIES:
        node.values[family] = value


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _row(node: Node, seen: _Node | None) -> NodeSummary:
    if seen is None or seen.state is None or seen.state not in {str(s) for s in NodeStatus}:
        row = unanswered(node.name, OutcomeStatus.UNREACHABLE, "", node.expected_gpus)
        return dataclasses.replace(row, state=NodeStatus.NO_DATA,
                                   reason="no fresh data in Prometheus (exporter down or not scraped)")
    v = seen.values
    hottest = seen.hottest
    expected = v.get("gpus_expected")
    return NodeSummary(
        node=node.name, state=NodeStatus(seen.state), reason=seen.reason,
        gpus_present=_int(v.get("gpus")), gpus_expected=_int(expected) if expected is not None else node.expected_gpus,
        gpus_lost=int(v.get("gpus_lost", 0)),
        gpu_models=tuple(ModelCount(m, seen.models[m]) for m in sorted(seen.models) if m),
        utilization_avg_pct=v.get("gpu_utilization_avg_percent"),
        utilization_max_pct=_int(v.get("gpu_utilization_max_percent")),
        gpu_memory_used_bytes=_int(v.get("gpu_memory_used_bytes")),
        gpu_memory_total_bytes=_int(v.get("gpu_memory_total_bytes")),
        hottest_gpu_c=int(hottest[0]) if hottest else None, hottest_gpu_index=hottest[1] if hottest else None,
        power_watts=v.get("gpu_power_watts"), power_limit_watts=v.get("gpu_power_limit_watts"),
        load1=v.get("load1"), cpu_threads=_int(v.get("cpu_threads")),
        host_memory_used_bytes=_int(v.get("memory_used_bytes")),
        host_memory_total_bytes=_int(v.get("memory_total_bytes")),
        collected_at_unix=v.get("facts_timestamp_seconds"), stale=v.get("stale") == 1.0,
    )


def _with_scheduler(row: NodeSummary, seen: _Node | None, view: SchedulerView | None) -> NodeSummary:
    """The scheduler's word on a row: read now (`view`), else as a controller-mode exporter last exported it."""
    if view is not None:
        return with_scheduler(row, view.backend, view.state)
    if seen is None or seen.scheduler_state not in {str(s) for s in SchedulerState}:
        return row
    backend = seen.drain[0] if seen.drain else ""
    state = SchedulerState(str(seen.scheduler_state))
    exported = NodeState(row.node, state, state in (SchedulerState.DRAINING, SchedulerState.DRAINED),
                         reason=seen.drain[1] if seen.drain else None)
    if backend in {str(b) for b in Backend}:
        return with_scheduler(row, Backend(backend), exported)
    return dataclasses.replace(row, scheduler_state=state, drain_reason=exported.reason)


def with_exported_health(rows: Sequence[NodeSummary], health: Mapping[str, Sequence[HealthFinding]],
                         ) -> list[NodeSummary]:
    """The rows of answering nodes with their health columns (summary.with_health) from the check levels in
    Prometheus. The exporter counts a node's healthy GPUs per model without those with a confirmed problem,
    so the GPUs with one are those present and not counted there."""
    out = []
    for row in rows:
        if row.state not in ANSWERED:
            out.append(row)
            continue
        counted = sum(m.gpus for m in row.gpu_models)
        flagged = max(0, (row.gpus_present or 0) - counted) if row.gpu_models else 0
        out.append(with_health(row, health.get(row.node, ()), gpus_with_problems=flagged))
    return out
