"""ssh_config resolved as OpenSSH resolves it, with the real client as the oracle.

Each case is one ssh_config file (and the files it includes) and a few host names. For every name, the
real client resolves it twice: `ssh -G -F FILE NAME` prints the options (HostName, User, Port, ProxyJump,
UserKnownHostsFile, GlobalKnownHostsFile, ConnectTimeout, HostKeyAlias, IdentitiesOnly,
StrictHostKeyChecking), and `ssh -v -F FILE -o ProxyCommand='exit 0' NAME` shows the identity and
certificate files with their tokens expanded (what -G leaves unexpanded), before its connection fails at
once. jueying resolves the same name through SshConfig and Endpoints.resolve; every field must agree.
Both run with HOME set to a directory of the case's own (where `Include` looks for relative paths and
`~`), while `~` in IdentityFile and %d are the passwd home for both, as OpenSSH takes them.

Bad files: the real client refuses them and names the line; jueying refuses them too (BadInputError, exit 2
in the CLI) naming the same file:line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jueying_cli.errors import BadInputError
from jueying_cli.transport.ssh.config import SshConfig
from jueying_cli.transport.ssh.endpoint import Endpoints
from jueying_cli.transport.ssh.options import SshOptions

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client")

G_KEYS = ("hostname", "user", "port", "proxyjump", "userknownhostsfile", "globalknownhostsfile", "connecttimeout",
          "hostkeyalias", "identitiesonly", "stricthostkeychecking")


@dataclass(frozen=True)
class Case:
    name: str
    config: str  # {d}: the case's directory; {home}: its HOME
    hosts: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)  # path under {d} (or "~/..." under HOME) -> text


CASES = [
    Case("first value wins", "Host gpu1\n  Port 2201\nHost gpu*\n  Port 2202\n  User a\nHost *\n  User b\n"
         "  Port 2203\n  HostName %h.cluster\n", ("gpu1", "gpu2", "login")),
    Case("[ is a plain character", "Host gpu[0-9]*\n  User bracket\nHost gpu[1]\n  Port 2\nHost *\n  User star\n",
         ("gpu1", "gpu[0-9]x", "gpu[1]", "gpu[0-9]")),
    Case("? and * wildcards", "Host n??\n  User q\nHost a*b\n  Port 3\nHost *.*.ib\n  Port 4\n",
         ("n12", "n1", "n123", "ab", "axxb", "abx", "x.y.ib", "x.ib")),
    Case("negated patterns", "Host *.ib !bad.ib\n  User ib\nHost !only\n  Port 5\nHost * !gpu2\n  Port 6\n",
         ("a.ib", "bad.ib", "only", "gpu2", "gpu3")),
    Case("Host is case-sensitive", "Host GPU1\n  Port 11\nHost gpu2\n  Port 12\nHost Gpu*\n  User mixed\n",
         ("GPU1", "gpu1", "GPU2", "gpu2", "Gpu3")),
    Case("a comma is part of a Host pattern", "Host c,d\n  Port 7\nHost e\n  Port 8\n", ("c", "d", "e")),
    Case("Match host: lists, negation, any case", "Match host GPU1,gpu2\n  Port 21\nMatch host !n*,x*\n  User notn\n"
         "Match !host *.ib\n  ConnectTimeout 9\n", ("gpu1", "GPU2", "n1", "x1", "a.ib", "xy.ib")),
    Case("Match user sees the User set above it", "Host a\n  User bob\nMatch user bob\n  Port 22\n"
         "Match user r*,!rob\n  Port 23\nMatch user root\n  Port 24\n", ("a", "b")),
    Case("Match host after HostName; originalhost", "Host al*\n  HostName Real-%h.Example\nMatch host real-*\n"
         "  User r\nMatch originalhost AL1\n  Port 31\nMatch host al2\n  Port 32\n", ("al1", "al2", "x")),
    Case("Match all, and all after another criterion", "Match host a all\n  Port 41\nMatch all\n  User every\n",
         ("a", "b")),
    Case("Match final: a second pass against the HostName", "Host a\n  HostName b.example\nMatch final host b.*\n"
         "  User fin\nHost b.example\n  Port 51\nMatch canonical\n  IdentitiesOnly yes\nHost A\n  Port 52\n",
         ("a", "b.example", "A", "c")),
    Case("Match final without HostName: Host lines see the lowercased name", "Match final\n  Port 53\nHost gpu1\n"
         "  User lower\n", ("GPU1", "gpu1")),
    Case("Match localuser", "Match localuser nobody\n  Port 61\nMatch localuser root,!nobody\n  Port 62\n",
         ("a",)),
    Case("Match exec, run only when the criteria before it matched",
         "Match exec \"test %h = a\"\n  Port 71\nMatch host b exec false\n  Port 72\nMatch host c !exec false\n"
         "  Port 73\n", ("a", "b", "c")),
    Case("Include: relative to ~/.ssh (HOME), globbed, sorted", "Include inc/*.conf\nHost *\n  User top\n",
         ("x", "y", "z"), {"~/.ssh/inc/b.conf": "Host x\n  User incx\n",
                           "~/.ssh/inc/a.conf": "Port 2\nHost y\n  Port 3\n", "~/.ssh/inc/c.txt": "Port 9\n"}),
    Case("Include inside a Host block", "Host q\n  Include {d}/a.conf\n  User afterinc\nHost *\n  Port 81\n",
         ("q", "y", "z"), {"a.conf": "Port 2\nHost y\n  Port 3\n  User iny\n"}),
    Case("Include nested, Match inside does not leak", "Host *\n  Include {d}/one.conf\n  Port 91\n",
         ("m1", "m2"), {"one.conf": "Include {d}/two.conf\nMatch host m1\n  User one\n",
                        "two.conf": "Match host nothing\n  HostKeyAlias never\n"}),
    Case("Include of no file, and ~ under HOME", "Include {d}/none-*.conf ~/inc.conf\nUser u\n", ("a",),
         {"~/inc.conf": "Port 92\n"}),
    Case("HostName tokens", "Host a\n  HostName %h.x.%%\nHost b\n  HostName 10.0.0.2\nHost c\n  HostName FE80::ABC\n"
         "Host d\n  HostName D.Example\n", ("a", "b", "c", "d", "E")),
    Case("file tokens, ~ and ${VAR}", "Host *\n  User ruser\n  Port 2022\n  HostName H-%h\n"
         "  IdentityFile ~/.ssh/k-%h-%n-%p-%r-%u-%d-%i-%L-%l-%%\n  IdentityFile ${{HOME}}/k2-%C\n"
         "  IdentityFile ~root/k3-%k\n  CertificateFile ~//c-%n\n  CertificateFile /c/%r@%h\n"
         "  UserKnownHostsFile ~/kh-%n %d/kh2-%k ${{HOME}}/kh3\n  HostKeyAlias Alias-X\n", ("gpu1", "GPU2")),
    Case("IdentityFile and CertificateFile accumulate, duplicates once", "Host a\n  IdentityFile /k/1\n"
         "  CertificateFile /c/1\nHost *\n  IdentityFile /k/2\n  IdentityFile /k/1\n  CertificateFile /c/1\n"
         "  CertificateFile /c/2\n", ("a", "b")),
    Case("flags and StrictHostKeyChecking spellings", "Host a\n  StrictHostKeyChecking accept-new\n"
         "  IdentitiesOnly YES\nHost b\n  StrictHostKeyChecking no\n  IdentitiesOnly true\nHost c\n"
         "  StrictHostKeyChecking off\nHost d\n  StrictHostKeyChecking Yes\nHost e\n  StrictHostKeyChecking ask\n"
         "Host *\n  StrictHostKeyChecking true\n  IdentitiesOnly no\n", ("a", "b", "c", "d", "e", "f")),
    Case("ConnectTimeout forms", "Host a\n  ConnectTimeout 1m30s\nHost b\n  ConnectTimeout none\nHost c\n"
         "  ConnectTimeout 0\nHost *\n  ConnectTimeout 5\n", ("a", "b", "c", "d")),
    Case("Port forms", "Host a\n  Port ssh\nHost b\n  Port +2222\nHost c\n  Port \" 23\"\nHost d\n  Port=2224\n"
         "Host e\n  Port = 2225\nHost f\n  Port   2226 # a comment\n", ("a", "b", "c", "d", "e", "f")),
    Case("keywords in any case, = separators, quotes, comments", "# comment\nHOST=a\n\tHOSTNAME=\"x y\"\n"
         "  uSeR 'ad min'\n  identityfile \"/p/with space/k\"\nHost b # trailing comment\n  User=plain#notcomment\n"
         "  \n  Port\t=\t2227\n", ("a", "b")),
    Case("ProxyJump forms", "Host a\n  ProxyJump j1,u@j2:2200\nHost b\n  ProxyJump ssh://u@j3:2201\nHost c\n"
         "  ProxyJump none\nHost d\n  ProxyCommand none\nHost e\n  ProxyCommand ssh -W %h:%p j\nHost *\n"
         "  ProxyJump jdefault\n", ("a", "b", "c", "d", "e", "f")),
    Case("known_hosts files and HostKeyAlias", "Host a\n  UserKnownHostsFile none\n  HostKeyAlias MiXeD\nHost b\n"
         "  UserKnownHostsFile ~/kh1 /abs/kh2\n  GlobalKnownHostsFile ~/g1 /g2\nHost c\n  GlobalKnownHostsFile none\n",
         ("a", "b", "c", "d")),
    Case("IgnoreUnknown", "IgnoreUnknown UseKeychain,AddKeysToAgentX\nUseKeychain yes\nHost a\n  Port 2228\n",
         ("a", "b")),
]

BAD = [  # (config, the line ssh names, or None when ssh names no line) -- every one refused by both
    ("Host a\n  Bogus x\n", 2), ("Port 0\n", 1), ("Port 22x\n", 1), ("User a b\n", 1), ("Host a\n  User \"b\n", 2),
    ("Match all host a\n  Port 1\n", 1), ("Match tagged x\n", 1), ("Match host\n", 1), ("Match\n", 1),
    ("StrictHostKeyChecking maybe\n", 1), ("IdentitiesOnly perhaps\n", 1), ("ConnectTimeout -1\n", 1),
    ("Host \"\"\n", 1), ("Host a\n  ProxyJump a:0\n", 2), ("UserKnownHostsFile /a none\n", 1),
    ("Host\n", 1), ("Include {self}\n", None), ("Host a\n  HostName %n.x\n", None),
    ("IdentityFile /k/%x\n", None), ("UserKnownHostsFile /k/${{JUEYING_NO_SUCH_VAR}}\n", None),
]


def _write(case_dir: Path, home: Path, files: dict[str, str], values: dict[str, str]) -> None:
    for name, text in files.items():
        path = home / name[2:] if name.startswith("~/") else case_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(**values))


def _ssh(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, env=env,
                          check=False)


def _oracle(config: Path, host: str, env: dict[str, str]) -> dict[str, str]:
    shown = _ssh(["ssh", "-G", "-F", str(config), host], env)
    assert shown.returncode == 0, shown.stderr
    found = {k: v for k, _, v in (line.partition(" ") for line in shown.stdout.splitlines()) if k in G_KEYS}
    verbose = _ssh(["ssh", "-v", "-F", str(config), "-o", "ProxyCommand=exit 0", "-o", "BatchMode=yes", host,
                    "true"], env)
    files = re.findall(r"debug1: identity file (.*?) type -?\d+$", verbose.stderr, re.M)
    # ssh also tries FILE-cert beside each identity FILE (its own rule, not the config's): left out
    found["identityfile"] = " ".join(f for i, f in enumerate(files) if not (i and f == files[i - 1] + "-cert"))
    found["certificatefile"] = " ".join(re.findall(r"debug1: certificate file (.*?) type -?\d+$", verbose.stderr,
                                                   re.M))
    return found


def _jueying(config: SshConfig, host: str) -> dict[str, str]:
    cfg = config.lookup(host)
    ep = Endpoints(config, SshOptions()).resolve(host, None, None, None, None, None)
    found = {
        "hostname": ep.address, "user": ep.user, "port": str(ep.port),
        "userknownhostsfile": " ".join(cfg["userknownhostsfile"]),
        "globalknownhostsfile": " ".join(cfg.get("globalknownhostsfile",
                                                 ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"))),
        "connecttimeout": str(cfg.get("connecttimeout", "none")),
        "identitiesonly": "yes" if ep.identities_only else "no",
        "stricthostkeychecking": ep.strict_host_key_checking,
        "identityfile": " ".join(ep.identity_files), "certificatefile": " ".join(ep.certificate_files),
    }
    if ep.proxy_jump:
        found["proxyjump"] = ",".join(ep.proxy_jump)
    if cfg.get("hostkeyalias"):
        found["hostkeyalias"] = cfg["hostkeyalias"]
    return found


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME for both: where Include finds ~ and relative paths (the passwd home stays what `~` means elsewhere)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home


def test_resolves_every_case_as_ssh_does(tmp_path: Path, home: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "SHELL": "/bin/sh"}
    jobs = []
    for i, case in enumerate(CASES):
        case_dir = tmp_path / f"case{i:02d}"
        case_dir.mkdir()
        values = {"d": str(case_dir), "home": str(home)}
        _write(case_dir, home, case.files, values)
        config = case_dir / "ssh_config"
        config.write_text(case.config.format(**values))
        ours = SshConfig(str(config))
        jobs.extend((case, config, host, ours) for host in case.hosts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        oracle = list(pool.map(lambda job: _oracle(job[1], job[2], env), jobs))
    mismatches = []
    for (case, _, host, ours), theirs in zip(jobs, oracle, strict=True):
        mine = _jueying(ours, host)
        for key in sorted(set(theirs) | set(mine)):
            if theirs.get(key) != mine.get(key):
                mismatches.append(f"{case.name} [{host}] {key}: ssh {theirs.get(key)!r}, jueying {mine.get(key)!r}")
    print(f"{len(CASES)} cases, {len(jobs)} host names, {len(G_KEYS) + 2} fields each")
    assert len(CASES) >= 20 and len(jobs) >= 80
    assert not mismatches, "\n".join(mismatches[:40])


@pytest.mark.parametrize(("text", "line"), BAD, ids=[t.splitlines()[-1].strip() for t, _ in BAD])
def test_a_bad_file_is_refused_by_both_naming_the_line(tmp_path: Path, home: Path, text: str,
                                                       line: int | None) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(text.format(self=config))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    theirs = _ssh(["ssh", "-G", "-F", str(config), "a"], env)
    if theirs.returncode == 0:  # ssh expands IdentityFile only when it uses it
        theirs = _ssh(["ssh", "-v", "-F", str(config), "-o", "ProxyCommand=exit 0", "a", "true"], env)
        assert "percent_expand: unknown key" in theirs.stderr or "unknown key" in theirs.stderr, theirs.stderr
    assert theirs.returncode == 255, theirs.stderr
    if line is not None:
        assert f"line {line}" in theirs.stderr, theirs.stderr
    with pytest.raises(BadInputError) as refused:
        SshConfig(str(config)).lookup("a")
    message = str(refused.value)
    assert message.startswith(str(config)), message
    if line is not None:
        assert message.startswith(f"{config}:{line}: "), message
