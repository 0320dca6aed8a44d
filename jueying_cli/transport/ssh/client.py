"""SshTransport: resolve a node's endpoint, connect (through shared ProxyJump chains), verify its host key,
authenticate, run one command and drain its output, and keep connections open between runs when asked.

Every step is bounded by the node's deadline, nothing ever prompts, and every socket has TCP_NODELAY
(without it a reused connection pays ~40 ms per command).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import paramiko

from jueying_cli.inventory.model import Node
from jueying_cli.outcome import Outcome
from jueying_cli.transport.base import TIMEOUT_RC, Cancel, Command, StreamError, lifeline, remaining, wrap_command
from jueying_cli.transport.ssh import hostkeys
from jueying_cli.transport.ssh.certs import CERT_SUFFIX, BlobError, fingerprint
from jueying_cli.transport.ssh.config import SshConfig
from jueying_cli.transport.ssh.endpoint import Endpoint, Endpoints, parse_jump
from jueying_cli.transport.ssh.jump import Connection, ForwardedSocket, RefusedOpen
from jueying_cli.transport.ssh.keys import Identities
from jueying_cli.transport.ssh.known_hosts import Entry, KnownHosts
from jueying_cli.transport.ssh.options import SshOptions
from jueying_cli.transport.ssh.stream import Drained, SshStream, drain
from jueying_cli.vocab import OutcomeStatus, StopReason

# paramiko logs handshake failures with tracebacks; each node's outcome already says what went wrong.
_paramiko_log = logging.getLogger("paramiko")
_paramiko_log.addHandler(logging.NullHandler())
_paramiko_log.propagate = False


class NodeError(Exception):
    """A failure with its outcome status and a short reason for the operator."""

    def __init__(self, status: OutcomeStatus, reason: str, *, command_sent: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.command_sent = command_sent  # the node may have started the command: never run it again


@dataclass
class _Jump:
    transport: Connection | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class SshTransport:
    """Runs commands over SSH. Thread-safe: one instance serves a whole fan-out."""

    def __init__(self, options: SshOptions | None = None) -> None:
        self.options = options or SshOptions()
        self.config = SshConfig(self.options.ssh_config_path)
        self.endpoints = Endpoints(self.config, self.options)
        self.known_hosts = KnownHosts()
        self.identities = Identities()
        self._jumps: dict[tuple[str, ...], _Jump] = {}
        self._jump_lock = threading.Lock()
        self._open: dict[str, paramiko.Transport] = {}
        self._open_lock = threading.Lock()

    # ------------------------------------------------------------ resolution

    def endpoint(self, node: Node) -> Endpoint:
        return self.endpoints.resolve(node.name, node.address, node.vars.get("ssh_port"), node.vars.get("ssh_user"),
                                      node.vars.get("ssh_identity_file"), node.vars.get("ssh_proxy_jump"))

    # ------------------------------------------------------------ connecting

    def _open_socket(self, ep: Endpoint, deadline: float) -> socket.socket | ForwardedSocket:
        """A TCP socket, or a direct-tcpip channel through the (shared) jump host chain."""
        limit = min(ep.connect_timeout_s, remaining(deadline))
        if limit <= 0:
            raise NodeError(OutcomeStatus.TIMEOUT, "deadline reached before connecting")
        if ep.proxy_jump:
            via = ep.proxy_jump[-1]
            jump = self._jump_transport(ep.proxy_jump, deadline)
            try:
                return jump.open_forward(ep.address, ep.port, limit, deadline, via)
            except RefusedOpen as exc:
                raise NodeError(OutcomeStatus.UNREACHABLE, f"jump host {via} cannot reach "
                                f"{ep.address}:{ep.port}: {exc}") from exc
            except (paramiko.SSHException, OSError, EOFError) as exc:
                lost = jump.lost()
                raise NodeError(OutcomeStatus.UNREACHABLE,
                                f"lost the connection to jump host {via}: {lost}" if lost else
                                f"jump host {via} cannot reach {ep.address}:{ep.port}: {_said(exc)}") from exc
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

    def _jump_transport(self, hops: tuple[str, ...], deadline: float) -> Connection:
        """One authenticated connection per jump chain, shared by every node behind it."""
        with self._jump_lock:
            conn = self._jumps.get(hops)
            if conn is None:
                conn = _Jump()
                self._jumps[hops] = conn
        with conn.lock:
            if conn.transport is not None and conn.transport.is_active():
                return conn.transport
            user, host, port = parse_jump(hops[-1])
            ep = self.endpoints.resolve(host, None, port, user, None, ",".join(hops[:-1]) or "none")
            try:
                conn.transport = self._handshake(ep, deadline)
            except NodeError as exc:
                raise NodeError(OutcomeStatus.UNREACHABLE if exc.status == OutcomeStatus.TIMEOUT else exc.status,
                                f"jump host {hops[-1]}: {exc.reason}") from exc
            return conn.transport

    def _handshake(self, ep: Endpoint, deadline: float) -> Connection:
        known = self.known_hosts.lookup(ep.known_hosts_name, ep.known_hosts_files)
        # Resolve and connect first, as OpenSSH does: a name that does not resolve or a node that is down is
        # unreachable, whatever known_hosts holds for it.
        sock = self._open_socket(ep, deadline)
        if not (known or ep.accept_new
                or (ep.known_hosts_bare and self.known_hosts.lookup(ep.known_hosts_bare, ep.known_hosts_files))):
            with suppress(OSError, EOFError, paramiko.SSHException):
                sock.close()
            raise NodeError(OutcomeStatus.HOSTKEY_FAILED, self._unknown(ep))  # what the handshake would decide
        transport = Connection(sock)
        try:
            limit = max(0.1, min(ep.connect_timeout_s, remaining(deadline)))
            transport.banner_timeout = limit
            transport.handshake_timeout = limit
            transport.auth_timeout = limit
            # OpenSSH's preference: certificates, and the key types known for this host, first
            security = transport.get_security_options()
            supported = list(getattr(paramiko.Transport, "_key_info", {}))  # certificate algorithms included
            security.key_types = hostkeys.order_algorithms(list(security.key_types), supported, known)
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
            self._verify_host_key(ep, transport)
            self._authenticate(ep, transport, limit)
            if self.options.keep_open:
                # paramiko's reader thread wakes every 0.1 s on an idle socket; a kept connection that
                # waits for the next --watch refresh need not burn the controller's CPU doing so.
                transport.sock.settimeout(1.0)
            return transport
        except NodeError as exc:
            _close_quietly(transport)
            lost = _lost(transport)
            if lost and exc.status in (OutcomeStatus.UNREACHABLE, OutcomeStatus.TIMEOUT):
                # the node did not fail (or hang): the connection under it went, and this says why
                raise NodeError(OutcomeStatus.UNREACHABLE, lost) from exc
            raise
        except BaseException:
            _close_quietly(transport)
            raise

    def _verify_host_key(self, ep: Endpoint, transport: paramiko.Transport) -> None:
        """Accept the server's key (or host certificate) as OpenSSH would, or record it if it is new and
        --accept-new-hostkeys allows; otherwise hostkey_failed with the reason (hostkeys.py)."""
        key = transport.get_remote_server_key()
        blob, cert = key.asbytes(), None
        public = getattr(key, "public_blob", None)
        if public is not None and str(public.key_type).endswith(CERT_SUFFIX):
            try:
                cert = hostkeys.presented_certificate(public.key_blob)
            except BlobError as exc:  # OpenSSH would not even load such a certificate
                raise NodeError(OutcomeStatus.HOSTKEY_FAILED, f"{ep.known_hosts_name} presented an unusable host "
                                f"certificate ({public.key_type}): {exc}") from exc
            if cert.key_blob != blob:
                raise NodeError(OutcomeStatus.HOSTKEY_FAILED, f"{ep.known_hosts_name}: the host certificate does "
                                "not certify the key that signed the key exchange")

        if ep.revoked_host_keys:
            reason = hostkeys.revoked_by_file(ep.revoked_host_keys, blob, cert)
            if reason:
                raise NodeError(OutcomeStatus.HOSTKEY_FAILED, f"{ep.known_hosts_name}: {reason}")

        def lookup(name: str) -> Sequence[Entry]:
            return self.known_hosts.lookup(name, ep.known_hosts_files)

        verdict = hostkeys.judge(blob, cert, ep.known_hosts_name, ep.known_hosts_bare, ep.cert_principal, lookup)
        if verdict.status == hostkeys.OK:
            return
        key_type, fp = key.get_name(), fingerprint(blob)
        accept_new = ep.accept_new  # --accept-new-hostkeys, or StrictHostKeyChecking accept-new/no for this host
        if verdict.status == hostkeys.NEW and verdict.may_record and accept_new and ep.record_file:
            self.known_hosts.add(ep.known_hosts_name, key_type, blob, ep.record_file, hashed=ep.hash_known_hosts)
            return
        raise NodeError(OutcomeStatus.HOSTKEY_FAILED,
                        hostkeys.refusal(verdict, ep.known_hosts_name, key_type, fp, accept_new=accept_new)
                        or self._unknown(ep, f"{key_type} {fp}"))

    def _unknown(self, ep: Endpoint, key: str = "") -> str:
        searched = ", ".join(_short(f) for f in ep.known_hosts_files if os.path.isfile(f))
        offered = f" ({key})" if key else ""
        if ep.accept_new:  # only when there is no user known_hosts file to record it in
            return (f"host key for {ep.known_hosts_name}{offered} is unknown and cannot be recorded: "
                    "UserKnownHostsFile is none")
        return (f"host key for {ep.known_hosts_name}{offered} is unknown (not in "
                f"{searched or 'any known_hosts file'}); check it and add it with ssh-keyscan, "
                "or use --accept-new-hostkeys")

    def _authenticate(self, ep: Endpoint, transport: paramiko.Transport, limit: float) -> None:
        """Offer each key in turn, all of them within `limit` seconds: a server that stops answering (a hung
        key lookup) makes the node `timeout`, not `auth_failed`."""
        keys: list[paramiko.PKey] = []
        agent_keys = self.identities.agent_keys()
        if ep.identities_only:  # OpenSSH still signs with the agent's copy of an IdentityFile's key
            wanted = {blob for path in ep.identity_files if (blob := self.identities.public_blob(path))}
            agent_keys = [k for k in agent_keys if k.asbytes() in wanted]
        file_keys = [(path, key) for path in ep.identity_files if (key := self.identities.key(path)) is not None]
        keys.extend(self.identities.offers(agent_keys, file_keys, ep.certificate_files))  # certificates too
        locked = [_short(p) for p in ep.identity_files if self.identities.encrypted(p)]
        hint = (f"; {', '.join(locked)}: passphrase-protected, and jueying never prompts: add it to ssh-agent "
                f"(ssh-add {locked[0]}) and keep SSH_AUTH_SOCK set") if locked else ""
        if not keys:
            raise NodeError(OutcomeStatus.AUTH_FAILED, f"no usable private key for {ep.user}@{ep.name} (tried "
                            f"{', '.join(_short(p) for p in ep.identity_files)}"
                            + (hint or "; an encrypted key needs ssh-agent") + ")")
        last = "no key accepted"
        ends = time.monotonic() + limit
        hung = NodeError(OutcomeStatus.TIMEOUT, f"no answer to authentication from {ep.address}:{ep.port} within "
                         f"{limit:.0f} s (node hung?)")
        for key in keys:
            left = ends - time.monotonic()
            if left <= 0:
                raise hung
            transport.auth_timeout = left
            try:
                transport.auth_publickey(ep.user, key)
            except paramiko.AuthenticationException as exc:
                if "timeout" in str(exc).lower():  # paramiko's "Authentication timeout."
                    raise hung from exc
                if not transport.is_active():  # "transport shut down or saw EOF": lost, not a rejected key
                    raise NodeError(OutcomeStatus.UNREACHABLE,
                                    f"connection lost during authentication: {exc}") from exc
                last = str(exc) or "key rejected"
                continue
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise NodeError(OutcomeStatus.UNREACHABLE, f"connection lost during authentication: {exc}") from exc
            if transport.is_authenticated():
                return
        certs = sum(1 for k in keys if k.public_blob is not None)
        offered = f"; offered {len(keys) - certs} key(s)" + (f" and {certs} certificate(s)" if certs else "")
        raise NodeError(OutcomeStatus.AUTH_FAILED,
                        f"{ep.user}@{ep.name}: public key authentication failed ({last}{offered}{hint})")

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

    def run(self, node: Node, command: Command, deadline: float, cancel: Cancel | None = None) -> Outcome:
        started = time.monotonic()
        if command.timeout_s:
            deadline = min(deadline, started + command.timeout_s + self.options.connect_timeout_s + 2)
        ep = self.endpoint(node)
        command = _for_login(command, ep.user)
        attempts = 2 if ep.proxy_jump else 1
        for attempt in range(attempts):
            try:
                with self._connection(node, ep, deadline) as transport:
                    drained = self._exec(transport, command, deadline, cancel)
                break
            except NodeError as exc:
                failure = exc
            except (paramiko.SSHException, EOFError, OSError) as exc:  # a stream closed under paramiko
                failure = NodeError(OutcomeStatus.UNREACHABLE, f"connection lost: {_said(exc)}", command_sent=True)
            # Behind a shared jump connection a forwarded channel is sometimes closed mid-handshake: one more
            # try on a fresh channel, only before the command was sent, never for auth or host-key failures.
            if (attempt + 1 == attempts or failure.status != OutcomeStatus.UNREACHABLE or failure.command_sent
                    or remaining(deadline) <= 0 or (cancel is not None and cancel.is_set())):
                stopped = None  # a connect, handshake or authentication that timed out: which limit it was
                if failure.status == OutcomeStatus.TIMEOUT:
                    stopped = StopReason.DEADLINE if remaining(deadline) <= 0 else StopReason.LIMIT
                return Outcome(node.name, failure.status, duration_s=time.monotonic() - started, error=failure.reason,
                               stopped=stopped)
        return _outcome(node, command, drained, time.monotonic() - started, cancel)

    def _exec(self, transport: paramiko.Transport, command: Command, deadline: float,
              cancel: Cancel | None) -> Drained:
        try:
            channel = transport.open_session(timeout=max(0.1, remaining(deadline)))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise NodeError(OutcomeStatus.UNREACHABLE,
                            _lost(transport) or f"cannot open a session: {_said(exc)}") from exc
        try:
            channel.exec_command(wrap_command(command))
            if command.stdin:
                _send_stdin(channel, transport, command.stdin)
            if not lifeline(command):
                channel.shutdown_write()  # with a lifeline, stdin stays open for as long as we want the command
            drained = drain(channel, deadline, cancel, lifeline=lifeline(command))
            if drained.rc == -1 and not transport.is_active():
                # paramiko's exit code for a channel closed without one: here the connection went, not the command
                raise NodeError(OutcomeStatus.UNREACHABLE, _lost(transport) or "connection lost before the command "
                                "finished", command_sent=True)
            return drained
        except NodeError as exc:
            exc.command_sent = True
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise NodeError(OutcomeStatus.UNREACHABLE, _lost(transport) or f"connection lost: {_said(exc)}",
                            command_sent=True) from exc
        finally:
            channel.close()  # ends the lifeline, if the command still runs: the node kills it

    def open_stream(self, node: Node, command: Command, deadline: float) -> SshStream:
        """Start `command` on the node and leave it running, stdin open (the probe's serve mode); the
        connection is kept until close(). Raises StreamError with the node's outcome when it cannot."""
        started = time.monotonic()
        ep = self.endpoint(node)
        command = _for_login(command, ep.user)
        attempts = 2 if ep.proxy_jump else 1
        for attempt in range(attempts):
            try:
                transport = self._kept_transport(node, ep, deadline)
                try:
                    channel = transport.open_session(timeout=max(0.1, remaining(deadline)))
                    channel.exec_command(wrap_command(command))
                    if command.stdin:
                        _send_stdin(channel, transport, command.stdin)
                except (paramiko.SSHException, EOFError, OSError) as exc:
                    self._forget(node.name, transport)
                    raise NodeError(OutcomeStatus.UNREACHABLE,
                                    _lost(transport) or f"connection lost: {_said(exc)}") from exc
                return SshStream(channel)
            except NodeError as exc:
                failure = exc
            except (paramiko.SSHException, EOFError, OSError) as exc:  # a stream closed under paramiko
                failure = NodeError(OutcomeStatus.UNREACHABLE, f"connection lost: {_said(exc)}")
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
        self.identities.close()


def _for_login(command: Command, user: str) -> Command:
    """A command that needs root runs through `sudo -n` unless the connection logs in as root (the user
    resolved for it, whichever of ssh_config, the inventory or the local user named it)."""
    return dataclasses.replace(command, sudo=True) if command.as_root and user != "root" else command


def _close_quietly(transport: paramiko.Transport) -> None:
    """Close a connection that may already be broken. Over a jump host, closing sends a channel close on
    the jump connection, which raises EOFError when that channel died first; such an error must not
    replace the reason the connection is being closed (and hide that the command was never sent)."""
    with suppress(paramiko.SSHException, EOFError, OSError):
        transport.close()


def _said(exc: BaseException) -> str:
    """An exception's words; paramiko raises a bare EOFError when the peer just closed the connection."""
    return str(exc).strip() or f"{type(exc).__name__}: the peer closed the connection without a reason"


def _lost(transport: paramiko.Transport) -> str | None:
    """Why a connection is gone, in the words of whoever ended it: the jump host under it, or the node itself;
    None while it is up or when nobody said."""
    sock = transport.sock
    if isinstance(sock, ForwardedSocket) and (lost := sock.lost()):
        return f"lost the connection to jump host {sock.via}: {lost}"
    if isinstance(transport, Connection) and not transport.is_active() and transport.disconnect_reason:
        return f"the node closed the connection: {transport.disconnect_reason}"
    return None


def _short(path: str) -> str:
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if path.startswith(home + "/") else path


def _outcome(node: Node, command: Command, drained: Drained, duration: float, cancel: Cancel | None) -> Outcome:
    """The node's outcome from what the command printed and how it ended (partial output is kept)."""
    out, err, truncated = drained.stdout, drained.stderr, drained.truncated
    if drained.stopped == StopReason.CANCELLED and cancel is not None:
        return Outcome(node.name, OutcomeStatus.TIMEOUT, rc=None, stdout=out, stderr=err, duration_s=duration,
                       error=cancel.reason, truncated=truncated, stopped=StopReason.CANCELLED)
    if drained.rc is None:
        return Outcome(node.name, OutcomeStatus.TIMEOUT, stdout=out, stderr=err, duration_s=duration,
                       error="no answer before the deadline (command still running?)", truncated=truncated,
                       stopped=StopReason.DEADLINE)
    rc = drained.rc
    if command.timeout_s and rc == TIMEOUT_RC and duration >= command.timeout_s * 0.95:
        return Outcome(node.name, OutcomeStatus.TIMEOUT, rc=rc, stdout=out, stderr=err, duration_s=duration,
                       error=f"command exceeded {command.timeout_s:g} s", truncated=truncated)
    status = OutcomeStatus.OK if rc == 0 else OutcomeStatus.FAILED
    return Outcome(node.name, status, rc=rc, stdout=out, stderr=err, duration_s=duration,
                   error=None if rc == 0 else f"exit code {rc}", truncated=truncated)


def _send_stdin(channel: paramiko.Channel, transport: paramiko.Transport, data: bytes) -> None:
    """Send the command's stdin. A command that ends before reading it all (a python3 that is not one, a
    missing interpreter) closes the channel under us: with the connection still up that is not a lost
    node, and the command's output and exit status say what happened, so the error is dropped."""
    try:
        channel.sendall(data)
    except (paramiko.SSHException, EOFError, OSError):
        if not transport.is_active():
            raise
