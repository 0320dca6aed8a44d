"""Client identities: private key files, ssh-agent keys and user certificates, each loaded once per run and
never prompted for.

User certificates are offered as OpenSSH offers them: a `CertificateFile` whose certified key is one of the
identities (a file's key or an agent's) is offered with that key, and so is `<IdentityFile>-cert.pub` beside
an identity file. paramiko itself only knows the second (PKey.from_path loads it, and then offers nothing
but the certificate): keys are loaded plain here, and each certificate becomes its own offer.
"""

from __future__ import annotations

import base64
import copy
import os
import threading
from dataclasses import dataclass

import paramiko
from paramiko.pkey import PublicBlob

from jueying_cli.transport.ssh.certs import USER_CERT, BlobError, Certificate

CERT_FILE_SUFFIX = "-cert.pub"  # OpenSSH's name for the certificate of an identity file


@dataclass(frozen=True)
class UserCertificate:
    """A user certificate file: its algorithm name, the certificate blob, and the key it certifies."""

    path: str
    cert_type: str  # e.g. ssh-ed25519-cert-v01@openssh.com
    blob: bytes
    key_blob: bytes  # the certified public key (plain blob)


def with_certificate(key: paramiko.PKey, cert: UserCertificate) -> paramiko.PKey | None:
    """A copy of `key` that offers `cert` at login (the key signs), or None when `cert` certifies another
    key. The key itself stays plain."""
    if key.asbytes() != cert.key_blob:
        return None
    offer = copy.copy(key)
    offer.public_blob = PublicBlob(cert.cert_type, cert.blob)
    return offer


class Identities:
    """Private keys loaded once per run (parsing a key costs more than a whole command on a warm link)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, paramiko.PKey | None] = {}
        self._encrypted: set[str] = set()
        self._certs: dict[str, UserCertificate | None] = {}
        self._local = threading.local()  # this thread's agent connection and its keys
        self._agents: list[paramiko.Agent] = []
        self._generation = 0  # bumped by close(): connections of an older generation are closed

    def key(self, path: str) -> paramiko.PKey | None:
        """The key in `path`, or None: missing, unreadable, or passphrase-protected (we never prompt;
        `encrypted()` tells that case apart)."""
        with self._lock:
            if path not in self._keys:
                try:
                    self._keys[path] = _plain_key(path)
                except paramiko.PasswordRequiredException:
                    self._keys[path] = None
                    self._encrypted.add(path)
                except TypeError:  # cryptography: "password-protected, but password was not provided"
                    self._keys[path] = None
                    self._encrypted.add(path)
                except (OSError, paramiko.SSHException, ValueError):
                    self._keys[path] = None
            return self._keys[path]

    def public_blob(self, path: str) -> bytes | None:
        """The public key of the identity `path`: from the key itself, or from `path.pub` (all OpenSSH reads
        of a passphrase-protected key without its passphrase); None when neither can be read."""
        key = self.key(path)
        if key is not None:
            return key.asbytes()
        try:
            with open(path + ".pub", encoding="ascii", errors="replace") as fh:
                fields = fh.read().split()
            return base64.b64decode(fields[1], validate=True) if len(fields) >= 2 else None
        except (OSError, ValueError):
            return None

    def certificate(self, path: str) -> UserCertificate | None:
        """The user certificate in `path` (`TYPE BASE64 [comment]`, as ssh-keygen -s writes it), or None:
        missing, unreadable, not a certificate, or a host certificate (OpenSSH skips those too)."""
        with self._lock:
            if path not in self._certs:
                self._certs[path] = _read_certificate(path)
            return self._certs[path]

    def offers(self, agent_keys: list[paramiko.PKey], file_keys: list[tuple[str, paramiko.PKey]],
               certificate_files: tuple[str, ...]) -> list[paramiko.PKey]:
        """Everything to offer at login, in OpenSSH's order (sshconnect2.c pubkey_prepare): each CertificateFile
        certificate first, signed by the first identity holding its key; then the agent's keys; then each
        identity file's key followed by the certificate beside it (`PATH-cert.pub`, loaded by ssh.c as an
        identity of its own), unless that certificate was already offered. A certificate of no key at hand
        is not offered."""
        keys = [*agent_keys, *(key for _, key in file_keys)]
        out: list[paramiko.PKey] = []
        offered: set[bytes] = set()
        for path in certificate_files:
            cert = self.certificate(path)
            if cert is None or cert.blob in offered:
                continue
            offer = next((o for k in keys if (o := with_certificate(k, cert)) is not None), None)
            if offer is not None:
                out.append(offer)
                offered.add(cert.blob)
        out.extend(agent_keys)
        for path, key in file_keys:
            out.append(key)
            own = self.certificate(path + CERT_FILE_SUFFIX)
            if own is not None and own.blob not in offered:
                offer = with_certificate(key, own)
                if offer is not None:
                    out.append(offer)
                    offered.add(own.blob)
        return out

    def encrypted(self, path: str) -> bool:
        """`path` holds a passphrase-protected key (known once `key(path)` was asked)."""
        with self._lock:
            return path in self._encrypted

    def agent_keys(self) -> list[paramiko.PKey]:
        """The agent's keys, over a connection of the calling thread's own: paramiko's agent client is one
        socket without a lock, and fan-out threads signing over a shared one read each other's answers
        (most nodes of a run then failed authentication, or waited for an answer that never came)."""
        keys: list[paramiko.PKey] | None = getattr(self._local, "agent_keys", None)
        if keys is None or getattr(self._local, "generation", None) != self._generation:
            keys = []
            if os.environ.get("SSH_AUTH_SOCK"):
                try:
                    agent = paramiko.Agent()
                    keys = list(agent.get_keys())
                except (OSError, paramiko.SSHException):
                    keys = []
                else:
                    with self._lock:
                        self._agents.append(agent)
            self._local.agent_keys, self._local.generation = keys, self._generation
        return keys

    def close(self) -> None:
        """Close every agent connection (a later agent_keys() opens a new one)."""
        with self._lock:
            agents, self._agents = self._agents, []
            self._generation += 1
        for agent in agents:
            agent.close()


def _plain_key(path: str) -> paramiko.PKey:
    """The private key in `path`, without the certificate paramiko would attach from `path-cert.pub` (offered
    on its own, see the module doc); a broken certificate file beside it does not lose the key."""
    try:
        key = paramiko.PKey.from_path(path)
    except (paramiko.SSHException, ValueError) as exc:
        if isinstance(exc, paramiko.PasswordRequiredException) or not os.path.exists(path + CERT_FILE_SUFFIX):
            raise
        for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            try:
                return kind.from_private_key_file(path)
            except paramiko.PasswordRequiredException:
                raise
            except (paramiko.SSHException, ValueError):
                continue
        raise
    key.public_blob = None
    return key


def _read_certificate(path: str) -> UserCertificate | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            fields = fh.read(64 * 1024).split()
        blob = base64.b64decode(fields[1], validate=True) if len(fields) >= 2 else b""
        cert = Certificate.parse(blob)
    except (OSError, ValueError, BlobError):
        return None
    if cert.kind != USER_CERT or fields[0] != cert.cert_type:
        return None
    return UserCertificate(path, cert.cert_type, blob, cert.key_blob)
