"""ssh_config lookups: the name index gives the answers of a plain walk through every block; the rules the
oracle test (tests/integration/test_ssh_config_oracle.py) cannot show with `ssh -G` alone."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from jueying_cli.errors import BadInputError
from jueying_cli.transport.ssh.config import SshConfig
from jueying_cli.transport.ssh.endpoint import Endpoints, parse_jump
from jueying_cli.transport.ssh.options import SshOptions

CONFIG = """\
Host *.ib !bad.ib
  User ibuser
Host gpu-special
  HostName 10.9.9.9
  Port 2222
  ProxyJump bastion1,bastion2
Match host gpu00[0-4]* user root
  Port 9
Host gpu[0-9]*
  User bracket
""" + "".join(
    f"Host gpu{i:04d} alias{i}\n  HostName 10.1.{i // 250}.{i % 250}\n  IdentityFile ~/.ssh/k{i}\n"
    f"  UserKnownHostsFile /etc/kh/%n\n" for i in range(2000)) + """\
Match final host 10.1.1.*
  User final
Host *
  IdentityFile ~/.ssh/id_ed25519
  ConnectTimeout 7
  HostName %h.cluster.local
"""
HOME = pwd.getpwuid(os.getuid()).pw_dir


def _walk_everything(config: SshConfig) -> SshConfig:
    config._index = {}
    config._always = list(range(len(config.sections)))
    return config


def test_the_index_answers_as_a_walk_through_every_block(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(CONFIG)
    indexed, plain = SshConfig(str(path)), _walk_everything(SshConfig(str(path)))
    for host in ("gpu0000", "gpu0042", "gpu0300", "gpu0999", "gpu1999", "alias7", "gpu-special", "a.ib", "bad.ib",
                 "login1", "GPU0001", "gpu[0-9]"):
        assert indexed.lookup(host) == plain.lookup(host), host
    assert indexed.lookup("gpu0042")["hostname"] == "10.1.0.42"
    assert indexed.lookup("gpu0042")["userknownhostsfile"] == ["/etc/kh/gpu0042"]
    assert indexed.lookup("gpu0042")["identityfile"] == [f"{HOME}/.ssh/k42", f"{HOME}/.ssh/id_ed25519"]
    assert indexed.lookup("gpu0300")["user"] == "final"  # 10.1.1.50: the final pass matched the HostName
    assert indexed.lookup("login1")["hostname"] == "login1.cluster.local"
    assert indexed.lookup("a.ib")["user"] == "ibuser" and "user" not in indexed.lookup("bad.ib")
    assert indexed.lookup("gpu[0-9]")["user"] == "bracket" and "user" not in indexed.lookup("gpu-special")


def test_tilde_and_percent_d_are_the_passwd_home_and_include_uses_home(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake_home = tmp_path / "home"
    (fake_home / ".ssh").mkdir(parents=True)
    (fake_home / ".ssh" / "extra.conf").write_text("Port 2200\n")
    monkeypatch.setenv("HOME", str(fake_home))
    path = tmp_path / "config"
    path.write_text("Include extra.conf\nIdentityFile ~/k1\nIdentityFile %d/k2\nUserKnownHostsFile ~/kh\n")
    found = SshConfig(str(path)).lookup("n1")
    assert found["port"] == 2200
    assert found["identityfile"] == [f"{HOME}/k1", f"{HOME}/k2"]
    assert found["userknownhostsfile"] == [f"{HOME}/kh"]


def test_an_included_file_others_may_write_is_refused(tmp_path: Path) -> None:
    included = tmp_path / "inc.conf"
    included.write_text("Port 2200\n")
    included.chmod(0o666)
    path = tmp_path / "config"
    path.write_text(f"Include {included}\n")
    with pytest.raises(BadInputError, match="bad owner or permissions"):
        SshConfig(str(path))


def test_explicit_file_missing_is_an_error_and_none_reads_nothing(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="cannot open"):
        SshConfig(str(tmp_path / "missing"))
    assert SshConfig("none").sections == []


def test_proxyjump_tokens_are_the_target_s(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("Host n*\n  User ops\n  Port 2201\n  ProxyJump %r@jump-%h:2222,via-%n-%p\n")
    assert SshConfig(str(path)).lookup("n1")["proxyjump"] == "ops@jump-n1:2222,via-n1-2201"
    assert parse_jump("ssh://u@j3:2201") == ("u", "j3", 2201)
    assert parse_jump("[fe80::1]:22") == (None, "fe80::1", 22)


def test_match_exec_runs_each_distinct_command_once(tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    path = tmp_path / "config"
    path.write_text(f'Match exec "echo x >> {marker}; test %h = a"\n  Port 2201\n')
    config = SshConfig(str(path))
    ports = [config.lookup(h).get("port") for h in ("a", "b", "a", "b")]
    assert ports == [2201, None, 2201, None]
    assert marker.read_text().count("x") == 2


@pytest.mark.parametrize(("setting", "flag", "accept_new"), [
    (None, False, False), ("ask", False, False), ("yes", False, False), ("accept-new", False, True),
    ("no", False, True), ("off", False, True), ("yes", True, True)])
def test_strict_host_key_checking_per_host(tmp_path: Path, setting: str | None, flag: bool, accept_new: bool) -> None:
    path = tmp_path / "config"
    path.write_text(f"StrictHostKeyChecking {setting}\n" if setting else "Port 22\n")
    ep = Endpoints(SshConfig(str(path)), SshOptions(accept_new_hostkeys=flag)).resolve("n1", None, None, None,
                                                                                       None, None)
    assert ep.accept_new is accept_new


def test_connect_timeout_zero_leaves_jueying_s_own(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("Host a\n  ConnectTimeout 0\nHost b\n  ConnectTimeout 3\nHost c\n  ConnectTimeout 1m\n")
    endpoints = Endpoints(SshConfig(str(path)), SshOptions(connect_timeout_s=10))
    assert [endpoints.resolve(h, None, None, None, None, None).connect_timeout_s for h in "abc"] == [10, 3, 10]


def test_inventory_variables_win_and_defaults_follow_openssh(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("Host n1\n  HostName N1.Example\n  User cfg\n  Port 2201\n  IdentityFile /k/cfg\n"
                    "  HostKeyAlias Alias1\n  CertificateFile /c/%n-cert.pub\n")
    endpoints = Endpoints(SshConfig(str(path)), SshOptions())
    ep = endpoints.resolve("n1", None, None, None, None, None)
    assert (ep.address, ep.user, ep.port, ep.known_hosts_name) == ("n1.example", "cfg", 2201, "alias1")
    assert ep.identity_files == ("/k/cfg",) and ep.certificate_files == ("/c/n1-cert.pub",)
    ep = endpoints.resolve("n1", "10.0.0.1", 22, "inv", "/k/inv", None)
    assert (ep.address, ep.user, ep.port, ep.identity_files) == ("10.0.0.1", "inv", 22, ("/k/inv", "/k/cfg"))
    ep = endpoints.resolve("n2", None, None, None, None, None)
    assert ep.identity_files[:2] == (f"{HOME}/.ssh/id_rsa", f"{HOME}/.ssh/id_ecdsa")
    assert ep.known_hosts_files[:2] == (f"{HOME}/.ssh/known_hosts", f"{HOME}/.ssh/known_hosts2")
