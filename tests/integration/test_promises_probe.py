"""README, the facts document's kernel log: XIDs read from the real /dev/kmsg (not a file standing in for it),
incrementally by the kept probe, from `dmesg` when /dev/kmsg cannot be opened, and reported as unreadable
(UNKNOWN, never OK) when neither can be read.

The tests write XID lines into this machine's kernel log (root): the simulated nodes share this kernel, so
they see them too. The lines carry a pid of their own (pid=<random>) and the name `jueying-promise-test`,
and every assertion looks for that pid only, never for "no other XID", since the log is shared.

Note for other suites: such a line stays in the kernel log, so for `window_hours` (default 2) a `jueying
check` of this machine that reads the real kernel log (no JUEYING_PROBE_KERNEL_LOG) reports XID 79 on the
GPU at PCI 0000:2a:00 (GPU 1 of the simulated node).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import SimCluster
from tests.conftest import REPO, GpuNode, Result
from tests.integration._promises import jy, shared_dir, system_user

# A machine with a real NVIDIA driver is a GPU node (or could become one's image): a fake "GPU has fallen off
# the bus" in its kernel log would make jueying, NHC or DCGM health checks there drain it. Never written there.
REAL_NVIDIA = any(os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/nvidia0"))
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not os.access("/dev/kmsg", os.W_OK),
                       reason="writes to the kernel log: needs root and /dev/kmsg"),
    pytest.mark.skipif(REAL_NVIDIA, reason="this machine has an NVIDIA driver: a fake XID 79 in its kernel log "
                       "would make its health checks drain it"),
]

PCI = "0000:2a:00"  # GPU 1 of the simulated node
NON_ROOT = "jyp_klog"


def write_xid(pid: int) -> float:
    """One NVRM XID 79 line in this machine's kernel log; returns the time it was written."""
    when = time.time()
    with open("/dev/kmsg", "w") as kmsg:
        kmsg.write(f"<4>NVRM: Xid (PCI:{PCI}): 79, pid={pid}, name=jueying-promise-test, "
                   "GPU has fallen off the bus.\n")
    return when


def new_pid() -> int:
    return random.randint(10_000_000, 99_999_999)  # no real process has such a pid: ours alone


@pytest.fixture(scope="module")
def xid() -> tuple[int, float]:
    """(pid of the XID line written for this module, when)."""
    pid = new_pid()
    return pid, write_xid(pid)


@pytest.fixture(scope="module")
def cluster(nvml_lib: Path) -> Iterator[SimCluster]:
    """Two nodes whose probe reads the real kernel log (the simulated default points it at a file)."""
    with shared_dir("jueying-promises-probe-") as base, \
            SimCluster(base, 2, prefix="kp", digits=1, first_octets=(127, 91), gpu_lib_dir=nvml_lib,
                       extra_env={"JUEYING_PROBE_KERNEL_LOG": ""}) as sim:
        yield sim


def events_with(kernel_log: dict[str, Any], pid: int) -> list[dict[str, Any]]:
    return [e for e in kernel_log["xid_events"] or [] if e["pid"] == pid]


def facts_of(result: Result, node: str | None = None) -> dict[str, Any]:
    assert result.rc in (0, 1), result.stderr
    nodes = result.json()["data"]["nodes"]
    found: dict[str, Any] = next(n for n in nodes if node is None or n["node"] == node)["facts"]
    return found


def xid_results(result: Result, node: str | None = None) -> list[dict[str, Any]]:
    return [r for r in result.json()["data"]["results"]
            if r["check"] == "xid" and (node is None or r["node"] == node)]


def assert_our_xid(kernel_log: dict[str, Any], pid: int, written: float, source: str) -> None:
    assert kernel_log["status"] == "ok" and kernel_log["source"] == source, kernel_log
    ours = events_with(kernel_log, pid)
    assert len(ours) == 1, kernel_log
    event = ours[0]
    assert (event["xid"], event["pci_bus_id"]) == (79, PCI) and "fallen off the bus" in event["text"]
    assert abs(event["time_unix"] - written) < 120, (event, written)  # the record's own time, as wall clock


def test_this_machine_reads_xids_from_dev_kmsg(gpu_node: GpuNode, xid: tuple[int, float], tmp_path: Path) -> None:
    pid, written = xid
    db = {"JUEYING_STATE_DB": str(tmp_path / "state.db"), "JUEYING_PROBE_KERNEL_LOG": ""}  # the real log
    facts = facts_of(gpu_node.jueying("inventory", "--json", env=db))
    assert_our_xid(facts["kernel_log"], pid, written, "/dev/kmsg")
    checked = gpu_node.jueying("check", "--json", env=db)
    assert checked.rc == 2, checked.stdout
    gpu1 = [r for r in xid_results(checked) if r["gpu"] == 1 and r["code"] == "XID_79"]
    assert gpu1 and gpu1[0]["level"] == "CRITICAL" and gpu1[0]["action"] == "reboot", xid_results(checked)


def test_a_node_reads_xids_from_dev_kmsg(cluster: SimCluster, xid: tuple[int, float], tmp_path: Path) -> None:
    pid, written = xid
    env = {**cluster.client_env(), "JUEYING_STATE_DB": str(tmp_path / "state.db")}
    facts = facts_of(jy(env, "inventory", "--json", "-w", "kp1"))
    assert facts["host"]["hostname"] == "kp1"  # collected on the node, over SSH
    assert_our_xid(facts["kernel_log"], pid, written, "/dev/kmsg")
    checked = jy(env, "check", "--json", "-w", "kp1")
    gpu1 = [r for r in xid_results(checked, "kp1") if r["gpu"] == 1 and r["code"] == "XID_79"]
    assert gpu1 and gpu1[0]["level"] == "CRITICAL", xid_results(checked)


def read_frame(proc: subprocess.Popen[bytes]) -> tuple[str, dict[str, Any]]:
    assert proc.stdout is not None
    header = proc.stdout.readline().decode()
    kind, _, size = header.split()
    body = proc.stdout.read(int(size))
    return kind, json.loads(zlib.decompress(body)) if kind == "facts" else {"error": body.decode()}


def test_the_kept_probe_tails_dev_kmsg_incrementally(xid: tuple[int, float]) -> None:
    """`status --watch` keeps one probe per node and asks it once per refresh (its documents carry no XIDs
    to the screen, so the probe is asked here directly, over the same protocol): /dev/kmsg stays open, a
    line logged between two requests shows in the next answer, and no line is read twice."""
    first_pid, _ = xid
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    env.update(PYTHONPATH=str(REPO))
    serve = "import sys; from jueying_cli.probe.serve import serve; sys.exit(serve(sys.stdout.buffer, gpus=False))"
    proc = subprocess.Popen([sys.executable, "-c", serve], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        answers = []
        second_pid = new_pid()
        for seq in (1, 2, 3):
            proc.stdin.write(b"collect %d\n" % seq)
            proc.stdin.flush()
            kind, doc = read_frame(proc)
            assert kind == "facts", doc
            answers.append(doc["kernel_log"])
            if seq == 1:
                written = write_xid(second_pid)
        proc.stdin.write(b"quit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert all(log["source"] == "/dev/kmsg" for log in answers), answers
    assert [len(events_with(log, first_pid)) for log in answers] == [1, 1, 1]
    assert [len(events_with(log, second_pid)) for log in answers] == [0, 1, 1]  # seen once, never again
    assert_our_xid(answers[2], second_pid, written, "/dev/kmsg")


def in_namespace_without_kmsg(env: dict[str, str], tmp_path: Path, *args: str) -> Result:
    """The CLI in a mount namespace of its own where /dev/kmsg is a socket (open() fails with ENXIO), as on a
    host or container without a readable /dev/kmsg; dmesg (syslog(2), root) still works there."""
    sock_path = tmp_path / "no-kmsg.sock"
    if not sock_path.exists():
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(sock_path))
    full = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    full.update(env, PYTHONPATH=str(REPO))
    script = 'mount --bind "$0" /dev/kmsg && exec "$@"'
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(sock_path),
                           sys.executable, "-m", "jueying_cli", *args], env=full, capture_output=True, text=True,
                          timeout=120, check=False, cwd=REPO)
    if "propagation" in proc.stderr and "cannot" in proc.stderr:  # a chroot: / is not a mount point
        pytest.skip("unshare cannot make mounts private here (a chroot?): the bind mount would reach the host")
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("dmesg") is None, reason="needs unshare, dmesg")
def test_dmesg_is_the_fallback_when_dev_kmsg_cannot_be_read(gpu_node: GpuNode, xid: tuple[int, float],
                                                          tmp_path: Path) -> None:
    pid, written = xid
    env = {**gpu_node.env, "JUEYING_STATE_DB": str(tmp_path / "state.db"), "JUEYING_PROBE_KERNEL_LOG": ""}
    facts = facts_of(in_namespace_without_kmsg(env, tmp_path, "inventory", "--json"))
    assert_our_xid(facts["kernel_log"], pid, written, "dmesg")
    checked = in_namespace_without_kmsg(env, tmp_path, "check", "--json")
    assert checked.rc == 2, checked.stderr
    gpu1 = [r for r in xid_results(checked) if r["gpu"] == 1 and r["code"] == "XID_79"]
    assert gpu1 and gpu1[0]["level"] == "CRITICAL", xid_results(checked)


def test_a_kernel_log_nobody_may_read_is_unknown_never_ok(cluster: SimCluster, xid: tuple[int, float],
                                                        tmp_path: Path) -> None:
    """A node reached as a non-root user (no CAP_SYSLOG) with kernel.dmesg_restrict = 1: neither /dev/kmsg nor
    dmesg can be read. The facts say the log is unavailable (no XID list at all, not an empty one) and the
    xid check is UNKNOWN, even though an XID 79 sits in that very log."""
    if Path("/proc/sys/kernel/dmesg_restrict").read_text().strip() != "1":
        pytest.skip("kernel.dmesg_restrict is 0: any user may read the kernel log here")
    node = cluster.node("kp2")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(f"nodes:\n  kp2: {{address: {node.address}, ssh_user: {NON_ROOT}}}\n")
    env = {**cluster.client_env(), "JUEYING_INVENTORY": str(inventory), "JUEYING_STATE_DB": str(tmp_path / "db")}
    with system_user(NON_ROOT, cluster.base_dir):
        facts = facts_of(jy(env, "inventory", "--json"))
        checked = jy(env, "check", "--json")
    log = facts["kernel_log"]
    assert log["status"] == "unavailable" and log["xid_events"] is None, log
    assert "Operation not permitted" in str(log["message"]), log
    results = xid_results(checked, "kp2")
    assert [r["level"] for r in results] == ["UNKNOWN"], results
    assert "kernel log unavailable" in results[0]["message"]
    assert checked.rc != 0
