"""ssh_config lookups: the same answers as paramiko's (OpenSSH's order), without its O(hosts) cost."""

from __future__ import annotations

import os
from pathlib import Path

import paramiko

from jueying_cli.transport.ssh.config import SshConfig

CONFIG = """\
Host *.ib !bad.ib
  User ibuser
Host gpu-special
  HostName 10.9.9.9
  Port 2222
  ProxyJump bastion1,bastion2
Match host never-matches-anything
  Port 9
""" + "".join(
    f"Host gpu{i:04d}\n  HostName 10.1.{i // 250}.{i % 250}\n  IdentityFile ~/.ssh/k{i}\n"
    f"  UserKnownHostsFile /etc/kh/%n\n" for i in range(2000)) + """\
Host *
  IdentityFile ~/.ssh/id_ed25519
  ConnectTimeout 7
  HostName %h.cluster.local
"""


def _paramiko(path: Path, host: str) -> dict[str, object]:
    found = dict(paramiko.SSHConfig.from_path(str(path)).lookup(host))
    if "userknownhostsfile" in found:  # paramiko leaves %n unexpanded here; OpenSSH expands it
        found["userknownhostsfile"] = str(found["userknownhostsfile"]).replace("%n", host)
    return found


def test_indexed_lookup_agrees_with_paramiko(tmp_path: Path) -> None:
    without_match = tmp_path / "config"
    without_match.write_text(CONFIG.replace("Match host never-matches-anything\n  Port 9\n", ""))
    ours = SshConfig(str(without_match))
    for host in ("gpu0000", "gpu0999", "gpu1999", "gpu-special", "a.ib", "bad.ib", "login1"):
        assert ours.lookup(host) == _paramiko(without_match, host), host
    assert ours.lookup("gpu0042")["hostname"] == "10.1.0.42"
    assert ours.lookup("gpu0042")["userknownhostsfile"] == "/etc/kh/gpu0042"
    assert ours.lookup("gpu0042")["identityfile"] == [os.path.expanduser("~/.ssh/k42"),
                                                       os.path.expanduser("~/.ssh/id_ed25519")]
    assert ours.lookup("login1")["hostname"] == "login1.cluster.local"
    assert ours.lookup("a.ib")["user"] == "ibuser" and "user" not in ours.lookup("bad.ib")


def test_a_config_with_match_blocks_keeps_paramikos_full_lookup(tmp_path: Path) -> None:
    with_match = tmp_path / "config"
    with_match.write_text(CONFIG)
    ours = SshConfig(str(with_match))
    assert ours.lookup("gpu-special") == _paramiko(with_match, "gpu-special")
    assert ours.lookup("gpu-special")["proxyjump"] == "bastion1,bastion2"
