"""README, "SSH": each promise held to a real run of the CLI against real sshd nodes (tests/cluster).

One cluster of 16 nodes serves the file; a test that reconfigures a node (its sshd, a fault) puts it back.
Where OpenSSH's own client can decide the same question, it is asked too (`ssh -F`), so "as OpenSSH does"
is checked against OpenSSH rather than against our reading of its manual.
"""

from __future__ import annotations

import contextlib
import os
import pty
import pwd
import re
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import SimCluster, SimNode
from tests.conftest import REPO
from tests.integration._promises import (
    appended,
    authorized,
    by_node,
    ensure_sudo,
    jy,
    keygen,
    public_key,
    shared_dir,
    sshd_config,
    sudoers_command,
    system_user,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    shutil.which("ssh") is None or not Path("/usr/sbin/sshd").exists() or shutil.which("unshare") is None,
    reason="needs the OpenSSH client and server, and unshare",
)

NODES = 16
ALT_PORT = 2222  # ps02 listens there


@pytest.fixture(scope="module")
def cluster() -> Iterator[SimCluster]:
    # Outside pytest's 0700 tree: nodes are also reached as non-root users, whose sshd session must read
    # the cluster's authorized_keys.
    with shared_dir("jueying-promises-ssh-") as base, \
            SimCluster(base, NODES, prefix="ps", first_octets=(127, 90), ports={"ps02": ALT_PORT}) as sim:
        yield sim


def host_block(alias: str, *, hostname: str | None = None, **options: object) -> str:
    """One `Host alias` block; option names as in ssh_config (IdentitiesOnly=...), None leaves one out."""
    lines = [f"Host {alias}"] + ([f"  HostName {hostname}"] if hostname else [])
    lines += [f"  {key} {value}" for key, value in options.items() if value is not None]
    return "\n".join(lines) + "\n\n"


def client_block(cluster: SimCluster, alias: str, node: SimNode, known_hosts: Path | str, **options: object) -> str:
    """A plain client's block: no HostKeyAlias (the node is looked up by address, `[address]:port` off 22)."""
    defaults: dict[str, object] = {"User": "root", "IdentityFile": cluster.client_key_path, "IdentitiesOnly": "yes",
                                   "UserKnownHostsFile": known_hosts, "GlobalKnownHostsFile": "/dev/null",
                                   "ConnectTimeout": 20}
    if node.port != 22:
        defaults["Port"] = node.port
    return host_block(alias, hostname=node.address, **{**defaults, **options})


def inventory(path: Path, names: list[str], extra: dict[str, str] | None = None) -> Path:
    """An inventory of bare names (ssh_config decides everything), or with `extra` variables per name."""
    lines = ["nodes:"] + [f"  {name}: {{{(extra or {}).get(name, '')}}}" for name in names]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_aliases(tmp_path: Path, config: str, names: list[str], *args: str,
                env: dict[str, str] | None = None, extra: dict[str, str] | None = None,
                command: str = "hostname") -> dict[str, dict[str, object]]:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(config)
    inv = inventory(tmp_path / "inventory.yaml", names, extra)
    result = jy({"JUEYING_INVENTORY": str(inv), "JUEYING_SSH_CONFIG": str(cfg), **(env or {})},
                "run", "--json", *args, "--", command)
    assert result.stdout, result.stderr
    return by_node(result)


def openssh_decides(config: Path, alias: str, env: dict[str, str] | None = None) -> bool:
    """Whether the real ssh client connects and runs `true` (BatchMode: it never prompts)."""
    full = {**os.environ, **(env or {})}
    done = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                           alias, "true"], env=full, capture_output=True, timeout=60, check=False,
                          stdin=subprocess.DEVNULL)
    return done.returncode == 0


def status_of(nodes: dict[str, dict[str, object]]) -> dict[str, object]:
    return {name: n["status"] for name, n in nodes.items()}


# ------------------------------------------------------------------------------------ host keys and files


def test_port_from_ssh_config_and_the_host_port_known_hosts_name(cluster: SimCluster, tmp_path: Path) -> None:
    """ps02 listens on 2222: `Port` comes from ssh_config, and the name looked up is `[address]:2222`, with
    the bare address as a fallback only while `[address]:2222` has no key of its own."""
    node = cluster.node("ps02")
    key = public_key(node.host_key_path)
    other = " ".join(keygen(tmp_path / "other").split()[:2])
    files = {
        "hp-exact": f"[{node.address}]:{ALT_PORT} {key}\n",
        "hp-bare": f"{node.address} {key}\n",
        "hp-changed": f"[{node.address}]:{ALT_PORT} {other}\n{node.address} {key}\n",
        "hp-unknown": "",
        "hp-port22": f"{node.address} {key}\n",
    }
    config = ""
    for alias, text in files.items():
        (tmp_path / alias).write_text(text)
        port = 22 if alias == "hp-port22" else None  # ssh_config's Port wrong: nothing listens on 22 there
        config += client_block(cluster, alias, node, tmp_path / alias, **({"Port": port} if port else {}))
    nodes = run_aliases(tmp_path, config, list(files))
    assert status_of(nodes) == {"hp-exact": "ok", "hp-bare": "ok", "hp-changed": "hostkey_failed",
                                "hp-unknown": "hostkey_failed", "hp-port22": "unreachable"}, nodes
    assert nodes["hp-exact"]["stdout"] == "ps02\n"
    assert "CHANGED" in str(nodes["hp-changed"]["error"]) and f"[{node.address}]:{ALT_PORT}" in str(
        nodes["hp-changed"]["error"])
    assert f"host key for [{node.address}]:{ALT_PORT}" in str(nodes["hp-unknown"]["error"])
    assert f"{node.address}:22" in str(nodes["hp-port22"]["error"])
    for alias in ("hp-exact", "hp-bare", "hp-changed", "hp-unknown"):  # OpenSSH decides alike
        assert openssh_decides(tmp_path / "ssh_config", alias) == (nodes[alias]["status"] == "ok"), alias


def test_system_known_hosts_files(cluster: SimCluster, tmp_path: Path) -> None:
    """GlobalKnownHostsFile is read: a file named in ssh_config, and by default /etc/ssh/ssh_known_hosts
    (written for the test, restored after; the line names only this test cluster's address)."""
    named, default, missing = cluster.node("ps03"), cluster.node("ps01"), cluster.node("ps04")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    global_file = tmp_path / "global_known_hosts"
    global_file.write_text(f"{named.address} {public_key(named.host_key_path)}\n")
    config = (client_block(cluster, "gk-named", named, empty, GlobalKnownHostsFile=global_file)
              + client_block(cluster, "gk-default", default, empty, GlobalKnownHostsFile=None)
              + client_block(cluster, "gk-missing", missing, empty, GlobalKnownHostsFile=None))
    line = f"{default.address} {public_key(default.host_key_path)} jueying-promise-test-{os.getpid()}\n"
    with appended(Path("/etc/ssh/ssh_known_hosts"), line):
        nodes = run_aliases(tmp_path, config, ["gk-named", "gk-default", "gk-missing"])
        oracle = {alias: openssh_decides(tmp_path / "ssh_config", alias) for alias in nodes}
    assert status_of(nodes) == {"gk-named": "ok", "gk-default": "ok", "gk-missing": "hostkey_failed"}, nodes
    assert "/etc/ssh/ssh_known_hosts" in str(nodes["gk-missing"]["error"])  # it was searched
    assert oracle == {"gk-named": True, "gk-default": True, "gk-missing": False}
    system = Path("/etc/ssh/ssh_known_hosts")
    assert not system.exists() or line not in system.read_text(errors="replace")  # put back as it was


def test_host_key_types_negotiated_as_openssh_does(cluster: SimCluster, tmp_path: Path) -> None:
    """A node with ed25519, ECDSA and RSA host keys connects whichever one known_hosts records (the recorded
    type is negotiated first); an RSA-only node connects by its RSA key, and is CHANGED to a client that
    recorded only an ed25519 key for it (OpenSSH's rule)."""
    multi, rsa_only = cluster.node("ps04"), cluster.node("ps05")
    ed = multi.host_key_path
    ecdsa, rsa = multi.dir / "ssh_host_ecdsa_key", multi.dir / "ssh_host_rsa_key"
    rsa5 = rsa_only.dir / "ssh_host_rsa_key"
    keys = {"ecdsa": keygen(ecdsa, "ecdsa"), "rsa": keygen(rsa, "rsa"), "ed": public_key(ed)}
    rsa5_key, old5 = keygen(rsa5, "rsa"), public_key(rsa_only.host_key_path)

    def three(cfg: str) -> str:
        return cfg.replace(f"HostKey {ed}\n", f"HostKey {ed}\nHostKey {ecdsa}\nHostKey {rsa}\n")

    def rsa_only_config(cfg: str) -> str:
        return cfg.replace(f"HostKey {rsa_only.host_key_path}\n", f"HostKey {rsa5}\n")

    config, names = "", []
    for kind in ("ecdsa", "rsa", "ed"):
        (tmp_path / f"kh-{kind}").write_text(f"{multi.address} {' '.join(keys[kind].split()[:2])}\n")
        config += client_block(cluster, f"kt-{kind}", multi, tmp_path / f"kh-{kind}")
        names.append(f"kt-{kind}")
    for alias, key in (("kt-rsa-only", rsa5_key), ("kt-rsa-only-recorded-ed", old5)):
        (tmp_path / alias).write_text(f"{rsa_only.address} {' '.join(key.split()[:2])}\n")
        config += client_block(cluster, alias, rsa_only, tmp_path / alias)
        names.append(alias)
    with sshd_config(multi, three), sshd_config(rsa_only, rsa_only_config):
        nodes = run_aliases(tmp_path, config, names)
        oracle = {alias: openssh_decides(tmp_path / "ssh_config", alias) for alias in names}
    assert status_of(nodes) == {"kt-ecdsa": "ok", "kt-rsa": "ok", "kt-ed": "ok", "kt-rsa-only": "ok",
                                "kt-rsa-only-recorded-ed": "hostkey_failed"}, nodes
    assert "CHANGED" in str(nodes["kt-rsa-only-recorded-ed"]["error"])
    assert "ssh-rsa" in str(nodes["kt-rsa-only-recorded-ed"]["error"])  # the key it was offered
    assert oracle == {alias: n["status"] == "ok" for alias, n in nodes.items()}


# ------------------------------------------------------------------------------------ configuration


def test_user_ssh_config_is_read_before_the_system_one_and_ssh_config_flag_replaces_both(
        cluster: SimCluster, tmp_path: Path) -> None:
    """~/.ssh/config then /etc/ssh/ssh_config, first value wins: the system file (a block for this test's
    alias only, removed after) names the node, the user file's Port and User win over the system file's
    wrong ones, and the host key comes from ~/.ssh/known_hosts (the default user file). `--ssh-config` and
    $JUEYING_SSH_CONFIG replace both files: the alias then means nothing."""
    node = cluster.node("ps09")
    # ~ is the password database's home, as for ssh (not $HOME): the test adds its lines to the real files,
    # for its own alias only, and takes them out after.
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    (home / ".ssh").mkdir(mode=0o700, exist_ok=True)
    alias = f"jyp-sys-{os.getpid()}"
    user_config = f"\n# jueying promise test (pid {os.getpid()})\nHost {alias}\n  Port 22\n  User root\n"
    known = f"ps09 {public_key(node.host_key_path)}\n"
    system = (f"\n# jueying promise test (pid {os.getpid()}): removed when the test ends\n"
              + host_block(alias, hostname=node.address, Port=2, User="nobody", IdentityFile=cluster.client_key_path,
                           IdentitiesOnly="yes", HostKeyAlias="ps09", GlobalKnownHostsFile="/dev/null"))
    inv = inventory(tmp_path / "inventory.yaml", [alias])
    empty = tmp_path / "empty_config"
    empty.write_text("")
    env = {"JUEYING_INVENTORY": str(inv)}
    with appended(home / ".ssh" / "config", user_config), appended(home / ".ssh" / "known_hosts", known), \
            appended(Path("/etc/ssh/ssh_config"), system):
        both = jy(env, "run", "--json", "--", "id -un; hostname")
        flag = jy(env, "run", "--json", "--ssh-config", str(empty), "--", "hostname")
        variable = jy({**env, "JUEYING_SSH_CONFIG": str(empty)}, "run", "--json", "--", "hostname")
    assert by_node(both)[alias]["status"] == "ok", both.stdout
    assert by_node(both)[alias]["stdout"] == "root\nps09\n"
    for replaced in (flag, variable):
        entry = by_node(replaced)[alias]
        assert entry["status"] == "unreachable" and f"cannot resolve {alias}" in str(entry["error"]), entry


def test_inventory_variables_win_over_ssh_config(cluster: SimCluster, tmp_path: Path) -> None:
    """ssh_config gives a wrong HostName, Port, User and IdentityFile; the inventory's address, ssh_port,
    ssh_user and ssh_identity_file win. Leaving out any one of them shows the ssh_config value is used then
    (so each one really was overridden)."""
    node = cluster.node("ps02")
    wrong_key = tmp_path / "wrong_key"
    keygen(wrong_key)
    nowhere = f"{node.address.rsplit('.', 2)[0]}.250.250"  # in the cluster's block, no node there
    variables = {"address": node.address, "ssh_port": str(ALT_PORT), "ssh_user": "root",
                 "ssh_identity_file": str(cluster.client_key_path)}
    extra, config = {}, ""
    for left_out in ("none", *variables):
        alias = f"iv-{left_out.replace('_', '-')}"
        extra[alias] = ", ".join(f"{k}: {v}" for k, v in variables.items() if k != left_out)
        config += host_block(alias, hostname=nowhere, Port=2, User="nobody", IdentityFile=wrong_key,
                             IdentitiesOnly="yes", HostKeyAlias="ps02", UserKnownHostsFile=cluster.known_hosts_path,
                             GlobalKnownHostsFile="/dev/null", ConnectTimeout=20)
    nodes = run_aliases(tmp_path, config, list(extra), extra=extra, command="id -un; hostname")
    assert nodes["iv-none"]["status"] == "ok" and nodes["iv-none"]["stdout"] == "root\nps02\n", nodes
    assert nodes["iv-address"]["status"] == "unreachable" and nowhere in str(nodes["iv-address"]["error"])
    assert nodes["iv-ssh-port"]["status"] == "unreachable" and ":2 " in str(nodes["iv-ssh-port"]["error"]) + " "
    assert nodes["iv-ssh-user"]["status"] != "ok" or nodes["iv-ssh-user"]["stdout"] != "root\nps02\n"
    assert nodes["iv-ssh-identity-file"]["status"] == "auth_failed"


def test_connect_timeout_from_ssh_config_bounds_connect_and_banner(cluster: SimCluster, tmp_path: Path) -> None:
    """`ConnectTimeout 1` in ssh_config (the command line left at its default of 10 s) bounds the TCP connect
    to a black-holed node and the banner of a frozen one."""
    holed, frozen = cluster.node("ps06"), cluster.node("ps03")
    config = "".join(client_block(cluster, alias, node, cluster.known_hosts_path, HostKeyAlias=node.name,
                                  ConnectTimeout=1)
                     for alias, node in (("ct-holed", holed), ("ct-frozen", frozen)))
    holed.blackhole()
    frozen.freeze()
    try:
        started = time.monotonic()
        nodes = run_aliases(tmp_path, config, ["ct-holed", "ct-frozen"])
        elapsed = time.monotonic() - started
    finally:
        holed.unblackhole()
        frozen.thaw()
    assert nodes["ct-holed"]["status"] == "unreachable", nodes
    assert "timed out after 1 s" in str(nodes["ct-holed"]["error"])
    assert nodes["ct-frozen"]["status"] == "timeout" and "within 1 s" in str(nodes["ct-frozen"]["error"]), nodes
    assert elapsed < 60


def test_proxyjump_from_ssh_config(cluster: SimCluster, tmp_path: Path) -> None:
    """`ProxyJump` in ssh_config routes through the jump host (which ssh_config names too); without it the
    node cannot be reached."""
    jump, target = cluster.node("ps07"), cluster.node("ps08")
    config = (client_block(cluster, "pj-target", target, cluster.known_hosts_path, HostKeyAlias="ps08",
                           ProxyJump="ps07")
              + cluster.ssh_config_path.read_text().replace("ConnectTimeout 5", "ConnectTimeout 20"))
    through = run_aliases(tmp_path, config, ["pj-target"])
    assert through["pj-target"]["status"] == "ok" and through["pj-target"]["stdout"] == "ps08\n", through
    jump.stop()
    try:
        down = run_aliases(tmp_path, config, ["pj-target"])
    finally:
        jump.start()
    assert down["pj-target"]["status"] == "unreachable" and "jump host ps07" in str(down["pj-target"]["error"])


def test_a_name_that_does_not_resolve_is_unreachable(cluster: SimCluster, tmp_path: Path) -> None:
    inv = tmp_path / "inventory.yaml"
    inv.write_text("nodes:\n  nowhere: {address: jyp-nowhere.invalid, ssh_user: root}\n")
    result = jy({"JUEYING_INVENTORY": str(inv), "JUEYING_SSH_CONFIG": str(cluster.ssh_config_path)},
                "run", "--json", "--", "hostname")
    entry = by_node(result)["nowhere"]
    assert result.rc == 1
    assert entry["status"] == "unreachable" and "cannot resolve jyp-nowhere.invalid" in str(entry["error"]), entry
    assert entry["stdout"] == "" and entry["rc"] is None


# ------------------------------------------------------------------------------------ keys and agent


@contextlib.contextmanager
def ssh_agent() -> Iterator[dict[str, str]]:
    """A real ssh-agent (foreground, stopped after); yields the environment that points at it."""
    directory = Path(tempfile.mkdtemp(prefix="jyp-agent-"))  # short: a socket path has ~100 bytes
    sock = directory / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        assert wait_until(sock.exists, 20), "ssh-agent did not start"
        yield {"SSH_AUTH_SOCK": str(sock)}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(directory, ignore_errors=True)


def ssh_add(agent: dict[str, str], key: Path, passphrase: str = "") -> None:
    env = {**os.environ, **agent}
    if passphrase:  # ssh-add reads it through SSH_ASKPASS, never from a terminal
        askpass = key.with_name("askpass.sh")
        askpass.write_text(f"#!/bin/sh\necho {shlex.quote(passphrase)}\n")
        askpass.chmod(0o700)
        env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
    subprocess.run(["ssh-add", str(key)], env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL,
                   timeout=30)


def test_agent_keys_identities_only_and_auth_failed(cluster: SimCluster, tmp_path: Path) -> None:
    """Agent keys are offered unless IdentitiesOnly yes; a key that exists only in the agent is enough; a
    wrong key is auth_failed; a passphrase-protected identity file without the agent is auth_failed with a
    reason naming the key and the way out (ssh-add), and works once the agent holds it, IdentitiesOnly or
    not (as OpenSSH uses an agent key that matches an IdentityFile)."""
    node = cluster.node("ps01")
    agent_only, wrong, locked = tmp_path / "agent_only", tmp_path / "wrong", tmp_path / "locked"
    agent_pub = keygen(agent_only)
    keygen(wrong)
    locked_pub = keygen(locked, passphrase="jueying pass")
    aliases = {"id-agent": (wrong, "no"), "id-only": (wrong, "yes"), "id-locked": (locked, "yes"),
               "id-locked-agent": (locked, "no")}
    config = "".join(client_block(cluster, alias, node, cluster.known_hosts_path, HostKeyAlias="ps01",
                                  IdentityFile=key, IdentitiesOnly=only) for alias, (key, only) in aliases.items())
    names = list(aliases)
    with authorized(cluster, agent_pub, locked_pub), ssh_agent() as agent:
        no_agent = run_aliases(tmp_path, config, names, env={"SSH_AUTH_SOCK": ""})
        ssh_add(agent, agent_only)
        agent_only.unlink()  # from now on the key exists only in the agent
        with_agent = run_aliases(tmp_path, config, names, env=agent)
        # Every node at once, by the agent's key alone: the fan-out's threads all sign through the agent.
        fleet_config = tmp_path / "fleet_config"
        fleet_config.write_text(cluster.ssh_config_path.read_text().replace("IdentitiesOnly yes", "IdentitiesOnly no")
                                .replace(str(cluster.client_key_path), str(wrong)))
        fleet = jy({**cluster.client_env(), "JUEYING_SSH_CONFIG": str(fleet_config), **agent}, "run", "--json", "--",
                   "true")
        ssh_add(agent, locked, "jueying pass")
        with_locked = run_aliases(tmp_path, config, names, env=agent)
        oracle = {alias: openssh_decides(tmp_path / "ssh_config", alias, agent) for alias in names}
    assert status_of(no_agent) == dict.fromkeys(names, "auth_failed"), no_agent
    assert "root@id-only: public key authentication failed" in str(no_agent["id-only"]["error"])
    locked_reason = str(no_agent["id-locked"]["error"])
    assert str(locked) in locked_reason and "passphrase" in locked_reason and "ssh-add" in locked_reason
    assert status_of(with_agent) == {"id-agent": "ok", "id-only": "auth_failed", "id-locked": "auth_failed",
                                     "id-locked-agent": "ok"}, with_agent
    assert with_agent["id-agent"]["stdout"] == "ps01\n"
    assert fleet.rc == 0, {name: n["error"] for name, n in by_node(fleet).items() if n["status"] != "ok"}
    assert status_of(with_locked) == {"id-agent": "ok", "id-only": "auth_failed", "id-locked": "ok",
                                      "id-locked-agent": "ok"}, with_locked
    assert oracle == {alias: n["status"] == "ok" for alias, n in with_locked.items()}
    for entry in (*no_agent.values(), with_agent["id-only"]):
        assert entry["stdout"] == "" and entry["rc"] is None  # errors never pose as output


def test_a_stall_during_authentication_is_a_timeout_within_the_connect_timeout(cluster: SimCluster,
                                                                            tmp_path: Path) -> None:
    """An sshd whose key lookup (AuthorizedKeysCommand) blocks on a FIFO: the banner and key exchange
    succeed, authentication never answers. The node is `timeout` (a hung node, not a refused key) once the
    connect timeout passes. Released, the same node authenticates: the FIFO was all that held it."""
    node = cluster.node("ps10")
    helper = Path(tempfile.mkdtemp(prefix="jyp-akc-", dir="/run"))  # sshd wants a root-owned path to it
    try:
        helper.chmod(0o755)
        fifo, started, script = helper / "release", helper / "started", helper / "keys"
        os.mkfifo(fifo)
        script.write_text(f"#!/bin/sh\necho \"$1\" >> {started}\ncat {fifo} >/dev/null\n"
                          f"cat {cluster.authorized_keys_path}\n")
        script.chmod(0o755)

        def blocking_lookup(cfg: str) -> str:
            cfg = re.sub(r"^AuthorizedKeysFile .*$", "AuthorizedKeysFile none", cfg, flags=re.M)
            return cfg + f"AuthorizedKeysCommand {script} %u\nAuthorizedKeysCommandUser root\n"

        with sshd_config(node, blocking_lookup):
            began = time.monotonic()
            stalled = jy(cluster.client_env(), "run", "-w", "ps10", "--json", "--connect-timeout", "2", "--",
                         "hostname")
            elapsed = time.monotonic() - began
            assert started.exists(), "sshd never asked for the keys: the stall was not in authentication"
            release_readers(fifo)
            releaser = threading.Thread(target=release_when_asked, args=(fifo, started), daemon=True)
            releaser.start()
            released = jy(cluster.client_env(), "run", "-w", "ps10", "--json", "--", "hostname")
            releaser.join(timeout=60)
    finally:
        shutil.rmtree(helper, ignore_errors=True)
    entry = by_node(stalled)["ps10"]
    assert entry["status"] == "timeout", entry
    assert "authentication" in str(entry["error"]) and "2 s" in str(entry["error"]), entry
    assert elapsed < 20  # the 2 s connect timeout, not paramiko's or sshd's own (LoginGraceTime 120 s)
    assert by_node(released)["ps10"]["status"] == "ok" and by_node(released)["ps10"]["stdout"] == "ps10\n"


def release_readers(fifo: Path) -> int:
    """Let every process blocked opening `fifo` for reading go (open for writing, close); how many rounds."""
    rounds = 0
    while rounds < 100:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: nobody is waiting
            return rounds
        os.close(fd)
        rounds += 1
        time.sleep(0.01)
    return rounds


def release_when_asked(fifo: Path, started: Path) -> None:
    """Release the next key lookup as soon as sshd starts it (bounded)."""
    seen = len(started.read_text().splitlines())
    if wait_until(lambda: len(started.read_text().splitlines()) > seen, 60, 0.01):
        wait_until(lambda: release_readers(fifo) > 0, 10, 0.01)


# ------------------------------------------------------------------------------------ output, fan-out, progress


def test_output_is_capped_at_16_mib_per_stream_and_marked_truncated(cluster: SimCluster) -> None:
    cap = 16 * 1024 * 1024
    script = (f'case "$(hostname)" in ps11) o={cap} e=10;; ps12) o={cap + 1} e=10;; *) o=10 e={cap + 1};; esac; '
              "head -c $o /dev/zero | tr '\\0' o; head -c $e /dev/zero | tr '\\0' e >&2")
    result = jy(cluster.client_env(), "run", "-w", "ps[11-13]", "--json", "-t", "120", "--", script, timeout=300)
    nodes = by_node(result)
    assert all(n["status"] == "ok" for n in nodes.values()), {k: n["error"] for k, n in nodes.items()}
    exact, over, over_stderr = nodes["ps11"], nodes["ps12"], nodes["ps13"]
    assert len(str(exact["stdout"])) == cap and exact["truncated"] is False  # all of it, nothing cut
    assert len(str(over["stdout"])) == cap and set(str(over["stdout"])) == {"o"} and over["truncated"] is True
    assert over["stderr"] == "e" * 10
    assert len(str(over_stderr["stderr"])) == cap and over_stderr["stdout"] == "o" * 10
    assert over_stderr["truncated"] is True


def max_concurrent(log: Path) -> int:
    running = peak = 0
    for line in log.read_text().split():
        running += 1 if line == "S" else -1
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize(("fanout", "nodes"), [(1, "ps[09-12]"), (3, "ps[09-16]")])
def test_fanout_bounds_how_many_nodes_run_at_once(cluster: SimCluster, tmp_path: Path, fanout: int,
                                                  nodes: str) -> None:
    """Each command logs its start and end in one file; a command waits (bounded) until `fanout` commands
    run at once, or every node has started, so the window is filled whenever it can be: the peak is then
    exactly `fanout`, never more."""
    log = tmp_path / "sessions.log"
    log.write_text("")
    total = 4 if fanout == 1 else 8
    wait = (f'i=0; while [ $i -lt 600 ]; do s=$(grep -c S {log}); e=$(grep -c E {log}); '
            f'[ $((s - e)) -ge {fanout} ] && break; [ "$s" -ge {total} ] && break; sleep 0.05; i=$((i + 1)); done')
    result = jy(cluster.client_env(), "run", "-w", nodes, "-f", str(fanout), "--json", "--",
                f"echo S >> {log}; {wait}; echo E >> {log}")
    assert result.rc == 0, result.stdout
    assert log.read_text().split().count("S") == total and log.read_text().split().count("E") == total
    assert max_concurrent(log) == fanout, log.read_text()


def run_on_a_terminal(env: dict[str, str], args: list[str]) -> tuple[int, str, str]:
    """Run jueying with stderr on a pseudo-terminal (120x40) and stdout on a pipe: (rc, stdout, terminal)."""
    master, slave = pty.openpty()
    termios.tcsetwinsize(slave, (40, 120))
    full = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_") and k != "NO_COLOR"}
    full.update(env, PYTHONPATH=str(REPO), TERM="xterm-256color")
    proc = subprocess.Popen([sys.executable, "-m", "jueying_cli", *args], env=full, stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL, cwd=REPO)
    os.close(slave)
    screen = bytearray()

    def read_terminal() -> None:
        while True:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    return
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=30)
        os.close(master)
    return proc.returncode, out.decode(), screen.decode(errors="replace")


BAR = "━"  # rich's bar; the summary line "16/16 nodes ok" has none


def test_progress_bar_on_a_terminal_only(cluster: SimCluster) -> None:
    env = cluster.client_env()
    rc, out, terminal = run_on_a_terminal(env, ["run", "--", "true"])
    assert rc == 0
    assert BAR in terminal and "/16" in terminal, terminal  # the bar, on stderr
    assert BAR not in out
    piped = jy(env, "run", "--", "true")
    assert piped.rc == 0 and BAR not in piped.stderr and BAR not in piped.stdout
    assert "16/16 nodes ok" in piped.stderr
    rc, _, few = run_on_a_terminal(env, ["run", "-w", "ps[01-15]", "--", "true"])
    assert rc == 0 and BAR not in few and "15/15 nodes ok" in few  # fewer than 16 nodes: no bar


# ------------------------------------------------------------------------------------ sudo, non-root users


SUDO_USER, PLAIN_USER = "jyp_sudo", "jyp_plain"


def _sudo_argv(script: str, timeout_s: float | None) -> list[str]:
    """What jueying runs after `sudo -n --` for `script` (from the transport's own wrapper)."""
    from jueying_cli.transport.base import Command, wrap_command

    argv = shlex.split(wrap_command(Command(script=script, timeout_s=timeout_s, stdin=b"-", sudo=True)))
    return argv[argv.index("--") + 1:]


@pytest.fixture(scope="module")
def users(cluster: SimCluster) -> Iterator[None]:
    """`jyp_sudo`, allowed exactly the builtin drain marker's commands and `id -u` without a password (and to
    keep JUEYING_NODE_STATE_DIR, where the simulated nodes keep their marker), and `jyp_plain`, allowed
    nothing. Both removed after, with their sudoers files."""
    if os.geteuid() != 0 or not ensure_sudo():
        pytest.skip("needs root and sudo (apt-get install sudo)")
    from jueying_cli.scheduler import builtin

    allowed = [_sudo_argv(builtin._WRITE_MARKER, builtin.MARKER_TIMEOUT_S),
               _sudo_argv(builtin._REMOVE_MARKER, builtin.MARKER_TIMEOUT_S),
               _sudo_argv(builtin._READ_MARKER, builtin.READ_TIMEOUT_S), _sudo_argv("id -u", None)]
    rules = "".join(f"{SUDO_USER} ALL=(root) NOPASSWD: {sudoers_command(argv)}\n" for argv in allowed)
    rules += f'Defaults:{SUDO_USER} env_keep += "JUEYING_NODE_STATE_DIR"\n'
    with system_user(SUDO_USER, cluster.base_dir, rules), system_user(PLAIN_USER, cluster.base_dir):
        yield


def sudo_inventory(cluster: SimCluster, path: Path) -> Path:
    lines = ["vars: {scheduler: builtin, max_unavailable: 3}", "nodes:",
             f"  ps14: {{address: {cluster.node('ps14').address}, ssh_user: {SUDO_USER}}}",
             f"  ps15: {{address: {cluster.node('ps15').address}, ssh_user: {PLAIN_USER}}}",
             f"  ps16: {{address: {cluster.node('ps16').address}}}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def sudo_env(cluster: SimCluster, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "ssh_config"  # ps16's user comes from ssh_config (first value wins)
    config.write_text(f"Host ps16\n  User {SUDO_USER}\n\n" + cluster.ssh_config_path.read_text())
    return {"JUEYING_INVENTORY": str(sudo_inventory(cluster, tmp_path / "inventory.yaml")),
            "JUEYING_SSH_CONFIG": str(config), "JUEYING_STATE_DB": str(tmp_path / "state.db")}


def test_run_as_a_non_root_user_and_sudo_n(cluster: SimCluster, users: None, tmp_path: Path) -> None:
    env = sudo_env(cluster, tmp_path)
    who = by_node(jy(env, "run", "--json", "--", "id -un"))
    assert {name: n["stdout"] for name, n in who.items()} == {"ps14": f"{SUDO_USER}\n", "ps15": f"{PLAIN_USER}\n",
                                                             "ps16": f"{SUDO_USER}\n"}, who
    began = time.monotonic()
    result = jy(env, "run", "-w", "ps[14-15]", "--sudo", "--json", "--", "id -u", timeout=60)
    elapsed = time.monotonic() - began
    nodes = by_node(result)
    assert nodes["ps14"]["status"] == "ok" and nodes["ps14"]["stdout"] == "0\n", nodes
    # No NOPASSWD rule: sudo -n refuses at once instead of waiting for a password nobody will type.
    assert nodes["ps15"]["status"] == "failed" and nodes["ps15"]["rc"] == 1
    assert "a password is required" in str(nodes["ps15"]["stderr"])
    assert elapsed < 60


def test_builtin_drain_marker_goes_through_sudo_n_for_a_non_root_user(cluster: SimCluster, users: None,
                                                                     tmp_path: Path) -> None:
    env = sudo_env(cluster, tmp_path)
    marker = cluster.node("ps14").dir / "drained"
    try:
        drained = jy(env, "drain", "ps14", "--reason", "promise test")
        assert drained.rc == 0, drained.stdout + drained.stderr
        assert marker.read_text().strip() == "promise test [jueying:root]"
        assert marker.stat().st_uid == 0  # written by root, through sudo -n: jyp_sudo could not have
        resumed = jy(env, "resume", "ps14")
        assert resumed.rc == 0, resumed.stdout + resumed.stderr
        assert not marker.exists()
    finally:
        marker.unlink(missing_ok=True)


def test_builtin_drain_without_a_sudo_rule_fails_at_once_and_says_so(cluster: SimCluster, users: None,
                                                                    tmp_path: Path) -> None:
    env = sudo_env(cluster, tmp_path)
    began = time.monotonic()
    refused = jy(env, "drain", "ps15", "--reason", "promise test", timeout=60)
    assert time.monotonic() - began < 60
    assert refused.rc == 1
    assert not (cluster.node("ps15").dir / "drained").exists()
    said = refused.stdout + refused.stderr
    assert "ps15" in said and "sudo" in said and "password is required" in said, said


def test_builtin_drain_marker_uses_sudo_for_a_user_named_by_ssh_config(cluster: SimCluster, users: None,
                                                                      tmp_path: Path) -> None:
    env = sudo_env(cluster, tmp_path)
    marker = cluster.node("ps16").dir / "drained"
    try:
        drained = jy(env, "drain", "ps16", "--reason", "promise test")
        assert drained.rc == 0, drained.stdout + drained.stderr
        assert marker.read_text().strip() == "promise test [jueying:root]"
        resumed = jy(env, "resume", "ps16")  # removing it needs root as well
        assert resumed.rc == 0, resumed.stdout + resumed.stderr
        assert not marker.exists()
    finally:
        marker.unlink(missing_ok=True)
