"""`jueying status --json` on 64, 256 and 1024 simulated 8-GPU nodes: cold, warm (--watch) and clush.

One simulated cluster of real sshd nodes (tests/cluster, node0001... on 127.91.x.y), each with the
simulated 8x H100 NVML library (tests/nvmlsim), is brought up once with max(sizes) nodes; each size
selects its first N nodes with -w. Per size and run, interleaved (order rotated each run):

- cold: `jueying status --json --no-history -w <N nodes>`, a fresh process with fresh connections.
  Wall time; client CPU = user+sys of the process / N; peak RSS = its ru_maxrss. Both come from
  os.wait4() on that one child: the same figures a RUSAGE_CHILDREN delta would give for it (the
  process and whatever it waited for), but immune to other children of this script (the nodes'
  unshare wrappers) being reaped meanwhile, and a per-process high-water mark, where RUSAGE_CHILDREN's
  ru_maxrss is the largest of all children ever.
- warm: `jueying status --watch 0.5 --count 4 --json --no-history --deadline <timeout> -w <N nodes>`:
  connections and one probe per node are opened by refresh 1 and kept; refreshes 2-4 are the warm
  ones. The output is read as it comes (PYTHONUNBUFFERED=1, so each envelope leaves the process when
  printed, not when a pipe buffer fills) and T(k) is the moment envelope k's closing line `}` arrives.
  The watch loop sleeps `interval - d(k)` after a refresh that took d(k), so refresh k+1 starts at
  T(k) + max(0, interval - d(k)) and d(k+1) = T(k+1) - that start: the whole refresh (probe on every
  node over the open connections, parsing, printing the envelope), recovered exactly, sleep removed.
  The chain is anchored by refresh 1: it must have taken at least the interval, which is checked
  (T(1) minus the earliest collected_at_unix in envelope 1 is a lower bound of d(1); the nodes share
  this machine's clock). Each d(k) is also checked against its own lower bound T(k) - earliest
  collected_at_unix of envelope k. Why --deadline: without it a refresh may take max(3 x interval, 5 s)
  (cli/watch.py), and refresh 1 has to open every connection within that, while here a cold 64-node
  collection already takes ~5 s (set --warm-deadline 0 to use jueying's default).
  Peak RSS of the warm process (1024 open connections) is reported too, and the client CPU of each warm
  refresh: the process's user+sys from /proc/<pid>/stat read as each envelope arrives, differenced.
- clush: `clush -b -w <N nodes> -f 64 -o "-F <cluster ssh_config>" <probe>` running exactly what
  jueying runs on a node (collect.probe_command(): `exec python3 -c <bootstrap>`) with jueying's
  payload (collect.probe_payload(): probe source + pynvml, zlib) as clush's stdin, which clush
  forwards to every node (its --nostdin is off). CPU = user+sys of clush and the ssh processes it
  reaped, from os.wait4(). Also run with `-oKexAlgorithms=curve25519-sha256`: paramiko (jueying) can
  only negotiate curve25519 with this OpenSSH 9.2 sshd, while OpenSSH's ssh picks
  sntrup761x25519 by default, which costs client and node more CPU; that row compares like with like.

A second table gives the rest of this machine's CPU meanwhile (/proc/stat busy time less the client's),
per node: the nodes' sshd, shells and probes, which share the 2 cores here and so set the wall times.

Every run is checked: exit code 0 and all N nodes answered with 8 healthy GPUs (jueying: every
envelope's data.nodes has the N nodes, state ok, not stale; clush: N parsable facts documents, one
per node, each with its own hostname). A run that fails or reaches --timeout is reported as FAILED
and never timed.

    python3 benchmarks/status.py [--sizes 64,256,1024] [--runs 3] [--kinds cold,warm,clush,clush-c25519]
                                 [--cold-deadline S] [--warm-deadline S] [--timeout 600]

Cold runs use jueying's own global deadline unless --cold-deadline is given (it is connect timeout +
probe timeout + 5 s = 45 s whatever the node count: too short for 1024 nodes on this machine).

On this 2-core machine the nodes' sshd and python3 share the cores with the client: wall times are
mostly node CPU (see DESIGN.md "Performance notes"); client CPU per node is what carries over to a real
cluster. 1024 nodes take ~1.7 GB of memory. Needs root (sshd, namespaces).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster import SimCluster  # noqa: E402
from tests.nvmlsim import build_library  # noqa: E402

FIRST_OCTETS = (127, 91)  # test suites use 127.61, 127.77, 127.79-81; fanout.py 127.90
PREFIX = "node"
DIGITS = 4
GPUS = 8  # what SimCluster's nodes simulate
CLUSH_FANOUT = 64  # = jueying's default fan-out
# targets from the issue
TARGET_WARM_S = 3.0
TARGET_RSS_MB = 300.0


# --------------------------------------------------------------------------------------------------
# running one process, measured


@dataclass
class Proc:
    """One finished invocation: wall s, CPU s (user+sys, with reaped descendants), peak RSS, exit code."""

    wall_s: float
    cpu_s: float
    busy_s: float  # the whole machine's busy CPU seconds meanwhile: client + nodes (+ anything else)
    maxrss_mb: float
    rc: int | None  # None: killed at the timeout
    stderr: str


def find_program(name: str) -> str | None:
    """The tool's real executable: this interpreter's bin/ first (a pyenv shim costs ~60 ms a call)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def run_measured(argv: list[str], env: dict[str, str], *, stdin: Path | None, stdout: Any, timeout_s: float,
                 started_hook: Any = None) -> Proc:
    """Run argv (own session: on timeout the whole tree is killed) and os.wait4() it for its rusage.

    `stdout` is a file or subprocess.PIPE; with PIPE, `started_hook(proc)` starts whatever reads it.
    """
    killed = threading.Event()
    with contextlib.ExitStack() as stack:
        err_file = stack.enter_context(tempfile.TemporaryFile())
        stdin_file = stack.enter_context(open(stdin, "rb")) if stdin else subprocess.DEVNULL
        busy_before = machine_busy_s()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdin=stdin_file, stdout=stdout, stderr=err_file,
                                start_new_session=True)

        def kill() -> None:
            killed.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        watchdog = threading.Timer(timeout_s, kill)
        watchdog.daemon = True
        watchdog.start()
        reader_thread = started_hook(proc) if started_hook else None
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - start
        busy = machine_busy_s() - busy_before
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        if killed.is_set():  # the session may still hold descendants: kill them too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if reader_thread is not None:
            reader_thread.join(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
        err_file.seek(0)
        stderr = err_file.read().decode(errors="replace")
    return Proc(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, busy_s=busy,
                maxrss_mb=usage.ru_maxrss * 1024 / 1e6,  # Linux: KiB
                rc=None if killed.is_set() else proc.returncode, stderr=stderr)


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float | None:
    """user+sys seconds of a live process so far (/proc/<pid>/stat; None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) * _TICK_S  # fields 14 and 15: utime, stime


def machine_busy_s() -> float:
    """CPU seconds this machine has spent busy (all CPUs, /proc/stat: user nice system irq softirq steal)."""
    with open("/proc/stat", "rb") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) * _TICK_S


def exit_problem(proc: Proc, timeout_s: float) -> list[str]:
    problems = []
    if proc.rc is None:
        problems.append(f"killed at the {timeout_s:g} s timeout")
    elif proc.rc != 0:
        problems.append(f"exit code {proc.rc}")
    return problems


def stderr_tail(proc: Proc) -> str:
    tail = " | ".join(line for line in proc.stderr.strip().splitlines()[-3:])
    return f"stderr: {tail[:300]}" if tail else ""


# --------------------------------------------------------------------------------------------------
# checks


def check_envelope(doc: Any, nodes: list[str]) -> list[str]:
    """Problems with one status envelope: every node present, ok, not stale, with all its GPUs."""
    try:
        rows = doc["data"]["nodes"]
        by_name = {row["node"]: row for row in rows}
    except (KeyError, TypeError):
        return ["not a status envelope"]
    problems = []
    if doc.get("status") != "ok":
        problems.append(f"envelope status {doc.get('status')!r}")
    missing = [n for n in nodes if n not in by_name]
    bad = [n for n in nodes if n in by_name and not (
        by_name[n].get("state") == "ok" and not by_name[n].get("stale") and by_name[n].get("gpus_present") == GPUS)]
    if missing:
        problems.append(f"{len(missing)} nodes missing (e.g. {missing[0]})")
    if bad:
        row = by_name[bad[0]]
        problems.append(f"{len(bad)} nodes not ok (e.g. {bad[0]}: {row.get('state')} {row.get('reason')!r}"
                        f"{' stale' if row.get('stale') else ''})")
    if len(rows) != len(nodes):
        problems.append(f"{len(rows)} rows for {len(nodes)} nodes")
    return problems


def check_facts(doc: Any, node: str) -> str:
    """'' when a probe's facts document is a healthy 8-GPU node named `node`."""
    try:
        hostname = doc["host"]["hostname"]
        nvml = doc["nvml"]["status"]
        gpus = doc["gpus"]
    except (KeyError, TypeError):
        return "not a facts document"
    if hostname != node:
        return f"hostname {hostname!r}"
    if nvml != "ok" or len(gpus) != GPUS or any(g.get("lost") for g in gpus):
        return f"nvml {nvml}, {len(gpus)} GPUs"
    return ""


_RULE = re.compile(r"^-{4,}$")


def check_clush(stdout: str, nodes: list[str]) -> list[str]:
    """clush -b: blocks '-----' / '<nodeset> (<count>)' / '-----' then the group's output (one line here)."""
    from ClusterShell.NodeSet import NodeSet

    lines = stdout.splitlines()
    answered: set[str] = set()
    problems: list[str] = []

    def header_at(i: int) -> bool:
        return i + 2 < len(lines) and bool(_RULE.match(lines[i])) and bool(_RULE.match(lines[i + 2]))

    i = 0
    while i < len(lines):
        if not header_at(i):
            problems.append(f"unexpected line {i + 1} outside a block: {lines[i][:60]!r}")
            i += 1
            continue
        label = lines[i + 1].strip()
        names = list(NodeSet(re.sub(r"\s+\(\d+\)$", "", label)))
        i += 3
        body: list[str] = []
        while i < len(lines) and not header_at(i):
            if lines[i].strip():
                body.append(lines[i])
            i += 1
        if len(names) != 1 or len(body) != 1:
            problems.append(f"{label}: {len(body)} output lines")
            continue
        try:
            why = check_facts(json.loads(body[0]), names[0])
        except ValueError:
            why = "output is not JSON"
        if why:
            problems.append(f"{names[0]}: {why}")
        else:
            answered.add(names[0])
    missing = [n for n in nodes if n not in answered]
    if missing:
        problems.insert(0, f"{len(missing)}/{len(nodes)} nodes without a healthy facts document "
                        f"(e.g. {missing[0]})")
    return problems[:3]


# --------------------------------------------------------------------------------------------------
# the three measurements


@dataclass
class Run:
    wall_s: float = 0.0
    cpu_ms_per_node: float = 0.0
    maxrss_mb: float = 0.0
    refreshes_s: list[float] = field(default_factory=list)  # warm only: d(k) of refreshes 2..count
    lower_bounds_s: list[float] = field(default_factory=list)  # warm only: T(k) - earliest collected_at, k >= 2
    node_cpu_ms_per_node: float = 0.0  # the machine's busy CPU meanwhile less the client's, / nodes (whole run)
    refresh_cpu_ms_per_node: list[float] = field(default_factory=list)  # warm only: client CPU per refresh 2..count
    refresh_node_cpu_ms_per_node: list[float] = field(default_factory=list)  # warm only: the rest of the machine's
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


@dataclass
class Setup:
    jueying: list[str]
    clush: str | None
    env: dict[str, str]
    ssh_config: str
    probe_script: str
    payload: Path
    work: Path
    timeout_s: float
    interval_s: float
    count: int
    cold_deadline_s: float | None
    warm_deadline_s: float | None


def fold(names: list[str]) -> str:
    from ClusterShell.NodeSet import NodeSet

    return str(NodeSet.fromlist(names))


def measure_cold(setup: Setup, nodes: list[str]) -> Run:
    argv = [*setup.jueying, "status", "--json", "--no-history", "-w", fold(nodes)]
    if setup.cold_deadline_s:
        argv += ["--deadline", f"{setup.cold_deadline_s:g}"]
    with tempfile.TemporaryFile(dir=setup.work) as out:
        proc = run_measured(argv, setup.env, stdin=None, stdout=out, timeout_s=setup.timeout_s)
        out.seek(0)
        text = out.read()
    problems = exit_problem(proc, setup.timeout_s)
    try:
        problems += check_envelope(json.loads(text), nodes)
    except ValueError:
        problems.append("stdout is not one JSON document")
    if problems and (tail := stderr_tail(proc)):
        problems.append(tail)
    return Run(wall_s=proc.wall_s, cpu_ms_per_node=proc.cpu_s * 1000 / len(nodes), maxrss_mb=proc.maxrss_mb,
               node_cpu_ms_per_node=(proc.busy_s - proc.cpu_s) * 1000 / len(nodes), problem="; ".join(problems))


@dataclass(frozen=True)
class Envelope:
    arrived: float  # time.time() when its closing line was read
    text: bytes
    client_cpu_s: float | None  # the watch process's user+sys so far, then
    busy_s: float  # machine_busy_s() then


class EnvelopeReader:
    """Reads the watch process's stdout as it comes; notes when each envelope's last line arrives."""

    END = b"\n}\n"  # json.dumps(indent=2): the envelope's closing brace is the only unindented '}'

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.thread: threading.Thread | None = None

    def start(self, proc: subprocess.Popen[bytes]) -> threading.Thread:
        assert proc.stdout is not None
        self.thread = threading.Thread(target=self._read, args=(proc.stdout.fileno(), proc.pid), daemon=True)
        self.thread.start()
        return self.thread

    def _read(self, fd: int, pid: int) -> None:
        buf = bytearray()
        while chunk := os.read(fd, 1 << 20):
            now = time.time()
            scan_from = max(0, len(buf) - len(self.END) + 1)
            buf += chunk
            while (end := buf.find(self.END, scan_from)) >= 0:
                cut = end + len(self.END)
                self.envelopes.append(Envelope(now, bytes(buf[:cut]), process_cpu_s(pid), machine_busy_s()))
                del buf[:cut]
                scan_from = 0
        if buf.strip():
            self.envelopes.append(Envelope(time.time(), bytes(buf), None, machine_busy_s()))


def refresh_durations(arrivals: list[float], earliest: list[float], interval_s: float) -> tuple[list[float], str]:
    """d(k) of every refresh after the first, from envelope arrival times (see the module doc)."""
    first_lower_bound = arrivals[0] - earliest[0]
    if first_lower_bound < interval_s:
        return [], (f"refresh 1 may have taken less than the {interval_s:g} s interval "
                    f"(>= {first_lower_bound:.3f} s): refresh times cannot be recovered")
    durations: list[float] = []
    previous = first_lower_bound  # only compared with the interval: any value >= interval gives the same start
    for k in range(1, len(arrivals)):
        start = arrivals[k - 1] + max(0.0, interval_s - previous)
        d = arrivals[k] - start
        if d < arrivals[k] - earliest[k] - 0.02:  # refresh k started before its first node was probed
            return durations, (f"refresh {k + 1}: derived {d:.3f} s is below its lower bound "
                               f"{arrivals[k] - earliest[k]:.3f} s")
        durations.append(d)
        previous = d
    return durations, ""


def measure_warm(setup: Setup, nodes: list[str]) -> Run:
    argv = [*setup.jueying, "status", "--watch", f"{setup.interval_s:g}", "--count", str(setup.count), "--json",
            "--no-history", "-w", fold(nodes)]
    if setup.warm_deadline_s:
        argv += ["--deadline", f"{setup.warm_deadline_s:g}"]
    reader = EnvelopeReader()
    proc = run_measured(argv, {**setup.env, "PYTHONUNBUFFERED": "1"}, stdin=None, stdout=subprocess.PIPE,
                        timeout_s=setup.timeout_s, started_hook=reader.start)
    problems = exit_problem(proc, setup.timeout_s)
    arrivals: list[float] = []
    earliest: list[float] = []
    for k, envelope in enumerate(reader.envelopes, 1):
        try:
            doc = json.loads(envelope.text)
        except ValueError:
            problems.append(f"refresh {k}: output is not a JSON envelope")
            continue
        bad = check_envelope(doc, nodes)
        problems += [f"refresh {k}: {p}" for p in bad]
        stamps = [row["collected_at_unix"] for row in doc.get("data", {}).get("nodes", [])
                  if isinstance(row, dict) and row.get("collected_at_unix")]
        if not bad and stamps:
            arrivals.append(envelope.arrived)
            earliest.append(min(stamps))
    if len(reader.envelopes) != setup.count:
        problems.append(f"{len(reader.envelopes)} envelopes for --count {setup.count}")
    durations: list[float] = []
    if not problems:
        durations, why = refresh_durations(arrivals, earliest, setup.interval_s)
        if why:
            problems.append(why)
    elif len(reader.envelopes) > 1:  # for the log only, never timed: how far apart the envelopes came
        gaps = [cur.arrived - prev.arrived for prev, cur in itertools.pairwise(reader.envelopes)]
        problems.append("envelope gaps " + " ".join(f"{g:.1f}" for g in gaps) + " s (not counted)")
    if problems and (tail := stderr_tail(proc)):
        problems.append(tail)
    # CPU of refresh k = what was spent between envelopes k-1 and k (the sleep in between costs nothing)
    client: list[float] = []
    others: list[float] = []
    for prev, cur in itertools.pairwise(reader.envelopes):
        if prev.client_cpu_s is not None and cur.client_cpu_s is not None:
            spent = cur.client_cpu_s - prev.client_cpu_s
            client.append(spent * 1000 / len(nodes))
            others.append((cur.busy_s - prev.busy_s - spent) * 1000 / len(nodes))
    return Run(wall_s=proc.wall_s, cpu_ms_per_node=proc.cpu_s * 1000 / len(nodes), maxrss_mb=proc.maxrss_mb,
               refreshes_s=durations, lower_bounds_s=[t - e for t, e in zip(arrivals[1:], earliest[1:], strict=True)],
               node_cpu_ms_per_node=(proc.busy_s - proc.cpu_s) * 1000 / len(nodes),
               refresh_cpu_ms_per_node=client, refresh_node_cpu_ms_per_node=others,
               problem="; ".join(problems[:3] + problems[-2:] if len(problems) > 5 else problems))


def measure_clush(setup: Setup, nodes: list[str], extra_ssh: str = "") -> Run:
    assert setup.clush is not None
    ssh_options = f"-F {setup.ssh_config}" + (f" {extra_ssh}" if extra_ssh else "")
    argv = [setup.clush, "-b", "-w", fold(nodes), "-f", str(CLUSH_FANOUT), "-o", ssh_options, setup.probe_script]
    with tempfile.TemporaryFile(dir=setup.work) as out:
        proc = run_measured(argv, setup.env, stdin=setup.payload, stdout=out, timeout_s=setup.timeout_s)
        out.seek(0)
        text = out.read().decode(errors="replace")
    # clush exits 0 even when nodes failed (no -S): the output is what counts
    problems = [p for p in exit_problem(proc, setup.timeout_s) if not p.startswith("exit code")]
    problems += check_clush(text, nodes)
    if problems and (tail := stderr_tail(proc)):
        problems.append(tail)
    return Run(wall_s=proc.wall_s, cpu_ms_per_node=proc.cpu_s * 1000 / len(nodes), maxrss_mb=proc.maxrss_mb,
               node_cpu_ms_per_node=(proc.busy_s - proc.cpu_s) * 1000 / len(nodes), problem="; ".join(problems))


# --------------------------------------------------------------------------------------------------
# report


KINDS = ("cold", "warm", "clush", "clush-c25519")


def med(values: list[float]) -> float:
    return statistics.median(values)


def report(sizes: list[int], cells: dict[tuple[str, int], list[Run]], kinds: list[str]) -> list[str]:
    def ok(kind: str, size: int) -> bool:
        runs = cells.get((kind, size), [])
        return bool(runs) and all(r.ok for r in runs)

    def failed(kind: str, size: int) -> str:
        runs = cells.get((kind, size), [])
        if not runs:
            return "—"
        return f"FAILED {sum(not r.ok for r in runs)}/{len(runs)}"

    header = ["nodes", "jueying cold wall s", "cold CPU ms/node", "cold peak RSS MB", "warm refresh s",
              "warm CPU ms/node/refresh", "warm peak RSS MB", "clush wall s", "clush CPU ms/node"]
    clush_kinds = [k for k in ("clush", "clush-c25519") if k in kinds]
    if "clush-c25519" in kinds:
        header += ["clush c25519 wall s", "clush c25519 CPU ms/node"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for size in sizes:
        row = [str(size)]
        if ok("cold", size):
            runs = cells[("cold", size)]
            row += [f"{med([r.wall_s for r in runs]):.2f}", f"{med([r.cpu_ms_per_node for r in runs]):.1f}",
                    f"{max(r.maxrss_mb for r in runs):.0f}"]
        else:
            row += [failed("cold", size), "", ""]
        if ok("warm", size):
            runs = cells[("warm", size)]
            refreshes = [d for r in runs for d in r.refreshes_s]
            cpu = [c for r in runs for c in r.refresh_cpu_ms_per_node]
            row += [f"{med(refreshes):.2f} (max {max(refreshes):.2f})", f"{med(cpu):.1f}" if cpu else "?",
                    f"{max(r.maxrss_mb for r in runs):.0f}"]
        else:
            row += [failed("warm", size), "", ""]
        for kind in clush_kinds or ["clush"]:
            if ok(kind, size):
                runs = cells[(kind, size)]
                row += [f"{med([r.wall_s for r in runs]):.2f}", f"{med([r.cpu_ms_per_node for r in runs]):.1f}"]
            else:
                row += [failed(kind, size), ""]
        lines.append("| " + " | ".join(row) + " |")

    # where the rest of the wall time went: the nodes (sshd, python3 and the probe) on the same cores
    header = ["nodes", "cold", "warm refresh", *clush_kinds]
    lines += ["", "Rest of this machine's CPU (nodes' sshd + probe, and any other load), ms per node, medians:", "",
              "| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for size in sizes:
        row = [str(size)]
        for kind in ["cold", "warm", *clush_kinds]:
            runs = [r for r in cells.get((kind, size), []) if r.ok]
            values = [v for r in runs for v in r.refresh_node_cpu_ms_per_node] if kind == "warm" \
                else [r.node_cpu_ms_per_node for r in runs]
            row.append(f"{med(values):.1f}" if values else "—")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def targets(sizes: list[int], cells: dict[tuple[str, int], list[Run]], kinds: list[str]) -> list[str]:
    size = max(sizes)
    note = "" if size == 1024 else f" (evaluated at {size} nodes: the targets are for 1024)"
    out = [f"Targets{note}:"]

    def runs(kind: str) -> list[Run] | None:
        found = cells.get((kind, size), [])
        return found if found and all(r.ok for r in found) else None

    cold, warm, clush = runs("cold"), runs("warm"), runs("clush")
    if cold and clush:
        jw, cw = med([r.wall_s for r in cold]), med([r.wall_s for r in clush])
        extra = ""
        if (c25519 := runs("clush-c25519")) is not None:
            extra = f"; clush with curve25519 {med([r.wall_s for r in c25519]):.2f} s"
        out.append(f"- cold {size} nodes no slower than clush: {'MET' if jw <= cw else 'MISSED'} "
                   f"(jueying {jw:.2f} s, clush {cw:.2f} s{extra})")
    else:
        out.append(f"- cold {size} nodes no slower than clush: NOT MEASURED (a run failed, or not run)")
    if warm:
        refreshes = [d for r in warm for d in r.refreshes_s]
        m = med(refreshes)
        out.append(f"- warm refresh of {size} nodes under {TARGET_WARM_S:g} s: "
                   f"{'MET' if m < TARGET_WARM_S else 'MISSED'} (median {m:.2f} s, max {max(refreshes):.2f} s, "
                   f"{len(refreshes)} refreshes)")
    else:
        out.append(f"- warm refresh of {size} nodes under {TARGET_WARM_S:g} s: NOT MEASURED (a run failed, or not run)")
    # a failed run cannot show the target met, but one over the limit shows it missed
    every = [(r.maxrss_mb, r.ok, kind, s) for kind in ("cold", "warm") for s in sizes for r in cells.get((kind, s), [])]
    if every:
        peak, peak_ok, kind, at = max(every)
        where = f"largest jueying ru_maxrss {peak:.0f} MB: {kind} at {at} nodes{'' if peak_ok else ', a failed run'}"
        if peak >= TARGET_RSS_MB:
            out.append(f"- peak memory under {TARGET_RSS_MB:g} MB: MISSED ({where})")
        elif cold and warm:
            out.append(f"- peak memory under {TARGET_RSS_MB:g} MB: MET ({where}; cold and warm, all sizes)")
        else:
            out.append(f"- peak memory under {TARGET_RSS_MB:g} MB: NOT MEASURED at {size} nodes cold and warm "
                       f"({where})")
    else:
        out.append(f"- peak memory under {TARGET_RSS_MB:g} MB: NOT MEASURED (not run)")
    return out


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --sizes {text!r}: want e.g. 64,256,1024") from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError("--sizes: positive node counts")
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, default=[64, 256, 1024], help="node counts (default 64,256,1024)")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement and size; medians are reported")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per invocation before it is killed")
    parser.add_argument("--watch-interval", type=float, default=0.5, help="jueying --watch SECONDS (default 0.5)")
    parser.add_argument("--watch-count", type=int, default=4, help="jueying --count: refreshes per warm run "
                        "(the first opens the connections; default 4)")
    parser.add_argument("--warm-deadline", type=float, default=None,
                        help="jueying --deadline for warm runs (default: --timeout; 0: jueying's own)")
    parser.add_argument("--cold-deadline", type=float, default=None,
                        help="jueying --deadline for cold runs (default: none, jueying's own)")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated measurements, from {','.join(KINDS)} (default: all)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed first round")
    args = parser.parse_args()
    if args.runs < 1 or args.watch_count < 2:
        parser.error("--runs must be at least 1 and --watch-count at least 2")
    wanted = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not wanted or any(k not in KINDS for k in wanted):
        parser.error(f"--kinds: choose from {','.join(KINDS)}")
    sizes: list[int] = sorted(set(args.sizes))
    warm_deadline = args.timeout if args.warm_deadline is None else (args.warm_deadline or None)

    from jueying_cli.collect.payload import probe_command

    jueying = find_program("jueying")
    clush = find_program("clush")
    kinds = [k for k in KINDS if k in wanted and (clush or not k.startswith("clush"))]
    if not clush and any(k.startswith("clush") for k in wanted):
        print("clush not found (pip install ClusterShell): clush runs skipped", file=sys.stderr)

    work = Path(tempfile.mkdtemp(prefix="jueying-bench-status-"))
    cluster: SimCluster | None = None
    try:
        command = probe_command()
        payload = work / "probe-payload.bin"
        payload.write_bytes(command.stdin or b"")
        lib_dir = build_library(work / "lib")
        cluster = SimCluster(work / "cluster", max(sizes), prefix=PREFIX, digits=DIGITS, first_octets=FIRST_OCTETS,
                             gpu_lib_dir=lib_dir)
        setup = Setup(
            jueying=[jueying] if jueying else [sys.executable, "-m", "jueying_cli"],
            clush=clush,
            env={**os.environ, **cluster.client_env(), "NO_COLOR": "1", "LC_ALL": "C.UTF-8",
                 "JUEYING_STATE_DB": str(work / "state.db")},
            ssh_config=str(cluster.ssh_config_path),
            probe_script=command.script,
            payload=payload,
            work=work,
            timeout_s=args.timeout,
            interval_s=args.watch_interval,
            count=args.watch_count,
            cold_deadline_s=args.cold_deadline,
            warm_deadline_s=warm_deadline,
        )
        load_before = os.getloadavg()
        started = time.perf_counter()
        cluster.up(timeout_s=max(30.0, max(sizes) / 5))
        print(f"{max(sizes)} simulated 8-GPU nodes {cluster.nodeset} up in {time.perf_counter() - started:.1f} s "
              f"(load average before {load_before[0]:.2f}); payload {len(command.stdin or b'')} bytes",
              file=sys.stderr)
        names = [node.name for node in cluster.nodes]
        measures = {
            "cold": measure_cold,
            "warm": measure_warm,
            "clush": measure_clush,
            "clush-c25519": lambda s, n: measure_clush(s, n, "-oKexAlgorithms=curve25519-sha256"),
        }

        def log(kind: str, size: int, label: str, run: Run) -> None:
            extra = ""
            if kind == "warm" and run.refreshes_s:
                extra = (" refreshes " + " ".join(f"{d:.2f}" for d in run.refreshes_s) + " s (>= "
                         + " ".join(f"{d:.2f}" for d in run.lower_bounds_s) + "), client cpu "
                         + " ".join(f"{c:.1f}" for c in run.refresh_cpu_ms_per_node) + ", rest "
                         + " ".join(f"{c:.1f}" for c in run.refresh_node_cpu_ms_per_node) + " ms/node")
            status = "ok" if run.ok else f"FAILED: {run.problem}"
            print(f"{size:>5} nodes {label} {kind:<12} {run.wall_s:7.2f} s  cpu {run.cpu_ms_per_node:6.1f} ms/node  "
                  f"rest {run.node_cpu_ms_per_node:6.1f} ms/node  rss {run.maxrss_mb:6.1f} MB{extra}  {status}",
                  file=sys.stderr, flush=True)

        if not args.no_warmup:  # page cache, and an early word if something cannot work at all
            for kind in kinds:
                log(kind, min(sizes), "warm-up", measures[kind](setup, names[: min(sizes)]))

        cells: dict[tuple[str, int], list[Run]] = {(k, s): [] for k in kinds for s in sizes}
        for size in sizes:
            nodes = names[:size]
            for run in range(args.runs):
                order = kinds[run % len(kinds):] + kinds[: run % len(kinds)]
                for kind in order:
                    result = measures[kind](setup, nodes)
                    cells[(kind, size)].append(result)
                    log(kind, size, f"run {run + 1}/{args.runs}", result)

        load_after = os.getloadavg()
        lines = ["", *report(sizes, cells, kinds), "", *targets(sizes, cells, kinds)]
        failures = [(k, s, r) for (k, s), runs in cells.items() for r in runs if not r.ok]
        if failures:
            lines += ["", "Failed runs (not timed):"]
            lines += [f"- {kind} at {size} nodes: {r.problem}" for kind, size, r in failures]
        lines += [
            "",
            f"Medians of {args.runs} runs. cold = `jueying status --json --no-history` (fresh connections); "
            f"warm = each refresh after the first of `--watch {args.watch_interval:g} --count {args.watch_count}"
            f"{f' --deadline {warm_deadline:g}' if warm_deadline else ''}` (connections and probes kept; "
            "sleep excluded; "
            "median over all runs' warm refreshes); clush = `clush -b -f 64` running the same probe and payload "
            "(default OpenSSH kex; c25519: -oKexAlgorithms=curve25519-sha256, what paramiko negotiates). "
            "CPU = user+sys of the client process and its reaped children / nodes; RSS = ru_maxrss of the jueying "
            f"process (largest of its runs). Load average before {load_before[0]:.2f}, after {load_after[0]:.2f}.",
        ]
        print("\n".join(lines))
        return 1 if failures else 0
    finally:
        if cluster is not None:
            cluster.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
