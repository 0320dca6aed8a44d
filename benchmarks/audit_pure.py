"""The audit's and capacity's pure work on N recorded 8x H100 nodes (tests/data/facts/h100-healthy.json with
own names, UUIDs, serials; every 50th node on another driver): reading attributes, drift, identity, the HTML
report, the snapshot docs history keeps, the capacity classification and its HTML report, and what `status`
adds for health (the built-in check set on every node, rows, sort and fold; no state database). In process,
CPU ms (median of runs).
No SSH: the collection itself is measured by benchmarks/status.py.

    python3 benchmarks/audit_pure.py [--sizes 1024,4096] [--runs 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jueying_cli.audit.capacity import build_capacity, classify, reading_of  # noqa: E402
from jueying_cli.audit.capacity_report import html_page as capacity_html  # noqa: E402
from jueying_cli.audit.drift import audit_nodes, find_drift, find_identity, snapshot_doc  # noqa: E402
from jueying_cli.audit.report import AuditReport, html_page  # noqa: E402
from jueying_cli.checks import builtin_config  # noqa: E402
from jueying_cli.checks.flap import read_findings  # noqa: E402
from jueying_cli.facts.collected import NodeFacts  # noqa: E402
from jueying_cli.facts.model import Facts  # noqa: E402
from jueying_cli.inventory.model import Inventory, Node  # noqa: E402
from jueying_cli.inventory.select import fold  # noqa: E402
from jueying_cli.outcome import Outcome  # noqa: E402
from jueying_cli.render.health import health_by_node  # noqa: E402
from jueying_cli.status.summary import fold_healthy, sort_summaries  # noqa: E402
from jueying_cli.status.view import rows_for  # noqa: E402
from jueying_cli.vocab import OutcomeStatus  # noqa: E402

BASE = json.loads((REPO / "tests/data/facts/h100-healthy.json").read_text())


def fleet(n: int) -> list[NodeFacts]:
    out = []
    for i in range(n):
        doc = copy.deepcopy(BASE)
        name = f"gpu{i:05d}"
        doc["host"]["hostname"], doc["host"]["machine_id"] = name, f"{i:032x}"
        for g in doc["gpus"]:
            g["uuid"], g["serial"] = f"GPU-{i:08x}-{g['index']}", f"{i}{g['index']}"
        if i % 50 == 0:
            doc["nvml"]["driver_version"] = "535.183.01"
        node = Node(name, {"rack": f"r{i // 32}", "site": f"s{i // 512}", "expected_gpus": 8})
        out.append(NodeFacts(node, Outcome(name, OutcomeStatus.OK, rc=0), Facts.from_document(doc)))
    return out


def once(results: list[NodeFacts]) -> dict[str, float]:
    t = {}
    start = time.process_time()
    answered = [(r.node, r.facts) for r in results if r.facts is not None]
    audits = audit_nodes(answered)
    t["attributes"] = time.process_time() - start
    mark = time.process_time()
    findings = find_drift(audits, {r.name: r.node for r in results}) + find_identity(audits, {})
    t["drift+identity"] = time.process_time() - mark
    mark = time.process_time()
    html_page(AuditReport(audits, findings, [], "the majority of each GPU model"))
    t["html"] = time.process_time() - mark
    mark = time.process_time()
    [snapshot_doc(a) for a in audits]
    t["snapshot docs"] = time.process_time() - mark
    mark = time.process_time()
    readings = [reading_of(r) for r in results]
    nodes = [classify(r, None, [], by="rack", known_gpus=None) for r in readings]
    report = build_capacity(nodes, readings, by="rack", floor=100, history=None, since=None)
    t["capacity"] = time.process_time() - mark
    mark = time.process_time()
    capacity_html(report)
    t["capacity html"] = time.process_time() - mark
    mark = time.process_time()
    inventory = Inventory({r.name: r.node for r in results}, {})
    health = health_by_node(read_findings(results, builtin_config(), inventory, None, now=time.time()))
    fold_healthy(sort_summaries(rows_for(results, health=health)), fold)
    t["status health"] = time.process_time() - mark
    return t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1024,4096")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        results = fleet(size)
        runs = [once(results) for _ in range(args.runs)]
        cells = ", ".join(f"{k} {statistics.median(r[k] for r in runs) * 1000:.0f} ms" for k in runs[0])
        print(f"{size} nodes: {cells}")


if __name__ == "__main__":
    main()
