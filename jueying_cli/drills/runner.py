"""Running a drill: resolve targets, check the guards and the steady state, run the method, always roll back,
and keep the journal (store.drills) as the run goes.

Guarantees, in the order users were hurt by their absence in other tools:
- the journal row is written before each action starts (status `started`), so a run killed at any point
  leaves the list of what may need undoing; `drill recover RUN` undoes exactly those;
- the rollback undoes exactly the actions that started, in reverse order, after the method ends, fails,
  deviates, is stopped by a guard (abort_when, deadline, max_unavailable), or by SIGINT / SIGTERM; its own
  result is reported, and a failed undo makes the run fail (exit 1), never `completed`;
- signals never raise inside a step: they set a stop flag and cancel the running remote command (its
  process group on the node is killed by the transport's lifeline), and the rollback then runs with its
  own, unset, cancel; further signals during the rollback are noted, not obeyed (SIGKILL leaves it to
  `drill recover`, and node-side faults to their time-to-live);
- a run holds a lock on every node of its targets (state.db.locks/drill/), so two drills never act on one
  node at once; a dead run's locks are freed by the kernel.
"""

from __future__ import annotations

import math
import os
import random
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jueying_cli.actions.cap import OverCap
from jueying_cli.actions.context import ActionContext
from jueying_cli.actions.drain import ChangePlan, ChangeResult, DrainRequest, execute, plan_drains, plan_resumes
from jueying_cli.drills import faults
from jueying_cli.drills.playbook import (
    Action,
    FaultKind,
    Phase,
    PickMode,
    Playbook,
    Probe,
    ResolvedTarget,
    Strategy,
    WaitFor,
)
from jueying_cli.drills.probes import ProbeEnv, ProbeResult, run_probe
from jueying_cli.errors import BadInputError, JueyingError, LockBusy
from jueying_cli.inventory.model import Node
from jueying_cli.inventory.select import fold, select_nodes
from jueying_cli.scheduler import all_states, schedulers_for
from jueying_cli.scheduler.base import NodeState, is_auto_reason, is_jueying_reason, jueying_reason, operator
from jueying_cli.store import Store
from jueying_cli.store.lock import NodeLocks
from jueying_cli.transport.base import Cancel
from jueying_cli.vocab import DrillStatus, RollbackStatus, SchedulerState

Emit = Callable[[str], None]
JOURNAL_VERSION = 1


def iso(t: float) -> str:
    """RFC 3339 UTC with milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


class EmptyTarget(JueyingError):
    """A target resolved to no node and says on_empty: fail."""


# ---------------------------------------------------------------- targets


def resolve_targets(book: Playbook, ctx: ActionContext, states: Mapping[str, NodeState],
                    unavailable: set[str], unhealthy: Callable[[Sequence[Node]], set[str]] | None = None,
                    ) -> dict[str, ResolvedTarget]:
    """Each target's nodes: selection, filters, never an unavailable node (drained, draining, down, or a
    builtin node that does not answer) unless include_unavailable, then the pick (a random pick's seed is
    drawn when none is given, and recorded). `unhealthy(nodes)`: those of `nodes` that do not answer or have
    a CRITICAL health check (for `filter: {healthy: true|false}`)."""
    resolved: dict[str, ResolvedTarget] = {}
    for t in book.targets.values():
        sick: set[str] = set()
        if "healthy" in t.filters and unhealthy is not None:
            try:
                sick = unhealthy(select_nodes(ctx.inventory, t.nodes, t.exclude))
            except BadInputError:
                sick = set()
        where = f"targets.{t.name}"
        try:
            chosen = select_nodes(ctx.inventory, t.nodes, t.exclude)
        except BadInputError as exc:
            raise BadInputError(str(exc), path=book.source, line=t.line, field=f"{where}.nodes") from None
        names: list[str] = []
        dropped: list[str] = []
        for node in chosen:
            f = t.filters
            if "gpu_model" in f and node.vars.get("gpu_model") != f["gpu_model"]:
                continue
            if "role" in f and node.vars.get("role") != f["role"]:
                continue
            state = states.get(node.name)
            if "states" in f and (state is None or str(state.state) not in f["states"]):
                continue
            if "healthy" in f and (node.name in sick) == f["healthy"]:
                continue
            if not t.include_unavailable and node.name in unavailable:
                dropped.append(node.name)
                continue
            names.append(node.name)
        seed = None
        if t.mode == PickMode.COUNT:
            names = names[: int(t.value)]
        elif t.mode == PickMode.PERCENT:
            names = names[: math.ceil(len(names) * float(t.value) / 100)]
        elif t.mode == PickMode.NAMES:
            names = [n for n in t.value if n in names]
        elif t.mode == PickMode.RANDOM:
            seed = t.seed if t.seed is not None else secrets.randbelow(2**31)
            names = sorted(random.Random(seed).sample(names, min(int(t.value), len(names))),  # noqa: S311
                           key=names.index)
        resolved[t.name] = ResolvedTarget(t.name, names, str(t.mode), seed, dropped)
    return resolved


def unavailable_now(ctx: ActionContext) -> tuple[dict[str, NodeState], set[str]]:
    """(every node's state, the nodes out of service now: drained, draining, down, builtin nodes that do
    not answer), as max_unavailable counts them."""
    states = all_states(ctx.schedulers, ctx.inventory)
    cap = ctx.cap()
    return states, set(cap.drained) | set(cap.down)


def limit_of(book: Playbook, total: int) -> int | None:
    """The guard's max_unavailable as a node count: the stricter of count and percent (None: no guard)."""
    limits = []
    if book.guards.max_unavailable_count is not None:
        limits.append(book.guards.max_unavailable_count)
    if book.guards.max_unavailable_pct is not None:
        limits.append(math.floor(total * book.guards.max_unavailable_pct / 100))
    return min(limits) if limits else None


# ---------------------------------------------------------------- the run


@dataclass
class _Stop:
    """The stop flag: set once by a signal, a guard or the deadline; the first reason wins."""

    event: threading.Event = field(default_factory=threading.Event)
    cancel: Cancel = field(default_factory=Cancel)
    status: DrillStatus | None = None
    reason: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, status: DrillStatus, reason: str) -> None:
        with self.lock:
            if self.event.is_set():
                return
            self.status, self.reason = status, reason
            self.event.set()
            self.cancel.set(reason)


class DrillRunner:
    """One run (or one recovery) of a playbook; the journal is `self.journal`, saved through `self.store`."""

    def __init__(self, book: Playbook, ctx: ActionContext, *, emit: Emit | None = None,
                 run_id: str | None = None) -> None:
        self.book = book
        self.ctx = ctx
        self.store: Store = ctx.store
        self.emit = emit or (lambda _msg: None)
        self.run_id = run_id or new_run_id()
        self.stop = _Stop()
        self.targets: dict[str, ResolvedTarget] = {}
        self.refs: dict[str, str] = {}
        self.locks: NodeLocks | None = None
        self.started: list[tuple[Action, dict[str, Any]]] = []  # actions that started, with their journal entry
        self._journal_lock = threading.Lock()
        self.journal: dict[str, Any] = {}
        self._signals_seen: list[str] = []
        self._in_rollback = False
        self._guards_done = threading.Event()
        self.checks_file = self._checks_path()

    # ---- helpers

    def _checks_path(self) -> str | None:
        """The playbook's `checks:` (relative to the playbook), else $JUEYING_CHECKS, else the built-in set."""
        if not self.book.checks:
            return os.environ.get("JUEYING_CHECKS") or None
        path = Path(self.book.checks)
        if not path.is_absolute():
            path = Path(self.book.source).parent / path
        return str(path)

    def probe_env(self, *, cancel: Cancel | None = None, store: Store | None = None) -> ProbeEnv:
        schedulers = self.ctx.schedulers if store is None else schedulers_for(
            self.ctx.inventory, list(self.ctx.inventory.nodes.values()), self.ctx.transport, store)
        return ProbeEnv(self.ctx.inventory, self.ctx.transport, schedulers, self.checks_file, cancel)

    def nodes_of(self, target: str | None) -> list[Node]:
        if target is None:
            return []
        return [self.ctx.inventory.nodes[n] for n in self.targets[target].nodes]

    def _unhealthy(self, nodes: Sequence[Node]) -> set[str]:
        from jueying_cli.drills.probes import unhealthy

        return unhealthy(self.probe_env(), nodes)

    def probe(self, probe: Probe, env: ProbeEnv) -> ProbeResult:
        return run_probe(probe, env, self.refs, self.nodes_of(probe.on))

    def save(self) -> None:
        with self._journal_lock:
            self.journal["updated"] = iso(time.time())
            self.store.drills.save(self.journal)

    def _set_refs(self) -> None:
        self.refs = {**self.book.variables, "run_id": self.run_id, "drill": self.book.name}
        for name, t in self.targets.items():
            self.refs[name] = fold(t.nodes) if t.nodes else ""

    # ---- plan / dry run

    def prepare(self) -> tuple[dict[str, NodeState], set[str]]:
        states, unavailable = unavailable_now(self.ctx)
        self.targets = resolve_targets(self.book, self.ctx, states, unavailable, self._unhealthy)
        self._set_refs()
        return states, unavailable

    def plan(self) -> dict[str, Any]:
        """What --dry-run prints: targets, the guard, every probe read once, each step. Changes nothing."""
        states, unavailable = self.prepare()
        env = self.probe_env()
        probes: list[dict[str, Any]] = []
        seen: set[str] = set()
        everything = [*self.book.guards.preflight, *self.book.steady_state, *self.book.guards.abort_when,
                      *(s.probe for s in self.book.method if isinstance(s, WaitFor))]
        for probe in everything:
            if probe.name in seen:
                continue
            seen.add(probe.name)
            probes.append(self.probe(probe, env).as_dict())
        return {"run_id": None, "drill": self.book.name, "dry_run": True,
                "targets_resolved": {n: _target_dict(t) for n, t in self.targets.items()},
                "guard": self._guard_text(states, unavailable), "probes": probes,
                "steps": [self._describe(s) for s in self.book.method],
                "rollback": [f"undo each started action in reverse order ({self.book.strategy})"]
                + [self._describe(s) for s in self.book.rollback_steps]}

    def _describe(self, step: Action | WaitFor) -> str:
        if isinstance(step, WaitFor):
            p = step.probe
            where = f" on {self.refs.get(p.on, '')}" if p.on else ""
            text = (f"wait_for {step.name}: {p.kind}{where} until {p.expect.describe() if p.expect else 'it answers'}"
                    f" (timeout {step.timeout_s:g} s, every {step.interval_s:g} s)")
        else:
            where = f" on {self.refs.get(step.on, '')}" if step.on else " on this machine"
            params = ", ".join(f"{k}={v}" for k, v in step.params.items())
            ttl = f", ttl {step.ttl_s:g} s" if step.kind not in (FaultKind.DRAIN, FaultKind.RESUME,
                                                                 FaultKind.FAILOVER) else ""
            text = f"{step.name}: {step.kind}{where} ({params}{ttl})"
        return text + (f" -> mark {step.mark}" if step.mark else "")

    def _guard_text(self, states: Mapping[str, NodeState], unavailable: set[str]) -> str | None:
        limit = limit_of(self.book, len(states))
        if limit is None:
            return None
        adding = {n for t in self.targets.values() for n in t.nodes} - unavailable
        return (f"max_unavailable {limit}: {len(unavailable)} of {len(states)} unavailable now, the drill may add "
                f"{len(adding)}")

    # ---- the run

    def run(self) -> dict[str, Any]:
        """Run the drill to the end (rollback included) and return the journal. BadInputError for targets that
        do not resolve, EmptyTarget, LockBusy: nothing was done then."""
        book = self.book
        states, unavailable = self.prepare()
        empty = [t for t in self.targets.values() if not t.nodes]
        now = time.time()
        self.journal = {
            "journal_version": JOURNAL_VERSION, "run_id": self.run_id,
            "drill": {"name": book.name, "description": book.description, "owner": book.owner,
                      "ticket": book.ticket, "source": book.source, "sha256": book.sha256},
            "playbook_text": book.text, "vars": dict(book.variables),
            "status": str(DrillStatus.RUNNING), "deviated": False, "rollback_status": str(RollbackStatus.PENDING),
            "started_at": now, "start": iso(now), "end": None, "duration": None,
            "operator": operator(), "host": socket.gethostname(), "pid": os.getpid(), "dry_run": False,
            "targets_resolved": {n: _target_dict(t) for n, t in self.targets.items()},
            "preflight": [], "steady_states": {"before": [], "during": [], "after": [], "post_rollback": []},
            "run": [], "rollbacks": [], "marks": {}, "timings": {}, "objectives": {}, "aborted_by": None,
            "signals": [], "errors": [],
        }
        skip = [t for t in empty if book.targets[t.name].on_empty == "skip"]
        fail = [t for t in empty if book.targets[t.name].on_empty == "fail"]
        if fail:
            raise EmptyTarget("target " + ", ".join(t.name for t in fail) + " resolved to no node (after leaving "
                              "out unavailable nodes: " + (", ".join(n for t in fail for n in t.excluded_unavailable)
                                                          or "none") + "); on_empty: fail, nothing done")
        self._lock_targets()
        try:
            if skip:
                self.journal["status"] = str(DrillStatus.SKIPPED)
                self.journal["rollback_status"] = str(RollbackStatus.NOT_NEEDED)
                self.journal["aborted_by"] = f"target {skip[0].name} is empty (on_empty: skip)"
                self._finish()
                return self.journal
            self.save()
            previous = self._install_signals()
            deadline = None
            if book.guards.deadline_s:
                deadline = threading.Timer(book.guards.deadline_s, self.stop.set,
                                           (DrillStatus.ABORTED, f"deadline {book.guards.deadline_s:g} s passed"))
                deadline.daemon = True
                deadline.start()
            try:
                self._body(states, unavailable)
            except Exception as exc:  # noqa: BLE001 - any error still rolls back, and is reported
                self.journal["errors"].append(f"{type(exc).__name__}: {exc}")
                self.stop.set(DrillStatus.FAILED, f"error: {type(exc).__name__}: {exc}")
            finally:
                if deadline is not None:
                    deadline.cancel()
                self.rollback()
                self._restore_signals(previous)
            self._finish()
            return self.journal
        finally:
            if self.locks is not None:
                self.locks.release_all()

    def _lock_targets(self) -> None:
        self.locks = self.store.drill_locks()
        for name in sorted({n for t in self.targets.values() for n in t.nodes}):
            if not self.locks.try_lock(name):
                holder = self.locks.holder(name)
                self.locks.release_all()
                raise LockBusy(f"another drill holds {name} ({holder}); nothing done")

    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return previous

        def handler(signum: int, _frame: object) -> None:
            name = signal.Signals(signum).name
            self._signals_seen.append(name)
            if self._in_rollback:
                self.emit(f"{name} during the rollback: it finishes first (SIGKILL would leave it to "
                          f"`jueying drill recover {self.run_id}`)")
                return
            self.emit(f"{name}: stopping the method and rolling back")
            self.stop.set(DrillStatus.INTERRUPTED, f"interrupted by {name}")

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    @staticmethod
    def _restore_signals(previous: Mapping[int, Any]) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    def _check_probes(self, probes: Sequence[Probe], env: ProbeEnv) -> tuple[list[dict[str, Any]], list[str]]:
        results = [self.probe(p, env) for p in probes]
        return [r.as_dict() for r in results], [r.name for r in results if not r.ok]

    def _body(self, states: Mapping[str, NodeState], unavailable: set[str]) -> None:
        book = self.book
        env = self.probe_env(cancel=self.stop.cancel)
        # preflight
        results, failed = self._check_probes(book.guards.preflight, env)
        self.journal["preflight"] = results
        if failed:
            self.stop.set(DrillStatus.ABORTED, f"preflight {failed[0]} does not hold")
            return
        guard = self._cap_guard(len(states), unavailable)
        if guard:
            self.stop.set(DrillStatus.ABORTED, guard)
            return
        # steady state before: a steady state that does not hold means nothing is injected
        results, failed = self._check_probes([p for p in book.steady_state if Phase.BEFORE in p.phases], env)
        self.journal["steady_states"]["before"] = results
        self.save()
        if failed:
            self.journal["deviated"] = True
            self.stop.set(DrillStatus.FAILED, f"steady state {failed[0]} does not hold before the method")
            return
        if self.stop.event.is_set():
            return
        watcher = threading.Thread(target=self._watch_guards, name="jueying-drill-guards", daemon=True)
        watcher.start()
        try:
            for step in book.method:
                if self.stop.event.is_set():
                    return
                ok = self._action(step, "method") if isinstance(step, Action) else self._wait(step, env)
                if not ok:
                    return
                during = [p for p in book.steady_state if Phase.DURING in p.phases]
                if during and not self.stop.event.is_set():
                    results, failed = self._check_probes(during, env)
                    self.journal["steady_states"]["during"].append({"after_step": step.index, "probes": results})
                    self.save()
                    if failed:
                        self.journal["deviated"] = True
                        self.stop.set(DrillStatus.FAILED, f"steady state {failed[0]} deviated during the method")
                        return
            if self.stop.event.is_set():
                return
            results, failed = self._check_probes([p for p in book.steady_state if Phase.AFTER in p.phases], env)
            self.journal["steady_states"]["after"] = results
            if failed:
                self.journal["deviated"] = True
                self.stop.set(DrillStatus.FAILED, f"steady state {failed[0]} does not hold after the method")
        finally:
            self._guards_done.set()
            watcher.join(timeout=120)

    def _cap_guard(self, total: int, unavailable: set[str]) -> str | None:
        limit = limit_of(self.book, total)
        if limit is None:
            return None
        adding = {n for t in self.targets.values() for n in t.nodes} - unavailable
        if len(unavailable) + len(adding) > limit:
            return (f"max_unavailable {limit}: {len(unavailable)} of {total} nodes already unavailable, the drill "
                    f"would add {len(adding)}")
        return None

    def _watch_guards(self) -> None:
        """abort_when probes, each every `every` seconds, in this thread with its own database connection;
        `consecutive_failures` misses in a row stop the method (status aborted) and start the rollback."""
        probes = self.book.guards.abort_when
        if not probes:
            return
        store = Store(self.store.path)
        try:
            env = self.probe_env(cancel=self.stop.cancel, store=store)
            due = dict.fromkeys(range(len(probes)), time.monotonic())
            misses = dict.fromkeys(range(len(probes)), 0)
            while not self.stop.event.is_set() and not self._guards_done.is_set():
                now = time.monotonic()
                for i, probe in enumerate(probes):
                    if due[i] > now:
                        continue
                    due[i] = now + probe.every_s
                    result = self.probe(probe, env)
                    misses[i] = 0 if result.ok else misses[i] + 1
                    if not result.ok:
                        with self._journal_lock:
                            self.journal.setdefault("guard_failures", []).append(result.as_dict())
                    if misses[i] >= probe.consecutive_failures:
                        self.emit(f"guard {probe.name} failed {misses[i]} time(s) in a row: aborting")
                        self.stop.set(DrillStatus.ABORTED, f"abort_when {probe.name} failed {misses[i]} "
                                      "consecutive time(s)")
                        return
                    if self.stop.event.is_set():
                        return
                wait = max(0.05, min(due.values()) - time.monotonic())
                self._guards_done.wait(wait)  # set when the method ends, however it ends
        finally:
            store.close()

    def _entry(self, action: Action, phase: str, nodes: Sequence[Node], tag: str) -> dict[str, Any]:
        t = time.time()
        return {"index": action.index, "phase": phase, "name": action.name, "do": str(action.kind),
                "nodes": [n.name for n in nodes], "tag": tag, "ttl_s": action.ttl_s, "status": "started",
                "start": iso(t), "start_unix": t, "end": None, "duration": None, "output": None}

    def _action(self, action: Action, phase: str) -> bool:
        """Run one action, journaled as started before anything is sent; True when it succeeded."""
        nodes = self.nodes_of(action.on) if action.on else [faults_local()]
        if action.on and not nodes:
            return True
        if phase == "method" and action.kind not in (FaultKind.RESUME, FaultKind.COMMAND):
            states, unavailable = unavailable_now(self.ctx)
            guard = self._cap_guard(len(states), unavailable)
            if guard:
                self.stop.set(DrillStatus.ABORTED, guard)
                return False
        tag = faults.make_tag(self.run_id, action.index, "m" if phase == "method" else "r")
        entry = self._entry(action, phase, nodes, tag)
        with self._journal_lock:
            (self.journal["run"] if phase == "method" else self.journal["rollbacks"]).append(entry)
        if phase == "method":
            self.started.append((action, entry))
        if action.mark_start:
            self._mark(action.mark_start, entry["start_unix"])
        self.save()  # BEFORE the action starts: recover must know it may have happened
        self.emit(f"{phase} {action.name}: {action.kind} on {fold([n.name for n in nodes])}")
        result = self._inject(action, nodes, tag, self.stop.cancel if phase == "method" else Cancel(), entry)
        self._settle(entry, result)
        if result.ok and action.mark:
            self._mark(action.mark, time.time())
        self.save()
        if not result.ok:
            self.emit(f"{action.name} failed: {result.output}")
            if phase == "method":
                self.stop.set(DrillStatus.FAILED, f"action {action.name} failed: {result.output}")
        return result.ok

    def _settle(self, entry: dict[str, Any], result: faults.FaultResult) -> None:
        t = time.time()
        entry.update(status="succeeded" if result.ok else "failed", end=iso(t),
                     duration=round(t - entry["start_unix"], 3), output=result.output, per_node=result.nodes)

    def _mark(self, name: str, t: float) -> None:
        with self._journal_lock:
            self.journal["marks"][name] = {"at": iso(t), "unix": t}
        self.emit(f"mark {name}")

    def _state_dir(self, node: Node) -> str | None:
        """Where a fault on this machine keeps its undo file (beside the state database)."""
        return str(self.store.path.with_name(self.store.path.name + ".drills")) if node.is_local else None

    def _inject(self, action: Action, nodes: Sequence[Node], tag: str, cancel: Cancel,
                entry: dict[str, Any]) -> faults.FaultResult:
        try:
            if action.kind == FaultKind.DRAIN:
                return self._drain(action, nodes)
            if action.kind == FaultKind.FAILOVER:
                return self._failover(action, nodes, entry)
            if action.kind == FaultKind.RESUME:
                return self._resume(nodes, auto_only=action.params.get("only") == "auto")
            scripts = faults.node_scripts(action, tag, self.refs, action.ttl_s)
            def script(node: Node) -> str:
                return faults.inject_script(scripts, tag, action.ttl_s, self._state_dir(node))

            outcomes = faults.run_on_nodes(self.ctx.transport, nodes, script, action.timeout_s, cancel)
            return faults.summarize(outcomes)
        except JueyingError as exc:
            return faults.FaultResult(False, str(exc))

    def _undo(self, action: Action, nodes: Sequence[Node], tag: str, entry: dict[str, Any]) -> faults.FaultResult:
        started_at = float(entry["start_unix"])
        try:
            if action.kind == FaultKind.DRAIN:
                return self._resume(nodes, containing=self.run_id)
            if action.kind == FaultKind.RESUME:
                return faults.FaultResult(True, "a resume has nothing to undo")
            if action.kind == FaultKind.FAILOVER:
                return self._unfailover(nodes, entry)

            def script(node: Node) -> str:
                return faults.undo_script(tag, self._state_dir(node))

            outcomes = faults.run_on_nodes(self.ctx.transport, nodes, script, action.timeout_s, Cancel())
            cut = [n for n in nodes if outcomes[n.name].rc is None]
            if cut and action.kind == FaultKind.BLOCK_NETWORK:
                # A partition usually cuts this machine off too: only the node's own timer can lift it. Wait for
                # its time-to-live, then look again (the undo then finds nothing left to do).
                wait = started_at + action.ttl_s + faults.SCRIPT_SLACK_S / 3 - time.time()
                self.emit(f"{fold([n.name for n in cut])} unreachable: waiting {max(0.0, wait):.0f} s for the "
                          "node-side time-to-live to lift the partition")
                time.sleep(max(0.0, min(wait, action.ttl_s + 60)))
                outcomes.update(faults.run_on_nodes(self.ctx.transport, cut, script, action.timeout_s, Cancel()))
            return faults.summarize(outcomes)
        except JueyingError as exc:
            return faults.FaultResult(False, str(exc))

    def _drain(self, action: Action, nodes: Sequence[Node]) -> faults.FaultResult:
        why = str(action.params.get("reason") or action.name)
        reason = jueying_reason(f"drill {self.book.name} {self.run_id}: {why}")
        try:  # a refused drain (CapExceeded) must not keep the cap lock for the rest of the drill
            plan = plan_drains(self.ctx, [DrainRequest(n.name, reason, f"drill {self.run_id}") for n in nodes],
                               over_cap=OverCap.REFUSE)
            rows = execute(self.ctx, plan, actor=f"drill:{self.book.name}", message=f"drill {self.run_id}")
        finally:
            self.ctx.release_cap()
        bad = [r for r in rows if r.result in (ChangeResult.FAILED, ChangeResult.HELD_BACK)]
        text = "; ".join(f"{r.node}: {r.result}: {r.note}" for r in rows)
        return faults.FaultResult(not bad and bool(rows), text, {r.node: {"result": str(r.result), "note": r.note}
                                                                  for r in rows})

    def _failover_book(self, path: str | None, node: Node) -> Any:
        from jueying_cli.actions.failover.playbook import find_playbook, load_playbook

        if path and not Path(path).is_absolute():
            path = str(Path(self.book.source).parent / path)
        return load_playbook(find_playbook(path, str(node.vars.get("role") or "compute"), self.ctx.inventory))

    def _failover(self, action: Action, nodes: Sequence[Node], entry: dict[str, Any]) -> faults.FaultResult:
        """The existing failover (spare chosen by health, drain within the cap, steps, verification, its own
        rollback on failure, the audit log), node by node. The chosen spare is journaled before it starts."""
        from jueying_cli.actions.failover.run import FailoverRequest, failover
        from jueying_cli.actions.failover.spares import healthy_spare, judge_spares, spare_candidates
        from jueying_cli.checks import builtin_config, load_check_config

        detail: dict[str, Any] = entry.setdefault("detail", {})
        texts, ok = [], True
        for node in nodes:
            book = self._failover_book(action.params.get("playbook"), node)
            candidates, rejected = spare_candidates(self.ctx.inventory, node)
            if action.params.get("spare"):
                candidates = [c for c in candidates if c.name == action.params["spare"]]
            config = load_check_config(Path(self.checks_file)) if self.checks_file else builtin_config()
            verdicts = judge_spares(self.ctx, candidates, node, config, connect_timeout_s=10.0)
            spare = healthy_spare(candidates, verdicts)
            if spare is None:
                why = "; ".join([f"{n}: {w}" for n, w in rejected] + [f"{n}: {w}" for n, w in verdicts.items() if w])
                texts.append(f"{node.name}: no healthy spare ({why or 'none in its spare_pool'})")
                ok = False
                continue
            detail[node.name] = {"spare": spare.name, "playbook": book.source, "result": "started"}
            self.save()  # the spare is known before anything changes: recover can take it back
            try:
                report = failover(self.ctx, FailoverRequest(node, spare, book,
                                                            f"drill {self.book.name} {self.run_id}", force=False))
            finally:
                self.ctx.release_cap()
            detail[node.name]["result"] = report.result
            texts.append(f"{node.name} -> {spare.name}: {report.result}: {report.left}")
            ok &= report.result == "done"
        return faults.FaultResult(ok, "; ".join(texts))

    def _unfailover(self, nodes: Sequence[Node], entry: dict[str, Any]) -> faults.FaultResult:
        """Take a failover back: its steps' undos newest first (all of them when the run died mid-failover;
        none when the failover already rolled itself back), then resume the failed node's failover drain."""
        from jueying_cli.actions.failover.run import undo_steps

        texts, ok = [], True
        for node in nodes:
            done = (entry.get("detail") or {}).get(node.name)
            if not done:
                texts.append(f"{node.name}: no failover was started")
                continue
            spare = self.ctx.inventory.nodes[done["spare"]]
            if done["result"] != "rolled_back":
                book = self._failover_book(done["playbook"], node)
                for record in undo_steps(book, node, spare, self.ctx.transport):
                    texts.append(f"undo '{record.step.name}' on {record.target}: {record.outcome.status}")
                    ok &= record.outcome.ok
            resumed = self._resume([node], containing=f"failover to {spare.name}")
            texts.append(resumed.output)
            ok &= resumed.ok
        return faults.FaultResult(ok, "; ".join(texts))

    def _resume(self, nodes: Sequence[Node], *, auto_only: bool = False,
                containing: str | None = None) -> faults.FaultResult:
        """Resume the nodes jueying drained (only those whose reason holds `containing` when given, e.g. this
        run's id; with auto_only only those `check --drain` drained); a node not drained, or drained by someone
        else, is left as it is."""
        plan = plan_resumes(self.ctx, [n.name for n in nodes], force=False)

        def ours(state: NodeState | None) -> bool:
            reason = state.reason if state else None
            if not reason:
                return False
            if containing is not None and containing not in reason:
                return False
            return is_auto_reason(reason) if auto_only else is_jueying_reason(reason)

        mine = ChangePlan({b: [c for c in cs if ours(c.before)] for b, cs in plan.changes.items()})
        if not any(mine.changes.values()):
            return faults.FaultResult(True, "nothing to resume (not drained by this drill)")
        rows = execute(self.ctx, mine, actor=f"drill:{self.book.name}", message=f"drill {self.run_id} rollback")
        bad = [r for r in rows if r.result == ChangeResult.FAILED]
        return faults.FaultResult(not bad, "; ".join(f"{r.node}: {r.result}: {r.note}" for r in rows),
                                  {r.node: {"result": str(r.result), "note": r.note} for r in rows})

    def _wait(self, step: WaitFor, env: ProbeEnv) -> bool:
        started = time.monotonic()
        attempts = 0
        t0 = time.time()
        entry: dict[str, Any] = {"index": step.index, "phase": "method", "name": step.name, "wait_for": True,
                                 "status": "started", "start": iso(t0), "start_unix": t0}
        self.journal["run"].append(entry)
        self.save()
        self.emit(f"wait_for {step.name} (up to {step.timeout_s:g} s)")
        while True:
            attempts += 1
            result = self.probe(step.probe, env)
            if result.ok:
                status = "succeeded"
                break
            if self.stop.event.is_set():
                status = "stopped"
                break
            if time.monotonic() - started >= step.timeout_s:
                status = "timeout"
                break
            self.stop.event.wait(min(step.interval_s, max(0.05, step.timeout_s - (time.monotonic() - started))))
        t = time.time()
        entry.update(status=status, end=iso(t), duration=round(t - t0, 3), attempts=attempts,
                     last=result.as_dict(), tolerance_met=result.ok)
        if result.ok and step.mark:  # when the probe that held had answered: never earlier than observed
            self._mark(step.mark, result.at + result.duration_s)
        self.save()
        if status == "timeout":
            self.journal["deviated"] = True
            self.stop.set(DrillStatus.FAILED, f"wait_for {step.name} timed out after {step.timeout_s:g} s "
                          f"(last value {result.value!r})")
        return result.ok

    # ---- rollback

    def rollback(self) -> None:
        """Undo exactly the actions that started, newest first, then the playbook's rollback steps; never
        cancelled by a signal. rollback_status failed when any undo or step failed."""
        self._in_rollback = True
        j = self.journal
        if self.book.strategy == Strategy.NEVER:
            j["rollback_status"] = str(RollbackStatus.SKIPPED if self.started else RollbackStatus.NOT_NEEDED)
            self.save()
            return
        if not self.started and not self._method_began():
            j["rollback_status"] = str(RollbackStatus.NOT_NEEDED)
            self.save()
            return
        self.emit(f"rolling back {len(self.started)} started action(s)")
        failed = False
        undone = {e.get("undo_of") for e in j["rollbacks"] if e.get("status") == "succeeded"}
        for action, entry in reversed(self.started):
            if entry["index"] in undone:
                continue
            nodes = [self.ctx.inventory.nodes[n] for n in entry["nodes"] if n in self.ctx.inventory.nodes] \
                if action.on else [faults_local()]
            t = time.time()
            record = {"undo_of": entry["index"], "phase": "undo", "name": f"undo {action.name}", "do": str(action.kind),
                      "nodes": entry["nodes"], "tag": entry["tag"], "status": "started", "start": iso(t),
                      "start_unix": t}
            j["rollbacks"].append(record)
            self.save()
            result = self._undo(action, nodes, entry["tag"], entry)
            self._settle(record, result)
            self.save()
            self.emit(f"undo {action.name}: {'ok' if result.ok else 'FAILED: ' + result.output}")
            failed |= not result.ok
        done_steps = {e["index"] for e in j["rollbacks"] if e.get("phase") == "rollback" and e["status"] == "succeeded"}
        for step in self.book.rollback_steps:
            if step.index in done_steps:
                continue
            failed |= not self._action(step, "rollback")
        post = [p for p in self.book.steady_state if Phase.POST_ROLLBACK in p.phases]
        if post:
            # A rollback takes a moment to show (a resumed Slurm node is IDLE+NOT_RESPONDING until its slurmd
            # pings again): the probes are read again every 2 s until they hold or `settle` passes.
            env = self.probe_env()
            settle_until = time.monotonic() + self.book.settle_s
            while True:
                results, bad = self._check_probes(post, env)
                if not bad or time.monotonic() >= settle_until:
                    break
                time.sleep(min(2.0, max(0.0, settle_until - time.monotonic())))
            j["steady_states"]["post_rollback"] = results
            if bad:
                j["deviated"] = True
                j["errors"].append(f"steady state {bad[0]} does not hold after the rollback")
        j["rollback_status"] = str(RollbackStatus.FAILED if failed else RollbackStatus.SUCCEEDED)
        self.save()

    def _method_began(self) -> bool:
        return any(e.get("phase") == "method" for e in self.journal.get("run", []))

    # ---- the end

    def _finish(self) -> None:
        j = self.journal
        t = time.time()
        j["end"], j["duration"] = iso(t), round(t - j["started_at"], 3)
        marks = {k: v["unix"] for k, v in j["marks"].items()}
        for name, (a, b) in self.book.timings.items():
            j["timings"][name] = round(marks[b] - marks[a], 3) if a in marks and b in marks else None
        for name, limit in self.book.objectives.items():
            value = j["timings"].get(name)
            j["objectives"][name] = {"limit_s": limit, "value_s": value, "met": value is not None and value <= limit}
        j["signals"] = [*j.get("signals", []), *self._signals_seen]
        if j["status"] == DrillStatus.RUNNING:
            if self.stop.status is not None:
                j["status"] = str(self.stop.status)
                j["aborted_by"] = self.stop.reason
            elif j["deviated"] or any(not o["met"] for o in j["objectives"].values()):
                j["status"] = str(DrillStatus.FAILED)
            else:
                j["status"] = str(DrillStatus.COMPLETED)
        if j["status"] == DrillStatus.COMPLETED and (j["deviated"] or j["rollback_status"] == RollbackStatus.FAILED):
            j["status"] = str(DrillStatus.FAILED)
        self.save()


def faults_local() -> Node:
    return Node(name="localhost", vars={"local": True})


def _target_dict(t: ResolvedTarget) -> dict[str, Any]:
    return {"nodes": t.nodes, "mode": t.mode, "seed": t.seed, "left_out_unavailable": t.excluded_unavailable}


# ---------------------------------------------------------------- recover


def recover(book: Playbook, ctx: ActionContext, journal: dict[str, Any], emit: Emit | None = None) -> dict[str, Any]:
    """Finish the rollback of a run whose process died: undo every action its journal says started and that
    was not undone, newest first, then the rollback steps not done; the run ends `interrupted` (or keeps its
    end status if it had one). LockBusy when the run is still alive (it holds its nodes' locks)."""
    runner = DrillRunner(book, ctx, emit=emit, run_id=journal["run_id"])
    runner.journal = journal
    runner.targets = {n: ResolvedTarget(n, list(t["nodes"]), t["mode"], t.get("seed"))
                      for n, t in journal["targets_resolved"].items()}
    runner._set_refs()
    runner._lock_targets()
    try:
        actions = {s.index: s for s in book.method if isinstance(s, Action)}
        for entry in journal["run"]:
            if entry.get("wait_for") or entry["index"] not in actions:
                continue
            runner.started.append((actions[entry["index"]], entry))
        journal["errors"].append(f"recovered by pid {os.getpid()} at {iso(time.time())}")
        if journal["status"] == DrillStatus.RUNNING:
            runner.stop.set(DrillStatus.INTERRUPTED, "the run's process died; rolled back by drill recover")
        runner.rollback()
        runner._finish()
        return runner.journal
    finally:
        if runner.locks is not None:
            runner.locks.release_all()


def scheduler_state_words() -> list[str]:
    return [s.value for s in SchedulerState]
