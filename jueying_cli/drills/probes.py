"""Built-in probes: what a drill reads to judge the cluster, no shell needed (except `command`).

- node_state, drain_reason, running_jobs: the node's scheduler (Slurm or builtin) for each node of `on:`;
- gpus: `count: healthy` = GPUs that answer (not lost) on nodes that answered with no CRITICAL health check;
  `schedulable` = those on nodes the scheduler has in service (not drained, draining or down); `model:`
  limits it to one GPU name, `partition:` to the nodes in one partition (Slurm's, else the inventory's
  `partition` variable), `nodes:` (NodeSet/@group) or `on:` to some nodes (default: the inventory);
- check: the level (ok, warning, critical, unknown) of one health check on each node of `on:`, or the
  node's outcome (unreachable, timeout...) when it did not answer;
- command: a command's exit code (`output: rc`, default) or stripped stdout on each node of `on:`, or on
  this machine without `on:`;
- file: a file on this machine: `exists` (default, true/false) or its `content` (first 64 KiB, stripped);
- http: the HTTP status code of a GET on this machine's view of `url` (None when it cannot connect).

A probe on several nodes has a value per node; its expectation must hold on every one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jueying_cli.drills.playbook import Probe, ProbeKind, parse_duration, substitute
from jueying_cli.inventory.model import Inventory, Node
from jueying_cli.scheduler import Schedulers
from jueying_cli.scheduler.base import NodeState
from jueying_cli.transport.base import Cancel, Command, Transport
from jueying_cli.vocab import Level

MAX_FILE_BYTES = 64 * 1024
DEFAULT_COMMAND_TIMEOUT_S = 30.0
COLLECT_DEADLINE_S = 60.0
LOCAL = Node(name="localhost", vars={"local": True})


@dataclass(frozen=True)
class ProbeResult:
    name: str
    kind: str
    value: Any  # {node: value} for node probes, else one value
    ok: bool  # the expectation holds (on every node); True when there is no expectation
    error: str | None
    at: float  # unix seconds
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "probe": self.kind, "value": self.value, "tolerance_met": self.ok,
                "error": self.error, "at": round(self.at, 3), "duration_s": round(self.duration_s, 3)}


@dataclass
class ProbeEnv:
    """What probes read through; one per thread (a builtin scheduler holds a database connection)."""

    inventory: Inventory
    transport: Transport
    schedulers: Schedulers
    checks_file: str | None = None
    cancel: Cancel | None = None

    def states(self, names: Sequence[str]) -> dict[str, NodeState | None]:
        found: dict[str, NodeState | None] = dict.fromkeys(names)
        for scheduler, members in self.schedulers.values():
            mine = [n for n in names if n in members]
            if mine:
                found.update(scheduler.states(mine))
        return found


def run_probe(probe: Probe, env: ProbeEnv, refs: Mapping[str, str], nodes: Sequence[Node]) -> ProbeResult:
    """Read the probe (`nodes`: its target's nodes when it has `on:`) and judge its expectation. Never raises
    for node or scheduler trouble: that is an error and a failed expectation."""
    started, at = time.monotonic(), time.time()
    value: Any = None
    error = None
    try:
        value = _read(probe, env, refs, nodes)
    except Exception as exc:  # noqa: BLE001 - a probe that cannot read is a failed probe, said so in the journal
        error = f"{type(exc).__name__}: {exc}"
    ok = error is None
    if ok and probe.expect is not None:
        values = list(value.values()) if probe.on is not None and isinstance(value, dict) else [value]
        ok = bool(values) and all(probe.expect.holds(v) for v in values)
    return ProbeResult(probe.name, str(probe.kind), value, ok, error, at, time.monotonic() - started)


def _read(probe: Probe, env: ProbeEnv, refs: Mapping[str, str], nodes: Sequence[Node]) -> Any:
    kind, p = probe.kind, probe.params
    if kind in (ProbeKind.NODE_STATE, ProbeKind.DRAIN_REASON, ProbeKind.RUNNING_JOBS):
        states = env.states([n.name for n in nodes])
        out: dict[str, Any] = {}
        for name, state in states.items():
            if kind == ProbeKind.NODE_STATE:
                out[name] = str(state.state) if state else "unknown"
            elif kind == ProbeKind.DRAIN_REASON:
                out[name] = state.reason if state and state.drain else None
            else:
                out[name] = len(state.jobs) if state else None
        return out
    if kind == ProbeKind.CHECK:
        return _check_levels(env, nodes, str(p["check"]))
    if kind == ProbeKind.GPUS:
        return _gpus(env, probe, nodes)
    if kind == ProbeKind.COMMAND:
        timeout = parse_duration(p.get("timeout", DEFAULT_COMMAND_TIMEOUT_S)) or DEFAULT_COMMAND_TIMEOUT_S
        command = Command(script=substitute(str(p["run"]), refs, quote=True), timeout_s=timeout)
        targets = list(nodes) if probe.on is not None else [LOCAL]
        values: dict[str, Any] = {}
        for node in targets:
            outcome = env.transport.run(node, command, time.monotonic() + timeout + 15, env.cancel)
            if outcome.rc is None:
                raise RuntimeError(f"{node.name}: {outcome.status}: {outcome.error}")
            values[node.name] = outcome.rc if p.get("output", "rc") == "rc" else outcome.stdout.strip()
        return values if probe.on is not None else values[LOCAL.name]
    if kind == ProbeKind.FILE:
        path = Path(substitute(str(p["path"]), refs, quote=False))
        if p.get("output", "exists") == "exists":
            return path.exists()
        with path.open("rb") as fh:
            return fh.read(MAX_FILE_BYTES).decode("utf-8", "replace").strip()
    if kind == ProbeKind.HTTP:
        return _http(substitute(str(p["url"]), refs, quote=False),
                     parse_duration(p.get("timeout", 10)) or 10.0)
    raise ValueError(f"unknown probe {kind}")


def _http(url: str, timeout_s: float) -> int | None:
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise ValueError("url must be http:// or https://")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - scheme checked above
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def _facts(env: ProbeEnv, nodes: Sequence[Node]) -> tuple[list[Any], list[Any]]:
    """(collected results, findings of the health checks) for `nodes`."""
    from jueying_cli.checks import builtin_config, load_check_config, run_checks
    from jueying_cli.collect.oneshot import collect_nodes

    results, _ = collect_nodes(env.transport, list(nodes), fanout=64, deadline_s=COLLECT_DEADLINE_S)
    config = load_check_config(Path(env.checks_file)) if env.checks_file else builtin_config()
    answered = [(r.node, r.facts) for r in results if r.facts is not None]
    return results, run_checks(answered, config, env.inventory, now=time.time())


def unhealthy(env: ProbeEnv, nodes: Sequence[Node]) -> set[str]:
    """Those of `nodes` that did not answer or have a CRITICAL health check (target filter healthy)."""
    results, findings = _facts(env, nodes)
    critical = {f.node for f in findings if f.level == Level.CRITICAL}
    return {r.name for r in results if r.facts is None or r.name in critical}


def _check_levels(env: ProbeEnv, nodes: Sequence[Node], check: str) -> dict[str, str]:
    results, findings = _facts(env, nodes)
    levels: dict[str, str] = {}
    for r in results:
        if r.facts is None:
            levels[r.name] = str(r.outcome.status)
            continue
        mine = [f.level for f in findings if f.node == r.name and f.check == check]
        levels[r.name] = Level(max(mine)).name.lower() if mine else "ok"
    return levels


def _partitions(node: Node, state: NodeState | None) -> tuple[str, ...]:
    """The partitions a node is in: its scheduler's (Slurm), else the inventory's `partition` variable."""
    if state is not None and state.partitions:
        return state.partitions
    value = node.vars.get("partition")
    return (str(value),) if value not in (None, "") else ()


def _gpus(env: ProbeEnv, probe: Probe, nodes: Sequence[Node]) -> int:
    from jueying_cli.inventory.select import select_nodes

    p = probe.params
    chosen = list(nodes) if probe.on is not None else (
        select_nodes(env.inventory, str(p["nodes"])) if p.get("nodes") else list(env.inventory.nodes.values()))
    results, findings = _facts(env, chosen)
    critical = {f.node for f in findings if f.level == Level.CRITICAL}
    schedulable = p.get("count") == "schedulable"
    partition = p.get("partition")
    states = env.states([n.name for n in chosen]) if schedulable or partition else {}
    total = 0
    for r in results:
        if r.facts is None or r.name in critical:
            continue
        state = states.get(r.name)
        if schedulable and (state is None or state.unavailable):
            continue
        if partition and partition not in _partitions(r.node, state):
            continue
        total += sum(1 for g in r.facts.gpus if not g.lost and (not p.get("model") or g.name == p["model"]))
    return total
