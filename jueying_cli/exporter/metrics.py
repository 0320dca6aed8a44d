"""The one home of prometheus_client: families (render/prometheus.py) to the text exposition format, the
HTTP /metrics server of `jueying exporter`, and the node_exporter textfile written atomically.

prometheus_client escapes label values (a GPU name or drain reason from a node cannot break a line) and
serves /metrics on a threading HTTP server; the server only reads the latest snapshot, never collects.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from jueying_cli.render.prometheus import Family


def _to_metrics(families: Sequence[Family]) -> Iterator[Metric]:
    for family in families:
        if not family.samples:
            continue
        keys = list(family.samples[0][0])
        kind = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
        metric = kind(family.name, family.help, labels=keys)
        for labels, value in family.samples:
            metric.add_metric([labels.get(k, "") for k in keys], value)
        yield metric


class _Snapshot:
    """A prometheus_client collector that yields whatever `get()` returns now (a list swapped whole by the
    collection loop, so a scrape never sees half a collection)."""

    def __init__(self, get: Callable[[], Sequence[Family]]) -> None:
        self._get = get

    def collect(self) -> Iterator[Metric]:
        yield from _to_metrics(self._get())


def registry_for(get: Callable[[], Sequence[Family]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(get))  # a duck-typed Collector
    return registry


def exposition(families: Sequence[Family]) -> str:
    """The text exposition format (version 0.0.4) of these families."""
    return str(generate_latest(registry_for(lambda: families)).decode("utf-8"))


class MetricsServer:
    """/metrics on ADDR:PORT (IPv4 or IPv6) from `get()`; stop() shuts it down and frees the port."""

    def __init__(self, address: str, port: int, get: Callable[[], Sequence[Family]]) -> None:
        self._server: Any
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=address, registry=registry_for(get))

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def write_atomically(path: Path, text: str) -> None:
    """Write text to path via a temporary file in the same directory and rename (mode 0644): node_exporter
    reads every *.prom file on each scrape, and a rename means a scrape never sees half a file."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
