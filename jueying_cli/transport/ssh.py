"""SSH transport over paramiko: the only module that imports paramiko.

What it guarantees, because fan-out tools are hated for the opposite:
- host keys are verified against every known_hosts file OpenSSH would read (hashed entries and
  `[host]:port` included), and paramiko may only negotiate key types already recorded for the host,
  so a host known by its ed25519 key is never reported "unknown" over an RSA key;
- ~/.ssh/config and /etc/ssh/ssh_config are honoured (HostName, User, Port, IdentityFile,
  IdentitiesOnly, ProxyJump chains, ConnectTimeout, UserKnownHostsFile, HostKeyAlias);
- nothing ever prompts; every step is bounded by the node's deadline, and reading never blocks on
  paramiko's recv_exit_status (which has no timeout): stdout and stderr are drained together;
- TCP_NODELAY on every socket (without it a reused connection pays ~40 ms per command).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from jueying_cli.inventory.model import Node
from jueying_cli.outcome import Outcome
from jueying_cli.transport.base import MAX_OUTPUT_BYTES, TIMEOUT_RC, Command, StreamError, remaining, wrap_command
from jueying_cli.transport.ssh_options import SshOptions
from jueying_cli.vocab import OutcomeStatus

# paramiko logs handshake failures with tracebacks; each node's outcome already says what went wrong.
_paramiko_log = logging.getLogger("paramiko")
_paramiko_log.addHandler(logging.NullHandler())
_paramiko_log.propagate = False

DEFAULT_IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa")
USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")

# Signature algorithms paramiko may negotiate for each key type found in known_hosts.
_KEY_ALGORITHMS = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
}


class NodeError(Exception):
    """A failure with its outcome status and a short reason for the operator."""

    def __init__(self, status: OutcomeStatus, reason: str, *, command_sent: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.command_sent = command_sent  # the node may have started the command: never run it again


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect, after inventory variables and ssh_config are applied."""

    name: str  # what the operator calls it
    address: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool
    known_hosts_name: str  # the name looked up in known_hosts
    known_hosts_files: tuple[str, ...]
    connect_timeout_s: float
    proxy_jump: tuple[str, ...] = ()


def _expand(path: str) -> str:
    return os.path.expanduser(os.path.expandvars(path))


class SshConfig:
    """ssh_config files in OpenSSH's order: first value wins, IdentityFile accumulates.

    Each file is parsed once (by paramiko) and its Host blocks indexed: literal names in a dict, patterns
    in a short list. paramiko's own lookup walks every block twice and asks the OS for the user name per
    block, which costs O(nodes x hosts) and dominated the controller's CPU with a 1000-host config. Files
    with Match blocks (rare on clusters) keep paramiko's full lookup, which evaluates them correctly.
    """

    _EXPANDED = ("identityfile", "userknownhostsfile")  # the keys OpenSSH expands tokens in (and HostName: %h)

    def __init__(self, explicit: str | None) -> None:
        paths = [explicit] if explicit else [_expand("~/.ssh/config"), "/etc/ssh/ssh_config"]
        self.configs: list[paramiko.SSHConfig] = []
        for path in paths:
            if os.path.isfile(path):
                self.configs.append(paramiko.SSHConfig.from_path(path))
        self._indexes = [_HostIndex(c) for c in self.configs]
        self._local_user = _local_user()

    def lookup(self, host: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for config, index in zip(self.configs, self._indexes, strict=True):
            found = dict(config.lookup(host)) if index.has_match else index.lookup(host)
            for key, value in found.items():
                if key == "identityfile":
                    merged.setdefault(key, [])
                    merged[key] = merged[key] + [v for v in value if v not in merged[key]]
                elif key not in merged:
                    merged[key] = value
        return self._expand_tokens(host, merged)

    def _expand_tokens(self, host: str, options: dict[str, Any]) -> dict[str, Any]:
        """OpenSSH's %h %n %p %r %u %d %% tokens (paramiko's lookup did this; our index must too)."""
        hostname = str(options.get("hostname", host)).replace("%h", host).replace("%%", "%")
        table = {"%h": hostname, "%n": host, "%p": str(options.get("port", 22)),
                 "%r": str(options.get("user", self._local_user)), "%u": self._local_user,
                 "%d": os.path.expanduser("~")}

        def expand(value: str) -> str:
            if "%" not in value:
                return value
            out, i = [], 0
            while i < len(value):
                pair = value[i:i + 2]
                if pair == "%%":
                    out.append("%")
                    i += 2
                elif pair in table:
                    out.append(table[pair])
                    i += 2
                else:
                    out.append(value[i])
                    i += 1
            return "".join(out)

        result = dict(options)
        if "hostname" in result:
            result["hostname"] = hostname
        for key in self._EXPANDED:
            if key in result:
                value = result[key]
                result[key] = [expand(v) for v in value] if isinstance(value, list) else expand(str(value))
        if "identityfile" in result:
            result["identityfile"] = [os.path.expanduser(v) for v in result["identityfile"]]
        return result


class _HostIndex:
    """The Host blocks of one parsed ssh_config, indexed for lookups that cost O(1) per literal name."""

    def __init__(self, config: paramiko.SSHConfig) -> None:
        blocks = getattr(config, "_config", [])
        self.has_match = any("matches" in b for b in blocks)
        self.blocks: list[tuple[list[str], dict[str, Any]]] = []
        self.literal: dict[str, list[int]] = {}
        self.patterns: list[int] = []
        for position, block in enumerate(blocks):
            patterns = list(block.get("host", []))
            self.blocks.append((patterns, block.get("config", {})))
            if patterns and all(not any(ch in p for ch in "*?!") for p in patterns):
                for p in patterns:
                    self.literal.setdefault(p, []).append(position)
            else:
                self.patterns.append(position)

    def lookup(self, host: str) -> dict[str, Any]:
        import fnmatch

        positions = set(self.literal.get(host, ()))
        for position in self.patterns:
            patterns = self.blocks[position][0]
            negated = any(p.startswith("!") and fnmatch.fnmatch(host, p[1:]) for p in patterns)
            if not negated and any(not p.startswith("!") and fnmatch.fnmatch(host, p) for p in patterns):
                positions.add(position)
        options: dict[str, Any] = {}
        for position in sorted(positions):
            for key, value in self.blocks[position][1].items():
                if key not in options:
                    options[key] = value[:] if isinstance(value, list) else value
                elif key == "identityfile":
                    options[key].extend(v for v in value if v not in options[key])
        return options


class _KnownHostsFile:
    """One known_hosts file, indexed: plain names in a dict, hashed entries (|1|salt|hash) in a list.
    paramiko's HostKeys scans every entry per lookup and every earlier line per loaded line, which is
    O(nodes^2) over a run on a thousand-node file."""

    def __init__(self) -> None:
        self.plain: dict[str, dict[str, paramiko.PKey]] = {}
        self.hashed: list[tuple[bytes, bytes, str, paramiko.PKey]] = []

    @classmethod
    def read(cls, path: str) -> _KnownHostsFile:
        index = cls()
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                lines = fh.readlines()
        except OSError:
            return index  # an unreadable file knows no host
        for number, line in enumerate(lines, start=1):
            line = line.strip()
            if not line or line.startswith(("#", "@")):  # @cert-authority / @revoked: not trusted as plain keys
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line, number)
            except (paramiko.SSHException, ValueError, TypeError, IndexError):
                entry = None
            if entry is None or entry.key is None:
                continue
            for name in entry.hostnames:
                index.add(name, entry.key)
        return index

    def add(self, name: str, key: paramiko.PKey) -> None:
        if name.startswith("|1|"):
            salt, digest = (base64.b64decode(part) for part in name[3:].split("|", 1))
            self.hashed.append((salt, digest, key.get_name(), key))
        else:
            self.plain.setdefault(name, {}).setdefault(key.get_name(), key)

    def lookup(self, name: str) -> dict[str, paramiko.PKey]:
        found = dict(self.plain.get(name, {}))
        for salt, digest, keytype, key in self.hashed:
            if hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest):
                found.setdefault(keytype, key)
        return found


class KnownHosts:
    """known_hosts files parsed once per run and shared by all threads."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._files: dict[str, _KnownHostsFile] = {}

    def _load(self, path: str) -> _KnownHostsFile:
        with self._lock:
            index = self._files.get(path)
            if index is None:
                index = self._files[path] = _KnownHostsFile.read(path)
            return index

    def lookup(self, name: str, files: Sequence[str]) -> dict[str, paramiko.PKey]:
        found: dict[str, paramiko.PKey] = {}
        for path in files:
            for keytype, key in self._load(path).lookup(name).items():
                found.setdefault(keytype, key)
        return found

    def add(self, name: str, key: paramiko.PKey, path: str) -> None:
        """Record a newly trusted key (append only: never rewrites what the operator has)."""
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        with self._lock:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
            self._load(path).add(name, key)


class Identities:
    """Private keys loaded once per run (parsing a key costs more than a whole command on a warm link)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, paramiko.PKey | None] = {}
        self._agent_keys: list[paramiko.PKey] | None = None

    def key(self, path: str) -> paramiko.PKey | None:
        with self._lock:
            if path not in self._keys:
                try:
                    self._keys[path] = paramiko.PKey.from_path(path)
                except (OSError, paramiko.SSHException, ValueError):
                    self._keys[path] = None  # missing, encrypted (we never prompt) or unreadable
            return self._keys[path]

    def agent_keys(self) -> list[paramiko.PKey]:
        with self._lock:
            if self._agent_keys is None:
                self._agent_keys = []
                if os.environ.get("SSH_AUTH_SOCK"):
                    try:
                        self._agent_keys = list(paramiko.Agent().get_keys())
                    except (OSError, paramiko.SSHException):
                        self._agent_keys = []
            return self._agent_keys


def _parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """[user@]host[:port] -> (user, host, port)."""
    user = None
    if "@" in spec:
        user, spec = spec.rsplit("@", 1)
    port = None
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif spec.count(":") == 1:
        host, _, port_text = spec.partition(":")
        port = int(port_text) if port_text.isdigit() else None
    else:
        host = spec
    return user, host, port


@dataclass
class _Connection:
    transport: paramiko.Transport
    lock: threading.Lock = field(default_factory=threading.Lock)


class SshTransport:
    """Runs commands over SSH. Thread-safe: one instance serves a whole fan-out."""

    def __init__(self, options: SshOptions | None = None) -> None:
        self.options = options or SshOptions()
        self.config = SshConfig(self.options.ssh_config_path)
        self.known_hosts = KnownHosts()
        self.identities = Identities()
        self._jumps: dict[tuple[str, ...], _Connection] = {}
        self._jump_lock = threading.Lock()
        self._open: dict[str, paramiko.Transport] = {}
        self._open_lock = threading.Lock()
        self._local_user = _local_user()

    # ------------------------------------------------------------ resolution

    def endpoint(self, node: Node) -> Endpoint:
        return self._endpoint(node.name, node.address, node.vars.get("ssh_port"), node.vars.get("ssh_user"),
                              node.vars.get("ssh_identity_file"), node.vars.get("ssh_proxy_jump"))

    def _endpoint(self, name: str, address: str | None, port: Any, user: Any, identity: Any,
                  proxy_jump: Any) -> Endpoint:
        cfg = self.config.lookup(name)
        address = address or cfg.get("hostname") or name
        port = int(port or cfg.get("port") or 22)
        user = str(user or cfg.get("user") or self._local_user)
        files: list[str] = []
        if identity:
            files.append(_expand(str(identity)))
        files.extend(_expand(p) for p in cfg.get("identityfile", []))
        if not files:
            files = [_expand(f"~/.ssh/{n}") for n in DEFAULT_IDENTITIES]
        alias = cfg.get("hostkeyalias")
        if alias:
            kh_name = alias
        elif port == 22:
            kh_name = address
        else:
            kh_name = f"[{address}]:{port}"
        user_files = [_expand(p) for p in (cfg.get("userknownhostsfile") or " ".join(USER_KNOWN_HOSTS)).split()]
        global_files = [_expand(p) for p in (cfg.get("globalknownhostsfile") or " ".join(GLOBAL_KNOWN_HOSTS)).split()]
        jump = proxy_jump or cfg.get("proxyjump")
        hops: tuple[str, ...] = ()
        if jump and str(jump).lower() != "none":
            hops = tuple(h.strip() for h in str(jump).split(",") if h.strip())
        timeout = self.options.connect_timeout_s
        if cfg.get("connecttimeout"):
            with suppress(ValueError):
                timeout = min(timeout, float(cfg["connecttimeout"]))
        return Endpoint(
            name=name, address=address, port=port, user=user, identity_files=tuple(dict.fromkeys(files)),
            identities_only=str(cfg.get("identitiesonly", "no")).lower() == "yes",
            known_hosts_name=kh_name,
            known_hosts_files=tuple(dict.fromkeys([*user_files, *global_files, *self.options.extra_known_hosts])),
            connect_timeout_s=timeout, proxy_jump=hops,
        )

    # ------------------------------------------------------------ connecting

    def _open_socket(self, ep: Endpoint, deadline: float) -> Any:
        """A TCP socket, or a direct-tcpip channel through the (shared) jump host chain."""
        limit = min(ep.connect_timeout_s, remaining(deadline))
        if limit <= 0:
            raise NodeError(OutcomeStatus.TIMEOUT, "deadline reached before connecting")
        if ep.proxy_jump:
            jump = self._jump_transport(ep.proxy_jump, deadline)
            try:
                return jump.open_channel("direct-tcpip", (ep.address, ep.port), ("127.0.0.1", 0), timeout=limit)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise NodeError(OutcomeStatus.UNREACHABLE, f"jump host {ep.proxy_jump[-1]} cannot reach "
                                f"{ep.address}:{ep.port}: {exc}") from exc
        try:
            sock = socket.create_connection((ep.address, ep.port), timeout=limit)
        except TimeoutError as exc:
            raise NodeError(OutcomeStatus.UNREACHABLE,
                            f"connect to {ep.address}:{ep.port} timed out after {limit:.0f} s") from exc
        except socket.gaierror as exc:
            raise NodeError(OutcomeStatus.UNREACHABLE, f"cannot resolve {ep.address}: {exc.strerror}") from exc
        except ConnectionRefusedError as exc:
            raise NodeError(OutcomeStatus.UNREACHABLE, f"connection refused by {ep.address}:{ep.port}") from exc
        except OSError as exc:
            raise NodeError(OutcomeStatus.UNREACHABLE,
                            f"cannot connect to {ep.address}:{ep.port}: {exc.strerror or exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _jump_transport(self, hops: tuple[str, ...], deadline: float) -> paramiko.Transport:
        """One authenticated connection per jump chain, shared by every node behind it."""
        with self._jump_lock:
            conn = self._jumps.get(hops)
            if conn is None:
                conn = _Connection(transport=None)  # type: ignore[arg-type]
                self._jumps[hops] = conn
        with conn.lock:
            if conn.transport is not None and conn.transport.is_active():
                return conn.transport
            user, host, port = _parse_jump(hops[-1])
            ep = self._endpoint(host, None, port, user, None, ",".join(hops[:-1]) or "none")
            try:
                conn.transport = self._handshake(ep, deadline)
            except NodeError as exc:
                raise NodeError(OutcomeStatus.UNREACHABLE if exc.status == OutcomeStatus.TIMEOUT else exc.status,
                                f"jump host {hops[-1]}: {exc.reason}") from exc
            return conn.transport

    def _handshake(self, ep: Endpoint, deadline: float) -> paramiko.Transport:
        known = self.known_hosts.lookup(ep.known_hosts_name, ep.known_hosts_files)
        sock = self._open_socket(ep, deadline)
        transport = paramiko.Transport(sock)
        try:
            limit = max(0.1, min(ep.connect_timeout_s, remaining(deadline)))
            transport.banner_timeout = limit
            transport.handshake_timeout = limit
            transport.auth_timeout = limit
            if known:
                allowed = [a for t in known for a in _KEY_ALGORITHMS.get(t, (t,))]
                transport.get_security_options().key_types = [
                    a for a in transport.get_security_options().key_types if a in allowed] or allowed
            elif not self.options.accept_new_hostkeys:
                searched = ", ".join(_short(f) for f in ep.known_hosts_files if os.path.exists(f))
                raise NodeError(OutcomeStatus.HOSTKEY_FAILED, f"host key for {ep.known_hosts_name} is unknown (not in "
                                f"{searched or 'any known_hosts file'}); check it and add it with ssh-keyscan, "
                                "or use --accept-new-hostkeys")
            try:
                transport.start_client(timeout=limit)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                text = str(exc).lower()
                if remaining(deadline) <= 0 or "timeout" in text or "banner" in text or isinstance(exc, TimeoutError):
                    raise NodeError(OutcomeStatus.TIMEOUT, f"no SSH handshake from {ep.address}:{ep.port} within "
                                    f"{limit:.0f} s (node hung?)") from exc
                raise NodeError(OutcomeStatus.UNREACHABLE,
                                f"SSH handshake with {ep.address}:{ep.port} failed: {exc}") from exc
            if not transport.is_active() or getattr(transport, "host_key", None) is None:
                # start_client returns silently when its timeout passes mid key exchange
                raise NodeError(OutcomeStatus.TIMEOUT,
                                f"SSH key exchange with {ep.address}:{ep.port} did not finish within "
                                f"{limit:.0f} s (node hung?)")
            self._verify_host_key(ep, transport, known)
            self._authenticate(ep, transport)
            if self.options.keep_open:
                # paramiko's reader thread wakes every 0.1 s on an idle socket; a kept connection that
                # waits for the next --watch refresh need not burn the controller's CPU doing so.
                transport.sock.settimeout(1.0)
            return transport
        except BaseException:
            _close_quietly(transport)
            raise

    def _verify_host_key(self, ep: Endpoint, transport: paramiko.Transport,
                         known: Mapping[str, paramiko.PKey]) -> None:
        key = transport.get_remote_server_key()
        recorded = known.get(key.get_name())
        if recorded is not None:
            if recorded == key:
                return
            raise NodeError(OutcomeStatus.HOSTKEY_FAILED,
                            f"HOST KEY CHANGED for {ep.known_hosts_name} ({key.get_name()} "
                            f"{key.fingerprint}): possible man-in-the-middle, or the node was reinstalled; "
                            "remove the old key (ssh-keygen -R) only after checking")
        if known:
            raise NodeError(OutcomeStatus.HOSTKEY_FAILED, f"{ep.known_hosts_name} offered a {key.get_name()} key but "
                            f"known_hosts records {', '.join(known)}")
        if not self.options.accept_new_hostkeys:  # pragma: no cover - refused before the handshake
            raise NodeError(OutcomeStatus.HOSTKEY_FAILED, f"host key for {ep.known_hosts_name} is unknown")
        target = next((f for f in ep.known_hosts_files if not f.startswith("/etc/")), ep.known_hosts_files[0])
        self.known_hosts.add(ep.known_hosts_name, key, target)

    def _authenticate(self, ep: Endpoint, transport: paramiko.Transport) -> None:
        keys: list[paramiko.PKey] = []
        if not ep.identities_only:
            keys.extend(self.identities.agent_keys())
        for path in ep.identity_files:
            key = self.identities.key(path)
            if key is not None:
                keys.append(key)
        if not keys:
            raise NodeError(OutcomeStatus.AUTH_FAILED, f"no usable private key for {ep.user}@{ep.name} (tried "
                            f"{', '.join(_short(p) for p in ep.identity_files)}; encrypted keys need ssh-agent)")
        last = "no key accepted"
        for key in keys:
            try:
                transport.auth_publickey(ep.user, key)
            except paramiko.AuthenticationException as exc:
                last = str(exc) or "key rejected"
                continue
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise NodeError(OutcomeStatus.UNREACHABLE, f"connection lost during authentication: {exc}") from exc
            if transport.is_authenticated():
                return
        raise NodeError(OutcomeStatus.AUTH_FAILED, f"{ep.user}@{ep.name}: public key authentication failed ({last})")

    @contextmanager
    def _connection(self, node: Node, ep: Endpoint, deadline: float) -> Iterator[paramiko.Transport]:
        if self.options.keep_open:
            transport = self._kept_transport(node, ep, deadline)
            try:
                yield transport
            except BaseException:
                self._forget(node.name, transport)
                raise
            return
        transport = self._handshake(ep, deadline)
        try:
            yield transport
        finally:
            _close_quietly(transport)

    # ------------------------------------------------------------ running

    def run(self, node: Node, command: Command, deadline: float) -> Outcome:
        started = time.monotonic()
        if command.timeout_s:
            deadline = min(deadline, started + command.timeout_s + self.options.connect_timeout_s + 2)
        ep = self.endpoint(node)
        attempts = 2 if ep.proxy_jump else 1
        for attempt in range(attempts):
            try:
                with self._connection(node, ep, deadline) as transport:
                    rc, out, err, truncated = self._exec(transport, wrap_command(command), command.stdin, deadline)
                break
            except NodeError as exc:
                failure = exc
            except (paramiko.SSHException, EOFError, OSError) as exc:  # a stream closed under paramiko
                failure = NodeError(OutcomeStatus.UNREACHABLE, f"connection lost: {type(exc).__name__} {exc}".strip(),
                                    command_sent=True)
            # Behind a shared jump connection a forwarded channel is sometimes closed mid-handshake: one more
            # try on a fresh channel, only before the command was sent, never for auth or host-key failures.
            if (attempt + 1 == attempts or failure.status != OutcomeStatus.UNREACHABLE or failure.command_sent
                    or remaining(deadline) <= 0):
                return Outcome(node.name, failure.status, duration_s=time.monotonic() - started, error=failure.reason)
        duration = time.monotonic() - started
        if command.timeout_s and rc == TIMEOUT_RC and duration >= command.timeout_s * 0.95:
            return Outcome(node.name, OutcomeStatus.TIMEOUT, rc=rc, stdout=out, stderr=err, duration_s=duration,
                           error=f"command exceeded {command.timeout_s:g} s", truncated=truncated)
        status = OutcomeStatus.OK if rc == 0 else OutcomeStatus.FAILED
        return Outcome(node.name, status, rc=rc, stdout=out, stderr=err, duration_s=duration,
                       error=None if rc == 0 else f"exit code {rc}", truncated=truncated)

    def _exec(self, transport: paramiko.Transport, script: str, stdin: bytes | None,
              deadline: float) -> tuple[int, str, str, bool]:
        try:
            channel = transport.open_session(timeout=max(0.1, remaining(deadline)))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise NodeError(OutcomeStatus.UNREACHABLE, f"cannot open a session: {exc}") from exc
        try:
            channel.exec_command(script)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            return _drain(channel, deadline)
        except NodeError as exc:
            exc.command_sent = True
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise NodeError(OutcomeStatus.UNREACHABLE, f"connection lost: {exc}", command_sent=True) from exc
        finally:
            channel.close()

    def open_stream(self, node: Node, command: Command, deadline: float) -> SshStream:
        """Start `command` on the node and leave it running, stdin open (the probe's serve mode); the
        connection is kept until close(). Raises StreamError with the node's outcome when it cannot."""
        started = time.monotonic()
        ep = self.endpoint(node)
        attempts = 2 if ep.proxy_jump else 1
        for attempt in range(attempts):
            try:
                transport = self._kept_transport(node, ep, deadline)
                try:
                    channel = transport.open_session(timeout=max(0.1, remaining(deadline)))
                    channel.exec_command(wrap_command(command))
                    if command.stdin:
                        channel.sendall(command.stdin)
                except (paramiko.SSHException, EOFError, OSError) as exc:
                    self._forget(node.name, transport)
                    raise NodeError(OutcomeStatus.UNREACHABLE,
                                    f"connection lost: {type(exc).__name__} {exc}".strip()) from exc
                return SshStream(channel)
            except NodeError as exc:
                failure = exc
            except (paramiko.SSHException, EOFError, OSError) as exc:  # a stream closed under paramiko
                failure = NodeError(OutcomeStatus.UNREACHABLE, f"connection lost: {type(exc).__name__} {exc}".strip())
            if attempt + 1 == attempts or failure.status != OutcomeStatus.UNREACHABLE or remaining(deadline) <= 0:
                break
        raise StreamError(Outcome(node.name, failure.status, duration_s=time.monotonic() - started,
                                  error=failure.reason))

    def _kept_transport(self, node: Node, ep: Endpoint, deadline: float) -> paramiko.Transport:
        with self._open_lock:
            transport = self._open.get(node.name)
        if transport is None or not transport.is_active():
            transport = self._handshake(ep, deadline)
            with self._open_lock:
                self._open[node.name] = transport
        return transport

    def _forget(self, name: str, transport: paramiko.Transport) -> None:
        with self._open_lock:
            if self._open.get(name) is transport:
                del self._open[name]
        _close_quietly(transport)

    def drop(self, node: Node) -> None:
        """Close the kept connection to one node (it stopped answering): the next use connects afresh."""
        with self._open_lock:
            transport = self._open.pop(node.name, None)
        if transport is not None:
            _close_quietly(transport)

    def close(self) -> None:
        with self._open_lock:
            transports = list(self._open.values())
            self._open.clear()
        with self._jump_lock:
            transports.extend(c.transport for c in self._jumps.values() if c.transport is not None)
            self._jumps.clear()
        for transport in transports:
            _close_quietly(transport)


class SshStream:
    """A command left running on a kept channel. `fileno()` becomes readable when stdout or stderr has data
    or the command ended, so one thread can poll() a thousand of them."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel
        self._fd = channel.fileno()

    def fileno(self) -> int:
        return self._fd

    def send(self, data: bytes) -> bool:
        """Write to the command's stdin; False when the channel is gone."""
        try:
            self._channel.sendall(data)
        except (paramiko.SSHException, EOFError, OSError):
            return False
        return True

    def read(self) -> tuple[bytes, bytes]:
        """(stdout, stderr) available now, without waiting."""
        out = err = b""
        with suppress(paramiko.SSHException, EOFError, OSError, TimeoutError):
            while self._channel.recv_ready():
                out += self._channel.recv(1 << 16)
            while self._channel.recv_stderr_ready():
                err += self._channel.recv_stderr(1 << 16)
        return out, err

    def finished(self) -> bool:
        """The command closed its output or the connection is gone (read() first: data may remain)."""
        channel = self._channel
        transport = channel.get_transport()
        return bool(channel.eof_received or channel.closed or transport is None or not transport.is_active())

    def connected(self) -> bool:
        """Whether the SSH connection under the stream is still up (the command may have ended)."""
        transport = self._channel.get_transport()
        return bool(transport is not None and transport.is_active())

    def exit_code(self, wait_s: float = 0.2) -> int | None:
        """The exit code of a finished command (it follows the end of output within milliseconds), or None
        when there is none (killed by a signal, or the connection was lost)."""
        channel = self._channel
        if channel.status_event.wait(wait_s):
            code = channel.recv_exit_status()  # -1: closed without a status
            return None if code < 0 else code
        return None

    def close(self) -> None:
        with suppress(paramiko.SSHException, EOFError, OSError):
            self._channel.close()


class _Capped:
    """One output stream, kept up to MAX_OUTPUT_BYTES and drained past it (a full window would stall the node)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False

    def take(self, ready: Callable[[], bool], recv: Callable[[int], bytes]) -> None:
        while ready():
            chunk = recv(65536)
            if self.size < MAX_OUTPUT_BYTES:
                self.chunks.append(chunk)
            else:
                self.truncated = True
            self.size += len(chunk)

    def text(self) -> str:
        return b"".join(self.chunks)[:MAX_OUTPUT_BYTES].decode("utf-8", "replace")


def _drain(channel: paramiko.Channel, deadline: float) -> tuple[int, str, str, bool]:
    """Read stdout and stderr together until the command exits, or raise OutcomeStatus.TIMEOUT at the deadline."""
    out, err = _Capped(), _Capped()
    poller = select.poll()  # not select(): with a thousand kept connections, descriptors pass 1024
    poller.register(channel.fileno(), select.POLLIN)  # readable when either stream has data or it closes
    while True:
        out.take(channel.recv_ready, channel.recv)
        err.take(channel.recv_stderr_ready, channel.recv_stderr)
        if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready() and (
                channel.eof_received or channel.closed):
            break
        left = remaining(deadline)
        if left <= 0:
            raise NodeError(OutcomeStatus.TIMEOUT, "no answer before the deadline (command still running?)")
        poller.poll(min(left, 1.0) * 1000)
    rc = channel.recv_exit_status()  # already available: exit_status_ready() was true
    return rc, out.text(), err.text(), out.truncated or err.truncated


def _close_quietly(transport: paramiko.Transport) -> None:
    """Close a connection that may already be broken. Over a jump host, closing sends a channel close on
    the jump connection, which raises EOFError when that channel died first; such an error must not
    replace the reason the connection is being closed (and hide that the command was never sent)."""
    with suppress(paramiko.SSHException, EOFError, OSError):
        transport.close()


def _short(path: str) -> str:
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if path.startswith(home + "/") else path


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(Path.home().name or "root")
