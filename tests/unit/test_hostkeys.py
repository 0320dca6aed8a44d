"""known_hosts matching, host certificates and the host key verdict, checked against OpenSSH's own tools.

`ssh-keygen -F NAME -f FILE` runs OpenSSH's hostfile.c matching (patterns, negation, hashed names,
markers): for every name, jueying must find exactly the lines it finds. Certificates are made by
`ssh-keygen -s`, with ed25519, ECDSA and RSA CAs. The end-to-end decisions against a real sshd are in
tests/integration/test_hostkeys_oracle.py.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from jueying_cli.transport.ssh.certs import BlobError, Certificate, plain_blob
from jueying_cli.transport.ssh.hostkeys import CHANGED, NEW, OK, REVOKED_KEY, judge, order_algorithms, revoked_by_file
from jueying_cli.transport.ssh.known_hosts import CA, PLAIN, REVOKED, Entry, KnownHosts, hash_name

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen (OpenSSH)")


def keygen(path: Path, kind: str = "ed25519") -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", str(path)], check=True)
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def blob_of(public: str) -> bytes:
    return base64.b64decode(public.split()[1])


def sign(tmp: Path, ca: Path, *, host: bool = True, principals: str = "", validity: str | None = None,
         algorithm: str | None = None) -> Certificate:
    key = tmp / "host"
    if not key.exists():
        keygen(key)
    argv = ["ssh-keygen", "-q", "-s", str(ca), "-I", "test"]
    argv += ["-V", validity] if validity else []  # none: valid forever
    argv += ["-h"] if host else []
    argv += ["-n", principals] if principals else []
    argv += ["-t", algorithm] if algorithm else []
    (tmp / "host-cert.pub").unlink(missing_ok=True)
    subprocess.run([*argv, str(key) + ".pub"], check=True, capture_output=True)
    return Certificate.parse(blob_of((tmp / "host-cert.pub").read_text()))


def test_lookup_finds_the_lines_ssh_keygen_finds(tmp_path: Path) -> None:
    key = keygen(tmp_path / "k")
    lines = [
        f"gpu*,!gpu9 {key}", f"@revoked * {key}", f"@cert-authority 10.* {key}", f"[10.0.0.1]:2222 {key}",
        f"10.0.0.? {key}", f"!10.0.0.2 {key}", f"GPU-A,login1 {key}", f"{hash_name('gpu5')} {key}",
        f"{hash_name('[10.0.0.1]:2222')} {key}", f"[10.0.0.*]:22?? {key}", f"*.ib,!bad.ib {key}",
        f"@bogus gpu1 {key}", "gpu1 ssh-ed25519 AAAA=broken", f"gpu1 ssh-rsa {key.split()[1]}", "# gpu1 comment",
        f"  gpu2   {key}  trailing comment", f"@revoked @cert-authority gpu1 {key}", f"|1|bad|hash {key}",
        f"gpu1,,gpu2 {key}", f"?pu3 {key}",
    ]
    known = tmp_path / "known_hosts"
    known.write_text("\n".join(lines) + "\n")
    index = KnownHosts()
    for name in ("gpu1", "gpu9", "GPU5", "gpu5", "gpu-a", "login1", "10.0.0.1", "10.0.0.2", "10.0.0.12",
                 "[10.0.0.1]:2222", "[10.0.0.3]:2200", "[10.0.0.1]:22", "a.ib", "bad.ib", "gpu2", "gpu3", "x"):
        found = subprocess.run(["ssh-keygen", "-F", name, "-f", str(known)], capture_output=True, text=True)
        # ssh-keygen -F also lists the lines whose key does not parse (13, 14): ssh skips them when it
        # judges a host key (tests/integration/test_hostkeys_oracle.py, "lines OpenSSH skips"), and so do we
        theirs = sorted(int(n) for n in re.findall(r"found: line (\d+)", found.stdout) if n not in ("13", "14"))
        ours = sorted(e.line for e in index.lookup(name, [str(known)]))
        assert ours == theirs, name


def test_entries_carry_their_marker_and_plain_key(tmp_path: Path) -> None:
    key = keygen(tmp_path / "k")
    known = tmp_path / "known_hosts"
    known.write_text(f"@revoked gpu1 {key}\n@cert-authority gpu* {key}\ngpu1 {key}\n")
    entries = KnownHosts().lookup("gpu1", [str(known), str(tmp_path / "missing")])
    assert [(e.marker, e.key_type, e.line) for e in entries] == [(REVOKED, "ssh-ed25519", 1), (CA, "ssh-ed25519", 2),
                                                                 (PLAIN, "ssh-ed25519", 3)]
    assert all(e.blob == blob_of(key) for e in entries)


def test_recorded_keys_are_found_again_and_by_openssh(tmp_path: Path) -> None:
    key = keygen(tmp_path / "k")
    known = tmp_path / "sub" / "known_hosts"
    index = KnownHosts()
    index.add("GPU7", "ssh-ed25519", blob_of(key), str(known))
    index.add("[10.0.0.7]:2222", "ssh-ed25519", blob_of(key), str(known), hashed=True)
    text = known.read_text().splitlines()
    assert text[0] == f"gpu7 {key}" and text[1].startswith("|1|") and "10.0.0.7" not in text[1]
    assert [e.key_type for e in index.lookup("gpu7", [str(known)])] == ["ssh-ed25519"]
    assert len(index.lookup("[10.0.0.7]:2222", [str(known)])) == 1
    found = subprocess.run(["ssh-keygen", "-F", "[10.0.0.7]:2222", "-f", str(known)], capture_output=True, text=True)
    assert "found: line 2" in found.stdout
    assert KnownHosts().lookup("[10.0.0.7]:2222", [str(known)])[0].line == 2


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_certificates_signed_by_each_ca_type_verify(tmp_path: Path, kind: str) -> None:
    ca_public = keygen(tmp_path / "ca", kind)
    cert = sign(tmp_path, tmp_path / "ca", principals="gpu1,10.0.0.1", validity="-1d:+1d")
    assert cert.ca_blob == blob_of(ca_public)
    assert cert.key_blob == blob_of((tmp_path / "host.pub").read_text())
    assert cert.principals == ("gpu1", "10.0.0.1") and cert.kind == 2
    assert cert.signature_problem() is None
    assert cert.host_problem("gpu1") is None and cert.host_problem("10.0.0.1") is None
    assert "not a listed principal" in str(cert.host_problem("gpu2"))
    assert plain_blob(blob_of((tmp_path / "host-cert.pub").read_text())) == cert.key_blob


def test_certificate_checks_follow_openssh(tmp_path: Path) -> None:
    keygen(tmp_path / "ca")
    cert = sign(tmp_path, tmp_path / "ca", validity="20200101:20200202")
    assert cert.principals == () and cert.signature_problem() is None
    assert cert.host_problem("anything") == "Certificate invalid: expired"
    assert cert.host_problem("anything", now=cert.valid_after - 1) == "Certificate invalid: not yet valid"
    assert cert.host_problem("anything", now=cert.valid_after) is None
    assert cert.host_problem("anything", now=cert.valid_before) == "Certificate invalid: expired"
    user = sign(tmp_path, tmp_path / "ca", host=False, principals="root")
    assert user.host_problem("root") == "Certificate invalid: not a host certificate"


def test_bad_ca_signatures_are_refused(tmp_path: Path) -> None:
    keygen(tmp_path / "ca", "rsa")
    sha1 = sign(tmp_path, tmp_path / "ca", algorithm="ssh-rsa")
    assert "ssh-rsa" in str(sha1.signature_problem())  # SHA-1: not in OpenSSH's CASignatureAlgorithms
    keygen(tmp_path / "ca2")
    good = sign(tmp_path, tmp_path / "ca2", principals="gpu1")
    signature = len(good.signature).to_bytes(4, "big") + good.signature
    forged = Certificate.parse(good.signed.replace(b"gpu1", b"gpu2") + signature)  # same length, other name
    assert forged.principals == ("gpu2",)
    assert forged.signature_problem() == "the CA's signature does not verify"
    with pytest.raises(BlobError):
        Certificate.parse(good.signed)  # no signature


def _entry(marker: str, public: str, line: int = 1) -> Entry:
    return Entry(marker, public.split()[0], blob_of(public), "kh", line)


def test_judge_decides_as_check_host_key(tmp_path: Path) -> None:
    key, other = keygen(tmp_path / "a"), keygen(tmp_path / "b")
    rsa = keygen(tmp_path / "r", "rsa")
    blob = blob_of(key)

    def decide(*entries: Entry, bare: list[Entry] | None = None) -> str:
        table = {"[h]:2222": list(entries), "h": bare or []}
        return judge(blob, None, "[h]:2222", "h" if bare is not None else None, "h", table.__getitem__).status

    assert decide() == NEW
    assert decide(_entry(PLAIN, key)) == OK
    assert decide(_entry(PLAIN, other), _entry(PLAIN, key)) == OK  # any recorded key
    assert decide(_entry(PLAIN, rsa)) == CHANGED  # whatever the recorded key's type
    assert decide(_entry(PLAIN, key), _entry(REVOKED, key)) == REVOKED_KEY
    assert decide(_entry(CA, key)) == NEW  # a CA line vouches for certificates only
    assert decide(bare=[_entry(PLAIN, key)]) == OK
    assert decide(bare=[_entry(PLAIN, other)]) == NEW
    assert decide(bare=[_entry(REVOKED, key)]) == REVOKED_KEY  # stricter than OpenSSH, which records it


def test_an_invalid_certificate_is_never_trusted_on_first_use(tmp_path: Path) -> None:
    ca = keygen(tmp_path / "ca")
    cert = sign(tmp_path, tmp_path / "ca", principals="gpu1", validity="20200101:20200202")
    entries = {"gpu1": [_entry(CA, ca)]}
    verdict = judge(cert.key_blob, cert, "gpu1", None, "gpu1", entries.__getitem__)
    assert verdict.status == NEW and not verdict.may_record and "expired" in str(verdict.cert_problem)
    entries["gpu1"].append(_entry(PLAIN, "ssh-ed25519 " + base64.b64encode(cert.key_blob).decode()))
    assert judge(cert.key_blob, cert, "gpu1", None, "gpu1", entries.__getitem__).status == OK


def test_algorithm_order_prefers_certificates_and_known_types() -> None:
    available = ["ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256"]
    supported = available + [a + "-cert-v01@openssh.com" for a in available]
    rsa = Entry(PLAIN, "ssh-rsa", b"", "kh", 1)
    ca = Entry(CA, "ssh-ed25519", b"", "kh", 2)
    assert order_algorithms(available, supported, [])[:2] == ["ssh-ed25519-cert-v01@openssh.com",
                                                              "ecdsa-sha2-nistp256-cert-v01@openssh.com"]
    assert order_algorithms(available, supported, [rsa])[:4] == [
        "rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-256-cert-v01@openssh.com", "rsa-sha2-512", "rsa-sha2-256"]
    with_ca = order_algorithms(available, supported, [ca, rsa])
    assert with_ca[:4] == [a + "-cert-v01@openssh.com" for a in available]
    assert with_ca[4:6] == ["rsa-sha2-512", "rsa-sha2-256"] and sorted(with_ca) == sorted(supported)
    assert order_algorithms(available, available, [ca]) == available  # no certificate support: plain only


def test_revoked_host_keys_file(tmp_path: Path) -> None:
    key, other = keygen(tmp_path / "a"), keygen(tmp_path / "b")
    listed = tmp_path / "revoked"
    listed.write_text(f"# revoked\n{other}\n{key} old host\n")
    assert "revoked:3" in str(revoked_by_file(str(listed), blob_of(key), None))
    assert revoked_by_file(str(listed), blob_of(keygen(tmp_path / "c")), None) is None
    krl = tmp_path / "krl"
    subprocess.run(["ssh-keygen", "-q", "-k", "-f", str(krl), str(tmp_path / "b.pub")], check=True)
    assert "KRL" in str(revoked_by_file(str(krl), blob_of(key), None))  # cannot be read: refused, not ignored
    assert "cannot be read" in str(revoked_by_file(str(tmp_path / "missing"), blob_of(key), None))
