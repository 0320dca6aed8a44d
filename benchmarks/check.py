"""`jueying check` against collecting facts alone (`jueying status --json`), on 1024 simulated nodes.

The checks are pure functions of the facts, so they should add little: this measures how little. One
simulated cluster of real sshd nodes with the simulated 8x H100 NVML (tests/cluster, tests/nvmlsim) is
brought up once; per size and run, interleaved, each command runs as a fresh process:

- status: `jueying status --json --no-history -w <N nodes>` (collect + summarise + print);
- check:  `jueying check --json --no-history -w <N nodes>` (collect + all checks + flap-control
  bookkeeping in the state DB + print), with the default check set minus `load` (the simulated nodes
  share this machine's 2 cores, so every one of them is "overloaded").

Wall time and client CPU (user+sys of the jueying process, from os.wait4) per node; the difference of
the CPU figures is the checks' cost. Every run must have all N nodes answering; a failed run is
reported as FAILED, never timed.

    python3 benchmarks/check.py [--sizes 1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster import SimCluster  # noqa: E402
from tests.nvmlsim import build_library  # noqa: E402


def run_once(argv: list[str], env: dict[str, str], nodes: int, timeout_s: float) -> tuple[float, float] | None:
    """(wall s, client CPU s) or None when the run failed or did not reach every node."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                return None
            time.sleep(0.01)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        try:
            doc = json.loads(out.read())
        except json.JSONDecodeError:
            return None
    data = doc.get("data", {})
    answered = len(data["nodes"]) - len(doc.get("errors", [])) if "results" not in data else \
        data["summary"]["nodes_total"] - len(doc.get("errors", []))
    if answered != nodes:
        return None
    return wall, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1024")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="jueying-bench-check-"))
    cluster = SimCluster(work / "cluster", max(sizes), prefix="node", digits=4, first_octets=(127, 92),
                         gpu_lib_dir=build_library(work / "lib"))
    checks = work / "checks.yaml"
    checks.write_text("checks:\n  load: {enabled: false}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    env.update(cluster.client_env(), JUEYING_CHECKS=str(checks), JUEYING_STATE_DB=str(work / "state.db"))
    jueying = shutil.which("jueying") or "jueying"
    try:
        cluster.up(timeout_s=300)
        print(f"{'nodes':>6} {'command':<8} {'wall s':>8} {'CPU ms/node':>12}   (median of {args.runs})")
        for size in sizes:
            names = f"node[0001-{size:04d}]"
            commands = {
                "status": [jueying, "status", "--json", "--no-history", "-w", names, "--deadline", "300"],
                "check": [jueying, "check", "--json", "--no-history", "-w", names, "--deadline", "300"],
            }
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
            failed: dict[str, int] = dict.fromkeys(commands, 0)
            for _ in range(args.runs):
                for name, argv in commands.items():
                    result = run_once(argv, env, size, args.timeout)
                    if result is None:
                        failed[name] += 1
                    else:
                        samples[name].append(result)
            cpu = {}
            for name, values in samples.items():
                if not values:
                    print(f"{size:>6} {name:<8} {'FAILED':>8}")
                    continue
                wall = statistics.median(v[0] for v in values)
                cpu[name] = statistics.median(v[1] for v in values) * 1000 / size
                note = f"  ({failed[name]} failed runs)" if failed[name] else ""
                print(f"{size:>6} {name:<8} {wall:>8.2f} {cpu[name]:>12.2f}{note}")
            if len(cpu) == 2:
                print(f"{size:>6} checks add {cpu['check'] - cpu['status']:.2f} ms of client CPU per node")
    finally:
        cluster.down()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
