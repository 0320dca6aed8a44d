"""`jueying run -- hostname` on N simulated sshd nodes that all sit behind ONE jump host (ProxyJump), fan-out 64
by default: does every node answer, and how long does it take. The nodes share one SSH connection to the jump
host (a direct-tcpip channel each), so one misstep on it loses them all: each run reports how many nodes
answered with their own name and what the others said. Fresh process and connections per run.

    python3 benchmarks/jump_fanout.py [--nodes 128] [--runs 5] [--fanout 64] [--repo DIR] [--jump-options K=V,..]

--repo runs another checkout's jueying (e.g. an older commit unpacked with `git archive`) against the same
cluster, for a before/after; --jump-options sets sshd_config keywords on the jump host (e.g.
MaxSessions=1,MaxStartups=1:100:1). The simulated cluster lives on 127.93.x.y (shifted by
JUEYING_SIM_OCTET_SHIFT) and is stopped at the end. Needs what the test suite needs (root, sshd).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.cluster import SimCluster  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=128, help="nodes behind the jump host")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fanout", type=int, default=64)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose jueying runs")
    parser.add_argument("--jump-options", default="", help="sshd_config keywords for the jump host: K=V,K=V")
    args = parser.parse_args()
    options = dict(item.split("=", 1) for item in args.jump_options.split(",") if item)
    with tempfile.TemporaryDirectory(prefix="jueying-jump-bench-") as tmp:
        base = Path(tmp)
        sim = SimCluster(base / "sim", args.nodes + 1, prefix="jb", digits=3, first_octets=(127, 93),
                         sshd_options={"jb001": options} if options else None)
        with sim:
            behind = [n.name for n in sim.nodes[1:]]
            inventory = base / "jump.yaml"
            inventory.write_text("groups:\n  behind:\n    nodes: " + json.dumps(",".join(behind))
                                 + "\n    vars: {ssh_proxy_jump: jb001}\n")
            env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
            env.update(sim.client_env(), PYTHONPATH=str(args.repo.resolve()), JUEYING_STATE_DB=str(base / "state.db"))
            print(f"{args.nodes} nodes behind one jump host, fan-out {args.fanout}, jueying from {args.repo}"
                  + (f", jump host {options}" if options else ""))
            walls, complete = [], 0
            for run in range(1, args.runs + 1):
                started = time.monotonic()
                proc = subprocess.run([sys.executable, "-m", "jueying_cli", "run", "-i", str(inventory), "--json",
                                       "--fanout", str(args.fanout), "--", "hostname"], env=env,
                                      capture_output=True, text=True, timeout=600, cwd=str(args.repo), check=False)
                wall = time.monotonic() - started
                nodes = {n["node"]: n for n in json.loads(proc.stdout)["data"]["nodes"]} if proc.stdout else {}
                answered = [name for name in behind if nodes.get(name, {}).get("stdout") == f"{name}\n"]
                lost = collections.Counter(f"{n['status']}: {n['error']}" for name, n in nodes.items()
                                           if name not in answered)
                walls.append(wall)
                complete += len(answered) == len(behind)
                print(f"run {run}: {len(answered)}/{len(behind)} answered in {wall:.1f} s"
                      + "".join(f"\n    {count} x {text[:160]}" for text, count in lost.most_common(4)))
            print(f"complete runs {complete}/{args.runs}; median wall {statistics.median(walls):.1f} s")


if __name__ == "__main__":
    main()
