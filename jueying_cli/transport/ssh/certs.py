"""SSH public key blobs and OpenSSH host certificates (PROTOCOL.certkeys), read and checked as OpenSSH does.

paramiko negotiates host certificate algorithms (ssh-ed25519-cert-v01@openssh.com and the ECDSA and RSA ones)
and checks that the server signed the key exchange with the certified key, but it checks nothing in the
certificate itself: not the CA's signature, not the validity window, not the principals, not the type. This
module does, line for line with OpenSSH's cert_parse() and check_host_cert():

- the CA's signature over the certificate verifies, with a CA key that is not itself a certificate, by an
  algorithm in OpenSSH's default CASignatureAlgorithms (never ssh-rsa / SHA-1);
- the certificate is a host certificate (not a user one);
- valid_after <= now < valid_before;
- an empty principal list is valid for any name, otherwise the name (HostKeyAlias, or the host name without
  the port) must be one of the principals, compared exactly;
- no critical options (OpenSSH knows none for host certificates).
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from dataclasses import dataclass

import paramiko

CERT_SUFFIX = "-cert-v01@openssh.com"
# How many wire fields (string or mpint: both length-prefixed) carry each plain key type's public key.
KEY_FIELDS = {
    "ssh-ed25519": 1,
    "ssh-rsa": 2,
    "ssh-dss": 4,
    "ecdsa-sha2-nistp256": 2,
    "ecdsa-sha2-nistp384": 2,
    "ecdsa-sha2-nistp521": 2,
    "sk-ssh-ed25519@openssh.com": 2,
    "sk-ecdsa-sha2-nistp256@openssh.com": 3,
}
# OpenSSH's default CASignatureAlgorithms, less the security-key ones paramiko cannot verify.
CA_SIGNATURE_ALGORITHMS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                           "rsa-sha2-512", "rsa-sha2-256")
USER_CERT = 1
HOST_CERT = 2
FOREVER = 2**64 - 1


class BlobError(ValueError):
    """A key or certificate blob that does not parse."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def raw(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise BlobError("truncated")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def string(self) -> bytes:
        (size,) = struct.unpack(">I", self.raw(4))
        return self.raw(size)

    def text(self) -> str:
        try:
            return self.string().decode()
        except UnicodeDecodeError as exc:
            raise BlobError("not UTF-8") from exc

    def uint32(self) -> int:
        return int(struct.unpack(">I", self.raw(4))[0])

    def uint64(self) -> int:
        return int(struct.unpack(">Q", self.raw(8))[0])

    def end(self) -> None:
        if self.pos != len(self.data):
            raise BlobError("trailing data")


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def blob_type(blob: bytes) -> str:
    """The key type named at the start of a public key or certificate blob."""
    return _Reader(blob).text()


def _key_fields(reader: _Reader, plain_type: str) -> bytes:
    """The wire bytes of `plain_type`'s public key fields at the reader's position."""
    if plain_type not in KEY_FIELDS:
        raise BlobError(f"unsupported key type {plain_type}")
    start = reader.pos
    fields = [reader.string() for _ in range(KEY_FIELDS[plain_type])]
    if plain_type == "ssh-ed25519" and len(fields[0]) != 32:
        raise BlobError("bad ed25519 key")
    if plain_type.startswith("ecdsa-sha2-") and fields[0].decode(errors="replace") != plain_type[11:]:
        raise BlobError("ECDSA curve does not match the key type")
    return reader.data[start:reader.pos]


def plain_blob(blob: bytes) -> bytes:
    """The plain public key blob of a key blob (itself) or of a certificate blob (the certified key), checked
    for shape; raises BlobError for anything OpenSSH would not load."""
    reader = _Reader(blob)
    name = reader.text()
    if name.endswith(CERT_SUFFIX):
        plain_type = name[:-len(CERT_SUFFIX)]
        reader.string()  # nonce
        return _string(plain_type.encode()) + _key_fields(reader, plain_type)
    _key_fields(reader, name)
    reader.end()
    return blob


@dataclass(frozen=True)
class Certificate:
    cert_type: str
    key_blob: bytes  # the certified key, as a plain public key blob
    serial: int
    kind: int  # 1: user, 2: host
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    critical_options: bytes
    ca_blob: bytes  # the signing CA's public key blob
    signature: bytes
    signed: bytes  # everything the CA signed: the blob up to and including the CA key

    @classmethod
    def parse(cls, blob: bytes) -> Certificate:
        reader = _Reader(blob)
        cert_type = reader.text()
        if not cert_type.endswith(CERT_SUFFIX):
            raise BlobError(f"{cert_type} is not a certificate type")
        plain_type = cert_type[:-len(CERT_SUFFIX)]
        reader.string()  # nonce
        key_blob = _string(plain_type.encode()) + _key_fields(reader, plain_type)
        serial, kind, key_id = reader.uint64(), reader.uint32(), reader.text()
        names = _Reader(reader.string())
        principals: list[str] = []
        while names.pos < len(names.data):
            principals.append(names.text())
        valid_after, valid_before = reader.uint64(), reader.uint64()
        critical_options = reader.string()
        reader.string()  # extensions: none defined for host certificates
        reader.string()  # reserved
        ca_blob = reader.string()
        signed = blob[:reader.pos]
        signature = reader.string()
        reader.end()
        return cls(cert_type, key_blob, serial, kind, key_id, tuple(principals), valid_after, valid_before,
                   critical_options, ca_blob, signature, signed)

    def signature_problem(self) -> str | None:
        """Why the CA's signature is not acceptable (OpenSSH would not even load the certificate), or None."""
        try:
            ca_type = blob_type(self.ca_blob)
            if ca_type.endswith(CERT_SUFFIX):
                return "its CA key is itself a certificate"
            plain_blob(self.ca_blob)
            algorithm = blob_type(self.signature)
        except BlobError as exc:
            return f"malformed CA key or signature ({exc})"
        if algorithm not in CA_SIGNATURE_ALGORITHMS:
            return f"signed with {algorithm}, which OpenSSH does not accept from a CA"
        try:
            ca_key = _public_key(ca_type, self.ca_blob)
            good = ca_key.verify_ssh_sig(self.signed, paramiko.Message(self.signature))
        except (paramiko.SSHException, ValueError, TypeError, IndexError, struct.error) as exc:
            return f"CA signature cannot be checked ({exc})"
        return None if good else "the CA's signature does not verify"

    def host_problem(self, name: str, now: float | None = None) -> str | None:
        """OpenSSH's check_host_cert(): why this certificate does not certify host `name` now, or None.
        The wording is OpenSSH's ("Certificate invalid: expired", ...)."""
        when = int(time.time() if now is None else now)
        if self.kind != HOST_CERT:
            return "Certificate invalid: not a host certificate"
        if when < self.valid_after:
            return "Certificate invalid: not yet valid"
        if when >= self.valid_before:
            return "Certificate invalid: expired"
        if self.principals and name not in self.principals:
            return f"Certificate invalid: name is not a listed principal ({name} not in {', '.join(self.principals)})"
        if self.critical_options:
            return f"Certificate for {name} contains unsupported critical options"
        return None

    def describe(self) -> str:
        """ID, serial and validity, for messages."""
        def stamp(value: int) -> str:
            return "forever" if value >= FOREVER else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
        return f'ID "{self.key_id}" serial {self.serial} valid {stamp(self.valid_after)} to {stamp(self.valid_before)}'


def _public_key(key_type: str, blob: bytes) -> paramiko.PKey:
    if key_type == "ssh-ed25519":
        return paramiko.Ed25519Key(data=blob)
    if key_type == "ssh-rsa":
        return paramiko.RSAKey(data=blob)
    if key_type.startswith("ecdsa-sha2-"):
        return paramiko.ECDSAKey(data=blob)
    raise ValueError(f"cannot verify signatures of {key_type} keys")


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
