"""What the README-promise tests (test_promises_*.py) share: nodes that block until told, a `scontrol` that
blocks until told, the jueying CLI as a process a test can interrupt or kill, and readers of the state database.

Nothing here sleeps to win a race: a test waits for a condition it can see (a file a blocked process holds
locked, a line on stderr, a row in the database), with a generous bound, and then acts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shlex
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.cluster import SimCluster, SimNode
from tests.conftest import REPO, Result, run_jueying
from tests.nvmlsim import default_state

# Loaded by every python3 on the simulated nodes (PYTHONPATH in the node's SSH sessions). Files in the node's
# JUEYING_NODE_STATE_DIR, absent in ordinary runs, change what that node's probe does:
#   probe-gate    python3 writes probe-waiting, holds an exclusive lock on it while it waits, and leaves
#                 (exit 3) once the gate is removed (or after 300 s): a probe that hangs until the test says;
#   loadavg       "L1 L5 L15", what os.getloadavg() answers (the nodes share this machine's load);
#   clock-offset  seconds added to time.time() (the node's clock: the age of its facts).
NODE_SITE = '''\
import os
import time

_dir = os.environ.get("JUEYING_NODE_STATE_DIR")
if _dir:
    _gate = os.path.join(_dir, "probe-gate")
    if os.path.exists(_gate):
        import fcntl

        _fd = os.open(os.path.join(_dir, "probe-waiting"), os.O_WRONLY | os.O_CREAT, 0o644)
        fcntl.flock(_fd, fcntl.LOCK_EX)
        _until = time.monotonic() + 300
        while os.path.exists(_gate) and time.monotonic() < _until:
            time.sleep(0.05)
        os._exit(3)
    try:
        with open(os.path.join(_dir, "loadavg")) as _f:
            _load = tuple(float(v) for v in _f.read().split())
        os.getloadavg = lambda: _load
    except OSError:
        pass
    try:
        with open(os.path.join(_dir, "clock-offset")) as _f:
            _offset = float(_f.read())
        _real_time = time.time
        time.time = lambda: _real_time() + _offset
    except OSError:
        pass
'''
NODE_FILES = ("probe-gate", "probe-waiting", "loadavg", "clock-offset", "drained", "drained.tmp")


def node_site_env(base: Path) -> dict[str, str]:
    """`extra_env` for a SimCluster whose python3 obeys the files above."""
    site = base / "node-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NODE_SITE)
    return {"PYTHONPATH": str(site)}


def reset_node(node: SimNode, *extra: str) -> None:
    """The node as it started: default GPUs, empty kernel log, no marker, no trick file; running and thawed."""
    if not node.is_running():
        node.start()
    node.thaw()
    node.write_gpu_state(default_state())
    node.clear_kernel_log()
    for name in (*NODE_FILES, *extra):
        (node.dir / name).unlink(missing_ok=True)


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 60.0) -> None:
    """Poll `condition` until it holds; fail the test, saying what was awaited, after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)


def _locked(path: Path) -> bool:
    """Whether some process holds an exclusive lock on `path` (the probe blocked behind a gate)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def probe_gate(node: SimNode) -> Iterator[Callable[[], None]]:
    """The node's probe blocks until the block ends; yields a function that waits until a probe is blocked.
    On exit the gate opens and the blocked probe (if still there) is awaited until it has left."""
    gate, waiting = node.dir / "probe-gate", node.dir / "probe-waiting"
    waiting.unlink(missing_ok=True)
    gate.touch()

    def blocked() -> None:
        wait_for(lambda: _locked(waiting), f"{node.name}'s probe to block at its gate")

    try:
        yield blocked
    finally:
        gate.unlink(missing_ok=True)
        wait_for(lambda: not _locked(waiting), f"{node.name}'s blocked probe to leave")
        waiting.unlink(missing_ok=True)


class FifoGate:
    """A shell command that blocks until the test lets it go: `command` reads one line from a FIFO while it holds
    a lock on a file, so the test sees when it blocks (the lock is held) and when it has ended (the lock is free),
    whether the test let it go or something killed it (a node kills a command whose SSH connection is lost)."""

    def __init__(self, base: Path, name: str) -> None:
        self.fifo = base / f"{name}.fifo"
        self.lock = base / f"{name}.lock"
        os.mkfifo(self.fifo)
        self.lock.touch()

    @property
    def command(self) -> str:
        read = shlex.quote(f"read go < {shlex.quote(str(self.fifo))}")
        return f"flock {shlex.quote(str(self.lock))} sh -c {read}"

    def blocked(self) -> bool:
        return _locked(self.lock)

    def wait_blocked(self, what: str) -> None:
        wait_for(self.blocked, what)

    def end(self) -> None:
        """Let the blocked command go (if it is still there) and wait until it has ended."""
        def ended() -> bool:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # ENXIO: nobody reads it (yet, or any more)
                if exc.errno != errno.ENXIO:
                    raise
            else:
                try:
                    os.write(fd, b"go\n")
                finally:
                    os.close(fd)
            return not self.blocked()

        wait_for(ended, f"the command blocked on {self.fifo.name} to end")


def jueying_env(env: Mapping[str, str]) -> dict[str, str]:
    """The whole environment of a jueying process started by hand (as run_jueying builds it)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    full.update(env, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return full


class Running:
    """The real CLI left running, so a test can interrupt (SIGINT) or kill (SIGKILL) it at a point it can see;
    stdout and stderr are read as they come (so a test can wait for a line). Always end it with finish()."""

    def __init__(self, env: Mapping[str, str], *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "jueying_cli", *args], env=jueying_env(env), cwd=REPO,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.proc.stdout, self._out), (self.proc.stderr, self._err))]
        for thread in self._readers:
            thread.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_stderr(self, text: str, timeout_s: float = 60.0) -> None:
        """Wait until a line of stderr contains `text` (fail if the process ends first)."""
        wait_for(lambda: any(text in line for line in self._err) or self.proc.poll() is not None,
                 f"a stderr line with {text!r}", timeout_s)
        assert any(text in line for line in self._err), f"ended without {text!r}: {''.join(self._err)}"

    def finish(self, timeout_s: float = 60.0) -> Result:
        """Wait for the process to end (killed, and the test failed, after `timeout_s`); what it printed."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"jueying did not end within {timeout_s:g} s: {''.join(self._err)}") from None
        finally:
            for thread in self._readers:
                thread.join(10)
        return Result(self.proc.returncode, "".join(self._out), "".join(self._err))

    def stop(self) -> None:
        """For cleanup: kill it if it still runs, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for thread in self._readers:
            thread.join(10)


def inventory(sim: SimCluster, path: Path, *top_vars: str, groups: list[str] | None = None) -> Path:
    """A jueying inventory of the cluster's nodes: `top_vars` are lines under vars:, `groups` lines under groups:."""
    lines = ["vars:", "  ssh_user: root", "  expected_gpus: 8", *(f"  {v}" for v in top_vars)]
    if groups:
        lines += ["groups:", *(f"  {g}" for g in groups)]
    lines += ["nodes:", *(f"  {n.name}: {{address: {n.address}}}" for n in sim.nodes)]
    path.write_text("\n".join(lines) + "\n")
    return path


def jy(env: Mapping[str, str], *args: str, timeout: float = 120) -> Result:
    return run_jueying(list(args), env, timeout=timeout)


def table(db: Path, name: str) -> list[tuple[Any, ...]]:
    """Every row of a state database table ([] when the database or the table does not exist yet)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT * FROM {name} ORDER BY rowid").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def audit_rows(db: Path) -> list[dict[str, Any]]:
    """The audit log straight from the database, oldest first."""
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM audit ORDER BY id")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def ledger_drained(db: Path) -> dict[str, str | None]:
    """{node: reason} of the builtin ledger's drained nodes."""
    return {row[0]: row[2] for row in table(db, "ledger") if row[1]}


def markers(sim: SimCluster) -> dict[str, str]:
    """{node: marker content} of the nodes the builtin backend marked drained."""
    return {n.name: (n.dir / "drained").read_text() for n in sim.nodes if (n.dir / "drained").exists()}


def slurm_show(env: Mapping[str, str], *nodes: str) -> dict[str, tuple[str, str]]:
    """{node: (State, Reason)} as `scontrol show node` prints them: what Slurm itself says."""
    out = subprocess.run(["scontrol", "show", "node", "-o", *([",".join(nodes)] if nodes else [])],
                         env=jueying_env(env), capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        name = line.split("NodeName=", 1)[1].split()[0]
        state = line.split(" State=", 1)[1].split()[0]
        reason = line.split(" Reason=", 1)[1].strip() if " Reason=" in line else ""
        found[name] = (state, reason)
    return found


def scontrol_shim(bindir: Path, *, log: Path, block_on: str | None = None, gate: FifoGate | None = None) -> str:
    """A `scontrol` earlier on PATH that logs each call to `log` and runs the real one; with `block_on` (a shell
    case pattern over the arguments) and `gate`, such a call blocks on the gate after the real call has acted,
    before jueying hears back. Returns the PATH to use."""
    bindir.mkdir(exist_ok=True)
    real = subprocess.run(["sh", "-c", "command -v scontrol"], capture_output=True, text=True,
                          check=True).stdout.strip()
    script = f'#!/bin/sh\necho "$*" >> {shlex.quote(str(log))}\n{real} "$@"; rc=$?\n'
    if block_on is not None and gate is not None:
        script += f'case "$*" in {block_on}) {gate.command};; esac\n'
    (bindir / "scontrol").write_text(script + "exit $rc\n")
    (bindir / "scontrol").chmod(0o755)
    return f"{bindir}:{os.environ['PATH']}"
