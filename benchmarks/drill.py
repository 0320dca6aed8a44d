"""What a drill costs and what it measures: the shipped `lose-one-gpu-node` drill, run N times end to end on
simulated sshd nodes (127.94.x.y, shifted by JUEYING_SIM_OCTET_SHIFT) with the simulated 8x H100 NVML and
the builtin scheduler, while `jueying check --drain` runs in a loop beside it (what cron does, every
second here, so detection is bounded by how long one check run takes).

Reported, as medians: the drill's wall time; time_to_detect (fault in place -> the node seen drained); how
long injecting and undoing the GPU fault took over SSH (the undo includes stopping the node-side timer).
Every run must end completed with the rollback succeeded, else it is FAILED and not counted.

    python3 benchmarks/drill.py [--runs 5] [--nodes 4] [--check-every 1]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--check-every", type=float, default=1.0, help="seconds between check --drain runs")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="jueying-drill-bench-"))
    lib = build_library(base / "nvml")
    with SimCluster(base / "sim", args.nodes, prefix="bd", first_octets=(127, 94), gpu_lib_dir=lib) as sim:
        inventory = base / "inventory.yaml"
        inventory.write_text("vars: {ssh_user: root, scheduler: builtin, expected_gpus: 8}\nnodes:\n" + "".join(
            f"  {n.name}: {{address: {n.address}}}\n" for n in sim.nodes))
        checks = base / "checks.yaml"
        checks.write_text("checks:\n  load: {enabled: false}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
        env.update(sim.client_env(), JUEYING_INVENTORY=str(inventory), JUEYING_CHECKS=str(checks),
                   JUEYING_STATE_DB=str(base / "state.db"), PYTHONPATH=str(ROOT))
        loop = (f"while :; do {sys.executable} -m jueying_cli check --drain >/dev/null 2>&1; "
                f"sleep {args.check_every}; done")
        cron = subprocess.Popen(["sh", "-c", loop], env=env, start_new_session=True)
        walls, detects, injects, undos, failed = [], [], [], [], 0
        try:
            for _ in range(args.runs):
                started = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "jueying_cli", "drill", "run",
                                       str(ROOT / "playbooks/drills/lose-one-gpu-node.yaml"), "--yes", "--json",
                                       "--var", "gpu_floor=8"], env=env, capture_output=True, text=True,
                                      timeout=900, check=False)
                wall = time.perf_counter() - started
                try:
                    journal = json.loads(proc.stdout)["data"]
                except (json.JSONDecodeError, KeyError):
                    journal = {}
                if proc.returncode != 0 or journal.get("status") != "completed":
                    failed += 1
                    print(f"FAILED: rc {proc.returncode}: {proc.stderr[-400:]}")
                    continue
                walls.append(wall)
                detects.append(journal["timings"]["time_to_detect"])
                injects.append(journal["run"][0]["duration"])
                undos.append(journal["rollbacks"][0]["duration"])
        finally:
            os.killpg(cron.pid, signal.SIGTERM)
            cron.wait()
    if walls:
        print(f"{args.nodes} nodes, check --drain every {args.check_every:g} s, {len(walls)} runs ({failed} failed): "
              f"drill wall {statistics.median(walls):.1f} s, time_to_detect {statistics.median(detects):.1f} s "
              f"(max {max(detects):.1f}), inject {statistics.median(injects) * 1000:.0f} ms, "
              f"undo {statistics.median(undos) * 1000:.0f} ms (medians)")


if __name__ == "__main__":
    main()
