"""Real Prometheus, promtool and jueying exporters for the tests of jueying in Prometheus (test_prometheus.py,
test_prometheus_nodes.py): every process started here has a stop() the tests call in `finally`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    """Poll until condition() is truthy (no sleep races: the condition is the event)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"still not {what} after {timeout_s} s"
        time.sleep(0.1)


def http_get(url: str, timeout_s: float = 10.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            return str(answer.read().decode("utf-8"))
    except OSError:
        return None


class Exporter:
    """`jueying exporter --listen 127.0.0.1:0` as a process; its port from the line it prints on stderr."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
        full.update(env, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "jueying_cli", "exporter", "--listen", "127.0.0.1:0",
                                      *args], env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=REPO)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        assert "serving http://127.0.0.1:" in line, line + self.proc.stderr.read()
        self.port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        self.target = f"127.0.0.1:{self.port}"

    def metrics(self) -> str:
        text = http_get(f"http://{self.target}/metrics")
        assert text is not None
        return text

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
        return self.proc.returncode


class Prometheus:
    """A real Prometheus server on loopback scraping `targets` every second."""

    def __init__(self, tmp: Path, jobs: dict[str, list[str]]) -> None:
        self.port = free_port()
        tmp.mkdir(parents=True, exist_ok=True)
        config = tmp / "prometheus.yml"
        scrape = [{"job_name": job, "scrape_interval": "1s", "scrape_timeout": "1s",
                   "static_configs": [{"targets": targets}]} for job, targets in jobs.items()]
        config.write_text(json.dumps({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                      "scrape_configs": scrape}))
        self.log = (tmp / "prometheus.log").open("w")
        self.proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: http_get(self.url + "/-/ready") is not None, "Prometheus ready")

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = http_get(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert body is not None
        doc = json.loads(body)
        assert doc["status"] == "success", doc
        return list(doc["data"]["result"])

    def values(self, promql: str, key: str) -> dict[str, float]:
        return {r["metric"].get(key, ""): float(r["value"][1]) for r in self.query(promql)}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@contextlib.contextmanager
def prometheus(tmp: Path, jobs: dict[str, list[str]]) -> Iterator[Prometheus]:
    server = Prometheus(tmp, jobs)
    try:
        yield server
    finally:
        server.stop()


def promtool_findings(text: str) -> list[str]:
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60,
                          check=False)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


CAMEL_CASE = "label names should be written in 'snake_case' not 'camelCase'"
COUNTER_IN_NAME = "DCGM_FI_DEV_PCIE_REPLAY_COUNTER metric name should not include type 'counter'"


def expected_lint(text: str) -> set[str]:
    """Exactly the findings dcgm-exporter's own names bring (kept for its dashboards, README "jueying in
    Prometheus"): camelCase labels (modelName, UUID, Hostname) on every DCGM_FI_DEV_* family present, and
    COUNTER in DCGM_FI_DEV_PCIE_REPLAY_COUNTER's name. Nothing about a jueying_* family."""
    dcgm = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE DCGM_FI_DEV_")}
    found = {f"{name} {CAMEL_CASE}" for name in dcgm}
    return found | ({COUNTER_IN_NAME} if "DCGM_FI_DEV_PCIE_REPLAY_COUNTER" in dcgm else set())


def assert_lint_is_dcgm_only(text: str) -> None:
    """promtool check metrics finds exactly expected_lint(text): every jueying_* family is clean."""
    findings = set(promtool_findings(text))
    assert findings == expected_lint(text), sorted(findings ^ expected_lint(text))[:10]


def builtin_inventory(nodes: Iterable[Any], path: Path) -> Path:
    """An inventory of these simulated nodes on the builtin backend (max_unavailable 2, 8 GPUs expected)."""
    lines = ["vars:", "  ssh_user: root", "  scheduler: builtin", "  max_unavailable: 2", "  expected_gpus: 8",
             "nodes:"]
    lines += [f"  {n.name}: {{address: {n.address}}}" for n in nodes]
    path.write_text("\n".join(lines) + "\n")
    return path


def rows_by_node(stdout: str) -> dict[str, dict[str, Any]]:
    """`status --json`'s node rows, by node name."""
    return {r["node"]: r for r in json.loads(stdout)["data"]["nodes"]}
