"""What this test machine offers the simulated nodes, where a chroot differs from a machine of its own.

A fresh machine built with debootstrap and entered with chroot (``shared/tools/fresh-machine``) differs
from a real one in two ways the harness meets: ``/`` is not a mount point (so unshare cannot make it
private, and ``/proc/self/mounts`` lists no root filesystem), and nothing is mounted on ``/sys/fs/cgroup``
(that is in ``tests/slurm``).

node_unshare: the ``unshare`` command line that gives a simulated node (sshd, slurmd) its own hostname
and PIDs.

``unshare --uts --pid --fork --mount-proc --kill-child``: its own UTS namespace (``hostname`` answers the
node's name), PID namespace with its own ``/proc`` (so the node's processes are its own), and the wrapper
takes the node with it when it is killed.

``--mount-proc`` implies a new mount namespace in which unshare first makes every mount private
(``mount --make-rprivate /``).  Where ``/`` is not a mount point -- a chroot, such as a fresh machine built
with debootstrap -- that fails with "cannot change root filesystem propagation: Invalid argument".  There
the propagation is left as it is (``--propagation unchanged``) and unshare makes the ``/proc`` mount alone
private before it mounts the namespace's ``/proc`` over it, so nothing propagates back to the machine.
That is only safe where ``/proc`` is itself a mount point, which is checked.
"""

from __future__ import annotations

import functools
import os
import subprocess

__all__ = ["NODE_UNSHARE_FLAGS", "node_unshare", "root_filesystem_listed", "sim_checks_yaml"]

NODE_UNSHARE_FLAGS = ("--uts", "--pid", "--fork", "--mount-proc", "--kill-child")


@functools.cache
def node_unshare() -> tuple[str, ...]:
    """``unshare`` and its flags for a node, tried once per process on this machine."""
    default = ("unshare", *NODE_UNSHARE_FLAGS)
    try:
        tried = subprocess.run([*default, "true"], capture_output=True, text=True, timeout=30,
                               stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return default  # the caller's own start reports the real error
    if tried.returncode == 0 or "propagation" not in tried.stderr:
        return default
    if not os.path.ismount("/proc"):
        raise RuntimeError(
            "unshare cannot make / private here (not a mount point: a chroot?) and /proc is not a mount point "
            f"either, so a node's /proc would show on this machine's: {tried.stderr.strip()}"
        )
    return (*default, "--propagation", "unchanged")


def root_filesystem_listed() -> bool:
    """Whether ``/`` is in ``/proc/self/mounts``: not in a chroot, whose root is a plain directory; the
    probe then reports only pseudo filesystems, none of which it keeps, and the filesystem check is UNKNOWN."""
    try:
        with open("/proc/self/mounts") as mounts:
            return any(line.split()[1:2] == ["/"] for line in mounts)
    except OSError:
        return False


def sim_checks_yaml() -> str:
    """A check file for `jueying check` on simulated nodes: the default set without `load` (every node
    shares this machine's CPUs, so their load per thread is far past any threshold: the test box, not a
    fault), and without `filesystem` where the root filesystem is not listed (a chroot, above)."""
    text = "checks:\n  load: {enabled: false}\n"
    if not root_filesystem_listed():
        text += "  filesystem: {enabled: false}\n"
    return text
