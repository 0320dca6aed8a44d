"""Where `status --source prometheus` spends its time: cProfile of exporter/readback.py's status_rows() against a
real Prometheus (Debian's, on loopback) holding N nodes' series, this checkout's read-back beside an older
commit's (its readback.py read with `git show`), same server, same minute.

The series are the exporter's own: its collection step (exporter/loop.py) on recorded 8x H100 facts
(tests/data/facts/h100-healthy.json) given to N node names, served by its HTTP server and scraped every 5 s.
Per read-back: the query's wall time, the answer's size and series, json.loads' time, and the top of the
cProfile listing of status_rows().

    python3 benchmarks/prometheus_profile.py [--nodes 1024] [--old 7fb648d]
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import json
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jueying_cli.checks import builtin_config  # noqa: E402
from jueying_cli.exporter import readback as new  # noqa: E402
from jueying_cli.exporter.loop import Collection  # noqa: E402
from jueying_cli.exporter.metrics import MetricsServer  # noqa: E402
from jueying_cli.facts.collected import NodeFacts  # noqa: E402
from jueying_cli.facts.model import Facts  # noqa: E402
from jueying_cli.inventory.model import Inventory, Node  # noqa: E402
from jueying_cli.outcome import Outcome  # noqa: E402
from jueying_cli.vocab import OutcomeStatus  # noqa: E402

FACTS = ROOT / "tests" / "data" / "facts" / "h100-healthy.json"


def old_module(commit: str, work: Path) -> ModuleType:
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:jueying_cli/exporter/readback.py"],
                            capture_output=True, text=True, check=True).stdout
    path = work / "old_readback.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_readback", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_readback"] = module
    spec.loader.exec_module(module)
    return module


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=300) as answer:
        return bytes(answer.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1024)
    parser.add_argument("--old", default="7fb648d", help="commit whose read-back to compare with")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jueying-prom-profile-"))
    old = old_module(args.old, work)
    doc = json.loads(FACTS.read_text())
    doc["collected_at_unix"] = time.time()
    facts = Facts.from_document(doc)
    nodes = [Node(name=f"n{i:05d}", vars={"address": "192.0.2.1", "expected_gpus": 8})
             for i in range(1, args.nodes + 1)]
    inventory = Inventory(nodes={x.name: x for x in nodes}, groups={}, source=None)
    results = [NodeFacts(x, Outcome(x.name, OutcomeStatus.OK, rc=0), facts) for x in nodes]
    server = MetricsServer("127.0.0.1", 0)
    Collection(nodes, lambda _n, _d: (results, False), interval_s=15, deadline_s=15, config=builtin_config(),
               inventory=inventory, publish=server.publish).collect_once()
    config = work / "prometheus.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": "5s", "scrape_timeout": "5s"}, "scrape_configs": [
        {"job_name": "jueying", "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}]}]}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = (work / "prometheus.log").open("w")
    prom = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        count = urllib.parse.urlencode({"query": "count(jueying_node_state == 1)"})
        while True:
            try:
                found = json.loads(get(f"{url}/api/v1/query?{count}"))["data"]["result"]
                if found and int(found[0]["value"][1]) == args.nodes:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        for label, module in ((f"old ({args.old})", old), ("new", new)):
            for _ in range(2):  # the second of two: the server's caches warm
                started = time.perf_counter()
                body = get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": module.QUERY}))
                wall = time.perf_counter() - started
                started = time.perf_counter()
                series = len(json.loads(body)["data"]["result"])
                parse = time.perf_counter() - started
            print(f"{label}: query {wall * 1000:.0f} ms, {len(body) / 1e6:.1f} MB, {series} series, "
                  f"json.loads {parse * 1000:.0f} ms")
            module.status_rows(url, nodes)
            profile = cProfile.Profile()
            started = time.perf_counter()
            profile.enable()
            rows = module.status_rows(url, nodes)
            profile.disable()
            print(f"{label}: status_rows {time.perf_counter() - started:.2f} s for {len(rows)} rows")
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(10)
            print(out.getvalue())
    finally:
        prom.terminate()
        prom.wait(timeout=60)
        log.close()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
