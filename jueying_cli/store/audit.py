"""audit: append-only log of every state change jueying made or tried. An entry is written `pending` before
acting (with the run that wrote it) and settled after, so a crash mid-action leaves a trace to reconcile.

Only the run that wrote a pending entry settles it while it lives; `settle_refusal` says when another may:
- same host: once that pid is gone, a zombie, or another process (its start differs by more than
  SAME_START_S: the pid was reused);
- another host (a shared state database): its liveness cannot be seen from here, so only once the entry is
  OTHER_HOST_AGE_S old (24 h: far longer than any run keeps an entry pending);
- no run recorded (written before schema 2): as before, by the next run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jueying_cli.store.db import Database

_IMPORTED_AT = time.time()  # stands in for the process start where /proc cannot tell
SAME_START_S = 1.0  # process starts this close are one process (boot time moves when the clock is stepped)
OTHER_HOST_AGE_S = 24 * 3600.0  # a pending entry of another host's run is taken as abandoned this old


@dataclass(frozen=True)
class RunOwner:
    """The process that wrote an entry: pid, host name and process start (unix s, 10 ms steps), so a later
    check can tell a live run from a dead one whose pid was reused (compare starts within ~1 s: the
    kernel's boot time moves when the clock is stepped)."""

    pid: int
    host: str
    started_at: float

    def same_process(self, other: RunOwner) -> bool:
        return ((self.host, self.pid) == (other.host, other.pid)
                and abs(self.started_at - other.started_at) <= SAME_START_S)

    @classmethod
    def current(cls) -> RunOwner:
        import socket  # here: only runs that act need it, and `jueying history` should start fast

        pid = os.getpid()
        return cls(pid, socket.gethostname(), process_started_at(pid) or _IMPORTED_AT)


def process_started_at(pid: int) -> float | None:
    """When process `pid` of this host started (unix s): boot time + its start tick; None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])  # field 22; the name in (...) may hold spaces
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return round(boot + ticks / os.sysconf("SC_CLK_TCK"), 2)


def process_alive(pid: int, started_at: float) -> bool:
    """Whether the process that started at `started_at` (unix s) as `pid` still runs on this host: the pid
    exists, is no zombie, and started then (else the pid was reused). Without /proc: the pid exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        stat = ""
    if stat:
        if stat[stat.rindex(")") + 2:].split()[0] in ("Z", "X"):
            return False
        started = process_started_at(pid)
        if started is not None:
            return abs(started - started_at) <= SAME_START_S
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def settle_refusal(owner: RunOwner | None, at: float, me: RunOwner, now: float) -> str | None:
    """None when the run `me` may settle a pending entry written at `at` (unix s) by `owner`; else why not."""
    if owner is None:
        return None
    if owner.host != me.host:
        if now - at >= OTHER_HOST_AGE_S:
            return None
        return (f"run pid {owner.pid} on {owner.host}: another host's entries are settled once "
                f"{OTHER_HOST_AGE_S / 3600:g} h old")
    if owner.same_process(me):
        return "this run's own"
    if process_alive(owner.pid, owner.started_at):
        return f"run pid {owner.pid} on this host is still running"
    return None


@dataclass(frozen=True)
class AuditEntry:
    at: float  # unix s the entry was written
    actor: str
    action: str  # vocab.ChangeKind
    node: str
    backend: str
    reason: str | None = None
    before_state: str | None = None
    before_reason: str | None = None
    after_state: str | None = None
    after_reason: str | None = None
    result: str = "pending"  # vocab.AuditResult
    message: str | None = None
    run_id: str | None = None
    id: int | None = None  # set once stored
    owner: RunOwner | None = None  # None: written before schema 2; intent() fills in this process


@dataclass(frozen=True)
class Settlement:
    """How a pending entry ended: result (done, failed, not_done), the state seen after, and why."""

    id: int
    result: str
    after_state: str | None = None
    after_reason: str | None = None
    message: str | None = None  # None keeps the message written with the intent


_COLUMNS = ("id", "at", "actor", "action", "node", "backend", "reason", "before_state", "before_reason",
            "after_state", "after_reason", "result", "message", "run_id", "run_pid", "run_host", "run_started_at")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM audit"  # noqa: S608 - constant identifiers only


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    (entry_id, at, actor, action, node, backend, reason, before_state, before_reason, after_state, after_reason,
     result, message, run_id, pid, host, started) = row
    owner = RunOwner(pid, host, started) if None not in (pid, host, started) else None
    return AuditEntry(at, actor, action, node, backend, reason, before_state, before_reason, after_state,
                      after_reason, result, message, run_id, entry_id, owner)


class Audit:
    def __init__(self, db: Database) -> None:
        self._db = db

    def intent(self, entries: Iterable[AuditEntry]) -> list[int]:
        """Write entries as `pending` before acting, owned by entry.owner or else this process; their ids."""
        ids = []
        me = RunOwner.current()
        with self._db.transaction() as tx:
            for e in entries:
                owner = e.owner or me
                cur = tx.execute(
                    "INSERT INTO audit (at, actor, action, node, backend, reason, before_state, before_reason, "
                    "after_state, after_reason, result, message, run_id, run_pid, run_host, run_started_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
                    (e.at, e.actor, e.action, e.node, e.backend, e.reason, e.before_state, e.before_reason,
                     e.after_state, e.after_reason, e.message, e.run_id, owner.pid, owner.host, owner.started_at))
                ids.append(int(cur.lastrowid or 0))
        return ids

    def finish(self, settlements: Iterable[Settlement]) -> int:
        """Settle entries written by intent(); an entry no longer pending is left as it is. Returns how many
        were settled by this call."""
        settled = 0
        with self._db.transaction() as tx:
            for s in settlements:
                cur = tx.execute("UPDATE audit SET result = ?, after_state = ?, after_reason = ?, "
                                 "message = COALESCE(?, message) WHERE id = ? AND result = 'pending'",
                                 (s.result, s.after_state, s.after_reason, s.message, s.id))
                settled += max(0, cur.rowcount)
        return settled

    def pending(self, nodes: Iterable[str] | None = None) -> list[AuditEntry]:
        """Every entry still `pending` (of these nodes, or all), oldest first."""
        entries = [_entry(row) for row in self._db.read(f"{_SELECT} WHERE result = 'pending' ORDER BY id")]
        if nodes is None:
            return entries
        wanted = set(nodes)
        return [e for e in entries if e.node in wanted]

    def resumed_since(self, node: str, since: float) -> AuditEntry | None:
        """The newest resume of `node` made (settled done) after `since` (unix s), if any: a drain decided on
        facts read before it would undo an operator's or a drill's resume on stale evidence."""
        rows = self._db.read(f"{_SELECT} WHERE node = ? AND action = 'resume' AND result = 'done' AND at > ? "
                             "ORDER BY id DESC LIMIT 1", [node, since])
        return _entry(rows[0]) if rows else None

    def log(self, node: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest `limit` entries (for one node, or all), oldest first."""
        where, params = ("WHERE node = ?", [node]) if node else ("", [])
        rows = self._db.read(f"{_SELECT} {where} ORDER BY id DESC LIMIT ?", [*params, limit])
        return [_entry(row) for row in reversed(rows)]
