"""A simulated cluster of real OpenSSH ``sshd`` nodes on loopback addresses.

Each node is one ``/usr/sbin/sshd -D`` process listening on its own address 127.77.x.y port 22 with
its own ed25519 host key, started as::

    unshare --uts --pid --fork --mount-proc --kill-child sh -c 'hostname NAME && exec sshd -D -e -f CFG'

- its own UTS namespace: ``hostname`` in an SSH session prints the node's name;
- its own PID namespace with sshd as PID 1 and its own /proc: ``ps`` on the node shows the node's
  processes only, orphans of the node's sessions are reaped by sshd, and when the sshd ends the kernel
  kills and reaps every process of that node (sessions, background jobs), so ``stop()`` and ``down()``
  leave nothing behind, not even zombies (this machine's PID 1 does not reap orphans);
- ``unshare`` stays as the parent (it is the process this module starts and reaps); ``--kill-child``
  takes the sshd with it if unshare itself is killed.

Faults a test can inject per node:

- ``stop()``: the sshd and every process of the node end: connections are refused;
- ``freeze()``: the listener is SIGSTOPped: TCP connects succeed (kernel backlog), no banner ever comes;
- ``blackhole()``: an nftables rule drops packets to address:22: connect() times out (no RST);
- ``change_host_key()`` / ``forget_host_key()``: changed or unknown host key for clients;
- ``sign_host_key(ca, ...)`` / ``drop_host_certificate()``: the node presents an OpenSSH host certificate
  (``HostCertificate``) signed by ``ca``, or stops presenting it;
- ``set_gpus()`` / ``write_gpu_state()``: the simulated-GPU state file the node's NVML library reads.

Files live under ``base_dir``: ``ssh_config``, ``known_hosts`` (entries keyed by node *name*, matched
through ``HostKeyAlias``), ``inventory.yaml``, ``id_ed25519`` (client key), ``authorized_keys``,
``cluster.json`` (pids and parameters, so another process can attach and clean up) and
``nodes/<name>/`` with the node's ``sshd_config``, host key, ``sshd.log`` and ``gpu.state``.

Nothing here sends a packet anywhere but the 127.0.0.0/8 addresses of the nodes.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.machine import node_unshare, sim_checks_yaml

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
STATE_FILE = "cluster.json"
SSH_PORT = 22
# sshd's compiled-in default PATH on Debian (what an SSH session gets without SetEnv PATH).
SSHD_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_GPU_COUNT = 8
DEFAULT_GPU_MODEL = "NVIDIA H100 80GB HBM3"
GROUP_NAME = "all_sim"

_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------------------------------
# small helpers


def _atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(raw)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _generate_ed25519(path: Path, comment: str) -> None:
    """Create an OpenSSH ed25519 key pair at ``path`` and ``path.pub`` (no passphrase).

    Uses ``cryptography`` (a paramiko dependency; ~0.1 ms a key) and falls back to ssh-keygen
    (~5 ms a key, one process each).
    """
    pub_path = path.with_name(path.name + ".pub")
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:  # pragma: no cover - cryptography ships with paramiko
        path.unlink(missing_ok=True)
        pub_path.unlink(missing_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        return
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _atomic_write(path, private, 0o600)
    _atomic_write(pub_path, public + b" " + comment.encode() + b"\n", 0o644)


def _public_key(path: Path) -> str:
    """``"<keytype> <base64>"`` of the public key beside private key ``path``."""
    fields = path.with_name(path.name + ".pub").read_text().split()
    return f"{fields[0]} {fields[1]}"


def _config_quote(value: str) -> str:
    """Quote a value for ssh_config / sshd_config (double quotes; no escapes are supported there)."""
    if any(ch in value for ch in '"\n\r\\'):
        raise ValueError(f"cannot put {value!r} in an OpenSSH config file")
    return f'"{value}"' if any(ch.isspace() for ch in value) or value == "" else value


def _raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, ppid) of ``pid``, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1])


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None:
            children.setdefault(stat[1], []).append(int(entry.name))
    return children


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _child_pids(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found: list[int] = []
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            found += [int(c) for c in Path(task.path, "children").read_text().split()]
        return found
    except OSError:
        return _children_map().get(pid, [])


def _terminate(nodes: Iterable[SimNode], grace_s: float = 3.0) -> None:
    """End the sshd of each node (frozen ones too) and reap its unshare wrapper.

    The sshd is PID 1 of the node's PID namespace: when it ends, the kernel SIGKILLs and reaps every
    other process of that node. SIGTERM (then SIGCONT, for frozen ones) first, SIGKILL after ``grace_s``.
    """
    every = list(nodes)
    nodes = [n for n in every if n._any_alive()]
    for node in nodes:
        if node._pid is not None and node._listener_alive():
            _signal(node._pid, signal.SIGTERM)
            _signal(node._pid, signal.SIGCONT)
        elif node._wrapper_pid is not None and node._wrapper_alive():
            _signal(node._wrapper_pid, signal.SIGKILL)  # --kill-child takes its child along
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(n._any_alive() for n in nodes):
        time.sleep(0.01)
    for node in nodes:
        if node._pid is not None and node._listener_alive():
            _signal(node._pid, signal.SIGKILL)
        if node._wrapper_pid is not None and node._wrapper_alive():
            _signal(node._wrapper_pid, signal.SIGKILL)
    for node in every:
        node._reap()


def _listening(address: str, port: int) -> bool:
    """True if some socket LISTENs on address:port (read from /proc/net/tcp; sends nothing)."""
    want = f"{struct.unpack('<I', socket.inet_aton(address))[0]:08X}:{port:04X}"
    try:
        with open("/proc/net/tcp") as table:
            next(table)
            return any(line.split()[1] == want and line.split()[3] == "0A" for line in table)
    except OSError:
        return False


def _read_banner(address: str, port: int, timeout_s: float) -> bytes | None:
    """Connect and read the server's identification line; None if refused or nothing came."""
    try:
        with socket.create_connection((address, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            data = b""
            while b"\n" not in data and len(data) < 1024:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
            return data
    except OSError:
        return None


def _nvmlsim() -> tuple[Callable[..., dict[str, str]], Callable[[Path, Mapping[str, object]], None]]:
    """``(default_state, write_state)`` from tests.nvmlsim, or tiny stand-ins while it does not exist."""
    try:
        from tests.nvmlsim import default_state, write_state
    except ImportError:
        if (Path(__file__).resolve().parent.parent / "nvmlsim" / "__init__.py").exists():
            raise

        def default_state(gpu_count: int = DEFAULT_GPU_COUNT) -> dict[str, str]:
            return {"gpu_count": str(gpu_count)}

        def write_state(path: Path, state: Mapping[str, object]) -> None:
            _atomic_write(Path(path), "".join(f"{k} = {_state_value(v)}\n" for k, v in state.items()))

    return default_state, write_state


def _state_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def read_gpu_state_file(path: Path) -> dict[str, str]:
    """Parse a ``key = value`` GPU state file (blank lines and ``#`` comments skipped)."""
    state: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, _, value = stripped.partition("=")
        state[key.strip()] = value.strip()
    return state


# --------------------------------------------------------------------------------------------------
# nodes


class SimNode:
    """One simulated node: an sshd on ``address``:``port`` whose hostname is ``name``."""

    def __init__(self, cluster: SimCluster, name: str, address: str, port: int = SSH_PORT) -> None:
        self.cluster = cluster
        self.name = name
        self.address = address
        self.port = port
        self.dir = cluster.base_dir / "nodes" / name
        self.state_path = self.dir / "gpu.state"
        # The node's kernel log as the probe reads it (JUEYING_PROBE_KERNEL_LOG): tests append XID lines.
        self.kernel_log_path = self.dir / "kmsg"
        self.machine_id_path = self.dir / "machine-id"  # the node's /etc/machine-id (JUEYING_PROBE_MACHINE_ID)
        self.sshd_config_path = self.dir / "sshd_config"
        self.host_key_path = self.dir / "ssh_host_ed25519_key"
        self.host_cert_path = self.dir / "ssh_host_ed25519_key-cert.pub"  # presented while it exists
        self.user_ca_path: Path | None = None  # sshd's TrustedUserCAKeys, when set (trust_user_ca)
        self.log_path = self.dir / "sshd.log"
        self._proc: subprocess.Popen[bytes] | None = None  # the unshare wrapper, when we started it
        self._wrapper_pid: int | None = None
        self._pid: int | None = None  # the sshd listener (PID 1 of the node's PID namespace)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"SimNode({self.name!r}, {self.address!r}, pid={self._pid}, {self.status()})"

    # ---- process state

    @property
    def pid(self) -> int | None:
        """Pid (as seen from this machine) of the sshd listener, or None when stopped."""
        return self._pid if self.is_running() else None

    def _listener_alive(self) -> bool:
        pid = self._pid
        return pid is not None and _alive(pid) and str(self.sshd_config_path) in _cmdline(pid)

    def _wrapper_alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        pid = self._wrapper_pid  # attached: make sure the pid was not reused
        return pid is not None and _alive(pid) and str(self.sshd_config_path) in _cmdline(pid)

    def _any_alive(self) -> bool:
        """Some process of this node (wrapper or listener) has not ended yet."""
        return self._wrapper_alive() or self._listener_alive()

    def is_running(self) -> bool:
        """True while the sshd listener process exists (also when frozen)."""
        if self._proc is not None and self._proc.poll() is not None:
            return False
        return self._listener_alive()

    def is_frozen(self) -> bool:
        pid = self.pid
        stat = _proc_stat(pid) if pid is not None else None
        return stat is not None and stat[0] == "T"

    def status(self) -> str:
        """One of ``running``, ``frozen``, ``stopped``; ``+blackholed`` appended when black-holed."""
        state = ("frozen" if self.is_frozen() else "running") if self.is_running() else "stopped"
        return state + ("+blackholed" if self.name in self.cluster._blackholed else "")

    def _spawn(self) -> None:
        """Start the sshd without waiting for it (caller waits with ``_wait_ready``)."""
        config = shlex.quote(str(self.sshd_config_path))
        script = f"hostname {shlex.quote(self.name)} && exec {SSHD} -D -e -f {config}"
        argv = [*node_unshare(), "sh", "-c", script]
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True
            )
        self._proc = proc
        self._wrapper_pid = proc.pid
        self._pid = None

    def _wait_ready(self, deadline: float) -> None:
        """Wait until the node shows its SSH banner (or, when black-holed, LISTENs)."""
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"{self.name}: sshd exited while starting:\n{self._log_tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: sshd on {self.address}:{self.port} not ready in time")
            if self._pid is None and self._wrapper_pid is not None:
                children = _child_pids(self._wrapper_pid)
                self._pid = children[0] if children else None
            if self._pid is not None:
                if self.name in self.cluster._blackholed:
                    if _listening(self.address, self.port):
                        return
                else:
                    banner = _read_banner(self.address, self.port, min(remaining, 2.0))
                    if banner is not None and banner.startswith(b"SSH-"):
                        return
            time.sleep(0.02)

    def _log_tail(self, lines: int = 10) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        self._proc = None
        self._wrapper_pid = None
        self._pid = None

    def stop(self) -> None:
        """End this node's sshd and every process of the node: new connections are refused."""
        with self._lock:
            _terminate([self])
            self._reap()
            self.cluster._save_state()

    def start(self, timeout_s: float = 15.0) -> None:
        """(Re)start this node's sshd and wait until it is ready; no-op if it already runs."""
        with self._lock:
            if self.is_running():
                return
            _terminate([self])  # a wrapper whose sshd died
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
            self._spawn()
            try:
                self._wait_ready(time.monotonic() + timeout_s)
            except BaseException:
                self.stop()
                raise
            finally:
                self.cluster._save_state()

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP the listener: TCP connects still succeed (backlog) but no banner ever comes.

        Returns once the kernel shows the process stopped. Open sessions are not affected.
        """
        pid = self.pid
        if pid is None:
            raise RuntimeError(f"{self.name} is not running")
        _signal(pid, signal.SIGSTOP)
        self._wait_frozen(True)

    def thaw(self) -> None:
        """SIGCONT the listener (undoes ``freeze``); returns once it runs again."""
        pid = self.pid
        if pid is not None:
            _signal(pid, signal.SIGCONT)
            self._wait_frozen(False)

    def _wait_frozen(self, frozen: bool, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.is_frozen() != frozen and self.is_running() and time.monotonic() < deadline:
            time.sleep(0.002)

    def blackhole(self) -> None:
        """Drop every packet to address:port (nftables), so connect() times out instead of failing."""
        self.cluster._nft_blackhole(self, True)

    def unblackhole(self) -> None:
        self.cluster._nft_blackhole(self, False)

    # ---- host keys

    def change_host_key(self) -> None:
        """New host key, sshd restarted; known_hosts keeps the old key (clients see a changed key)."""
        with self._lock:
            was_running = self.is_running()
            _generate_ed25519(self.host_key_path, f"root@{self.name}")
            if self.host_cert_path.exists():  # it certified the old key: sshd would refuse to start with it
                self.host_cert_path.unlink()
                _atomic_write(self.sshd_config_path, self.cluster._sshd_config(self))
            if was_running:
                self.stop()
                self.start()

    def forget_host_key(self) -> None:
        """Remove this node from known_hosts (clients see an unknown host)."""
        self.cluster._set_trusted(self.name, None)

    def trust_host_key(self) -> None:
        """Put this node's current host key into known_hosts (undoes change/forget_host_key)."""
        self.cluster._set_trusted(self.name, _public_key(self.host_key_path))

    def sign_host_key(self, ca_key: Path, *, principals: Iterable[str] | None = None, validity: str | None = None,
                      key_id: str | None = None) -> Path:
        """Sign this node's host key with the CA private key ``ca_key`` (``ssh-keygen -s ca -h``; no
        principals: valid for any name; ``validity`` as ``ssh-keygen -V``, none: forever) and make the sshd
        present the certificate (restarted if running). Returns the certificate's path."""
        with self._lock:
            self.host_cert_path.unlink(missing_ok=True)
            argv = ["ssh-keygen", "-q", "-s", str(ca_key), "-I", key_id or self.name, "-h"]
            argv += ["-V", validity] if validity else []
            names = list(principals or ())
            if names:
                argv += ["-n", ",".join(names)]
            subprocess.run([*argv, str(self.host_key_path.with_name(self.host_key_path.name + ".pub"))],
                           check=True, capture_output=True, stdin=subprocess.DEVNULL)
            self._reconfigure()
            return self.host_cert_path

    def trust_user_ca(self, ca_public_key: Path | None) -> None:
        """Make sshd accept user certificates signed by this CA (`TrustedUserCAKeys`; None: no CA), restarted
        if running. The certificate's principals must name the login user (root)."""
        with self._lock:
            self.user_ca_path = ca_public_key
            self._reconfigure()

    def drop_host_certificate(self) -> None:
        """Stop presenting a host certificate (restarted if running)."""
        with self._lock:
            self.host_cert_path.unlink(missing_ok=True)
            self._reconfigure()

    def _reconfigure(self) -> None:
        _atomic_write(self.sshd_config_path, self.cluster._sshd_config(self))
        if self.is_running():
            self.restart()

    # ---- simulated GPUs

    def add_kernel_log(self, *messages: str, at: float | None = None) -> None:
        """Append kernel messages (e.g. "NVRM: Xid (PCI:0000:18:00): 79, pid=1, GPU has fallen off the bus.")
        stamped with `at` (unix time, default now) in `dmesg --time-format iso` form."""
        when = time.time() if at is None else at
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f",{int(when % 1 * 1e6):06d}+00:00"
        with self.kernel_log_path.open("a", encoding="utf-8") as fh:
            for message in messages:
                fh.write(f"{stamp} {message}\n")

    def clear_kernel_log(self) -> None:
        self.kernel_log_path.write_text("")

    def set_infiniband(self, ports: Mapping[tuple[str, int], Mapping[str, str]]) -> None:
        """Replace the node's InfiniBand ports: {(device, port): {"state": "4: ACTIVE", "phys_state": "5: LinkUp",
        "rate": "400 Gb/sec (4X NDR)", "link_layer": "InfiniBand"}}, as sysfs shows them."""
        root = self.dir / "infiniband"
        shutil.rmtree(root, ignore_errors=True)
        for (device, port), files in ports.items():
            base = root / device / "ports" / str(port)
            base.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                (base / name).write_text(text + "\n")

    def set_machine_id(self, value: str) -> None:
        """What this node's probe reads as /etc/machine-id (read once per probe run)."""
        _atomic_write(self.machine_id_path, value + "\n")

    def read_gpu_state(self) -> dict[str, str]:
        return read_gpu_state_file(self.state_path) if self.state_path.exists() else {}

    def write_gpu_state(self, state: Mapping[str, object]) -> None:
        """Replace this node's GPU state file with ``state`` (``tests.nvmlsim.write_state``: atomic;
        bools and ints as numbers, lists comma-joined, tuples colon-joined)."""
        _, write_state = _nvmlsim()
        write_state(self.state_path, dict(state))

    def set_gpus(self, **fields: object) -> None:
        """Merge ``fields`` (e.g. ``gpu_count=7`` or ``**{"gpu.3.lost": 1}``) into the GPU state."""
        with self._lock:
            state: dict[str, object] = dict(self.read_gpu_state())
            state.update(fields)
            self.write_gpu_state(state)


# --------------------------------------------------------------------------------------------------
# the cluster


class SimCluster:
    """``count`` simulated nodes named ``<prefix><index>`` on 127.77.x.y (see module doc)."""

    def __init__(
        self,
        base_dir: Path,
        count: int,
        *,
        prefix: str = "node",
        first_octets: tuple[int, int] = (127, 77),
        start_index: int = 1,
        digits: int = 2,
        gpu_lib_dir: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        ports: Mapping[str, int] | None = None,
        sshd_options: Mapping[str, Mapping[str, str]] | None = None,
        shift_octets: bool = True,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        if not _PREFIX_RE.match(prefix):
            raise ValueError(f"bad node name prefix {prefix!r}")
        # Several checkouts may run their suites at once on one machine: each sets a different
        # JUEYING_SIM_OCTET_SHIFT so their clusters live on different 127.x.0.0/16 blocks.
        shift = int(os.environ.get("JUEYING_SIM_OCTET_SHIFT", "0") or 0) if shift_octets else 0
        first_octets = (first_octets[0], (first_octets[1] + shift) % 256)
        if first_octets[0] != 127 or not 0 <= first_octets[1] <= 255:
            raise ValueError("nodes must live in 127.0.0.0/8: first_octets must be (127, 0..255)")
        if count > 254 * 256:
            raise ValueError("at most 65024 nodes fit in one 127.x.0.0/16")
        for key in extra_env or {}:
            if not _ENV_NAME_RE.match(key):
                raise ValueError(f"bad environment variable name {key!r}")
        from ClusterShell.NodeSet import NodeSet

        self.base_dir = Path(base_dir).resolve()
        self.count = count
        self.prefix = prefix
        self.first_octets = (int(first_octets[0]), int(first_octets[1]))
        self.start_index = start_index
        self.digits = digits
        self.gpu_lib_dir = Path(gpu_lib_dir).resolve() if gpu_lib_dir is not None else None
        self.extra_env: dict[str, str] = dict(extra_env or {})
        self.ports: dict[str, int] = dict(ports or {})  # nodes whose sshd listens on another port than 22
        # per node: sshd_config keywords that replace the cluster's value (e.g. a jump host's MaxStartups)
        self.sshd_options: dict[str, dict[str, str]] = {k: dict(v) for k, v in (sshd_options or {}).items()}
        for options in self.sshd_options.values():
            for key, value in options.items():
                if not (key.isalnum() and value and "\n" not in value):
                    raise ValueError(f"bad sshd_config option {key!r} {value!r}")

        self.nodes: list[SimNode] = []
        for offset in range(count):
            name = f"{prefix}{start_index + offset:0{digits}d}"
            address = f"{first_octets[0]}.{first_octets[1]}.{offset // 254}.{offset % 254 + 1}"
            self.nodes.append(SimNode(self, name, address, self.ports.get(name, SSH_PORT)))
        self._by_name = {node.name: node for node in self.nodes}
        if len(self._by_name) != count:
            raise ValueError("node names collide (digits too small?)")
        self.nodeset: str = str(NodeSet.fromlist([node.name for node in self.nodes]))

        self.inventory_path = self.base_dir / "inventory.yaml"
        self.checks_path = self.base_dir / "checks.yaml"
        self.ssh_config_path = self.base_dir / "ssh_config"
        self.known_hosts_path = self.base_dir / "known_hosts"
        self.client_key_path = self.base_dir / "id_ed25519"
        self.authorized_keys_path = self.base_dir / "authorized_keys"
        self.state_file = self.base_dir / STATE_FILE

        digest = hashlib.sha1(str(self.base_dir).encode(), usedforsecurity=False).hexdigest()[:12]
        self.nft_table = f"jueying_sim_{digest}"
        self._lock = threading.RLock()
        self._trusted: dict[str, str | None] = {}
        self._blackholed: set[str] = set()
        self._nft_ready = False

    # ---- public API

    def node(self, name: str) -> SimNode:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no simulated node {name!r} in {self.nodeset}") from None

    def client_env(self) -> dict[str, str]:
        """SSH config, inventory and check set for jueying: the check set is sim_checks_yaml (the default set
        without `load`: the nodes share this machine's CPUs), which `status`, `capacity` and `check` read."""
        return {"JUEYING_SSH_CONFIG": str(self.ssh_config_path), "JUEYING_INVENTORY": str(self.inventory_path),
                "JUEYING_CHECKS": str(self.checks_path)}

    def __enter__(self) -> Self:
        return self.up()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def up(self, timeout_s: float = 30.0) -> Self:
        """Start every node; return once each accepts TCP and shows an SSH banner."""
        if not Path(SSHD).exists():
            raise RuntimeError(f"{SSHD} not found: apt-get install openssh-server")
        deadline = time.monotonic() + timeout_s
        self.base_dir.mkdir(parents=True, exist_ok=True)
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        _terminate(self.nodes)  # up() on a cluster that is up: restart it
        self._cleanup_stale()
        _raise_nofile(4 * self.count + 1024)
        atexit.register(self.down)
        try:
            self._write_files()
            for node in self.nodes:
                node._spawn()
            self._save_state()
            pending = list(self.nodes)
            workers = max(1, min(64, len(pending)))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for future in [pool.submit(n._wait_ready, deadline) for n in pending]:
                    future.result()
            self._save_state()  # now with the listeners' pids
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stop every process this cluster started and remove its firewall rules. Idempotent."""
        with self._lock:
            _terminate(self.nodes)
            self._nft_remove()
            self._blackholed.clear()
            if self.state_file.exists():
                self._save_state()
        atexit.unregister(self.down)

    def detach(self) -> None:
        """Leave the nodes running after this process exits (``scripts/sim-cluster up``)."""
        atexit.unregister(self.down)

    @classmethod
    def attach(cls, base_dir: Path) -> SimCluster:
        """A handle on a cluster that another process brought up in ``base_dir`` (from cluster.json)."""
        base = Path(base_dir).resolve()
        data = json.loads((base / STATE_FILE).read_text())
        params = data["params"]
        gpu_lib_dir = params.get("gpu_lib_dir")
        cluster = cls(
            base,
            int(params["count"]),
            prefix=params["prefix"],
            first_octets=(int(params["first_octets"][0]), int(params["first_octets"][1])),
            start_index=int(params["start_index"]),
            digits=int(params["digits"]),
            gpu_lib_dir=Path(gpu_lib_dir) if gpu_lib_dir else None,
            extra_env=params.get("extra_env") or {},
            ports=params.get("ports") or {},
            sshd_options=params.get("sshd_options") or {},
            shift_octets=False,  # cluster.json holds the octets already shifted
        )
        entries = {entry["name"]: entry for entry in data["nodes"]}
        for node in cluster.nodes:
            entry = entries.get(node.name, {})
            node._pid = int(entry["pid"]) if entry.get("pid") else None
            node._wrapper_pid = int(entry["wrapper_pid"]) if entry.get("wrapper_pid") else None
        cluster._blackholed = set(data.get("blackholed", []))
        cluster._nft_ready = bool(cluster._blackholed)
        if cluster.known_hosts_path.exists():
            for line in cluster.known_hosts_path.read_text().splitlines():
                fields = line.split()
                if len(fields) >= 3 and not line.startswith("#"):
                    cluster._trusted[fields[0]] = f"{fields[1]} {fields[2]}"
        return cluster

    # ---- files

    def _session_env(self, node: SimNode) -> dict[str, str]:
        env = {
            # bash skips ~/.bashrc for ssh commands when SHLVL is already >= 1 (no pyenv init: -135 ms)
            "SHLVL": "1",
            "PATH": f"{os.path.dirname(sys.executable)}:{SSHD_DEFAULT_PATH}",
            "JUEYING_NVMLSIM_STATE": str(node.state_path),
            "JUEYING_PROBE_KERNEL_LOG": str(node.kernel_log_path),
            # where drills overlay injected GPU faults for the probe (/run/jueying/inject on a real node)
            "JUEYING_PROBE_INJECT_DIR": str(node.dir / "inject"),
            "JUEYING_PROBE_MACHINE_ID": str(node.machine_id_path),
            # the node's own /sys/class/infiniband (none until a test adds ports: set_infiniband)
            "JUEYING_PROBE_INFINIBAND_ROOT": str(node.dir / "infiniband"),
            # where the builtin scheduler marks the node drained (/var/lib/jueying on a real node)
            "JUEYING_NODE_STATE_DIR": str(node.dir),
        }
        if self.gpu_lib_dir is not None:
            env["LD_LIBRARY_PATH"] = str(self.gpu_lib_dir)
        env.update(self.extra_env)
        return env

    def _sshd_config(self, node: SimNode) -> str:
        set_env = " ".join(_config_quote(f"{k}={v}") for k, v in self._session_env(node).items())
        cert = f"HostCertificate {_config_quote(str(node.host_cert_path))}\n" if node.host_cert_path.exists() else ""
        if node.user_ca_path is not None:
            cert += f"TrustedUserCAKeys {_config_quote(str(node.user_ca_path))}\n"
        text = (
            f"# sshd for simulated node {node.name}, written by tests/cluster\n"
            f"ListenAddress {node.address}:{node.port}\n"
            f"HostKey {_config_quote(str(node.host_key_path))}\n"
            f"{cert}"
            "PidFile none\n"
            "UsePAM no\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            f"AuthorizedKeysFile {_config_quote(str(self.authorized_keys_path))}\n"
            "StrictModes no\n"
            "MaxStartups 1000:30:2000\n"
            "MaxSessions 100\n"
            "UseDNS no\n"
            "LogLevel ERROR\n"
            "PrintMotd no\n"
            "PrintLastLog no\n"
            "X11Forwarding no\n"
            "Subsystem sftp internal-sftp\n"
            f"SetEnv {set_env}\n"
        )
        # sshd takes a keyword's first value: a node's own options replace the line, or come before the rest
        options = self.sshd_options.get(node.name, {})
        lines = [line for line in text.splitlines() if line.split(" ", 1)[0] not in options]
        return "\n".join(lines[:1] + [f"{k} {v}" for k, v in options.items()] + lines[1:]) + "\n"

    def _ssh_config(self) -> str:
        key = _config_quote(str(self.client_key_path))
        known = _config_quote(str(self.known_hosts_path))
        parts = [
            f"# simulated cluster {self.nodeset}, written by tests/cluster\n"
            f"# use: ssh -F {self.ssh_config_path} {self.nodes[0].name} hostname\n"
        ]
        for node in self.nodes:
            parts.append(
                f"\nHost {node.name}\n"
                f"  HostName {node.address}\n"
                f"  Port {node.port}\n"
                "  User root\n"
                f"  IdentityFile {key}\n"
                "  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile {known}\n"
                "  GlobalKnownHostsFile /dev/null\n"
                "  StrictHostKeyChecking yes\n"
                f"  HostKeyAlias {node.name}\n"
                "  BatchMode yes\n"
                "  ConnectTimeout 5\n"
            )
        return "".join(parts)

    def _inventory(self) -> str:
        lines = [
            "# jueying inventory written by tests/cluster",
            "vars:",
            "  ssh_user: root",
            "groups:",
            f"  {GROUP_NAME}:",
            f'    nodes: "{self.nodeset}"',
            f'    vars: {{expected_gpus: {DEFAULT_GPU_COUNT}, gpu_model: "{DEFAULT_GPU_MODEL}"}}',
            "nodes:",
        ]
        lines += [f"  {node.name}: {{address: {node.address}}}" for node in self.nodes]
        return "\n".join(lines) + "\n"

    def _write_known_hosts(self) -> None:
        with self._lock:
            lines = [f"{node.name} {key}\n" for node in self.nodes if (key := self._trusted.get(node.name))]
            _atomic_write(self.known_hosts_path, "".join(lines))

    def _set_trusted(self, name: str, key: str | None) -> None:
        with self._lock:
            self._trusted[name] = key
            self._write_known_hosts()

    def _write_files(self) -> None:
        if not (self.client_key_path.exists() and self.client_key_path.with_suffix(".pub").exists()):
            _generate_ed25519(self.client_key_path, "jueying-sim-client")
        _atomic_write(self.authorized_keys_path, _public_key(self.client_key_path) + " jueying-sim-client\n")
        default_state, write_state = _nvmlsim()
        gpu_state = default_state(gpu_count=DEFAULT_GPU_COUNT)
        for node in self.nodes:
            node.dir.mkdir(parents=True, exist_ok=True)
            if not (node.host_key_path.exists() and node.host_key_path.with_suffix(".pub").exists()):
                _generate_ed25519(node.host_key_path, f"root@{node.name}")
            self._trusted[node.name] = _public_key(node.host_key_path)
            _atomic_write(node.sshd_config_path, self._sshd_config(node))
            write_state(node.state_path, gpu_state)
            node.kernel_log_path.write_text("")  # a quiet kernel: no XIDs until a test adds some
            # each node its own machine identity, as on real machines (a test may clone one: set_machine_id)
            node.machine_id_path.write_text(hashlib.md5(node.name.encode(), usedforsecurity=False).hexdigest() + "\n")
            node.log_path.write_bytes(b"")
        self._write_known_hosts()
        _atomic_write(self.ssh_config_path, self._ssh_config())
        _atomic_write(self.inventory_path, self._inventory())
        _atomic_write(self.checks_path, sim_checks_yaml())

    def _save_state(self) -> None:
        with self._lock:
            data: dict[str, Any] = {
                "params": {
                    "count": self.count,
                    "prefix": self.prefix,
                    "first_octets": list(self.first_octets),
                    "start_index": self.start_index,
                    "digits": self.digits,
                    "gpu_lib_dir": str(self.gpu_lib_dir) if self.gpu_lib_dir else None,
                    "extra_env": self.extra_env,
                    "ports": self.ports,
                    "sshd_options": self.sshd_options,
                },
                "nodeset": self.nodeset,
                "nft_table": self.nft_table,
                "blackholed": sorted(self._blackholed),
                "nodes": [
                    {
                        "name": n.name,
                        "address": n.address,
                        "port": n.port,
                        "pid": n._pid,
                        "wrapper_pid": n._wrapper_pid,
                        "sshd_config": str(n.sshd_config_path),
                    }
                    for n in self.nodes
                ],
            }
            _atomic_write(self.state_file, json.dumps(data, indent=1) + "\n")

    def _cleanup_stale(self) -> None:
        """Kill sshds a previous run in this base_dir left behind (crash), and its nft table."""
        if self.state_file.exists():
            with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
                _terminate(SimCluster.attach(self.base_dir).nodes)
        self._nft_ready = True  # a stale table may exist: remove it
        self._nft_remove()

    # ---- nftables black holes

    def _nft(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        nft = shutil.which("nft") or "/usr/sbin/nft"
        if not Path(nft).exists():
            raise RuntimeError("blackhole() needs nftables: apt-get install nftables")
        result = subprocess.run([nft, "-f", "-"], input=script, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"nft failed ({result.returncode}): {result.stderr.strip()}\n{script}")
        return result

    def _nft_blackhole(self, node: SimNode, on: bool) -> None:
        with self._lock:
            element = f"{{ {node.address} . {node.port} }}"
            if on:
                if not self._nft_ready:
                    # one table per cluster; the set holds the black-holed address . port pairs
                    self._nft(
                        f"table inet {self.nft_table} {{\n"
                        "  set blackholed { type ipv4_addr . inet_service; }\n"
                        "  chain output {\n"
                        "    type filter hook output priority -10; policy accept;\n"
                        "    ip daddr . tcp dport @blackholed drop\n"
                        "  }\n"
                        "}\n"
                    )
                    self._nft_ready = True
                self._nft(f"add element inet {self.nft_table} blackholed {element}\n")
                self._blackholed.add(node.name)
            elif node.name in self._blackholed:
                self._nft(f"delete element inet {self.nft_table} blackholed {element}\n", check=False)
                self._blackholed.discard(node.name)
            self._save_state()

    def _nft_remove(self) -> None:
        if not self._nft_ready:
            return
        nft = shutil.which("nft") or "/usr/sbin/nft"
        if Path(nft).exists():
            subprocess.run(
                [nft, "delete", "table", "inet", self.nft_table],
                capture_output=True,
                check=False,
            )
        self._nft_ready = False
