"""The collection loop of `jueying exporter`: a background thread refreshes every selected node over the kept
probes (collect/sessions.py, as `status --watch` does: NVML stays initialised, no SSH handshake per
refresh), runs the health checks, and swaps in a new snapshot of metric families. A scrape only reads the
last snapshot, so its cost does not grow with the collection's.

A node that misses a refresh keeps its last values, marked stale (`jueying_node_stale 1`); a node that
never answered shows its outcome (`jueying_node_state{state="unreachable"} 1`), never OK.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from jueying_cli.actions.cap import cap_for
from jueying_cli.checks.config import CheckConfig
from jueying_cli.checks.flap import REACHABILITY, Finding
from jueying_cli.checks.model import CheckResult
from jueying_cli.checks.run import run_checks
from jueying_cli.facts.collected import NodeFacts
from jueying_cli.inventory.model import Inventory, Node
from jueying_cli.render.health import health_by_node
from jueying_cli.render.prometheus import (
    Family,
    cap_families,
    check_families,
    gpu_families,
    node_families,
)
from jueying_cli.status.view import SchedulerView, merge_stale, rows_for
from jueying_cli.vocab import Level

Refresh = Callable[[Sequence[Node], float | None], tuple[list[NodeFacts], bool]]
ReadScheduler = Callable[[], Mapping[str, SchedulerView]]


@dataclass(frozen=True)
class _Key:
    node: str
    check: str
    gpu: int | None
    code: str


class Streaks:
    """Flap control in memory: how many collections in a row each non-OK result has held (the exporter does
    not write check's state database; a restart starts the counts afresh)."""

    def __init__(self) -> None:
        self._counts: dict[_Key, int] = {}

    def findings(self, results: Sequence[CheckResult], confirm_runs: Callable[[CheckResult], int]) -> list[Finding]:
        counts: dict[_Key, int] = {}
        found = []
        for r in results:
            if r.level == Level.OK:
                found.append(Finding(r, 1, 1))
                continue
            key = _Key(r.node, r.check, r.gpu, r.code)
            counts[key] = counts.get(key) or self._counts.get(key, 0) + 1
            found.append(Finding(r, counts[key], 1 if r.check == REACHABILITY else confirm_runs(r)))
        self._counts = counts
        return found


class Collection:
    """Refresh, judge and snapshot every `interval_s` on a daemon thread; `families()` is the last snapshot."""

    def __init__(self, nodes: Sequence[Node], refresh: Refresh, *, interval_s: float, deadline_s: float,
                 config: CheckConfig, inventory: Inventory, read_scheduler: ReadScheduler | None = None,
                 unreachable: Level = Level.UNKNOWN,
                 publish: Callable[[Sequence[Family]], None] | None = None, gpu_metrics: bool = True) -> None:
        self._nodes = list(nodes)
        self._gpu_metrics = gpu_metrics  # False: no per-GPU families (dcgm-exporter on the nodes has them)
        self._by_name = {n.name: n for n in nodes}
        self._refresh = refresh
        self._interval_s = interval_s
        self._deadline_s = deadline_s
        self._config = config
        self._inventory = inventory
        self._read_scheduler = read_scheduler
        self._unreachable = unreachable
        self._publish = publish
        self._last: dict[str, NodeFacts] = {}
        self._failures: dict[str, int] = {n.name: 0 for n in nodes}
        self._streaks = Streaks()
        self._snapshot: list[Family] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.collections = 0
        self.first_done = threading.Event()

    def families(self) -> list[Family]:
        return self._snapshot  # swapped whole by the loop: a reader never sees half of one

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="jueying-exporter-collect", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Ask the loop to end and wait for the refresh under way (bounded by its deadline)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.collect_once()
            except Exception as exc:  # noqa: BLE001 - the exporter must outlive one bad collection
                self._snapshot = _loop_error(str(exc))
                if self._publish is not None:
                    self._publish(self._snapshot)
            self.first_done.set()
            self._stop.wait(max(0.0, self._interval_s - (time.monotonic() - started)))

    def collect_once(self) -> None:
        started = time.monotonic()
        results, _ = self._refresh(self._nodes, self._deadline_s)
        merged, stale = merge_stale(results, self._last)
        for r in results:
            if r.facts is None:
                self._failures[r.name] = self._failures.get(r.name, 0) + 1
        scheduler = dict(self._read_scheduler()) if self._read_scheduler is not None else {}
        answered = [(r.node, r.facts) for r in merged if r.facts is not None]
        now = time.time()
        checks = run_checks(answered, self._config, self._inventory, now=now)
        checks += [CheckResult(node=r.name, check=REACHABILITY, level=self._unreachable,
                               message=f"{r.outcome.status}: {r.outcome.error or 'no facts'}",
                               code=r.outcome.status.upper()) for r in merged if r.facts is None]
        findings = self._streaks.findings(
            checks, lambda c: self._config.confirm_runs(c.check, self._by_name[c.node], self._inventory))
        # jueying_node_state is the node's own health (what it answered, or why it did not), the same in node
        # mode, in controller mode and in the textfile; what the scheduler says has families of its own; the
        # GPU columns count as healthy only GPUs without a confirmed problem, as `jueying status` does.
        own = rows_for(merged, stale)
        rows = [dataclasses.replace(h, scheduler=s.scheduler, scheduler_state=s.scheduler_state,
                                    drain_reason=s.drain_reason)
                for h, s in zip(own, rows_for(merged, stale, scheduler), strict=True)]
        judged = rows_for(merged, stale, health=health_by_node(findings))
        families = [
            *(gpu_families((r.name, r.facts) for r in merged if r.facts is not None) if self._gpu_metrics else []),
            *check_families(findings),
            *node_families(rows, {r.name: r.outcome.status for r in results}, stale, gpu_rows=judged),
        ]
        states = {name: view.state for name, view in scheduler.items() if view.state is not None}
        if states:
            cap = cap_for(self._inventory, states)
            families += cap_families(cap.limit, cap.unavailable)
        failures = Family("jueying_node_collection_failures_total", "Collections of a node that gave no facts "
                          "since the exporter started.", kind="counter")
        for name, count in self._failures.items():
            failures.add({"node": name}, float(count))
        self.collections += 1
        took = Family("jueying_exporter_collection_duration_seconds", "How long the exporter's last collection of "
                      "every selected node took (seconds); it runs on its own loop, never during a scrape.")
        took.add({}, round(time.monotonic() - started, 6))
        when = Family("jueying_exporter_last_collection_timestamp_seconds", "When the exporter's last collection "
                      "finished (unix seconds).")
        when.add({}, round(time.time(), 3))
        self._snapshot = [*families, failures, took, when]
        if self._publish is not None:
            self._publish(self._snapshot)


def _loop_error(message: str) -> list[Family]:
    """What a collection that raised leaves: the error, and no node data (absent, never a stale OK)."""
    error = Family("jueying_exporter_collection_error", "1 when the exporter's last collection failed; "
                   "the message is in the label.")
    error.add({"message": message[:200]}, 1.0)
    return [error]
