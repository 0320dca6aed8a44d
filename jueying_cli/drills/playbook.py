"""The drill playbook (YAML, `apiVersion: jueying/v1`, `kind: Drill`): parsed and validated whole before
anything runs. Every error is collected (not only the first) and reported as `file:line: field: message`;
the JSON Schema beside this module (drill.schema.json) describes the same format for editors.

Hand-written rather than validated with jsonschema at run time: jsonschema knows no line numbers, and a
runtime dependency for one command is not worth it (tests check that the schema and this module agree).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from jueying_cli.errors import BadInputError
from jueying_cli.yamlfile import LocatedDict, LocatedList, line_of, load_yaml

API_VERSION = "jueying/v1"
KIND = "Drill"
MAX_STEPS = 200  # bounded work on a hostile playbook
DEFAULT_TTL_S = 1800.0  # a fault undoes itself on the node after this long unless told otherwise
DEFAULT_ACTION_TIMEOUT_S = 120.0
DEFAULT_WAIT_INTERVAL_S = 5.0
DEFAULT_EVERY_S = 15.0
DEFAULT_SETTLE_S = 60.0  # how long post_rollback probes may take to hold again after the rollback
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_VAR_RE = re.compile(r"\$\{([^}]*)\}")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ProbeKind(StrEnum):
    """Built-in probes: what they read is in probes.py."""

    NODE_STATE = "node_state"
    DRAIN_REASON = "drain_reason"
    RUNNING_JOBS = "running_jobs"
    GPUS = "gpus"
    CHECK = "check"
    COMMAND = "command"
    FILE = "file"
    HTTP = "http"


class FaultKind(StrEnum):
    """Built-in actions of a method (faults with an undo) or of a rollback (resume)."""

    GPU_FAULT = "gpu_fault"
    DRAIN = "drain"
    RESUME = "resume"
    STOP_PROCESS = "stop_process"
    KILL_PROCESS = "kill_process"
    STOP_UNIT = "stop_unit"
    BLOCK_NETWORK = "block_network"
    COMMAND = "command"
    FAILOVER = "failover"


class Phase(StrEnum):
    BEFORE = "before"
    DURING = "during"
    AFTER = "after"
    POST_ROLLBACK = "post_rollback"


class PickMode(StrEnum):
    ALL = "all"
    COUNT = "count"
    PERCENT = "percent"
    NAMES = "names"
    RANDOM = "random"


class OnEmpty(StrEnum):
    FAIL = "fail"
    SKIP = "skip"


class Strategy(StrEnum):
    ALWAYS = "always"
    NEVER = "never"


# Per probe kind: its parameters (under `with:`), {name: (required, types)}; and whether it needs `on:`.
PROBE_PARAMS: dict[ProbeKind, dict[str, tuple[bool, tuple[type, ...]]]] = {
    ProbeKind.NODE_STATE: {},
    ProbeKind.DRAIN_REASON: {},
    ProbeKind.RUNNING_JOBS: {},
    ProbeKind.GPUS: {"count": (True, (str,)), "model": (False, (str,)), "partition": (False, (str,)),
                     "nodes": (False, (str,))},
    ProbeKind.CHECK: {"check": (True, (str,))},
    ProbeKind.COMMAND: {"run": (True, (str,)), "output": (False, (str,)), "timeout": (False, (int, float, str))},
    ProbeKind.FILE: {"path": (True, (str,)), "output": (False, (str,))},
    ProbeKind.HTTP: {"url": (True, (str,)), "timeout": (False, (int, float, str))},
}
NODE_PROBES = {ProbeKind.NODE_STATE, ProbeKind.DRAIN_REASON, ProbeKind.RUNNING_JOBS, ProbeKind.CHECK,
               ProbeKind.COMMAND}
CHOICES: dict[str, tuple[str, ...]] = {
    "gpus.count": ("healthy", "schedulable"),
    "command.output": ("rc", "stdout"),
    "file.output": ("exists", "content"),
    "gpu_fault.fault": ("lost", "xid", "ecc", "row_remap_failure"),
    "resume.only": ("jueying", "auto"),  # any drain jueying wrote, or only those `check --drain` wrote
}
FAULT_PARAMS: dict[FaultKind, dict[str, tuple[bool, tuple[type, ...]]]] = {
    FaultKind.GPU_FAULT: {"fault": (True, (str,)), "gpu": (False, (int,)), "xid": (False, (int,)),
                          "count": (False, (int,))},
    FaultKind.DRAIN: {"reason": (False, (str,))},
    FaultKind.RESUME: {"only": (False, (str,))},
    FaultKind.STOP_PROCESS: {"name": (True, (str,))},
    FaultKind.KILL_PROCESS: {"name": (True, (str,)), "restart": (True, (str,))},
    FaultKind.STOP_UNIT: {"unit": (True, (str,))},
    FaultKind.BLOCK_NETWORK: {"address": (False, (str,)), "port": (False, (int,))},
    FaultKind.COMMAND: {"run": (True, (str,)), "undo": (False, (str,))},
    FaultKind.FAILOVER: {"spare": (False, (str,)), "playbook": (False, (str,)), "reason": (False, (str,))},
}
LOCAL_FAULTS = {FaultKind.COMMAND}  # may run on this machine (no `on:`)
ROLLBACK_ONLY = {FaultKind.RESUME}  # has no undo: only in rollback.steps, or a method step that undoes nothing


@dataclass(frozen=True)
class Expect:
    """One expectation: equals, in (a list), range ([low, high], null for open), regex (on the text)."""

    op: str
    value: Any

    def holds(self, got: Any) -> bool:
        if self.op == "equals":  # true is not 1 and false is not 0 here
            return isinstance(got, bool) == isinstance(self.value, bool) and bool(got == self.value)
        if self.op == "in":
            return got in self.value
        if self.op == "range":
            if isinstance(got, bool) or not isinstance(got, (int, float)):
                return False
            low, high = self.value
            return (low is None or got >= low) and (high is None or got <= high)
        if self.op == "regex":
            return got is not None and re.search(self.value, str(got)) is not None
        return False

    def describe(self) -> str:
        return f"{self.op} {self.value!r}"


@dataclass(frozen=True)
class Probe:
    name: str
    kind: ProbeKind
    on: str | None  # a target name (node probes), or None
    params: Mapping[str, Any]
    expect: Expect | None
    phases: tuple[Phase, ...] = ()
    every_s: float = DEFAULT_EVERY_S
    consecutive_failures: int = 1
    line: int = 0


@dataclass(frozen=True)
class Target:
    name: str
    nodes: str | None  # NodeSet / @group (default: every inventory node)
    exclude: str | None
    filters: Mapping[str, Any]  # gpu_model, role, states
    mode: PickMode
    value: Any  # count / percent / names
    seed: int | None
    on_empty: OnEmpty
    include_unavailable: bool
    line: int = 0


@dataclass(frozen=True)
class Action:
    index: int  # position in method (or rollback.steps)
    name: str
    kind: FaultKind
    on: str | None  # target name; None: this machine (command only)
    params: Mapping[str, Any]
    ttl_s: float
    timeout_s: float
    mark: str | None
    line: int = 0
    mark_start: str | None = None  # a mark set when the action starts


@dataclass(frozen=True)
class WaitFor:
    index: int
    name: str
    probe: Probe
    timeout_s: float
    interval_s: float
    mark: str | None
    line: int = 0


Step = Action | WaitFor


@dataclass(frozen=True)
class Guards:
    deadline_s: float | None = None
    max_unavailable_count: int | None = None
    max_unavailable_pct: float | None = None
    preflight: tuple[Probe, ...] = ()
    abort_when: tuple[Probe, ...] = ()


@dataclass(frozen=True)
class Schedule:
    """`drill run --scheduled` runs only inside this window (minutes after midnight, in `tz`, on `days`)."""

    start_min: int
    end_min: int
    tz: str = "UTC"
    days: tuple[str, ...] = ()  # mon..sun; empty: every day

    def allows(self, now: float) -> bool:
        from datetime import datetime
        from zoneinfo import ZoneInfo

        local = datetime.fromtimestamp(now, ZoneInfo(self.tz))
        minute = local.hour * 60 + local.minute
        day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[local.weekday()]
        inside = (self.start_min <= minute < self.end_min if self.start_min <= self.end_min
                  else minute >= self.start_min or minute < self.end_min)  # a window across midnight
        return inside and (not self.days or day in self.days)


@dataclass(frozen=True)
class Playbook:
    name: str
    description: str
    owner: str | None
    ticket: str | None
    targets: Mapping[str, Target]
    guards: Guards
    steady_state: tuple[Probe, ...]
    method: tuple[Step, ...]
    strategy: Strategy
    rollback_steps: tuple[Action, ...]
    timings: Mapping[str, tuple[str, str]]
    objectives: Mapping[str, float]
    variables: Mapping[str, str]  # playbook vars with --var applied
    source: str
    text: str  # the file as read: the journal keeps it, so `drill recover` replays exactly this
    checks: str | None = None  # check set file for `check` / `gpus` probes (default: built-in)
    schedule: Schedule | None = None
    settle_s: float = DEFAULT_SETTLE_S

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def marks(self) -> set[str]:
        return {s.mark for s in (*self.method, *self.rollback_steps) if s.mark}


class PlaybookError(BadInputError):
    """Every problem of a playbook, one `file:line: field: message` per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        Exception.__init__(self, "playbook refused, nothing was run:\n  " + "\n  ".join(problems))


def parse_duration(value: Any) -> float | None:
    """Seconds from 90, 1.5, "90s", "5m", "2h", "250ms"; None when it is not a positive duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value > 0 else None
    if isinstance(value, str):
        match = _DURATION_RE.match(value.strip())
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
            return seconds if seconds > 0 else None
    return None


class _Checker:
    """Walks the document, collecting problems with their line and dotted field."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[str] = []

    def fail(self, line: int | None, where: str, message: str) -> None:
        self.problems.append(f"{self.path}:{line or 0}: {where}: {message}")

    def mapping(self, value: Any, where: str, allowed: set[str], line: int | None,
                required: tuple[str, ...] = ()) -> LocatedDict | None:
        if not isinstance(value, LocatedDict):
            self.fail(line_of(value) or line, where, "must be a mapping")
            return None
        for key in value:
            if key not in allowed:
                self.fail(value.line_of(key), f"{where}.{key}" if where else key,
                          f"unknown key (expected one of {', '.join(sorted(allowed))})")
        for key in required:
            if key not in value:
                self.fail(value.line, f"{where}.{key}" if where else key, "is required")
        return value

    def text(self, parent: LocatedDict, key: str, where: str, *, required: bool = False) -> str | None:
        value = parent.get(key)
        if value is None:
            if required:
                self.fail(parent.line_of(key), where, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(parent.line_of(key), where, "must be non-empty text")
            return None
        return value

    def name(self, parent: LocatedDict, key: str, where: str, *, required: bool = True) -> str | None:
        value = self.text(parent, key, where, required=required)
        if value is not None and not _NAME_RE.match(value):
            self.fail(parent.line_of(key), where, "must be a name: a letter, then letters, digits, - or _ "
                      "(at most 64)")
            return None
        return value

    def duration(self, parent: LocatedDict, key: str, where: str, default: float | None) -> float | None:
        if key not in parent:
            return default
        seconds = parse_duration(parent[key])
        if seconds is None:
            self.fail(parent.line_of(key), where, "must be a positive duration: seconds, or 30s, 5m, 2h")
            return default
        return seconds

    def choice(self, parent: LocatedDict, key: str, where: str, enum: type[StrEnum], default: str) -> Any:
        value = parent.get(key, default)
        try:
            return enum(value)
        except ValueError:
            self.fail(parent.line_of(key), where, f"must be one of {', '.join(e.value for e in enum)}")
            return enum(default)


def _walk_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _walk_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _walk_strings(v)]
    return []


def load_playbook(path: Path, overrides: Mapping[str, str] | None = None) -> Playbook:
    """Parse and validate the whole playbook; PlaybookError (exit 2) listing every problem."""
    from jueying_cli.yamlfile import read_text

    text = read_text(path)
    doc = load_yaml(path)
    return parse_playbook(doc, str(path), text, overrides or {})


def parse_playbook(doc: Any, source: str, text: str, overrides: Mapping[str, str]) -> Playbook:
    c = _Checker(source)
    top = c.mapping(doc, "", {"apiVersion", "kind", "metadata", "vars", "checks", "targets", "guards",
                              "steady_state", "method", "rollback", "report", "schedule"}, 1,
                    required=("apiVersion", "kind", "metadata", "targets", "method"))
    if top is None:
        raise PlaybookError(c.problems)
    if "apiVersion" in top and top.get("apiVersion") != API_VERSION:
        c.fail(top.line_of("apiVersion"), "apiVersion", f"must be {API_VERSION}")
    if "kind" in top and top.get("kind") != KIND:
        c.fail(top.line_of("kind"), "kind", f"must be {KIND}")
    meta = c.mapping(top.get("metadata", LocatedDict()), "metadata",
                     {"name", "description", "owner", "ticket"}, top.line_of("metadata"), required=("name",))
    name = (c.name(meta, "name", "metadata.name") if meta is not None else None) or "?"
    description = (c.text(meta, "description", "metadata.description") if meta is not None else None) or ""
    owner = c.text(meta, "owner", "metadata.owner") if meta is not None else None
    ticket = c.text(meta, "ticket", "metadata.ticket") if meta is not None else None
    checks = c.text(top, "checks", "checks")

    variables = _variables(c, top, overrides)
    _expect_vars(top, variables)
    targets = _targets(c, top)
    known_refs = {*targets, *variables, "run_id", "drill"}
    guards = _guards(c, top, targets)
    steady = _steady(c, top, targets)
    method = _method(c, top, targets)
    strategy, rollback_steps, settle_s = _rollback(c, top, targets)
    timings, objectives = _report(c, top, {s.mark for s in (*method, *rollback_steps) if s.mark}
                                  | {s.mark_start for s in (*method, *rollback_steps)
                                     if isinstance(s, Action) and s.mark_start})
    schedule = _schedule(c, top)

    for string, line, where in _references(top):
        for ref in _VAR_RE.findall(string):
            if ref not in known_refs:
                c.fail(line, where, f"${{{ref}}} names no target or variable (known: "
                       f"{', '.join(sorted(known_refs))})")
    if c.problems:
        raise PlaybookError(c.problems)
    return Playbook(name=name, description=description, owner=owner, ticket=ticket, targets=targets,
                    guards=guards, steady_state=steady, method=method, strategy=strategy,
                    rollback_steps=rollback_steps, timings=timings, objectives=objectives, variables=variables,
                    source=source, text=text, checks=checks, schedule=schedule, settle_s=settle_s)


_HHMM_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _schedule(c: _Checker, top: LocatedDict) -> Schedule | None:
    if "schedule" not in top:
        return None
    s = c.mapping(top["schedule"], "schedule", {"window"}, top.line_of("schedule"), required=("window",))
    if s is None or "window" not in s:
        return None
    w = c.mapping(s["window"], "schedule.window", {"start", "end", "tz", "days"}, s.line_of("window"),
                  required=("start", "end"))
    if w is None:
        return None
    minutes = []
    for key in ("start", "end"):
        match = _HHMM_RE.match(str(w.get(key, "")))
        if key in w and not match:
            c.fail(w.line_of(key), f"schedule.window.{key}", "must be HH:MM (24 h)")
        minutes.append(int(match.group(1)) * 60 + int(match.group(2)) if match else 0)
    tz = w.get("tz", "UTC")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(str(tz))
    except (ValueError, KeyError, OSError):
        c.fail(w.line_of("tz"), "schedule.window.tz", f"unknown time zone {tz!r} (e.g. UTC, Asia/Shanghai)")
        tz = "UTC"
    days = w.get("days", [])
    if not isinstance(days, list) or any(d not in DAYS for d in days):
        c.fail(w.line_of("days"), "schedule.window.days", f"must be a list of {', '.join(DAYS)}")
        days = []
    return Schedule(minutes[0], minutes[1], str(tz), tuple(days))


def _references(top: LocatedDict) -> list[tuple[str, int | None, str]]:
    """(string, line, field) of every string under the sections that may hold ${...}."""
    found: list[tuple[str, int | None, str]] = []

    def walk(value: Any, where: str, line: int | None) -> None:
        if isinstance(value, str):
            found.append((value, line, where))
        elif isinstance(value, LocatedDict):
            for key, item in value.items():
                walk(item, f"{where}.{key}", value.line_of(key))
        elif isinstance(value, LocatedList):
            for i, item in enumerate(value):
                lines = getattr(value, "item_lines", [])
                walk(item, f"{where}[{i}]", lines[i] if i < len(lines) else value.line)

    for section in ("guards", "steady_state", "method", "rollback"):
        if section in top:
            walk(top[section], section, top.line_of(section))
    return found


SHELL_FIELDS = {"run", "undo", "restart"}  # ${...} in these is substituted at run time, shell-quoted


def _expect_vars(top: LocatedDict, variables: Mapping[str, str]) -> None:
    """A value that is exactly ${var} becomes the variable's value (a number when it reads as one) before
    validation, anywhere but in shell fields (run, undo, restart: substituted quoted at run time):
    `range: ["${gpu_floor}", null]` with --var gpu_floor=48, `objectives: {t: "${limit}"}`."""

    def value(text: str) -> Any:
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    def walk(node: Any) -> None:
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node)) if isinstance(
            node, list) else []
        for key, item in items:
            if key in SHELL_FIELDS:
                continue
            if isinstance(item, str):
                match = _VAR_RE.fullmatch(item)
                if match and match.group(1) in variables:
                    node[key] = value(variables[match.group(1)])
            else:
                walk(item)

    for section, item in top.items():
        if section not in ("vars", "apiVersion", "kind"):
            walk(item)


def _variables(c: _Checker, top: LocatedDict, overrides: Mapping[str, str]) -> dict[str, str]:
    raw = top.get("vars", LocatedDict())
    declared: dict[str, str] = {}
    if isinstance(raw, LocatedDict):
        for key, value in raw.items():
            if not _NAME_RE.match(str(key)):
                c.fail(raw.line_of(key), f"vars.{key}", "must be a name")
            elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
                c.fail(raw.line_of(key), f"vars.{key}", "must be text or a number")
            else:
                declared[key] = str(value)
    else:
        c.fail(top.line_of("vars"), "vars", "must be a mapping of name: value")
    for key, value in overrides.items():
        if key not in declared:
            c.fail(None, f"--var {key}", f"the playbook declares no variable {key!r} under vars "
                   f"(declared: {', '.join(sorted(declared)) or 'none'})")
        else:
            declared[key] = value
    return declared


def _targets(c: _Checker, top: LocatedDict) -> dict[str, Target]:
    raw = top.get("targets")
    if not isinstance(raw, LocatedDict) or not raw:
        c.fail(top.line_of("targets"), "targets", "must be a mapping of at least one named target")
        return {}
    targets: dict[str, Target] = {}
    for tname, spec in raw.items():
        where = f"targets.{tname}"
        if not _NAME_RE.match(str(tname)):
            c.fail(raw.line_of(tname), where, "must be a name: a letter, then letters, digits, - or _")
        m = c.mapping(spec, where, {"nodes", "exclude", "filter", "pick", "on_empty", "include_unavailable"},
                      raw.line_of(tname))
        if m is None:
            continue
        filters: dict[str, Any] = {}
        if "filter" in m:
            f = c.mapping(m["filter"], f"{where}.filter", {"gpu_model", "role", "states", "healthy"},
                          m.line_of("filter"))
            if f is not None:
                if "healthy" in f:
                    if not isinstance(f["healthy"], bool):
                        c.fail(f.line_of("healthy"), f"{where}.filter.healthy", "must be true or false")
                    else:
                        filters["healthy"] = f["healthy"]
                for key in ("gpu_model", "role"):
                    if key in f:
                        filters[key] = c.text(f, key, f"{where}.filter.{key}")
                if "states" in f:
                    states = f["states"]
                    allowed = ("idle", "allocated", "mixed")
                    if not isinstance(states, list) or not states or any(s not in allowed for s in states):
                        c.fail(f.line_of("states"), f"{where}.filter.states",
                               f"must be a list of {', '.join(allowed)}")
                    else:
                        filters["states"] = tuple(states)
        mode, value, seed = PickMode.ALL, None, None
        if "pick" in m:
            p = c.mapping(m["pick"], f"{where}.pick", {"mode", "value", "seed"}, m.line_of("pick"),
                          required=("mode",))
            if p is not None:
                mode = c.choice(p, "mode", f"{where}.pick.mode", PickMode, "all")
                value = p.get("value")
                vline = p.line_of("value")
                if mode in (PickMode.COUNT, PickMode.RANDOM):
                    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                        c.fail(vline, f"{where}.pick.value", "must be a whole number of nodes, at least 1")
                elif mode == PickMode.PERCENT and (
                        isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 100):
                    c.fail(vline, f"{where}.pick.value", "must be a percentage above 0, at most 100")
                elif mode == PickMode.NAMES and (
                        not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value)):
                    c.fail(vline, f"{where}.pick.value", "must be a list of node names")
                seed = p.get("seed")
                if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                    c.fail(p.line_of("seed"), f"{where}.pick.seed", "must be a whole number")
                    seed = None
                if seed is not None and mode != PickMode.RANDOM:
                    c.fail(p.line_of("seed"), f"{where}.pick.seed", "only random picks take a seed")
        include = m.get("include_unavailable", False)
        if not isinstance(include, bool):
            c.fail(m.line_of("include_unavailable"), f"{where}.include_unavailable", "must be true or false")
            include = False
        for key in ("nodes", "exclude"):
            pattern = m.get(key)
            if isinstance(pattern, str) and pattern.strip() and "${" not in pattern:
                from jueying_cli.checks.config import nodeset_syntax_error

                why = nodeset_syntax_error(pattern)
                if why:
                    c.fail(m.line_of(key), f"{where}.{key}", f"not a node set: {why}")
        targets[str(tname)] = Target(
            name=str(tname), nodes=c.text(m, "nodes", f"{where}.nodes"),
            exclude=c.text(m, "exclude", f"{where}.exclude"),
            filters=filters, mode=mode, value=value, seed=seed,
            on_empty=c.choice(m, "on_empty", f"{where}.on_empty", OnEmpty, "fail"), include_unavailable=include,
            line=raw.line_of(tname))
    return targets


def _expect(c: _Checker, parent: LocatedDict, where: str) -> Expect | None:
    e = c.mapping(parent["expect"], f"{where}.expect", {"equals", "in", "range", "regex"}, parent.line_of("expect"))
    if e is None:
        return None
    if len(e) != 1:
        c.fail(e.line, f"{where}.expect", "must hold exactly one of equals, in, range, regex")
        return None
    op, value = next(iter(e.items()))
    line = e.line_of(op)
    if op == "in" and (not isinstance(value, list) or not value):
        c.fail(line, f"{where}.expect.in", "must be a non-empty list")
        return None
    if op == "range":
        ok = isinstance(value, list) and len(value) == 2 and all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in value)
        if not ok or (value[0] is not None and value[1] is not None and value[0] > value[1]):
            c.fail(line, f"{where}.expect.range", "must be [low, high] (numbers, null for open, low <= high)")
            return None
        value = (value[0], value[1])
    if op == "regex":
        if not isinstance(value, str):
            c.fail(line, f"{where}.expect.regex", "must be a regular expression")
            return None
        try:
            re.compile(value)
        except re.error as exc:
            c.fail(line, f"{where}.expect.regex", f"does not compile: {exc}")
            return None
    if op == "in":
        value = list(value)
    return Expect(op, value)


def _probe(c: _Checker, spec: Any, where: str, line: int | None, targets: Mapping[str, Target], *,
           phases: bool = False, background: bool = False, wait: bool = False) -> Probe | None:
    allowed = {"name", "probe", "on", "with", "expect"}
    if phases:
        allowed.add("phases")
    if background:
        allowed |= {"every", "consecutive_failures"}
    if wait:
        allowed |= {"timeout", "interval"}
    m = c.mapping(spec, where, allowed, line, required=("name", "probe", "expect"))
    if m is None:
        return None
    pname = c.name(m, "name", f"{where}.name") or "?"
    kind = c.choice(m, "probe", f"{where}.probe", ProbeKind, "command") if "probe" in m else ProbeKind.COMMAND
    on = m.get("on")
    if on is not None and on not in targets:
        c.fail(m.line_of("on"), f"{where}.on", f"names no target (targets: {', '.join(sorted(targets)) or 'none'})")
    if kind in NODE_PROBES - {ProbeKind.COMMAND} and on is None:
        c.fail(m.line, f"{where}.on", f"a {kind} probe needs on: <target>")
    if kind not in NODE_PROBES and on is not None and kind != ProbeKind.GPUS:
        c.fail(m.line_of("on"), f"{where}.on", f"a {kind} probe reads this machine: no on:")
    params = _params(c, m, where, PROBE_PARAMS[kind], str(kind))
    expect = _expect(c, m, where) if "expect" in m else None
    chosen: tuple[Phase, ...] = ()
    if phases:
        raw = m.get("phases", ["before", "after", "post_rollback"])
        if not isinstance(raw, list) or not raw or any(p not in {e.value for e in Phase} for p in raw):
            c.fail(m.line_of("phases"), f"{where}.phases",
                   f"must be a list of {', '.join(e.value for e in Phase)}")
        else:
            chosen = tuple(Phase(p) for p in raw)
    every = c.duration(m, "every", f"{where}.every", DEFAULT_EVERY_S) or DEFAULT_EVERY_S
    failures = m.get("consecutive_failures", 1)
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
        c.fail(m.line_of("consecutive_failures"), f"{where}.consecutive_failures", "must be a whole number >= 1")
        failures = 1
    return Probe(pname, kind, on, params, expect, chosen, every, failures, m.line)


def _params(c: _Checker, m: LocatedDict, where: str, spec: Mapping[str, tuple[bool, tuple[type, ...]]],
            kind: str) -> dict[str, Any]:
    raw = m.get("with", LocatedDict())
    if not isinstance(raw, LocatedDict):
        c.fail(m.line_of("with"), f"{where}.with", "must be a mapping")
        return {}
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in spec:
            c.fail(raw.line_of(key), f"{where}.with.{key}",
                   f"unknown for {kind} (expected: {', '.join(sorted(spec)) or 'nothing'})")
            continue
        types = spec[key][1]
        if isinstance(value, bool) or not isinstance(value, types):
            c.fail(raw.line_of(key), f"{where}.with.{key}", f"must be {' or '.join(t.__name__ for t in types)}")
            continue
        choices = CHOICES.get(f"{kind}.{key}")
        if choices and value not in choices:
            c.fail(raw.line_of(key), f"{where}.with.{key}", f"must be one of {', '.join(choices)}")
            continue
        if key == "timeout" and parse_duration(value) is None:
            c.fail(raw.line_of(key), f"{where}.with.{key}", "must be a positive duration")
            continue
        params[key] = value
    for key, (required, _) in spec.items():
        if required and key not in raw:
            c.fail(raw.line if "with" in m else m.line, f"{where}.with.{key}", f"is required for {kind}")
    return params


def _guards(c: _Checker, top: LocatedDict, targets: Mapping[str, Target]) -> Guards:
    if "guards" not in top:
        return Guards()
    g = c.mapping(top["guards"], "guards", {"deadline", "max_unavailable", "preflight", "abort_when"},
                  top.line_of("guards"))
    if g is None:
        return Guards()
    count = pct = None
    if "max_unavailable" in g:
        mu = c.mapping(g["max_unavailable"], "guards.max_unavailable", {"count", "percent"},
                       g.line_of("max_unavailable"))
        if mu is not None:
            count, pct = mu.get("count"), mu.get("percent")
            if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
                c.fail(mu.line_of("count"), "guards.max_unavailable.count", "must be a whole number >= 0")
                count = None
            if pct is not None and (isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct <= 100):
                c.fail(mu.line_of("percent"), "guards.max_unavailable.percent", "must be a percentage 0-100")
                pct = None
            if not mu:
                c.fail(mu.line, "guards.max_unavailable", "needs count, percent or both")
    preflight = _probe_list(c, g, "preflight", "guards.preflight", targets)
    abort_when = _probe_list(c, g, "abort_when", "guards.abort_when", targets, background=True)
    return Guards(c.duration(g, "deadline", "guards.deadline", None), count,
                  float(pct) if pct is not None else None, preflight, abort_when)


def _probe_list(c: _Checker, parent: LocatedDict, key: str, where: str, targets: Mapping[str, Target], *,
                phases: bool = False, background: bool = False) -> tuple[Probe, ...]:
    raw = parent.get(key)
    if raw is None:
        return ()
    if not isinstance(raw, LocatedList):
        c.fail(parent.line_of(key), where, "must be a list of probes")
        return ()
    if len(raw) > MAX_STEPS:
        c.fail(raw.line, where, f"at most {MAX_STEPS} probes")
        return ()
    lines = getattr(raw, "item_lines", [])
    probes = [_probe(c, item, f"{where}[{i}]", lines[i] if i < len(lines) else raw.line, targets, phases=phases,
                     background=background) for i, item in enumerate(raw)]
    names = [p.name for p in probes if p is not None]
    for dup in {n for n in names if names.count(n) > 1}:
        c.fail(raw.line, where, f"probe name {dup!r} is used twice")
    return tuple(p for p in probes if p is not None)


def _steady(c: _Checker, top: LocatedDict, targets: Mapping[str, Target]) -> tuple[Probe, ...]:
    if "steady_state" not in top:
        return ()
    s = c.mapping(top["steady_state"], "steady_state", {"probes"}, top.line_of("steady_state"))
    return _probe_list(c, s, "probes", "steady_state.probes", targets, phases=True) if s is not None else ()


def _action(c: _Checker, spec: LocatedDict, where: str, index: int, targets: Mapping[str, Target], *,
            rollback: bool) -> Action | None:
    m = c.mapping(spec, where, {"action", "do", "on", "with", "ttl", "timeout", "mark", "mark_start"}, spec.line,
                  required=("action", "do"))
    if m is None:
        return None
    name = c.name(m, "action", f"{where}.action") or "?"
    kind = c.choice(m, "do", f"{where}.do", FaultKind, "command") if "do" in m else FaultKind.COMMAND
    on = m.get("on")
    if on is None and kind not in LOCAL_FAULTS:
        c.fail(m.line, f"{where}.on", f"{kind} acts on nodes: on: <target> is required")
    elif on is not None and on not in targets:
        c.fail(m.line_of("on"), f"{where}.on", f"names no target (targets: {', '.join(sorted(targets)) or 'none'})")
    if kind in ROLLBACK_ONLY and not rollback:
        c.fail(m.line_of("do"), f"{where}.do", f"{kind} has no undo: put it under rollback.steps")
    params = _params(c, m, where, FAULT_PARAMS[kind], str(kind))
    if kind == FaultKind.BLOCK_NETWORK and not params.get("address") and not params.get("port"):
        c.fail(m.line, f"{where}.with", "block_network needs address, port or both")
    if kind == FaultKind.GPU_FAULT and params.get("fault") == "xid" and "xid" not in params:
        c.fail(m.line, f"{where}.with.xid", "an xid fault needs the XID number (e.g. 79)")
    mark = c.name(m, "mark", f"{where}.mark", required=False)
    return Action(index, name, kind, on, params, c.duration(m, "ttl", f"{where}.ttl", DEFAULT_TTL_S) or DEFAULT_TTL_S,
                  c.duration(m, "timeout", f"{where}.timeout", DEFAULT_ACTION_TIMEOUT_S) or DEFAULT_ACTION_TIMEOUT_S,
                  mark, m.line, c.name(m, "mark_start", f"{where}.mark_start", required=False))


def _method(c: _Checker, top: LocatedDict, targets: Mapping[str, Target]) -> tuple[Step, ...]:
    raw = top.get("method")
    if not isinstance(raw, LocatedList) or not raw:
        c.fail(top.line_of("method"), "method", "must be a non-empty list of steps")
        return ()
    if len(raw) > MAX_STEPS:
        c.fail(raw.line, "method", f"at most {MAX_STEPS} steps")
        return ()
    steps: list[Step] = []
    for i, item in enumerate(raw):
        where = f"method[{i}]"
        if isinstance(item, LocatedDict) and "wait_for" in item:
            extra = set(item) - {"wait_for", "mark"}
            for key in extra:
                c.fail(item.line_of(key), f"{where}.{key}", "unknown key (a wait_for step has wait_for and mark)")
            probe = _probe(c, item["wait_for"], f"{where}.wait_for", item.line_of("wait_for"), targets, wait=True)
            w = item["wait_for"]
            if probe is None or not isinstance(w, LocatedDict):
                continue
            timeout = c.duration(w, "timeout", f"{where}.wait_for.timeout", None)
            if timeout is None and "timeout" not in w:
                c.fail(w.line, f"{where}.wait_for.timeout", "is required: a wait is always bounded")
            steps.append(WaitFor(i, probe.name, probe, timeout or 1.0,
                                 c.duration(w, "interval", f"{where}.wait_for.interval", DEFAULT_WAIT_INTERVAL_S)
                                 or DEFAULT_WAIT_INTERVAL_S, c.name(item, "mark", f"{where}.mark", required=False),
                                 item.line))
        elif isinstance(item, LocatedDict):
            action = _action(c, item, where, i, targets, rollback=False)
            if action is not None:
                steps.append(action)
        else:
            c.fail(line_of(item) or raw.line, where, "must be an action (action, do, on, with) or a wait_for")
    marks = [s.mark for s in steps if s.mark] + [s.mark_start for s in steps if isinstance(s, Action) and s.mark_start]
    for dup in {m for m in marks if marks.count(m) > 1}:
        c.fail(raw.line, "method", f"mark {dup!r} is set twice")
    return tuple(steps)


def _rollback(c: _Checker, top: LocatedDict,
              targets: Mapping[str, Target]) -> tuple[Strategy, tuple[Action, ...], float]:
    if "rollback" not in top:
        return Strategy.ALWAYS, (), DEFAULT_SETTLE_S
    r = c.mapping(top["rollback"], "rollback", {"strategy", "steps", "settle"}, top.line_of("rollback"))
    if r is None:
        return Strategy.ALWAYS, (), DEFAULT_SETTLE_S
    strategy = c.choice(r, "strategy", "rollback.strategy", Strategy, "always")
    settle = c.duration(r, "settle", "rollback.settle", DEFAULT_SETTLE_S) or DEFAULT_SETTLE_S
    raw = r.get("steps", LocatedList())
    if not isinstance(raw, LocatedList):
        c.fail(r.line_of("steps"), "rollback.steps", "must be a list of actions")
        return strategy, (), settle
    if len(raw) > MAX_STEPS:
        c.fail(raw.line, "rollback.steps", f"at most {MAX_STEPS} steps")
        return strategy, (), settle
    steps = []
    for i, item in enumerate(raw):
        if not isinstance(item, LocatedDict):
            c.fail(line_of(item) or raw.line, f"rollback.steps[{i}]", "must be an action (action, do, on, with)")
            continue
        action = _action(c, item, f"rollback.steps[{i}]", i, targets, rollback=True)
        if action is not None:
            steps.append(action)
    return strategy, tuple(steps), settle


def _report(c: _Checker, top: LocatedDict, marks: set[str]) -> tuple[dict[str, tuple[str, str]], dict[str, float]]:
    if "report" not in top:
        return {}, {}
    r = c.mapping(top["report"], "report", {"timings", "objectives"}, top.line_of("report"))
    if r is None:
        return {}, {}
    timings: dict[str, tuple[str, str]] = {}
    raw = r.get("timings", LocatedDict())
    if isinstance(raw, LocatedDict):
        for key, pair in raw.items():
            where = f"report.timings.{key}"
            if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
                c.fail(raw.line_of(key), where, "must be [from_mark, to_mark]")
                continue
            for mark in pair:
                if mark not in marks:
                    c.fail(raw.line_of(key), where, f"mark {mark!r} is set by no step (marks: "
                           f"{', '.join(sorted(marks)) or 'none'})")
            timings[str(key)] = (pair[0], pair[1])
    else:
        c.fail(r.line_of("timings"), "report.timings", "must be a mapping of name: [from_mark, to_mark]")
    objectives: dict[str, float] = {}
    rawo = r.get("objectives", LocatedDict())
    if isinstance(rawo, LocatedDict):
        for key, value in rawo.items():
            where = f"report.objectives.{key}"
            if key not in timings:
                c.fail(rawo.line_of(key), where, "names no timing under report.timings")
                continue
            seconds = parse_duration(value)
            if seconds is None:
                c.fail(rawo.line_of(key), where, "must be a positive duration: seconds, or 30s, 5m")
                continue
            objectives[str(key)] = seconds
    else:
        c.fail(r.line_of("objectives"), "report.objectives", "must be a mapping of timing: duration")
    return timings, objectives


def substitute(value: str, refs: Mapping[str, str], *, quote: bool) -> str:
    """${name} -> its value (shlex-quoted when the string goes to a shell)."""
    import shlex

    def one(match: re.Match[str]) -> str:
        text = refs[match.group(1)]
        return shlex.quote(text) if quote else text

    return _VAR_RE.sub(one, value)


@dataclass
class ResolvedTarget:
    """A target as resolved for one run: its nodes, the pick mode and the seed used (recorded)."""

    name: str
    nodes: list[str]
    mode: str
    seed: int | None = None
    excluded_unavailable: list[str] = field(default_factory=list)
