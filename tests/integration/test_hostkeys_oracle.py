"""Host keys judged as OpenSSH judges them, with the real `ssh` client as the oracle.

Each case is one known_hosts file and one real sshd node (tests/cluster). The real client decides with
`ssh -F cfg -o BatchMode=yes -o StrictHostKeyChecking=yes|accept-new -o UserKnownHostsFile=FILE
-o GlobalKnownHostsFile=/dev/null HOST true`; `jueying run -w HOST -- true` reads the same FILE through
the same ssh_config. Both must decide alike: connect, refuse as changed, as revoked, as unknown, or refuse
an invalid host certificate; with --accept-new-hostkeys vs StrictHostKeyChecking=accept-new both must
record the same line, or nothing. Each case's expected decision is pinned too, so that a case tests what
its name says.

Every case is a Host alias of its own (hkc01, hkc02, ...) in one ssh_config, with its own known_hosts file,
so one jueying run decides every case at once.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from jueying_cli.transport.ssh.known_hosts import hash_name
from tests.cluster import SimCluster, SimNode
from tests.conftest import run_jueying

pytestmark = pytest.mark.skipif(
    shutil.which("ssh") is None or not Path("/usr/sbin/sshd").exists() or shutil.which("unshare") is None,
    reason="needs the OpenSSH client and server, and unshare",
)

PORT = 2222  # hk2 listens there: its known_hosts name is [address]:2222


@dataclass
class Ctx:
    cluster: SimCluster
    keys: dict[str, str]  # "ssh-ed25519 AAAA..." of the nodes (hk1...), other keys and the CAs

    def values(self) -> dict[str, str]:
        """What a case's lines may name: {a1} address of hk1, {k1} its key, {h1} its address hashed,
        {h2p} [address of hk2]:port hashed, {p} the block's first two octets, {ca}, {ca_rsa}, {ca_other},
        {ed} and {rsa} (keys no node holds)."""
        found = {"p": self.cluster.node("hk1").address.rsplit(".", 2)[0], **self.keys}
        for node in self.cluster.nodes:
            i = node.name[2:]
            found.update({f"a{i}": node.address, f"k{i}": self.keys[node.name], f"h{i}": hash_name(node.address)})
        found["h2p"] = hash_name(f"[{found['a2']}]:{PORT}")
        return found


@dataclass(frozen=True)
class Case:
    name: str
    node: str
    lines: tuple[str, ...]  # known_hosts lines, formatted with Ctx.values()
    strict: str  # what ssh decides with StrictHostKeyChecking=yes: ok, unknown, changed, revoked, cert
    accept_new: str  # ... with accept-new: ok+recorded, ok, changed, revoked, cert, ...
    # where jueying is stricter than OpenSSH (README, SSH): it never records a key that a listed CA's
    # certificate failed to vouch for, nor one revoked under the bare address of a [host]:port
    jueying_accept_new: str | None = None
    options: tuple[str, ...] = ()  # more ssh_config lines for this case's Host block


def case(name: str, node: str, lines: tuple[str, ...], strict: str, accept_new: str | None = None,
         jueying_accept_new: str | None = None, options: tuple[str, ...] = ()) -> Case:
    """accept_new defaults to: unknown keys are recorded, every other decision is the strict one."""
    accept_new = accept_new or ("ok+recorded" if strict == "unknown" else strict)
    return Case(name, node, lines, strict, accept_new, jueying_accept_new, options)


CASES = [
    case("plain match", "hk1", ("{a1} {k1}",), "ok"),
    case("hashed match", "hk1", ("{h1} {k1}",), "ok"),
    case("[addr]:port match", "hk2", ("[{a2}]:2222 {k2}",), "ok"),
    case("[addr]:port pattern", "hk2", ("[{p}.0.*]:2222 {k2}",), "ok"),
    case("[addr]:port hashed", "hk2", ("{h2p} {k2}",), "ok"),
    case("[addr]:port known by bare address", "hk2", ("{a2} {k2}",), "ok"),
    case("[addr]:port, bare address has another key", "hk2", ("{a2} {ed}",), "unknown"),
    case("[addr]:port, key revoked under the bare address", "hk2", ("@revoked {a2} {k2}",), "revoked",
         "ok+recorded", "revoked"),
    case("pattern *", "hk1", ("{p}.* {k1}",), "ok"),
    case("pattern ?", "hk1", ("{p}.0.? {k1}",), "ok"),
    case("comma list", "hk1", ("gpu1,{a1},gpu2 {k1}",), "ok"),
    case("comma list of patterns", "hk1", ("nomatch*,{p}.?.1 {k1}",), "ok"),
    case("negated pattern excludes", "hk1", ("{p}.0.*,!{a1} {k1}",), "unknown"),
    case("negated pattern excludes another key", "hk1", ("{p}.*,!{a1} {ed}",), "unknown"),
    case("only negated patterns match nothing", "hk1", ("!{a2} {ed}",), "unknown"),
    case("unknown host", "hk1", (), "unknown"),
    case("unknown host, others known", "hk1", ("{a3} {k3}", "[{a1}]:22 {k1}"), "unknown"),
    case("lines OpenSSH skips", "hk1", ("@bogus {a1} {ed}", "{a1} ssh-ed25519 AAAAnot-base64",
                                         "{a1} ssh-rsa {ed_b64}"), "unknown"),
    case("changed key", "hk1", ("{a1} {ed}",), "changed"),
    case("changed key on a pattern line", "hk1", ("{p}.0.* {ed}",), "changed"),
    case("changed key on a hashed line", "hk1", ("{h1} {ed}",), "changed"),
    case("revoked key alone", "hk1", ("@revoked {a1} {k1}",), "revoked"),
    case("revoked key beside a valid line", "hk1", ("{a1} {k1}", "@revoked * {k1}"), "revoked"),
    case("another key revoked", "hk1", ("{a1} {k1}", "@revoked * {ed}"), "ok"),
    case("several keys, one stale", "hk1", ("{a1} {ed}", "{a1} {k1}"), "ok"),
    case("several key types, one stale", "hk1", ("{a1} {k1}", "{a1} {rsa}"), "ok"),
    case("only RSA recorded, ed25519 offered", "hk1", ("{a1} {rsa}",), "changed"),
    case("RevokedHostKeys lists the key", "hk1", ("{a1} {k1}",), "revoked", options=("RevokedHostKeys {revoked}",)),
    case("HostKeyAlias", "hk1", ("hk1 {k1}",), "ok", options=("HostKeyAlias hk1",)),
    case("HostKeyAlias, key under the address only", "hk1", ("{a1} {k1}",), "unknown", options=("HostKeyAlias hk1",)),
    case("HostKeyAlias on another port: no [alias]:port", "hk2", ("hk2 {k2}",), "ok", options=("HostKeyAlias hk2",)),
    case("CA-signed certificate", "hk3", ("@cert-authority {p}.0.* {ca}",), "ok"),
    case("RSA CA-signed certificate", "hk7", ("@cert-authority * {ca_rsa}",), "ok"),
    case("certificate, stale plain key", "hk3", ("@cert-authority * {ca}", "{a3} {ed}"), "ok"),
    case("certificate, plain key only", "hk3", ("{a3} {k3}",), "ok"),
    case("certificate, unknown host", "hk3", (), "unknown"),
    case("certificate, CA for other hosts", "hk3", ("@cert-authority 10.* {ca}",), "unknown"),
    case("certificate, other CA", "hk3", ("@cert-authority * {ca_other}",), "unknown"),
    case("certificate, CA key as a plain line", "hk3", ("{a3} {ca}",), "changed"),
    case("certificate, CA revoked", "hk3", ("@cert-authority * {ca}", "@revoked * {ca}"), "revoked"),
    case("certificate, CA revoked, plain key known", "hk3", ("@revoked * {ca}", "{a3} {k3}"), "revoked"),
    case("certificate, host key revoked", "hk3", ("@cert-authority * {ca}", "@revoked * {k3}"), "revoked"),
    case("certificate names the HostKeyAlias", "hk3", ("@cert-authority hk* {ca}",), "ok",
         options=("HostKeyAlias hk3",)),
    case("certificate expired", "hk4", ("@cert-authority * {ca}",), "cert", "ok+recorded", "cert"),
    case("certificate expired, plain key known", "hk4", ("@cert-authority * {ca}", "{a4} {k4}"), "ok"),
    case("certificate expired, plain key changed", "hk4", ("@cert-authority * {ca}", "{a4} {ed}"), "changed"),
    case("certificate not yet valid", "hk5", ("@cert-authority * {ca}",), "cert", "ok+recorded", "cert"),
    case("certificate for other names", "hk6", ("@cert-authority * {ca}",), "cert", "ok+recorded", "cert"),
    case("certificate lacks the HostKeyAlias", "hk3", ("@cert-authority * {ca}",), "cert", "ok+recorded", "cert",
         options=("HostKeyAlias gpu3",)),
]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    base = tmp_path_factory.mktemp("hostkeys")
    keys: dict[str, str] = {}
    for name, kind in (("ca", "ed25519"), ("ca_rsa", "rsa"), ("ca_other", "ed25519"), ("ed", "ed25519"),
                       ("rsa", "rsa")):
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", name, "-f", str(base / name)], check=True)
        keys[name] = " ".join((base / f"{name}.pub").read_text().split()[:2])
    keys["ed_b64"] = keys["ed"].split()[1]
    keys["revoked"] = str(base / "revoked_keys")  # a RevokedHostKeys file (public keys, one a line)
    with SimCluster(base / "sim", 7, prefix="hk", digits=1, first_octets=(127, 70), ports={"hk2": PORT}) as sim:
        def sign(node: str, ca: str, validity: str, *principals: str) -> None:
            sim.node(node).sign_host_key(base / ca, principals=principals, validity=validity)

        def names(node: SimNode) -> tuple[str, str]:
            return node.address, node.name

        sign("hk3", "ca", "-1d:+1d", *names(sim.node("hk3")))
        sign("hk4", "ca", "20200101:20200202", *names(sim.node("hk4")))
        sign("hk5", "ca", "+1d:+2d", *names(sim.node("hk5")))
        sign("hk6", "ca", "-1d:+1d", "hk9", sim.node("hk1").address)
        sign("hk7", "ca_rsa", "-1d:+1d")  # no principals: valid for any name
        for node in sim.nodes:
            keys[node.name] = " ".join(node.host_key_path.with_suffix(".pub").read_text().split()[:2])
        Path(keys["revoked"]).write_text(f"{keys['ed']}\n{keys['hk1']} hk1\n")
        yield Ctx(sim, keys)


def _ssh_kind(rc: int, stderr: str) -> str:
    if rc == 0:
        return "ok"
    for kind, marker in (("revoked", "marked as revoked"), ("revoked", "revoked by file"), ("changed", "has changed"),
                         ("cert", "Certificate invalid"), ("unknown", "host key is known")):
        if marker in stderr:
            return kind
    return f"ssh rc={rc}: {stderr.strip()[-300:]}"


def _jueying_kind(node: dict[str, object]) -> str:
    if node["status"] == "ok":
        return "ok"
    error = str(node["error"])
    if node["status"] == "hostkey_failed":
        for kind, marker in (("revoked", "REVOKED"), ("changed", "CHANGED"), ("cert", "certificate"),
                             ("unknown", "unknown")):
            if marker in error:
                return kind
    return f"{node['status']}: {error}"


def _setup(ctx: Ctx, tmp: Path, values: dict[str, str]) -> tuple[Path, Path, list[str]]:
    """One Host alias and one known_hosts file per case: (ssh_config, inventory, aliases)."""
    aliases = [f"hkc{i:02d}" for i in range(1, len(CASES) + 1)]
    blocks = []
    for alias, each in zip(aliases, CASES, strict=True):
        node = ctx.cluster.node(each.node)
        options = "".join(f"  {line.format_map(values)}\n" for line in each.options)
        blocks.append(f"Host {alias}\n  HostName {node.address}\n  Port {node.port}\n"
                      f"  UserKnownHostsFile {tmp / alias}\n{options}")
    blocks.append(f"Host *\n  User root\n  IdentityFile {ctx.cluster.client_key_path}\n  IdentitiesOnly yes\n"
                  "  GlobalKnownHostsFile /dev/null\n  ConnectTimeout 5\n")
    config = tmp / "ssh_config"
    config.write_text("".join(blocks))
    inventory = tmp / "inventory.yaml"
    inventory.write_text(f'groups:\n  oracle:\n    nodes: "hkc[01-{len(CASES):02d}]"\n')
    return config, inventory, aliases


def _decide(ctx: Ctx, tmp: Path, mode: str) -> dict[str, tuple[str, str, set[str], set[str]]]:
    """Per case alias: (ssh's decision, jueying's decision, lines ssh recorded, lines jueying recorded)."""
    values = ctx.values()
    config, inventory, aliases = _setup(ctx, tmp, values)
    originals = {}
    for alias, each in zip(aliases, CASES, strict=True):
        originals[alias] = [line.format_map(values) for line in each.lines]
        (tmp / alias).write_text("".join(f"{line}\n" for line in originals[alias]))
        shutil.copy(tmp / alias, tmp / f"{alias}.ssh")

    def ssh(alias: str) -> tuple[int, str]:
        argv = ["ssh", "-F", str(config), "-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={mode}",
                "-o", f"UserKnownHostsFile={tmp / f'{alias}.ssh'}", "-o", "GlobalKnownHostsFile=/dev/null",
                alias, "true"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        return proc.returncode, proc.stderr

    with ThreadPoolExecutor(max_workers=4) as pool:
        ssh_results = dict(zip(aliases, pool.map(ssh, aliases), strict=True))
    flags = ["--accept-new-hostkeys"] if mode == "accept-new" else []
    result = run_jueying(["run", "-w", "@oracle", "--json", "--connect-timeout", "5", *flags, "--", "true"],
                         {"JUEYING_SSH_CONFIG": str(config), "JUEYING_INVENTORY": str(inventory),
                          "SSH_AUTH_SOCK": ""})
    by_node = {n["node"]: n for n in result.json()["data"]["nodes"]}

    def added(path: Path, alias: str) -> set[str]:
        return set(path.read_text().splitlines()) - set(originals[alias])

    return {alias: (_ssh_kind(*ssh_results[alias]), _jueying_kind(by_node[alias]),
                    added(tmp / f"{alias}.ssh", alias), added(tmp / alias, alias)) for alias in aliases}


def _with_recording(kind: str, recorded: set[str]) -> str:
    return f"{kind}+recorded" if recorded else kind


def test_strict_checking_decides_like_openssh(ctx: Ctx, tmp_path: Path) -> None:
    decided = _decide(ctx, tmp_path, "yes")
    table = []
    for alias, each in zip(decided, CASES, strict=True):
        ssh_kind, jueying_kind, _, jueying_added = decided[alias]
        table.append((each.name, each.strict, ssh_kind, jueying_kind, sorted(jueying_added)))
    print("\n".join(f"{n:45} expected {e:8} ssh {s:8} jueying {j}" for n, e, s, j, _ in table))  # -s shows it
    mismatches = [row for row in table if not (row[1] == row[2] == row[3]) or row[4]]
    assert not mismatches, "\n".join(f"{n}: expected {e}, ssh {s}, jueying {j}, jueying recorded {r}"
                                     for n, e, s, j, r in mismatches)


def test_accept_new_decides_and_records_like_openssh(ctx: Ctx, tmp_path: Path) -> None:
    decided = _decide(ctx, tmp_path, "accept-new")
    mismatches = []
    for alias, each in zip(decided, CASES, strict=True):
        ssh_kind, jueying_kind, ssh_added, jueying_added = decided[alias]
        ssh_decision, jueying_decision = _with_recording(ssh_kind, ssh_added), _with_recording(jueying_kind,
                                                                                              jueying_added)
        wanted = each.jueying_accept_new or each.accept_new
        print(f"{each.name:45} expected {each.accept_new:12} ssh {ssh_decision:12} jueying {jueying_decision}")
        if ssh_decision != each.accept_new or jueying_decision != wanted:
            mismatches.append(f"{each.name}: expected ssh {each.accept_new} / jueying {wanted}, "
                              f"got ssh {ssh_decision} / jueying {jueying_decision}")
        elif each.jueying_accept_new is None and ssh_added != jueying_added:
            mismatches.append(f"{each.name}: ssh recorded {ssh_added}, jueying {jueying_added}")
        if jueying_added and each.strict in ("changed", "revoked", "cert"):
            mismatches.append(f"{each.name}: jueying recorded a {each.strict} key: {jueying_added}")
    assert not mismatches, "\n".join(mismatches)


def test_passphrase_protected_key_without_agent_is_auth_failed_with_the_agent_hint(ctx: Ctx, tmp_path: Path) -> None:
    key = tmp_path / "id_locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse", "-f", str(key)], check=True)
    node = ctx.cluster.node("hk1")
    known = tmp_path / "known_hosts"
    known.write_text(f"{node.address} {ctx.keys['hk1']}\n")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host hk1\n  HostName {node.address}\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
                      f"  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("nodes:\n  hk1: {}\n")
    ssh = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "hk1", "true"], capture_output=True,
                         text=True, timeout=30, stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
    assert ssh.returncode == 255 and "Permission denied" in ssh.stderr
    result = run_jueying(["run", "-w", "hk1", "--json", "--", "true"],
                         {"JUEYING_SSH_CONFIG": str(config), "JUEYING_INVENTORY": str(inventory), "SSH_AUTH_SOCK": ""})
    node_doc = result.json()["data"]["nodes"][0]
    assert node_doc["status"] == "auth_failed", node_doc
    assert "passphrase-protected" in node_doc["error"] and "ssh-agent" in node_doc["error"], node_doc["error"]
    assert "internal error" not in node_doc["error"]
