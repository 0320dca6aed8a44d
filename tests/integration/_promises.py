"""Helpers shared by the README-promise tests (test_promises_*.py): keys, sshd reconfiguration, system users
with their sudoers rules, and files outside pytest's private (0700) temporary tree.

Everything that changes the machine (a user, a sudoers file, a line in a system file) is undone by the
context manager that made it, even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from tests.cluster import SimCluster, SimNode
from tests.conftest import Result, run_jueying


def jy(env: Mapping[str, str], *args: str, timeout: float = 120) -> Result:
    return run_jueying(list(args), dict(env), timeout=timeout)


def by_node(result: Result) -> dict[str, dict[str, object]]:
    return {n["node"]: n for n in result.json()["data"]["nodes"]}


def wait_until(check: Callable[[], object], timeout_s: float = 20.0, step_s: float = 0.05) -> bool:
    """Poll `check` until it is true or `timeout_s` passes (a generous bound, never a race)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step_s)
    return bool(check())


@contextlib.contextmanager
def shared_dir(prefix: str) -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp tree is 0700 root: a non-root sshd session could
    not read the cluster's authorized_keys there); removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def keygen(path: Path, key_type: str = "ed25519", passphrase: str = "", comment: str = "jueying-test") -> str:
    """A new key pair at `path` (ssh-keygen); returns the public key line."""
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    argv = ["ssh-keygen", "-q", "-t", key_type, "-N", passphrase, "-C", comment, "-f", str(path)]
    if key_type == "rsa":
        argv[4:4] = ["-b", "2048"]
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return path.with_name(path.name + ".pub").read_text().strip()


def public_key(private: Path) -> str:
    """`type base64` of the key pair at `private`."""
    fields = private.with_name(private.name + ".pub").read_text().split()
    return f"{fields[0]} {fields[1]}"


@contextlib.contextmanager
def sshd_config(node: SimNode, edit: Callable[[str], str]) -> Iterator[None]:
    """Run the node's sshd with `edit(standard config)` for the duration; the standard one is back after."""
    standard = node.cluster._sshd_config(node)
    node.stop()
    node.sshd_config_path.write_text(edit(standard))
    try:
        node.start()
        yield
    finally:
        node.stop()  # ends every process of the node, blocked helpers included
        node.sshd_config_path.write_text(standard)
        node.start()


@contextlib.contextmanager
def authorized(cluster: SimCluster, *public_lines: str) -> Iterator[None]:
    """Extra keys in the cluster's authorized_keys (every node reads that one file)."""
    original = cluster.authorized_keys_path.read_text()
    cluster.authorized_keys_path.write_text(original + "".join(line + "\n" for line in public_lines))
    try:
        yield
    finally:
        cluster.authorized_keys_path.write_text(original)


@contextlib.contextmanager
def appended(path: Path, text: str) -> Iterator[None]:
    """`text` appended to a system file for the duration (created if missing); afterwards the file is as it
    was (removed if we created it; only our text taken out if someone else changed it meanwhile)."""
    existed = path.exists()
    original = path.read_text() if existed else ""
    written = original + ("" if not original or original.endswith("\n") else "\n") + text
    path.write_text(written)
    try:
        yield
    finally:
        current = path.read_text() if path.exists() else ""
        if current == written:
            if existed:
                path.write_text(original)
            else:
                path.unlink()
        elif text in current:
            path.write_text(current.replace(text, "", 1))


# ------------------------------------------------------------------------------------------------ users

_SUDOERS_SPECIAL_NO_BACKSLASH = re.compile(r"([,:=])")


def sudoers_command(argv: list[str]) -> str:
    """A Cmnd for sudoers matching exactly `argv` (the program by its full path; `\\ , : =` escaped)."""
    program = shutil.which(argv[0], path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    assert program, f"{argv[0]} not found"
    # sudoers unescapes `\\` once when it reads the file, then matches arguments as glob patterns, where a
    # backslash escapes again: a literal backslash needs four; `*?[` are glob characters and get one.
    def escape(arg: str) -> str:
        arg = arg.replace("\\", "\\\\\\\\")
        arg = re.sub(r"([*?\[\]])", r"\\\\\1", arg)
        return _SUDOERS_SPECIAL_NO_BACKSLASH.sub(r"\\\1", arg)

    return " ".join([program, *(escape(a) for a in argv[1:])])


def ensure_sudo() -> bool:
    """sudo and visudo present (installed through apt when root and missing)."""
    if shutil.which("sudo") and shutil.which("visudo"):
        return True
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "sudo"], env=env, capture_output=True, check=False)
    return bool(shutil.which("sudo") and shutil.which("visudo"))


@contextlib.contextmanager
def system_user(name: str, home_parent: Path, sudoers: str | None = None) -> Iterator[str]:
    """A login user `name` (shell /bin/sh, not locked, so sshd with UsePAM no lets it in), home under
    `home_parent`, with `sudoers` as /etc/sudoers.d/<name> (checked with visudo first: a broken file there
    would break sudo for the whole machine). User and file are removed afterwards."""
    subprocess.run(["userdel", "-r", name], capture_output=True, check=False)  # a leftover of a killed run
    home = home_parent / name
    subprocess.run(["useradd", "-m", "-d", str(home), "-s", "/bin/sh", "-p", "*", name], check=True,
                   capture_output=True)
    rule_file = Path("/etc/sudoers.d") / name
    try:
        if sudoers is not None:
            draft = home_parent / f".{name}.sudoers"
            draft.write_text(sudoers)
            draft.chmod(0o440)
            checked = subprocess.run(["visudo", "-c", "-f", str(draft)], capture_output=True, text=True,
                                     check=False)
            assert checked.returncode == 0, f"sudoers rule rejected: {checked.stderr}\n{sudoers}"
            shutil.move(str(draft), rule_file)
        yield name
    finally:
        rule_file.unlink(missing_ok=True)
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True, check=False)
