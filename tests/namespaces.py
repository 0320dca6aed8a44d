"""The ``unshare`` command line that gives a simulated node (sshd, slurmd) its own hostname and PIDs.

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

__all__ = ["NODE_UNSHARE_FLAGS", "node_unshare"]

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
