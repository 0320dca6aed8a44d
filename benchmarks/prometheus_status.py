"""`jueying status --source prometheus=URL` side by side with SSH `jueying status`, on the same simulated nodes in
the same run, at 64, 256 and 1024 nodes; and the controller-mode exporter's own costs.

Method. One simulated cluster of real sshd nodes with the simulated 8x H100 NVML (tests/cluster, node0001...
on 127.93.x.y, shifted by JUEYING_SIM_OCTET_SHIFT) is brought up with max(sizes) nodes; each size selects its
first N nodes with -w. Per size, in this order:

1. SSH: `jueying status --json --no-fold --no-history -w <N nodes>` (fresh process, fresh connections), --runs
   times, while nothing else of this benchmark runs; wall time and client CPU (os.wait4, as benchmarks/status.py).
2. A controller-mode `jueying exporter -w <N nodes> --interval 15` (kept SSH connections and probes, as
   `status --watch`) and a real Prometheus (Debian's, on loopback) scraping it every 15 s. Once every node is
   `ok` in the exporter and in Prometheus: the exporter's collection time (its own
   jueying_exporter_collection_duration_seconds), its CPU per node per collection (user+sys of the exporter
   process from /proc over two whole collections, Prometheus's scrapes included, / 2 / N), the wall time of
   an uncompressed GET /metrics from this process (median of 5), the body size, and Prometheus's own
   scrape_duration_seconds for it.
3. `jueying status --json --no-fold --no-history --source prometheus=URL -w <N nodes>`, --runs times (fresh
   process), with the exporter still collecting; and the readback's one query timed alone (median of 3:
   what the Prometheus server and the transfer take).

Every run is checked: exit 0, N rows, every one `ok` with 8 GPUs (SSH and Prometheus alike); a failed run is
reported, never timed. Extrapolation to 10,000 nodes: a least-squares line through the measured (N, seconds)
points of each column, stated as such (a linear model; the nodes share this machine's 2 cores with the client,
so the SSH figures are mostly the simulated nodes' CPU, see benchmarks/status.py).

    python3 benchmarks/prometheus_status.py [--sizes 64,256,1024] [--runs 3]

Needs root (sshd, namespaces) and Debian's `prometheus`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.status import Setup, find_program, fold, measure_cold, process_cpu_s, run_measured  # noqa: E402
from jueying_cli.exporter.readback import QUERY  # noqa: E402
from tests.cluster import SimCluster  # noqa: E402
from tests.nvmlsim import build_library  # noqa: E402

FIRST_OCTETS = (127, 93)  # status.py uses 127.91, check.py 127.92
INTERVAL_S = 15.0


def get(url: str, timeout: float = 120) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return bytes(answer.read())


def promql(url: str, query: str) -> list[dict[str, object]]:
    doc = json.loads(get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": query})))
    return list(doc["data"]["result"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, condition: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout_s:g} s")
        time.sleep(0.5)


@dataclass
class Row:
    nodes: int
    ssh_s: float
    ssh_cpu_ms: float
    prom_s: float
    prom_cpu_ms: float
    queries_ms: float
    answer_kb: float
    collection_s: float
    exporter_cpu_ms: float
    scrape_ms: float
    body_mb: float
    prom_scrape_s: float


def check_rows(stdout: str, names: list[str]) -> str:
    try:
        rows = json.loads(stdout)["data"]["nodes"]
    except (ValueError, KeyError, TypeError):
        return "stdout is not a status envelope"
    bad = [r["node"] for r in rows if r.get("state") != "ok" or r.get("gpus_present") != 8 or r.get("stale")]
    if sorted(r["node"] for r in rows) != sorted(names) or bad:
        return f"{len(rows)} rows, not ok: {bad[:5]}"
    return ""


def metric_value(text: str, name: str) -> float | None:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def measure(size: int, names: list[str], runs: int, setup: Setup, work: Path) -> Row:
    env = setup.env
    ssh = []
    for run in range(runs):
        result = measure_cold(setup, names)
        print(f"{size:>5} nodes ssh run {run + 1}: {result.wall_s:.2f} s {result.problem or 'ok'}", file=sys.stderr,
              flush=True)
        if result.ok:
            ssh.append(result)
    if not ssh:
        raise SystemExit(f"every SSH status run failed at {size} nodes")

    log = (work / f"exporter-{size}.log").open("w")
    exporter = subprocess.Popen([*setup.jueying, "exporter", "-w", fold(names), "--listen", "127.0.0.1:0",
                                 "--interval", f"{INTERVAL_S:g}", "--deadline", f"{INTERVAL_S - 1:g}"],
                                env=env, stdout=log, stderr=subprocess.PIPE, text=True)
    prom = None
    try:
        assert exporter.stderr is not None
        line = exporter.stderr.readline()
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        target = f"127.0.0.1:{port}"

        def exporter_text() -> str:
            return get(f"http://{target}/metrics").decode()

        def all_ok() -> bool:
            return exporter_text().count('state="ok"} 1.0') >= size  # jueying_node_state and collection_status
        wait_until(f"every node ok in the exporter ({size})", all_ok, 600)
        prom_dir = work / f"prom-{size}"
        prom_dir.mkdir()
        config = prom_dir / "prometheus.yml"
        config.write_text(json.dumps({"global": {"scrape_interval": f"{INTERVAL_S:g}s", "scrape_timeout": "10s"},
                                      "scrape_configs": [{"job_name": "jueying",
                                                          "static_configs": [{"targets": [target]}]}]}))
        url = f"http://127.0.0.1:{free_port()}"
        prom_log = (prom_dir / "prometheus.log").open("w")
        prom = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={prom_dir / 'tsdb'}",
                                 f"--web.listen-address={url.removeprefix('http://')}"], stdout=prom_log,
                                stderr=subprocess.STDOUT)

        def prom_ok() -> bool:
            try:
                found = promql(url, 'count(jueying_node_state{state="ok"} == 1)')
            except OSError:
                return False
            return bool(found) and int(float(found[0]["value"][1])) == size  # type: ignore[index]
        wait_until(f"every node ok in Prometheus ({size})", prom_ok, 300)

        # the exporter's CPU over two whole collections (Prometheus's scrapes included)
        def stamp() -> float | None:
            return metric_value(exporter_text(), "jueying_exporter_last_collection_timestamp_seconds")
        first = stamp()
        wait_until("a new collection", lambda: stamp() != first, 120)
        cpu0, t0 = process_cpu_s(exporter.pid), stamp()
        wait_until("a new collection", lambda: stamp() != t0, 120)
        t1 = stamp()
        wait_until("a new collection", lambda: stamp() != t1, 120)
        cpu1 = process_cpu_s(exporter.pid)
        text = exporter_text()
        collection_s = metric_value(text, "jueying_exporter_collection_duration_seconds") or 0.0
        scrapes = []
        for _ in range(5):
            started = time.perf_counter()
            body = get(f"http://{target}/metrics")
            scrapes.append(time.perf_counter() - started)
        prom_scrape = promql(url, 'scrape_duration_seconds{job="jueying"}')
        prom_scrape_s = float(prom_scrape[0]["value"][1]) if prom_scrape else float("nan")  # type: ignore[index]

        prom_runs = []
        for run in range(runs):
            with tempfile.TemporaryFile(dir=work) as out:
                proc = run_measured([*setup.jueying, "status", "--json", "--no-fold", "--no-history", "--source",
                                     f"prometheus={url}", "-w", fold(names)], env, stdin=None, stdout=out,
                                    timeout_s=setup.timeout_s)
                out.seek(0)
                problem = check_rows(out.read().decode(), names) if proc.rc == 0 else f"exit {proc.rc}"
            print(f"{size:>5} nodes prometheus run {run + 1}: {proc.wall_s:.2f} s {problem or 'ok'}", file=sys.stderr,
                  flush=True)
            if not problem:
                prom_runs.append(proc)
        if not prom_runs:
            raise SystemExit(f"every --source prometheus run failed at {size} nodes")
        queries, answer = [], 0
        for _ in range(3):
            started = time.perf_counter()
            answer = len(get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": QUERY})))
            queries.append(time.perf_counter() - started)
        return Row(
            nodes=size,
            ssh_s=statistics.median(r.wall_s for r in ssh),
            ssh_cpu_ms=statistics.median(r.cpu_ms_per_node for r in ssh),
            prom_s=statistics.median(p.wall_s for p in prom_runs),
            prom_cpu_ms=statistics.median(p.cpu_s for p in prom_runs) * 1000 / size,
            queries_ms=statistics.median(queries) * 1000,
            answer_kb=answer / 1e3,
            collection_s=collection_s,
            exporter_cpu_ms=((cpu1 or 0.0) - (cpu0 or 0.0)) * 1000 / 2 / size,
            scrape_ms=statistics.median(scrapes) * 1000,
            body_mb=len(body) / 1e6,
            prom_scrape_s=prom_scrape_s,
        )
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(timeout=60)
        exporter.send_signal(signal.SIGTERM)
        try:
            exporter.wait(timeout=120)
        except subprocess.TimeoutExpired:
            exporter.kill()
            exporter.wait()
        log.close()


def line_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through the points."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64,256,1024")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per status invocation")
    args = parser.parse_args()
    sizes = sorted({int(x) for x in args.sizes.split(",")})
    work = Path(tempfile.mkdtemp(prefix="jueying-bench-prom-"))
    jueying = find_program("jueying")
    cluster = SimCluster(work / "cluster", max(sizes), prefix="node", digits=4, first_octets=FIRST_OCTETS,
                         gpu_lib_dir=build_library(work / "lib"))
    setup = Setup(jueying=[jueying] if jueying else [sys.executable, "-m", "jueying_cli"], clush=None,
                  env={**os.environ, **cluster.client_env(), "NO_COLOR": "1", "LC_ALL": "C.UTF-8",
                       "JUEYING_STATE_DB": str(work / "state.db")},
                  ssh_config=str(cluster.ssh_config_path), probe_script="", payload=work / "none", work=work,
                  timeout_s=args.timeout, interval_s=0.5, count=2, cold_deadline_s=args.timeout, warm_deadline_s=None)
    rows = []
    try:
        started = time.perf_counter()
        cluster.up(timeout_s=max(30.0, max(sizes) / 5))
        print(f"{max(sizes)} nodes up in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        names = [n.name for n in cluster.nodes]
        for size in sizes:
            rows.append(measure(size, names[:size], args.runs, setup, work))
            print(json.dumps(rows[-1].__dict__), file=sys.stderr, flush=True)
    finally:
        cluster.down()
        shutil.rmtree(work, ignore_errors=True)
    print("| nodes | SSH `status` (s) | `--source prometheus` (s) | of which the query (ms) | answer (KB) | "
          "client CPU SSH / Prometheus (ms/node) | exporter collection (s) | exporter CPU (ms/node/collection) | "
          "GET /metrics (ms) | /metrics (MB) | Prometheus scrape (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.nodes} | {r.ssh_s:.2f} | {r.prom_s:.2f} | {r.queries_ms:.0f} | {r.answer_kb:.0f} | "
              f"{r.ssh_cpu_ms:.1f} / {r.prom_cpu_ms:.2f} | {r.collection_s:.2f} | {r.exporter_cpu_ms:.2f} | "
              f"{r.scrape_ms:.0f} | {r.body_mb:.1f} | {r.prom_scrape_s:.2f} |")
    if len(rows) >= 2:
        for label, key in (("SSH status", "ssh_s"), ("--source prometheus", "prom_s"),
                           ("exporter collection", "collection_s")):
            a, b = line_fit([(r.nodes, getattr(r, key)) for r in rows])
            print(f"\n{label}: least-squares line {a:.2f} s + {b * 1000:.3f} ms/node -> 10,000 nodes: "
                  f"{a + b * 10000:.1f} s (extrapolated)")


if __name__ == "__main__":
    main()
