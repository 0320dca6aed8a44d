"""known_hosts: every file OpenSSH would read, parsed once per run and indexed (hashed entries and
`[host]:port` names included), looked up per node, and newly trusted keys recorded (append only)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from collections.abc import Sequence

import paramiko

USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")

# Signature algorithms paramiko may negotiate for each key type found in known_hosts.
KEY_ALGORITHMS = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
}


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
