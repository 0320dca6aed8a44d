"""What a controller-mode `jueying exporter` serves at N nodes, with and without `--no-gpu-metrics`: the body of one
GET /metrics (bytes, series) and the CPU of one collection step and of one serialisation, on this machine.

Method. The exporter's own collection step (exporter/loop.py Collection.collect_once: checks, flap control,
families) on recorded 8x H100 facts (tests/data/facts/h100-healthy.json) given to N node names, no SSH (the
refresh returns the recorded facts), published to its real HTTP server (exporter/metrics.py) and fetched once
over loopback. CPU is this process's time.process_time() around each step (median of --runs).

    python3 benchmarks/exporter_size.py [--sizes 64,256,1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jueying_cli.checks import builtin_config  # noqa: E402
from jueying_cli.exporter.loop import Collection  # noqa: E402
from jueying_cli.exporter.metrics import MetricsServer  # noqa: E402
from jueying_cli.facts.collected import NodeFacts  # noqa: E402
from jueying_cli.facts.model import Facts  # noqa: E402
from jueying_cli.inventory.model import Inventory, Node  # noqa: E402
from jueying_cli.outcome import Outcome  # noqa: E402
from jueying_cli.vocab import OutcomeStatus  # noqa: E402

FACTS = ROOT / "tests" / "data" / "facts" / "h100-healthy.json"


def measure(size: int, gpu_metrics: bool, runs: int) -> tuple[int, int, float, float]:
    """(bytes, series, collection CPU ms, GET CPU+wall ms) for one exporter of `size` nodes."""
    doc = json.loads(FACTS.read_text())
    doc["collected_at_unix"] = time.time()
    facts = Facts.from_document(doc)
    nodes = [Node(name=f"n{i:05d}", vars={"address": "192.0.2.1", "expected_gpus": 8}) for i in range(1, size + 1)]
    inventory = Inventory(nodes={x.name: x for x in nodes}, groups={}, source=None)
    results = [NodeFacts(x, Outcome(x.name, OutcomeStatus.OK, rc=0), facts) for x in nodes]
    server = MetricsServer("127.0.0.1", 0)
    try:
        collection = Collection(nodes, lambda _n, _d: (results, False), interval_s=15, deadline_s=15,
                                config=builtin_config(), inventory=inventory, publish=server.publish,
                                gpu_metrics=gpu_metrics)
        cpu, fetch = [], []
        body = b""
        for _ in range(runs):
            mark = time.process_time()
            collection.collect_once()
            cpu.append(time.process_time() - mark)
            mark = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=300) as answer:
                body = answer.read()
            fetch.append(time.perf_counter() - mark)
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        return len(body), series, statistics.median(cpu) * 1000, statistics.median(fetch) * 1000
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64,256,1024")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print("| nodes | GPU metrics | /metrics (MB) | series | collection CPU (ms) | GET /metrics (ms) |")
    print("|---|---|---|---|---|---|")
    for size in (int(x) for x in args.sizes.split(",")):
        for gpu_metrics in (True, False):
            size_b, series, cpu_ms, get_ms = measure(size, gpu_metrics, args.runs)
            print(f"| {size} | {'on' if gpu_metrics else 'off'} | {size_b / 1e6:.1f} | {series} | {cpu_ms:.0f} | "
                  f"{get_ms:.0f} |", flush=True)


if __name__ == "__main__":
    main()
