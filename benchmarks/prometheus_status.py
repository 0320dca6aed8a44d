"""`jueying status --source prometheus=URL` at 64, 256 and 1024 nodes, and the exporter's own costs.

Method. One recorded facts document (tests/data/facts/h100-healthy.json, 8x H100) is given to N node names.
The exporter's own collection step (exporter/loop.py Collection.collect_once: the checks, the status rows and
every metric family) runs on them in this process with the kept-probe refresh replaced by the recorded facts
(the refresh itself is measured by benchmarks/status.py, "warm"); CPU per node is its process time / N,
rendering the exposition once included. The
resulting snapshot is served by the exporter's own HTTP server (exporter/metrics.py MetricsServer), exactly
what a controller-mode exporter serves for N nodes, and a real Prometheus (Debian's, on loopback) scrapes it
every 5 s. Scrape: wall time of an uncompressed GET /metrics from this process (median of 5) and the body size. Then
`jueying status --json --no-fold --source prometheus=URL -i <N-node inventory>` runs in a fresh process
(median of --runs wall times), checked: exit 0 and N rows in state ok. Extrapolation to 10,000 nodes: a
least-squares line through the measured (N, seconds) points, stated as such.

    python3 benchmarks/prometheus_status.py [--sizes 64,256,1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jueying_cli.checks import builtin_config  # noqa: E402
from jueying_cli.exporter.loop import Collection  # noqa: E402
from jueying_cli.exporter.metrics import MetricsServer  # noqa: E402
from jueying_cli.facts.collected import NodeFacts  # noqa: E402
from jueying_cli.facts.model import Facts  # noqa: E402
from jueying_cli.inventory.model import Inventory, Node  # noqa: E402
from jueying_cli.outcome import Outcome  # noqa: E402
from jueying_cli.vocab import OutcomeStatus  # noqa: E402

FACTS = REPO / "tests" / "data" / "facts" / "h100-healthy.json"


def get(url: str, timeout: float = 120) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return bytes(answer.read())


def measure(n: int, runs: int, tmp: Path) -> dict[str, float]:
    doc = json.loads(FACTS.read_text())
    doc["collected_at_unix"] = time.time()
    facts = Facts.from_document(doc)
    names = [f"n{i:05d}" for i in range(1, n + 1)]
    nodes = [Node(name=name, vars={"address": "192.0.2.1", "expected_gpus": 8}) for name in names]
    inventory = Inventory(nodes={x.name: x for x in nodes}, groups={}, source=None)
    results = [NodeFacts(x, Outcome(x.name, OutcomeStatus.OK, rc=0), facts) for x in nodes]
    server = MetricsServer("127.0.0.1", 0)
    collection = Collection(nodes, lambda _nodes, _deadline: (results, False), interval_s=15, deadline_s=15,
                            config=builtin_config(), inventory=inventory, publish=server.publish)
    cpu = time.process_time()
    collection.collect_once()  # checks, rows, families, and the exposition rendered once (plain and gzip)
    collect_cpu_ms = (time.process_time() - cpu) * 1000
    target = f"127.0.0.1:{server.port}"
    scrapes = []
    for _ in range(5):
        started = time.perf_counter()
        body = get(f"http://{target}/metrics")
        scrapes.append(time.perf_counter() - started)
    work = tmp / f"n{n}"
    work.mkdir()
    config = work / "prometheus.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": "5s", "scrape_timeout": "5s"},
                                  "scrape_configs": [{"job_name": "jueying",
                                                      "static_configs": [{"targets": [target]}]}]}))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (work / "prometheus.log").open("w")
    prom = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    inventory_file = work / "inventory.yaml"
    inventory_file.write_text("nodes:\n" + "".join(f"  {name}: {{address: 192.0.2.1, expected_gpus: 8}}\n"
                                                   for name in names))
    try:
        deadline = time.monotonic() + 300
        query = urllib.parse.urlencode({"query": "count(jueying_node_state == 1)"})
        while True:
            try:
                found = json.loads(get(f"{url}/api/v1/query?{query}"))["data"]["result"]
                if found and int(found[0]["value"][1]) == n:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"Prometheus did not get {n} nodes")
            time.sleep(0.5)
        walls = []
        for _ in range(runs):
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "jueying_cli", "status", "--json", "--no-fold", "--no-history",
                                   "--source", f"prometheus={url}", "-i", str(inventory_file)],
                                  capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
            walls.append(time.perf_counter() - started)
            rows = json.loads(proc.stdout)["data"]["nodes"] if proc.stdout else []
            if proc.returncode != 0 or len(rows) != n or {r["state"] for r in rows} != {"ok"}:
                states = sorted({(r["state"], r["stale"]) for r in rows})
                raise SystemExit(f"FAILED at {n}: rc {proc.returncode}, {len(rows)} rows {states}, "
                                 f"{proc.stderr[-500:]}")
    finally:
        prom.terminate()
        prom.wait(timeout=60)
        log.close()
        server.stop()
    return {"nodes": n, "status_s": statistics.median(walls), "scrape_ms": statistics.median(scrapes) * 1000,
            "body_mb": len(body) / 1e6, "collect_cpu_ms_per_node": collect_cpu_ms / n}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="64,256,1024")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            rows.append(measure(n, args.runs, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| nodes | status --source prometheus (s) | scrape of /metrics (ms) | /metrics (MB) | "
          "collection step CPU (ms/node) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['nodes']} | {r['status_s']:.2f} | {r['scrape_ms']:.0f} | {r['body_mb']:.1f} | "
              f"{r['collect_cpu_ms_per_node']:.2f} |")
    if len(rows) >= 2:
        xs, ys = [r["nodes"] for r in rows], [r["status_s"] for r in rows]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
        print(f"\nleast-squares line: {my - slope * mx:.2f} s + {slope * 1000:.2f} ms/node -> "
              f"10,000 nodes: {my + slope * (10000 - mx):.1f} s (extrapolated)")


if __name__ == "__main__":
    main()
