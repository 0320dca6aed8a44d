"""A real multi-node Slurm cluster on this one host: munged, slurmctld and one slurmd per node.

Debian's packages, unmodified (``slurmctld``, ``slurmd``, ``slurm-client``, ``munge``; Slurm 22.05.8 on
Debian 12). Nothing is installed or written outside ``base_dir``: each cluster has its own MUNGE key and
daemon, its own ``slurm.conf`` and its own ports, so several clusters can run at once and none of them
touches ``/etc/slurm``, ``/etc/munge`` or the system's munged.

Processes, all started with ``subprocess.Popen`` and owned by the :class:`SlurmCluster`:

- ``munged -F --force --socket=<run>/munge.socket --key-file=<base>/munge/munge.key ...``: the cluster's
  own MUNGE daemon. Slurm finds it through ``AuthInfo=socket=<run>/munge.socket`` in slurm.conf, which
  both ``auth/munge`` and ``cred/munge`` read, in the daemons and in every client command. libmunge has
  no environment variable for the socket (only ``munge --socket``), so ``SLURM_CONF`` is all a client
  needs (see :attr:`SlurmCluster.env`).
- ``slurmctld -D -f <base>/etc/slurm.conf``: the controller, on ``SlurmctldHost=<hostname>(127.0.0.1)``.
- per node, ``unshare --uts --pid --fork --mount-proc --kill-child sh -c 'hostname NODE || exit 1;
  slurmd -D -N NODE -f <conf> & wait $!'``: the documented "multiple slurmd" set-up (``slurmd -N``, a
  ``Port=`` per node), each node in its own PID namespace with its own hostname (``NodeHostname`` is the
  node's name, ``srun hostname`` prints it). ``sh`` is the namespace's PID 1 and reaps: slurmstepd
  daemonizes (double fork) away from slurmd, and this machine's PID 1 does not reap orphans, so every
  finished step would otherwise stay a zombie. Killing that ``sh`` (:meth:`SlurmCluster.stop_node`,
  :meth:`SlurmCluster.down`) makes the kernel kill every process of the node: slurmd, slurmstepd and
  the job's processes; unshare, our child, reaps it.

Every process gets ``JUEYING_SLURM_CLUSTER=<base_dir>`` in its environment and is started under
``setpriv --pdeathsig SIGKILL`` when :meth:`SlurmCluster.up` runs on the main thread (so a test run that
is killed outright does not leave daemons behind). :meth:`SlurmCluster.down` is idempotent, registered
with ``atexit`` and also kills anything left whose environment, command line or working directory
points into ``base_dir``.

JSON: Debian 12's Slurm 22.05.8 has **no** ``scontrol ... --json`` ("scontrol: unrecognized option
'--json'"; later Slurm releases have it), but ``sinfo --json`` and ``squeue --json`` work (openapi v0.0.38 and
``serializer/json``, in ``slurm-wlm-basic-plugins``): a node there has ``"state": "idle"``,
``"state_flags": ["DRAIN"]``, ``reason``, ``reason_set_by_user``, ``reason_changed_at``.
:meth:`SlurmCluster.node_state` tries ``scontrol --json``, then ``sinfo --json``, then parses
``scontrol -o show node``.

Behaviour worth knowing (real Slurm, not the harness): after ``State=RESUME`` a node is ``idle*``
(NOT_RESPONDING) until it answers the ping the RESUME triggers (about a second); a batch job is
RUNNING 0.9-2 s after ``sbatch`` here even with ``batch_sched_delay=0`` (the controller schedules it
later, not in the submit RPC; 22.05's ``sbatch`` has no ``--immediate``), whereas ``srun`` is allocated
at once.

Ports come from a random block outside the kernel's ephemeral range (``ip_local_port_range``), checked
free, so no outgoing connection of another test can take one between the check and the daemon's
bind; if a daemon still finds its port taken (another cluster chose the same block), :meth:`up` starts
again on new ports (3 tries). ``port_base`` fixes them instead (controller at ``port_base``, node *i*
at ``port_base + 1 + i``).

Only 127.0.0.1 is ever contacted: every ``NodeAddr`` and the controller address are 127.0.0.1.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psutil

from tests.machine import node_unshare

SLURMCTLD = "/usr/sbin/slurmctld"
SLURMD = "/usr/sbin/slurmd"
MUNGED = "/usr/sbin/munged"
MARKER = "JUEYING_SLURM_CLUSTER"
DEFAULT_NODES: tuple[str, ...] = ("node01", "node02", "node03", "node04")
# sun_path holds 108 bytes; slurmd puts <spool>/<node>_<job>.<step> sockets there too.
_MAX_RUN_DIR = 70
_CMD_TIMEOUT = 30.0


class SlurmError(RuntimeError):
    """The cluster could not be brought up, or a Slurm command failed."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def find_free_ports(count: int, *, attempts: int = 200) -> list[int]:
    """A block of ``count`` consecutive free TCP ports outside the ephemeral range, at random."""
    eph_low, eph_high = _ephemeral_range()
    candidates = [(10000, min(eph_low, 65536)), (max(eph_high + 1, 10000), 65536)]
    spans = [(lo, hi - count) for lo, hi in candidates if hi - count > lo]
    if not spans:
        raise SlurmError("no port range outside the ephemeral range")
    rng = random.SystemRandom()
    for _ in range(attempts):
        lo, hi = rng.choice(spans)
        start = rng.randrange(lo, hi)
        ports = list(range(start, start + count))
        if all(_port_free(p) for p in ports):
            return ports
    raise SlurmError(f"no block of {count} free ports found")


def _children(pid: int) -> list[int]:
    """Child pids of ``pid`` (from /proc/PID/task/*/children; psutil's scan of all of /proc otherwise)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return [int(c) for task in tasks for c in (task / "children").read_text().split()]
    except (OSError, ValueError):
        with contextlib.suppress(psutil.Error):
            return [child.pid for child in psutil.Process(pid).children()]
    return []


def _wait_gone(procs: Sequence[psutil.Process], timeout_s: float) -> None:
    """Wait until each process has exited (a zombie counts: nobody may be left to reap it)."""
    deadline = time.monotonic() + timeout_s
    pending = list(procs)
    while pending and time.monotonic() < deadline:
        still = []
        for proc in pending:
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    still.append(proc)
        pending = still
        if pending:
            time.sleep(0.02)


def _short_hostname() -> str:
    return socket.gethostname().split(".")[0]


def _child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any SLURM_* or MUNGE_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_",
                                                                      "SQUEUE_", "SINFO_", "MUNGE_"))}
    env.update(extra or {})
    return env


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path}: missing)"
    return f"--- {path} (last {lines} lines) ---\n" + "\n".join(text[-lines:])


def _cgroup_mounted() -> bool:
    """Whether a cgroup filesystem (v1 under a tmpfs, or v2) is mounted on /sys/fs/cgroup."""
    return os.path.ismount("/sys/fs/cgroup")


class SlurmCluster:
    """munged + slurmctld + one slurmd per node, all under ``base_dir``; see the module docstring.

    Layout: ``etc/slurm.conf`` (and an empty ``etc/plugstack.conf``), ``munge/`` (key, pid, seed),
    ``state/`` (StateSaveLocation), ``log/`` (slurmctld.log, slurmd-<node>.log, and each daemon's
    stdout/stderr: munged.out, slurmctld.out, slurmd-<node>.out, which also has unshare's messages),
    ``jobs/`` (working directory and output of :meth:`submit_sleep` jobs) and ``run/`` with the MUNGE
    socket, pid files and ``spool/<node>``. ``run/`` moves to a short directory under /tmp if
    ``base_dir`` is too long for a Unix socket path (it is then removed by :meth:`down`).
    """

    def __init__(
        self,
        base_dir: Path,
        nodes: Sequence[str] = DEFAULT_NODES,
        *,
        cluster_name: str = "jytest",
        partition: str = "gpu",
        port_base: int | None = None,
        cpus: int | None = None,
        real_memory_mb: int = 1000,
        slurmd_timeout_s: int = 10,
        debug: str = "info",
        extra_conf: Sequence[str] = (),
    ) -> None:
        if not nodes:
            raise ValueError("a cluster needs at least one node")
        if len(set(nodes)) != len(nodes):
            raise ValueError(f"duplicate node names in {list(nodes)}")
        self.base_dir = Path(base_dir).resolve()
        self.nodes: tuple[str, ...] = tuple(nodes)
        self.cluster_name = cluster_name
        self.partition = partition
        self.port_base = port_base
        self.cpus = cpus or os.cpu_count() or 1
        self.real_memory_mb = real_memory_mb
        self.slurmd_timeout_s = slurmd_timeout_s
        self.debug = debug
        self.extra_conf: tuple[str, ...] = tuple(extra_conf)  # slurm.conf lines of a test's own (before the nodes)
        self.hostname = _short_hostname()

        self.etc_dir = self.base_dir / "etc"
        self.conf_path = self.etc_dir / "slurm.conf"
        self.munge_dir = self.base_dir / "munge"
        self.state_dir = self.base_dir / "state"
        self.log_dir = self.base_dir / "log"
        self.jobs_dir = self.base_dir / "jobs"
        self._own_run_dir = len(str(self.base_dir / "run")) > _MAX_RUN_DIR
        self.run_dir = self.base_dir / "run"  # replaced in up() if too long for socket paths
        self.ctld_port = 0
        self.node_ports: dict[str, int] = {}

        self._munged: subprocess.Popen[bytes] | None = None
        self._ctld: subprocess.Popen[bytes] | None = None
        self._slurmd: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._atexit_registered = False
        self._started = False
        self._json_sources = ["scontrol", "sinfo"]

    # ----------------------------------------------------------------------------------------- paths

    @property
    def munge_socket(self) -> Path:
        return self.run_dir / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """What a client (scontrol, sinfo, squeue, srun, sbatch, jueying) needs to talk to this cluster.

        Only ``SLURM_CONF``: the MUNGE socket is named in slurm.conf (``AuthInfo=socket=...``). Merge it
        into an environment without other ``SLURM_*`` variables (see :meth:`process_env`).
        """
        return {"SLURM_CONF": str(self.conf_path)}

    def process_env(self) -> dict[str, str]:
        """The whole environment for a client process: ``os.environ`` minus SLURM_*/MUNGE_*, plus :attr:`env`."""
        return _child_env(self.env)

    # ------------------------------------------------------------------------------------ slurm.conf

    def slurm_conf(self) -> str:
        """The slurm.conf text for the current ports."""
        run = self.run_dir
        lines = [
            f"# Written by tests/slurm for a test cluster under {self.base_dir}",
            f"ClusterName={self.cluster_name}",
            f"SlurmctldHost={self.hostname}(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.node_ports[self.nodes[0]]}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={self.state_dir}",
            f"SlurmdSpoolDir={run}/spool/%n",
            f"SlurmctldPidFile={run}/slurmctld.pid",
            f"SlurmdPidFile={run}/slurmd-%n.pid",
            f"SlurmctldLogFile={self.log_dir}/slurmctld.log",
            f"SlurmdLogFile={self.log_dir}/slurmd-%n.log",
            f"SlurmctldDebug={self.debug}",
            f"SlurmdDebug={self.debug}",
            f"PlugStackConfig={self.etc_dir}/plugstack.conf",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/builtin",
            # Start a job at submit time (batch jobs wait up to batch_sched_delay=3 s by default).
            "SchedulerParameters=batch_sched_delay=0",
            "ReturnToService=2",
            "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SlurmctldTimeout=10",
            f"SlurmdTimeout={self.slurmd_timeout_s}",
            "MessageTimeout=10",
            "InactiveLimit=0",
            "KillWait=2",
            "MinJobAge=300",
            "MailProg=/bin/true",
            # Trust the node lines, whatever this host has (16 "nodes" share its CPUs and memory).
            "SlurmdParameters=config_overrides",
        ]
        lines += self.extra_conf
        for name in self.nodes:
            lines.append(
                f"NodeName={name} NodeHostname={name} NodeAddr=127.0.0.1 Port={self.node_ports[name]} "
                f"CPUs={self.cpus} RealMemory={self.real_memory_mb} State=UNKNOWN"
            )
        lines.append(
            f"PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES"
        )
        return "\n".join(lines) + "\n"

    def _choose_ports(self) -> None:
        count = len(self.nodes) + 1
        ports = list(range(self.port_base, self.port_base + count)) if self.port_base else find_free_ports(count)
        self.ctld_port = ports[0]
        self.node_ports = dict(zip(self.nodes, ports[1:], strict=True))

    def _prepare(self) -> None:
        if self._own_run_dir and self.run_dir == self.base_dir / "run":
            self.run_dir = Path(tempfile.mkdtemp(prefix="jys-", dir="/tmp"))
        for directory in (self.etc_dir, self.munge_dir, self.state_dir, self.log_dir, self.jobs_dir, self.run_dir):
            directory.mkdir(parents=True, exist_ok=True)
        # munged refuses group/world-writable directories on the paths it uses.
        for directory in (self.base_dir, self.munge_dir, self.run_dir):
            directory.chmod(0o755)
        for name in self.nodes:
            spool = self.run_dir / "spool" / name
            spool.mkdir(parents=True, exist_ok=True)
            spool.chmod(0o755)
        key = self.munge_dir / "munge.key"
        if not key.exists():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(os.urandom(1024))
        (self.etc_dir / "plugstack.conf").write_text("# no SPANK plugins\n")
        if not _cgroup_mounted():
            # slurmd (22.05) autodetects the cgroup version from /sys/fs/cgroup and refuses to start when
            # nothing is mounted there (a chroot). No plugin here uses cgroups: name a version, detect none.
            (self.etc_dir / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")
        self._choose_ports()
        self.conf_path.write_text(self.slurm_conf())

    # ------------------------------------------------------------------------------------- processes

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        env = _child_env({MARKER: str(self.base_dir), "SLURM_CONF": str(self.conf_path)})
        if threading.current_thread() is threading.main_thread() and shutil.which("setpriv"):
            # Die with this process: pdeathsig fires when the *thread* that forked exits.
            argv = ["setpriv", "--pdeathsig", "SIGKILL", "--", *argv]
        with open(self.log_dir / f"{log_name}.out", "ab") as out:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, cwd=self.base_dir, start_new_session=True)

    def _start_munged(self) -> None:
        self.munge_socket.unlink(missing_ok=True)
        self._munged = self._spawn([
            MUNGED, "-F", "--force",
            f"--socket={self.munge_socket}",
            f"--key-file={self.munge_dir / 'munge.key'}",
            f"--pid-file={self.munge_dir / 'munged.pid'}",
            f"--seed-file={self.munge_dir / 'munged.seed'}",
            "--num-threads=4",
        ], "munged")
        deadline = time.monotonic() + 10
        while not self.munge_socket.exists():
            if self._munged.poll() is not None:
                raise SlurmError("munged exited at start\n" + _tail(self.log_dir / "munged.out"))
            if time.monotonic() > deadline:
                raise SlurmError("munged did not create its socket in 10 s\n" + _tail(self.log_dir / "munged.out"))
            time.sleep(0.02)

    def _start_ctld(self) -> None:
        # -i: ignore unreadable state; -c would discard saved jobs, so a restarted controller keeps them.
        self._ctld = self._spawn([SLURMCTLD, "-D", "-i", "-f", str(self.conf_path)], "slurmctld")

    def _slurmd_argv(self, name: str) -> list[str]:
        # sh stays PID 1 of the namespace and reaps: slurmstepd daemonizes (double fork), so each finished
        # step would otherwise stay a zombie of slurmd until the node ends. `wait` reaps any child.
        slurmd = shlex.join([SLURMD, "-D", "-N", name, "-f", str(self.conf_path)])
        inner = f"hostname {shlex.quote(name)} || exit 1; {slurmd} & wait $!"
        return [*node_unshare(), "sh", "-c", inner]

    def start_node(self, name: str) -> None:
        """Start the slurmd of ``name`` (again); it registers with the controller by itself."""
        self._check_node(name)
        proc = self._slurmd.get(name)
        if proc is not None and proc.poll() is None:
            return
        self._slurmd[name] = self._spawn(self._slurmd_argv(name), f"slurmd-{name}")

    def stop_node(self, name: str, *, timeout_s: float = 10) -> None:
        """SIGKILL the slurmd of ``name``: its job steps and their processes end with it.

        The controller notices after ``SlurmdTimeout`` (the node becomes ``down*``, "Not responding").
        """
        self._check_node(name)
        proc = self._slurmd.pop(name, None)
        if proc is not None:
            self._end_namespace(proc, timeout_s)

    def _check_node(self, name: str) -> None:
        if name not in self.nodes:
            raise KeyError(f"{name} is not a node of this cluster ({', '.join(self.nodes)})")

    @staticmethod
    def _kill_namespace(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the namespace's PID 1 (the ``sh`` that runs slurmd): the kernel ends the whole node.

        ``proc`` is unshare (setpriv exec()s it); unshare, our child, then reaps its child and exits.
        Killing unshare instead would leave its child to this machine's PID 1, which never reaps.
        """
        if proc.poll() is not None:
            return
        for pid in _children(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    @classmethod
    def _end_namespace(cls, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        cls._kill_namespace(proc)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)

    @staticmethod
    def _end_daemon(proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout_s)

    # ------------------------------------------------------------------------------------- lifecycle

    def up(self, timeout_s: float = 60) -> Self:
        """Start munged, slurmctld and every slurmd; return once ``sinfo`` shows every node idle."""
        with self._lock:
            if self._started:
                return self
            if not self._atexit_registered:
                atexit.register(self.down)
                self._atexit_registered = True
            self._started = True
        attempts = 1 if self.port_base else 3
        for attempt in range(1, attempts + 1):
            try:
                self._up_once(timeout_s)
                return self
            except SlurmError as exc:
                port_clash = "Address already in use" in str(exc)
                self._stop_processes()
                if not port_clash or attempt == attempts:
                    self.down()
                    raise
        raise AssertionError("unreachable")

    def _up_once(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        self._prepare()
        self._start_munged()
        self._start_ctld()
        self._wait_controller(deadline)
        for name in self.nodes:
            self.start_node(name)
        self.wait_nodes("idle", timeout_s=max(deadline - time.monotonic(), 1.0))

    def _wait_controller(self, deadline: float) -> None:
        """Wait until ``scontrol ping`` says UP: slurmd registers at start-up, and a registration that
        finds no controller listening is retried only about a second later."""
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                if " is UP" in self.run("scontrol", "ping", check=False, timeout=5).stdout:
                    return
            self._check_alive()
            if time.monotonic() > deadline:
                raise SlurmError("slurmctld does not answer `scontrol ping`\n" + self.diagnostics([]))
            time.sleep(0.02)

    def wait_nodes(self, *states: str, nodes: Iterable[str] | None = None, timeout_s: float = 30) -> dict[str, str]:
        """Wait until every node (or ``nodes``) is in one of ``states`` (``sinfo %T``, e.g. idle, drained)."""
        wanted = set(nodes or self.nodes)
        deadline = time.monotonic() + timeout_s
        seen: dict[str, str] = {}
        last_error = ""
        while True:
            self._check_alive()
            try:
                seen = self.sinfo_states()
                last_error = ""
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                last_error = str(getattr(exc, "stderr", "") or exc).strip()
            if seen and all(seen.get(name) in states for name in wanted):
                return seen
            if time.monotonic() > deadline:
                raise SlurmError(f"nodes not {'/'.join(states)} after {timeout_s:.0f} s: {seen} {last_error}\n"
                                 + self.diagnostics())
            time.sleep(0.1)

    def _check_alive(self) -> None:
        dead = []
        if self._munged is not None and self._munged.poll() is not None:
            dead.append("munged")
        if self._ctld is not None and self._ctld.poll() is not None:
            dead.append("slurmctld")
        dead_nodes = [n for n, p in self._slurmd.items() if p.poll() is not None]
        dead += [f"slurmd {n}" for n in dead_nodes]
        if dead:
            raise SlurmError(f"exited: {', '.join(dead)}\n" + self.diagnostics(dead_nodes[:4]))

    def diagnostics(self, nodes: Sequence[str] | None = None) -> str:
        """The tails of the daemons' logs (those of ``nodes``, default the first four), for error messages."""
        paths = [self.log_dir / "munged.out", self.log_dir / "slurmctld.out"]
        for name in self.nodes[:4] if nodes is None else nodes:
            paths.append(self.log_dir / f"slurmd-{name}.out")
        return "\n".join(_tail(p) for p in paths if p.exists())

    def _stop_processes(self, timeout_s: float = 10) -> None:
        """Signal everything first (SIGKILL to each node, SIGTERM to slurmctld and munged), then reap."""
        slurmd, self._slurmd = self._slurmd, {}
        ctld, self._ctld = self._ctld, None
        munged, self._munged = self._munged, None
        for proc in slurmd.values():
            self._kill_namespace(proc)
        for daemon in (ctld, munged):
            if daemon is not None and daemon.poll() is None:
                daemon.terminate()
        for proc in slurmd.values():
            self._end_namespace(proc, timeout_s)
        self._end_daemon(ctld, timeout_s)
        self._end_daemon(munged, timeout_s)

    def down(self) -> None:
        """Stop every process this cluster started (slurmd and its steps, slurmctld, munged). Idempotent."""
        with self._lock:
            self._stop_processes()
            strays = self.stray_processes()
            for proc in strays:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            _wait_gone(strays, timeout_s=5)
            if self._own_run_dir and self.run_dir != self.base_dir / "run":
                shutil.rmtree(self.run_dir, ignore_errors=True)
                self.run_dir = self.base_dir / "run"
            self._started = False
            if self._atexit_registered:
                atexit.unregister(self.down)
                self._atexit_registered = False

    def stray_processes(self) -> list[psutil.Process]:
        """Live processes (not zombies) of this cluster: by environment marker, command line or cwd."""
        base = str(self.base_dir) + os.sep
        run = str(self.run_dir) + os.sep
        mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
        found = []
        for proc in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
            info = proc.info
            if info["pid"] in mine or info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(info["cmdline"] or ())
            cwd = info["cwd"] or ""
            hit = base in cmdline or run in cmdline or (cwd + os.sep).startswith(base)
            if not hit:
                with contextlib.suppress(psutil.Error):
                    hit = proc.environ().get(MARKER) == str(self.base_dir)
            if hit:
                found.append(proc)
        return found

    def __enter__(self) -> Self:
        return self.up()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()

    # -------------------------------------------------------------------------------------- commands

    def run(self, *argv: str, check: bool = True, timeout: float = _CMD_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run a client command (``sinfo``, ``squeue``, ...) against this cluster."""
        return subprocess.run(list(argv), env=self.process_env(), capture_output=True, text=True, check=check,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def scontrol(self, *args: str) -> str:
        """``scontrol ARGS`` against this cluster; raises CalledProcessError (with stderr) on failure."""
        return self.run("scontrol", *args).stdout

    def sinfo_states(self) -> dict[str, str]:
        """Node name -> long state as sinfo prints it (``%T``: idle, drained, draining, down*, ...)."""
        out = self.run("sinfo", "-h", "-N", "-o", "%N %T", timeout=10).stdout
        states: dict[str, str] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
        return states

    def node_state(self, name: str) -> dict[str, Any]:
        """The node as the controller sees it.

        Keys: ``name``; ``state``: the flags, upper case, base state first (``["IDLE"]``,
        ``["IDLE", "DRAIN"]``, ``["ALLOCATED", "DRAIN"]``, ``["DOWN", "NOT_RESPONDING"]``...);
        ``sinfo``: sinfo's long name (idle, drained, draining, mixed, down*...); ``reason`` (``""`` if
        none); ``reason_user`` (user name, or ``""``); ``reason_time`` (Unix time, or None).

        Read from ``scontrol show node NAME --json`` (Slurm >= 23.02), else ``sinfo --json`` (22.05
        has no ``scontrol --json``), else ``scontrol -o show node NAME``.
        """
        self._check_node(name)
        doc = None
        for source in list(self._json_sources):
            doc = self._node_state_json(name, source)
            if doc is not None:
                break
        if doc is None:
            doc = self._node_state_text(name)
        doc["sinfo"] = self.sinfo_states().get(name, "")
        return doc

    def _node_state_json(self, name: str, source: str) -> dict[str, Any] | None:
        """The node from JSON, or None (and ``source`` is not tried again) if this Slurm cannot give it."""
        argv = ["scontrol", "show", "node", name, "--json"] if source == "scontrol" else ["sinfo", "--json"]
        proc = self.run(*argv, check=False)
        if proc.returncode != 0 and ("unrecognized option" in proc.stderr or "invalid option" in proc.stderr):
            self._json_sources.remove(source)
            return None
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr)
        try:
            node = next(n for n in json.loads(proc.stdout)["nodes"] if n.get("name") == name)
        except (ValueError, KeyError, TypeError, StopIteration):
            self._json_sources.remove(source)
            return None
        raw_state = node.get("state", "")
        # 22.05 (openapi v0.0.38): "state": "idle", "state_flags": ["DRAIN"]; 23.02+: "state": ["IDLE", "DRAIN"].
        states = [str(s).upper() for s in (raw_state if isinstance(raw_state, list) else [raw_state])]
        states += [str(f).upper() for f in node.get("state_flags", []) if str(f).upper() not in states]
        reason_time = node.get("reason_changed_at")
        if isinstance(reason_time, dict):  # 23.11+: {"set": true, "infinite": false, "number": 1700000000}
            reason_time = reason_time.get("number")
        return {
            "name": name,
            "state": [s for s in states if s],
            "reason": node.get("reason") or "",
            "reason_user": node.get("reason_set_by_user") or "",
            "reason_time": int(reason_time) if reason_time else None,
        }

    def _node_state_text(self, name: str) -> dict[str, Any]:
        line = self.scontrol("-o", "show", "node", name)
        state = re.search(r"\bState=(\S+)", line)
        reason = re.search(r"\bReason=(.*?) \[(\S+)@(\S+)\]\s*(?:\w+=|$)", line)
        flags = state.group(1).split("+") if state else []
        if flags and flags[0].endswith("*"):
            flags.append("NOT_RESPONDING")
        reason_time = None
        if reason:
            reason_time = int(time.mktime(time.strptime(reason.group(3), "%Y-%m-%dT%H:%M:%S")))
        return {
            "name": name,
            "state": [f.upper().rstrip("*~#!%$@^-") for f in flags if f],
            "reason": reason.group(1) if reason else "",
            "reason_user": reason.group(2) if reason else "",
            "reason_time": reason_time,
        }

    def submit_sleep(self, node: str, seconds: float, *, exclusive: bool = True, timeout_s: float = 20) -> str:
        """``sbatch --wrap 'sleep N'`` on ``node``; return the job id once the job is RUNNING.

        ``exclusive`` takes the whole node (state ALLOCATED); otherwise one CPU (state MIXED).
        """
        self._check_node(node)
        share = ["--exclusive"] if exclusive else ["-n", "1", "-c", "1", "--oversubscribe"]
        job_id = self.run(
            "sbatch", "--parsable", "--no-requeue", "-p", self.partition, "-w", node, "-N", "1", *share,
            "-J", f"jy-sleep-{node}", "-D", str(self.jobs_dir), "-o", str(self.jobs_dir / "%j.out"),
            "--wrap", f"exec sleep {seconds:g}",
        ).stdout.strip().split(";")[0]
        self.wait_job(job_id, "RUNNING", timeout_s=timeout_s)
        return job_id

    def job_state(self, job_id: str) -> str:
        """``squeue``'s state of the job (RUNNING, PENDING, COMPLETING...), ``""`` once it has left the queue."""
        out = self.run("squeue", "-h", "-j", job_id, "-o", "%T", check=False).stdout.strip()
        return out

    def wait_job(self, job_id: str, *states: str, timeout_s: float = 20) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.job_state(job_id)
            if state in states:
                return state
            if state in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY") \
                    or time.monotonic() > deadline:
                raise SlurmError(f"job {job_id} is {state or 'gone'}, not {'/'.join(states)}\n" + self.diagnostics())
            time.sleep(0.05)

    def job_ids(self) -> list[str]:
        """Ids of every job still in the queue (pending, running, completing...)."""
        return self.run("squeue", "-h", "-o", "%i").stdout.split()

    def cancel_all(self, timeout_s: float = 20) -> None:
        """``scancel`` every job and wait until the queue is empty (no job even COMPLETING)."""
        ids = self.job_ids()
        if ids:
            self.run("scancel", *ids, check=False)
        deadline = time.monotonic() + timeout_s
        while self.job_ids():
            if time.monotonic() > deadline:
                raise SlurmError(f"jobs still queued {timeout_s:.0f} s after scancel: {self.job_ids()}")
            time.sleep(0.05)
