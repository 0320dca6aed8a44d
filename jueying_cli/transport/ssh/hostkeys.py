"""Host key verification, decided as OpenSSH's sshconnect.c decides it (check_host_key, order_hostkeyalgs).

Given the key (or certificate) a server proved it holds and the known_hosts entries for its name:

1. Revoked: an `@revoked` line holds the key, or the certificate's CA key: refused, nothing is retried.
2. Certificate: if an `@cert-authority` line for the name holds the certificate's CA key and the certificate
   is valid for the name now (certs.py), the host is known. Otherwise the certificate is dropped and the
   plain key it certifies is judged as below (OpenSSH's "Retry with plain key").
3. Plain key: known when any plain line for the name holds it (several keys per host: any one); CHANGED when
   plain lines exist but none holds it (whatever their key types); NEW when there are none.
4. NEW on a port other than 22, without HostKeyAlias: the same checks under the bare host name; known there
   is known.

Where jueying is stricter than OpenSSH (both only matter with --accept-new-hostkeys, since OpenSSH with
StrictHostKeyChecking=yes also refuses): a NEW key is never recorded when a listed CA signed the host's
certificate but the certificate is invalid (OpenSSH records the plain key), nor when the key is revoked under
the bare host name of a `[host]:port` (OpenSSH ignores that revocation).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jueying_cli.transport.ssh.certs import CERT_SUFFIX, BlobError, Certificate, plain_blob
from jueying_cli.transport.ssh.known_hosts import CA, PLAIN, REVOKED, Entry

OK, NEW, CHANGED, REVOKED_KEY = "ok", "new", "changed", "revoked"


def _plain_type(algorithm: str) -> str:
    base = algorithm.removesuffix(CERT_SUFFIX)
    return "ssh-rsa" if base.startswith("rsa-sha2-") else base


def order_algorithms(available: Sequence[str], supported: Sequence[str], entries: Sequence[Entry]) -> list[str]:
    """OpenSSH's order_hostkeyalgs() over what paramiko can do: certificate algorithms before plain ones (as
    in OpenSSH's default HostKeyAlgorithms); first every certificate algorithm if an @cert-authority line
    names the host, and every algorithm of a key type recorded for the host; then the rest. `available` is
    paramiko's plain algorithm list, `supported` every algorithm name it knows (certificates included)."""
    certs = [a + CERT_SUFFIX for a in available if a + CERT_SUFFIX in supported]
    default = certs + [a for a in available if a not in certs]
    has_ca = any(e.marker == CA for e in entries)
    known = {e.key_type for e in entries if e.marker != CA}
    first = [a for a in default if (has_ca and a.endswith(CERT_SUFFIX)) or _plain_type(a) in known]
    return first + [a for a in default if a not in first]


@dataclass(frozen=True)
class Verdict:
    status: str  # OK, NEW, CHANGED or REVOKED_KEY
    found: Entry | None = None  # the line that decided (matching key or CA, offending key, revoking line)
    cert_problem: str | None = None  # a listed CA's certificate that did not certify the host, and why
    certificate: Certificate | None = None

    @property
    def may_record(self) -> bool:
        """--accept-new-hostkeys may trust this key: new, and no listed CA vouched for it in vain."""
        return self.status == NEW and self.cert_problem is None


def _check(entries: Sequence[Entry], blob: bytes, cert: Certificate | None) -> tuple[str, Entry | None]:
    """hostfile.c check_hostkeys_by_key_or_type() with a key: OK / CHANGED / NEW, then revocation."""
    status, found = NEW, None
    for entry in entries:
        if entry.marker != (CA if cert else PLAIN):
            continue
        if entry.blob == (cert.ca_blob if cert else blob):
            status, found = OK, entry
            break
        if not cert:
            status, found = CHANGED, entry
    for entry in entries:
        if entry.marker == REVOKED and (entry.blob == blob or (cert is not None and entry.blob == cert.ca_blob)):
            return REVOKED_KEY, entry
    return status, found


def judge(blob: bytes, cert: Certificate | None, name: str, bare: str | None, principal: str,
          lookup: Callable[[str], Sequence[Entry]], now: float | None = None) -> Verdict:
    """Judge the plain key `blob` (presented bare, or certified by `cert`) for known_hosts name `name`;
    `bare` is the host name without port to fall back to (None: port 22 or HostKeyAlias); `principal` is
    the name the certificate must list (HostKeyAlias, or the host name)."""
    entries = lookup(name)
    cert_problem = None
    while True:
        status, found = _check(entries, blob, cert)
        if status == OK and cert is not None:
            problem = cert.host_problem(principal, now)
            if problem is None:
                return Verdict(OK, found, None, cert)
            cert_problem = f"{problem} ({cert.describe()}, CA in {found.where if found else '?'})"
            status = CHANGED  # a listed CA, an invalid certificate: OpenSSH "goto fail", then the plain key
        if status == NEW and bare is not None:
            fallback = judge(blob, cert, bare, None, principal, lookup, now)
            if fallback.status in (OK, REVOKED_KEY):
                return fallback
        if cert is not None and status != REVOKED_KEY:
            cert = None  # "No matching CA found. Retry with plain key"
            continue
        return Verdict(status, found, cert_problem, cert)


def presented_certificate(key_blob: bytes | None) -> Certificate:
    """The certificate a server presented, parsed; raises BlobError (with OpenSSH's view of it) when
    OpenSSH would have refused to load it: malformed, or its CA's signature does not verify."""
    if key_blob is None:
        raise BlobError("no certificate blob")
    cert = Certificate.parse(key_blob)
    problem = cert.signature_problem()
    if problem:
        raise BlobError(problem)
    return cert


def refusal(verdict: Verdict, name: str, key_type: str, fp: str, *, accept_new: bool) -> str:
    """The operator's reason for a key that is not accepted (status NEW: only when it is not recorded)."""
    where = f" ({verdict.found.where})" if verdict.found is not None else ""
    if verdict.status == REVOKED_KEY:
        by_ca = verdict.certificate is not None and verdict.found is not None and \
            verdict.found.blob == verdict.certificate.ca_blob
        what = "the CA key of its host certificate" if by_ca else f"its {key_type} key {fp}"
        return (f"REVOKED HOST KEY for {name}: {what} is marked @revoked{where}; possible use of a stolen key, "
                "refusing to connect")
    cert_note = f"; its host certificate was not accepted: {verdict.cert_problem}" if verdict.cert_problem else ""
    if verdict.status == CHANGED:
        recorded = f"a {verdict.found.key_type} key" if verdict.found is not None else "another key"
        return (f"HOST KEY CHANGED for {name} ({key_type} {fp}): known_hosts records {recorded} for it{where}"
                f"{cert_note}; possible man-in-the-middle, or the node was reinstalled; remove the old key "
                f"(ssh-keygen -R {name}) only after checking")
    if verdict.cert_problem:
        return (f"host certificate for {name} not accepted: {verdict.cert_problem}, and its "
                f"{key_type} key {fp} is unknown" + ("; not recording it" if accept_new else ""))
    return ""  # plain unknown: the caller words it (it knows the files searched)


def revoked_by_file(path: str, blob: bytes, cert: Certificate | None) -> str | None:
    """ssh_config RevokedHostKeys: why `path` refuses the key (or its certificate's CA), or None. A file
    of public keys, one a line, is read; a binary KRL, a missing or unreadable file refuses (jueying cannot
    read KRLs, and OpenSSH too refuses when it cannot check)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return f"RevokedHostKeys {path} cannot be read ({exc.strerror}): refusing, as OpenSSH does"
    if data.startswith(b"SSHKRL\n\0"):
        return f"RevokedHostKeys {path} is a KRL, which jueying cannot read: refusing rather than ignoring it"
    wanted = {blob} | ({cert.ca_blob} if cert is not None else set())
    for number, raw in enumerate(data.decode(errors="replace").splitlines(), start=1):
        fields = raw.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            try:
                if plain_blob(base64.b64decode(fields[1], validate=True)) in wanted:
                    return f"REVOKED HOST KEY: listed in RevokedHostKeys {path}:{number}"
            except (BlobError, binascii.Error, ValueError):
                continue
    return None
