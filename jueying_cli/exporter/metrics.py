"""The one home of prometheus_client: families (render/prometheus.py) to the text exposition format, the
HTTP /metrics server of `jueying exporter`, and the node_exporter textfile written atomically.

prometheus_client renders the text format and escapes label values (a GPU name or drain reason from a node
cannot break a line); the server only sends the bytes rendered after the latest collection, never collects.
"""

from __future__ import annotations

import gzip
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from jueying_cli.render.prometheus import Family

MAX_CONNECTIONS = 64
REQUEST_TIMEOUT_S = 10.0


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
    """/metrics on ADDR:PORT (IPv4 or IPv6). The exposition is rendered once per collection by `publish()`
    (on the collection loop, plain and gzip-compressed) and a scrape only sends those bytes: its cost stays
    flat as nodes grow. stop() shuts the server down and frees the port. Hand-written over http.server
    (prometheus_client's server renders on every scrape, which is what this avoids)."""

    def __init__(self, address: str, port: int) -> None:
        self._body: tuple[bytes, bytes] = (b"", gzip.compress(b""))
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT_S  # a client that stalls mid-request is dropped, not waited for

            def do_GET(self) -> None:
                if urlsplit(self.path).path not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                plain, packed = outer._body
                use_gzip = "gzip" in self.headers.get("Accept-Encoding", "")
                body = packed if use_gzip else plain
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                if use_gzip:
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # a scrape every few seconds is not news

        server_class = _BoundedV6Server if ":" in address else _BoundedServer
        self._server = server_class((address, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="jueying-exporter-http",
                                        daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def publish(self, families: Sequence[Family]) -> None:
        """Render these families once; every scrape until the next publish sends these bytes."""
        plain = exposition(families).encode("utf-8")
        self._body = (plain, gzip.compress(plain, compresslevel=1))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _BoundedServer(ThreadingHTTPServer):
    """At most MAX_CONNECTIONS requests served at once; more are closed at once rather than each given a
    thread (a flood of idle connections must not grow the exporter without bound)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _BoundedV6Server(_BoundedServer):
    address_family = socket.AF_INET6


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
