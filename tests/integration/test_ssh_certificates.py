"""User certificates at login, against real sshd with `TrustedUserCAKeys`, with the real `ssh` client as oracle.

A user key that no authorized_keys file lists, signed by a CA (`ssh-keygen -s`): nodes whose sshd trusts the
CA let it in when the certificate is offered (ssh_config `CertificateFile`, or `<IdentityFile>-cert.pub`
beside the key, as OpenSSH offers them); a node that does not trust the CA refuses: `auth_failed`. The plain
key is still offered after the certificate (a node that lists the key itself lets it in).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import SimCluster
from tests.conftest import run_jueying

TRUSTING = ("ct01", "ct02")  # sshd has TrustedUserCAKeys for the CA
NOT_TRUSTING = ("ct03",)
NAMES = (*TRUSTING, *NOT_TRUSTING)


def _keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    base = tmp_path_factory.mktemp("certs")
    ca = base / "user_ca"
    _keygen("-t", "ed25519", "-N", "", "-C", "test user CA", "-f", str(ca))
    with SimCluster(base / "sim", len(NAMES), prefix="ct", first_octets=(127, 75)) as cluster:
        for name in TRUSTING:
            cluster.node(name).trust_user_ca(ca.with_name("user_ca.pub"))
        yield cluster


@pytest.fixture
def keys(sim: SimCluster, tmp_path: Path) -> dict[str, Path]:
    """A fresh user key (in no authorized_keys), its certificate for root, and a certificate of another key."""
    ca = sim.base_dir.parent / "user_ca"
    user, other = tmp_path / "id_user", tmp_path / "id_other"
    for key in (user, other):
        _keygen("-t", "ed25519", "-N", "", "-f", str(key))
        _keygen("-s", str(ca), "-I", f"{key.name}@test", "-n", "root", "-V", "-5m:+1h", f"{key}.pub")
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.move(f"{user}-cert.pub", certs / "user-cert.pub")  # not beside the key: only CertificateFile finds it
    shutil.move(f"{other}-cert.pub", certs / "other-cert.pub")
    return {"key": user, "cert": certs / "user-cert.pub", "other_cert": certs / "other-cert.pub"}


def _config(sim: SimCluster, path: Path, key: Path, certificate_files: tuple[Path, ...] = ()) -> Path:
    blocks = []
    for node in sim.nodes:
        blocks.append(
            f"Host {node.name}\n  HostName {node.address}\n  Port {node.port}\n  User root\n"
            f"  IdentityFile {key}\n  IdentitiesOnly yes\n"
            + "".join(f"  CertificateFile {c}\n" for c in certificate_files)
            + f"  UserKnownHostsFile {sim.known_hosts_path}\n  GlobalKnownHostsFile /dev/null\n"
            f"  HostKeyAlias {node.name}\n  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 10\n")
    path.write_text("".join(blocks))
    path.with_name("inventory.yaml").write_text('nodes:\n  "ct[01-03]": {}\n')  # addresses from ssh_config
    return path


def _jueying(config: Path) -> dict[str, tuple[str, str]]:
    """node -> (status, error) from `jueying run --json`, no agent."""
    result = run_jueying(["run", "-i", str(config.with_name("inventory.yaml")), "--ssh-config", str(config),
                          "--json", "--", "hostname"], {"SSH_AUTH_SOCK": ""})
    assert result.rc in (0, 1), result
    return {n["node"]: (n["status"], n["error"] or n["stdout"].strip()) for n in result.json()["data"]["nodes"]}


def _ssh(config: Path) -> dict[str, str]:
    """node -> ok / auth_failed from the real ssh client on the same file."""
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    verdicts = {}
    for name in NAMES:
        proc = subprocess.run(["ssh", "-F", str(config), name, "hostname"], env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL, check=False)
        assert proc.returncode == 0 or "Permission denied" in proc.stderr, proc.stderr
        verdicts[name] = "ok" if proc.returncode == 0 else "auth_failed"
    return verdicts


def _statuses(outcomes: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {node: status for node, (status, _) in outcomes.items()}


def test_certificate_file_is_offered_and_only_trusting_nodes_let_it_in(sim: SimCluster, keys: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    config = _config(sim, tmp_path / "ssh_config", keys["key"], (keys["other_cert"], keys["cert"]))
    outcomes = _jueying(config)
    expected = {**dict.fromkeys(TRUSTING, "ok"), **dict.fromkeys(NOT_TRUSTING, "auth_failed")}
    assert _statuses(outcomes) == expected, outcomes
    assert _ssh(config) == expected
    assert outcomes["ct01"] == ("ok", "ct01")
    assert "offered 1 key(s) and 1 certificate(s)" in outcomes["ct03"][1], outcomes["ct03"]


def test_without_the_certificate_the_key_alone_is_refused_everywhere(sim: SimCluster, keys: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    for certs in ((), (keys["other_cert"],)):  # a certificate of another key is not offered with this one
        config = _config(sim, tmp_path / "ssh_config", keys["key"], certs)
        assert _statuses(_jueying(config)) == dict.fromkeys(NAMES, "auth_failed")
        assert _ssh(config) == dict.fromkeys(NAMES, "auth_failed")


def test_a_certificate_beside_the_identity_file_is_offered_as_openssh_does(sim: SimCluster, keys: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    shutil.copy(keys["cert"], f"{keys['key']}-cert.pub")
    config = _config(sim, tmp_path / "ssh_config", keys["key"])
    expected = {**dict.fromkeys(TRUSTING, "ok"), **dict.fromkeys(NOT_TRUSTING, "auth_failed")}
    assert _statuses(_jueying(config)) == expected
    assert _ssh(config) == expected


def test_the_plain_key_is_still_offered_after_its_certificate(sim: SimCluster, keys: dict[str, Path],
                                                              tmp_path: Path) -> None:
    """paramiko alone, given a key with a -cert.pub beside it, offers only the certificate: a node that
    lists the key itself (and trusts no CA) would refuse it. OpenSSH offers both."""
    shutil.copy(keys["cert"], f"{keys['key']}-cert.pub")
    config = _config(sim, tmp_path / "ssh_config", keys["key"])
    authorized = sim.authorized_keys_path
    before = authorized.read_text()
    authorized.write_text(before + Path(f"{keys['key']}.pub").read_text())
    try:
        assert _statuses(_jueying(config)) == dict.fromkeys(NAMES, "ok")
        assert _ssh(config) == dict.fromkeys(NAMES, "ok")
    finally:
        authorized.write_text(before)
