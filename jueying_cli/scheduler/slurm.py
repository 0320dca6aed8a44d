"""Slurm backend: scontrol/squeue, on this machine or on the controller host over SSH.

State is read back with `scontrol show node -o` (one line per node, every Slurm version) rather than
trusting that an update worked. Commands are argv lists; through SSH they are quoted with shlex, and a
drain reason never passes through a shell unquoted.
"""

from __future__ import annotations

import calendar
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

from jueying_cli.errors import SchedulerError
from jueying_cli.inventory.model import Node
from jueying_cli.inventory.select import expand
from jueying_cli.scheduler.base import NodeState
from jueying_cli.transport.base import Command, Transport
from jueying_cli.vocab import Backend, SchedulerState

Runner = Callable[[list[str]], tuple[int, str, str]]
SCONTROL_TIMEOUT_S = 30.0


def local_runner(argv: list[str]) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=SCONTROL_TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        raise SchedulerError(f"{argv[0]} not found: is this a Slurm client host? ({exc.strerror})") from exc
    except subprocess.TimeoutExpired as exc:
        raise SchedulerError(f"{argv[0]} did not answer within {SCONTROL_TIMEOUT_S:.0f} s") from exc
    return proc.returncode, proc.stdout, proc.stderr


def remote_runner(transport: Transport, controller: Node) -> Runner:
    """Run scontrol on the controller node through a jueying transport (argv quoted with shlex)."""

    def run(argv: list[str]) -> tuple[int, str, str]:
        outcome = transport.run(controller, Command(script=shlex.join(argv), timeout_s=SCONTROL_TIMEOUT_S),
                                time.monotonic() + SCONTROL_TIMEOUT_S + 15)
        if outcome.rc is None:
            raise SchedulerError(f"Slurm controller {outcome.node} {outcome.status}: {outcome.error}")
        return outcome.rc, outcome.stdout, outcome.stderr

    return run


_REASON_RE = re.compile(r" Reason=(.*?)(?: \[([^\]@]+)@([0-9T:-]+)\])?\s*$")


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))) - _utc_offset()
    except ValueError:
        return None


def _utc_offset() -> float:
    """Slurm prints local time; seconds east of UTC for now."""
    return float(time.localtime().tm_gmtoff)


_BASE_STATES = {"IDLE": SchedulerState.IDLE, "ALLOCATED": SchedulerState.ALLOCATED, "MIXED": SchedulerState.MIXED,
                "COMPLETING": SchedulerState.ALLOCATED}


def parse_state(raw: str) -> tuple[SchedulerState, bool]:
    """Slurm's State= (e.g. MIXED+DRAIN, IDLE*, DOWN+NOT_RESPONDING) -> (normalised state, drain flag)."""
    words = raw.upper().replace("*", "+NOT_RESPONDING").split("+")
    base, flags = words[0], set(words[1:])
    drain = "DRAIN" in flags or base in ("DRAINED", "DRAINING", "DRAIN")
    if base in ("DOWN", "FAIL", "FAILING", "FUTURE") or "NOT_RESPONDING" in flags:
        return SchedulerState.DOWN, drain
    if drain:
        busy = base in ("ALLOCATED", "MIXED", "COMPLETING", "DRAINING")
        return (SchedulerState.DRAINING if busy else SchedulerState.DRAINED), True
    return _BASE_STATES.get(base, SchedulerState.UNKNOWN), False


def parse_show_node(text: str) -> dict[str, NodeState]:
    """Lines of `scontrol show node -o` -> states by node name."""
    states = {}
    for line in text.splitlines():
        name = re.search(r"(?:^|\s)NodeName=(\S+)", line)
        state = re.search(r"(?:^|\s)State=(\S+)", line)
        if not name or not state:
            continue
        reason = user = stamp = None
        match = _REASON_RE.search(line)
        if match:
            reason, user, stamp = match.group(1).strip() or None, match.group(2), match.group(3)
            if reason in ("(null)", "none"):
                reason = None
        normalised, drain = parse_state(state.group(1))
        partitions = re.search(r"(?:^|\s)Partitions=(\S+)", line.split(" Reason=", 1)[0])  # not in a reason
        states[name.group(1)] = NodeState(node=name.group(1), state=normalised, drain=drain, reason=reason,
                                          reason_user=user, reason_time=_parse_time(stamp), raw=state.group(1),
                                          partitions=tuple(partitions.group(1).split(",")) if partitions else ())
    return states


class SlurmScheduler:
    name = Backend.SLURM

    def __init__(self, runner: Runner = local_runner) -> None:
        self._run = runner

    def _call(self, argv: list[str]) -> str:
        rc, out, err = self._run(argv)
        if rc != 0:
            raise SchedulerError(f"{shlex.join(argv[:3])} failed (exit {rc}): {(err or out).strip()[:300]}")
        return out

    def states(self, nodes: Sequence[str]) -> Mapping[str, NodeState]:
        if not nodes:
            return {}
        rc, out, err = self._run(["scontrol", "show", "node", "-o", ",".join(nodes)])
        if rc != 0 and not out.strip():
            if "not found" in (err or "").lower() and len(nodes) > 1:
                return self._states_one_by_one(nodes)
            if "not found" in (err or "").lower():
                return {}
            raise SchedulerError(f"scontrol show node failed (exit {rc}): {err.strip()[:300]}")
        states = parse_show_node(out)
        jobs = self._jobs(list(states))
        return {n: _with_jobs(s, jobs.get(n, ())) for n, s in states.items()}

    def _states_one_by_one(self, nodes: Sequence[str]) -> Mapping[str, NodeState]:
        found: dict[str, NodeState] = {}
        for node in nodes:
            found.update(self.states([node]))
        return found

    def all_states(self) -> Mapping[str, NodeState]:
        return parse_show_node(self._call(["scontrol", "show", "node", "-o"]))

    def _jobs(self, nodes: list[str]) -> dict[str, tuple[str, ...]]:
        if not nodes:
            return {}
        out = self._call(["squeue", "-h", "-t", "RUNNING,COMPLETING,SUSPENDED", "-w", ",".join(nodes),
                          "-o", "%i %N"])
        jobs: dict[str, list[str]] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2:
                for node in expand(parts[1], "squeue node list"):
                    jobs.setdefault(node, []).append(parts[0])
        return {n: tuple(j) for n, j in jobs.items()}

    def drain(self, nodes: Sequence[str], reason: str) -> None:
        self._call(["scontrol", "update", f"NodeName={','.join(nodes)}", "State=DRAIN", f"Reason={reason}"])

    def resume(self, nodes: Sequence[str]) -> None:
        self._call(["scontrol", "update", f"NodeName={','.join(nodes)}", "State=RESUME"])


def _with_jobs(state: NodeState, jobs: tuple[str, ...]) -> NodeState:
    from dataclasses import replace

    return replace(state, jobs=jobs)
