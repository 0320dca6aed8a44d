"""known_hosts: every file OpenSSH would read, parsed once per run, indexed, and looked up per host name
exactly as OpenSSH's hostfile.c does; newly trusted keys recorded (append only).

A line is `[@cert-authority|@revoked] NAMES KEYTYPE BASE64 [comment]`. NAMES is either one hashed name
(`|1|salt|hmac-sha1`, as `ssh-keygen -H` writes) or a comma-separated list of patterns: `*` matches any run
of characters, `?` exactly one, every other character (`[`, `]`, `:` included) itself, case-insensitively; a
pattern prefixed `!` that matches excludes the line for that name whatever else matches, and a list with only
negated patterns matches nothing. Lines that do not parse (unknown marker, bad key, bad hash) are skipped,
as OpenSSH skips them. Judging what the entries found mean is hostkeys.py's job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from jueying_cli.transport.ssh.certs import BlobError, blob_type, plain_blob

USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")

PLAIN = ""
_SHA1_SIZE = 20  # hashed names are HMAC-SHA1 (OpenSSH's format: not ours to choose)
CA = "@cert-authority"
REVOKED = "@revoked"


@dataclass(frozen=True)
class Entry:
    """One parsed known_hosts line that names the host looked up."""

    marker: str  # PLAIN, CA or REVOKED
    key_type: str  # of the plain key (a certificate on a line counts as the key it certifies)
    blob: bytes  # the plain public key blob
    path: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


_Patterns = tuple[tuple[bool, re.Pattern[str]], ...]


def compile_patterns(names: str) -> _Patterns:
    """A comma-separated OpenSSH pattern list, compiled: (negated, regex) per pattern."""
    compiled = []
    for part in names.split(","):
        negated = part.startswith("!")
        text = part[1:] if negated else part
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text.lower())
        compiled.append((negated, re.compile(regex, re.DOTALL)))
    return tuple(compiled)


def match_patterns(name: str, patterns: _Patterns) -> bool:
    """OpenSSH's match_hostname(): a negated match excludes, else any positive match matches."""
    lowered = name.lower()
    positive = False
    for negated, regex in patterns:
        if regex.fullmatch(lowered):
            if negated:
                return False
            positive = True
    return positive


def _parse_key(fields: list[str]) -> tuple[str, bytes] | None:
    """(plain key type, plain blob) of `KEYTYPE BASE64 ...`, or None if OpenSSH would not load it."""
    if len(fields) < 2:
        return None
    try:
        blob = base64.b64decode(fields[1], validate=True)
        if blob_type(blob) != fields[0]:
            return None
        plain = plain_blob(blob)
        return blob_type(plain), plain
    except (BlobError, binascii.Error, ValueError):
        return None


class _KnownHostsFile:
    """One known_hosts file, indexed: literal names in a dict (O(1) per lookup on a thousand-node file),
    pattern lines and hashed lines in lists."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.literal: dict[str, list[Entry]] = {}
        self.patterns: list[tuple[_Patterns, Entry]] = []
        self.hashed: list[tuple[bytes, bytes, Entry]] = []
        self.lines = 0  # read, or appended by this run

    @classmethod
    def read(cls, path: str) -> _KnownHostsFile:
        index = cls(path)
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                lines = fh.readlines()
        except OSError:
            return index  # an unreadable file knows no host
        for number, line in enumerate(lines, start=1):
            index._add_line(line, number)
        index.lines = len(lines)
        return index

    def _add_line(self, line: str, number: int) -> None:
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            return
        marker = PLAIN
        if fields[0].startswith("@"):
            if fields[0] not in (CA, REVOKED):
                return  # an unknown marker: OpenSSH skips the line
            marker = fields.pop(0)
            if fields and fields[0].startswith("@"):
                return  # only one marker is allowed
        if len(fields) < 3:
            return
        parsed = _parse_key(fields[1:])
        if parsed is None:
            return
        self.add(fields[0], Entry(marker, parsed[0], parsed[1], self.path, number))

    def add(self, names: str, entry: Entry) -> None:
        if names.startswith("|"):
            hashed = _parse_hashed(names)
            if hashed is not None:
                self.hashed.append((*hashed, entry))
            return
        if any(c in names for c in "*?!"):
            self.patterns.append((compile_patterns(names), entry))
            return
        for name in dict.fromkeys(names.lower().split(",")):
            self.literal.setdefault(name, []).append(entry)

    def lookup(self, name: str) -> list[Entry]:
        found = list(self.literal.get(name.lower(), ()))
        found.extend(entry for patterns, entry in self.patterns if match_patterns(name, patterns))
        if self.hashed:
            encoded = name.encode()
            found.extend(entry for salt, digest, entry in self.hashed
                         if hmac.compare_digest(hmac.new(salt, encoded, hashlib.sha1).digest(), digest))
        return sorted(found, key=lambda e: e.line)


def _parse_hashed(names: str) -> tuple[bytes, bytes] | None:
    """(salt, digest) of `|1|base64 salt|base64 digest`, or None (OpenSSH: a bad host hash, line skipped)."""
    parts = names.split("|")
    if len(parts) != 4 or parts[0] or parts[1] != "1":
        return None
    try:
        salt, digest = base64.b64decode(parts[2], validate=True), base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(salt) != _SHA1_SIZE or len(digest) != _SHA1_SIZE:
        return None
    return salt, digest


def hash_name(name: str, salt: bytes | None = None) -> str:
    """`|1|salt|hmac` for `name`, as `ssh-keygen -H` and HashKnownHosts write it."""
    salt = salt if salt is not None else os.urandom(_SHA1_SIZE)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


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

    def lookup(self, name: str, files: Sequence[str]) -> list[Entry]:
        """Every entry (plain, @cert-authority, @revoked) of every file whose names match `name`, file by
        file in the order given (OpenSSH: the user files, then the system files)."""
        found: list[Entry] = []
        for path in dict.fromkeys(files):
            found.extend(self._load(path).lookup(name))
        return found

    def add(self, name: str, key_type: str, blob: bytes, path: str, *, hashed: bool = False) -> str:
        """Record a newly trusted key under `name` (lowercased, as OpenSSH writes it; hashed when asked);
        append only: never rewrites what the operator has. Returns the line written."""
        name = name.lower()
        written = hash_name(name) if hashed else name
        line = f"{written} {key_type} {base64.b64encode(blob).decode()}\n"
        with self._lock:
            index = self._load(path)  # before writing: the new line is indexed once, below
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
            index.lines += 1
            index.add(written, Entry(PLAIN, key_type, blob, path, index.lines))
        return line

