"""Local status on one simulated 8x H100 node: jueying vs gpustat vs nvitop, plus `jueying --help`.

Every tool runs as a fresh process (what a person or cron pays), against the same simulated
libnvidia-ml.so.1 and state file, interleaved round by round so machine noise hits all alike.

    python3 benchmarks/local_status.py [--runs 15]
"""

from __future__ import annotations

import argparse
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

from tests.nvmlsim import build_library, default_state, sim_env, write_state  # noqa: E402


def time_once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="jueying-bench-"))
    try:
        lib_dir = build_library(work / "lib")
        state = work / "gpu.state"
        write_state(state, default_state())
        env = {**os.environ, **sim_env(lib_dir, state), "NO_COLOR": "1"}
        jueying = shutil.which("jueying") or "jueying"
        commands = {
            "jueying --help": [jueying, "--help"],
            "jueying status --json": [jueying, "status", "--json"],
            "gpustat --json": [shutil.which("gpustat") or "gpustat", "--json"],
            "nvitop -1": [shutil.which("nvitop") or "nvitop", "-1"],
        }
        for argv in commands.values():  # warm the page cache and check each works
            time_once(argv, env)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                samples[name].append(time_once(argv, env))
        print(f"{'command':<26} {'median ms':>10} {'min ms':>8} {'max ms':>8}   ({args.runs} runs each)")
        for name, values in samples.items():
            print(f"{name:<26} {statistics.median(values) * 1000:>10.1f} {min(values) * 1000:>8.1f} "
                  f"{max(values) * 1000:>8.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
