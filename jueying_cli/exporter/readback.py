"""`jueying status --source prometheus=URL`: the status rows read back from a Prometheus server that scrapes
jueying exporters, in one PromQL query (HTTP API /api/v1/query), instead of one SSH round trip per node.

The query selects the few families a status row needs by name; a node the server has no fresh series for
(its exporter stopped: Prometheus marks the series stale at once) is shown as `no_data`, never healthy. A
node whose exporter kept its last values (`jueying_node_stale 1`) is shown stale, as `status --watch` does.
Hand-written over urllib (stdlib): one GET and a JSON body, bounded in size.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field

from jueying_cli.errors import JueyingError
from jueying_cli.inventory.model import Node
from jueying_cli.render.prometheus import MIB
from jueying_cli.status.summary import ModelCount, NodeSummary, unanswered
from jueying_cli.vocab import Backend, NodeStatus, OutcomeStatus, SchedulerState

MAX_BODY = 512 * 1024 * 1024  # bytes of one answer; more is not a status, it is a hostile server
NODE_FAMILIES = ("state", "state_reason", "gpus", "gpus_expected", "gpus_lost", "facts_timestamp_seconds", "load1",
                 "cpu_threads", "memory_used_bytes", "memory_total_bytes", "stale", "scheduler_state", "drain_info")
GPU_FAMILIES = ("GPU_UTIL", "FB_USED", "FB_TOTAL", "GPU_TEMP", "POWER_USAGE", "POWER_MGMT_LIMIT")
QUERY = ('{__name__=~"jueying_node_(' + "|".join(NODE_FAMILIES) + ')|DCGM_FI_DEV_(' + "|".join(GPU_FAMILIES)
         + ')"}')


class PrometheusError(JueyingError):
    """The server could not be asked, or its answer is not a query result."""


@dataclass
class _Node:
    values: dict[str, float] = field(default_factory=dict)
    state: str | None = None
    reason: str = ""
    scheduler_state: str | None = None
    drain: tuple[str, str] | None = None  # (backend, reason)
    gpus: dict[str, dict[str, float]] = field(default_factory=dict)  # gpu index -> DCGM field -> value
    models: dict[str, str] = field(default_factory=dict)  # gpu index -> modelName


def query(url: str, promql: str, timeout_s: float) -> tuple[list[dict[str, object]], float]:
    """(result vector, evaluation time) of an instant query; PrometheusError otherwise."""
    endpoint = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    if not endpoint.startswith(("http://", "https://")):
        raise PrometheusError(f"not an http(s) URL: {url}")
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout_s) as answer:  # noqa: S310 - scheme checked above
            body = answer.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        raise PrometheusError(f"Prometheus at {url} answered HTTP {exc.code}: {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PrometheusError(f"cannot query Prometheus at {url}: {reason}") from None
    if len(body) > MAX_BODY:
        raise PrometheusError(f"Prometheus at {url} sent more than {MAX_BODY} bytes")
    try:
        doc = json.loads(body)
        data = doc["data"]
        if doc.get("status") != "success" or data.get("resultType") != "vector":
            raise ValueError(doc.get("error") or "not a vector")
        results = data["result"]
        stamp = float(results[0]["value"][0]) if results else 0.0
        return list(results), stamp
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise PrometheusError(f"Prometheus at {url} sent no query result ({exc})") from None


def status_rows(url: str, nodes: Sequence[Node], timeout_s: float = 30.0) -> list[NodeSummary]:
    """One status row per selected node, from one query; nodes without series are `no_data`."""
    results, _ = query(url, QUERY, timeout_s)
    found: dict[str, _Node] = {}
    for item in results:
        metric = item.get("metric")
        value = item.get("value")
        if not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2:
            continue
        try:
            number = float(value[1])
        except (TypeError, ValueError):
            continue
        _take(found, {str(k): str(v) for k, v in metric.items()}, number)
    return [_row(node, found.get(node.name)) for node in nodes]


def _take(found: dict[str, _Node], labels: dict[str, str], value: float) -> None:
    name = labels.get("__name__", "")
    if name.startswith("DCGM_FI_DEV_"):
        node = found.setdefault(labels.get("Hostname", ""), _Node())
        gpu = labels.get("gpu", "")
        node.gpus.setdefault(gpu, {})[name.removeprefix("DCGM_FI_DEV_")] = value
        node.models[gpu] = labels.get("modelName", "")
        return
    node = found.setdefault(labels.get("node", ""), _Node())
    family = name.removeprefix("jueying_node_")
    if family == "state":
        if value == 1.0:
            node.state = labels.get("state")
    elif family == "state_reason":
        node.reason = labels.get("reason", "")
    elif family == "scheduler_state":
        if value == 1.0:
            node.scheduler_state = labels.get("state")
    elif family == "drain_info":
        node.drain = (labels.get("backend", ""), labels.get("reason", ""))
    else:
        node.values[family] = value


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _row(node: Node, seen: _Node | None) -> NodeSummary:
    if seen is None or seen.state is None or seen.state not in {str(s) for s in NodeStatus}:
        row = unanswered(node.name, OutcomeStatus.UNREACHABLE, "", node.expected_gpus)
        return dataclasses.replace(row, state=NodeStatus.NO_DATA,
                                   reason="no fresh data in Prometheus (exporter down or not scraped)")
    v = seen.values
    gpus = seen.gpus
    utils = [g["GPU_UTIL"] for g in gpus.values() if "GPU_UTIL" in g]
    temps = [(g["GPU_TEMP"], int(i)) for i, g in gpus.items() if "GPU_TEMP" in g and i.isdigit()]
    used = [g["FB_USED"] * MIB for g in gpus.values() if "FB_USED" in g]
    total = [g["FB_TOTAL"] * MIB for g in gpus.values() if "FB_TOTAL" in g]
    power = [g["POWER_USAGE"] for g in gpus.values() if "POWER_USAGE" in g]
    limits = [g["POWER_MGMT_LIMIT"] for g in gpus.values() if "POWER_MGMT_LIMIT" in g]
    models = sorted({m for m in seen.models.values() if m})
    hottest = max(temps) if temps else None
    expected = v.get("gpus_expected")
    scheduler = None
    if seen.drain is not None and seen.drain[0] in {str(b) for b in Backend}:
        scheduler = Backend(seen.drain[0])
    return NodeSummary(
        node=node.name, state=NodeStatus(seen.state), reason=seen.reason,
        gpus_present=_int(v.get("gpus")), gpus_expected=_int(expected) if expected is not None else node.expected_gpus,
        gpus_lost=int(v.get("gpus_lost", 0)),
        gpu_models=tuple(ModelCount(m, sum(1 for x in seen.models.values() if x == m)) for m in models),
        utilization_avg_pct=sum(utils) / len(utils) if utils else None,
        utilization_max_pct=int(max(utils)) if utils else None,
        gpu_memory_used_bytes=int(sum(used)) if used else None,
        gpu_memory_total_bytes=int(sum(total)) if total else None,
        hottest_gpu_c=int(hottest[0]) if hottest else None, hottest_gpu_index=hottest[1] if hottest else None,
        power_watts=sum(power) if power else None, power_limit_watts=sum(limits) if limits else None,
        load1=v.get("load1"), cpu_threads=_int(v.get("cpu_threads")),
        host_memory_used_bytes=_int(v.get("memory_used_bytes")),
        host_memory_total_bytes=_int(v.get("memory_total_bytes")),
        collected_at_unix=v.get("facts_timestamp_seconds"), stale=v.get("stale") == 1.0,
        scheduler=scheduler,
        scheduler_state=SchedulerState(seen.scheduler_state)
        if seen.scheduler_state in {str(s) for s in SchedulerState} else None,
        drain_reason=seen.drain[1] if seen.drain else None,
    )
