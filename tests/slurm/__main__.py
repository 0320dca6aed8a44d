"""Run a Slurm test cluster by hand: ``python -m tests.slurm [--nodes 4] [--dir DIR] [--time N]``.

Without ``--time`` it brings the cluster up, prints the environment a client needs and waits for
Ctrl-C (then takes it down). ``--time N`` brings it up and down N times and prints the timings.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from tests.slurm import SlurmCluster


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.slurm")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--dir", type=Path, default=None, help="base directory (default: a new temporary one)")
    parser.add_argument("--time", type=int, default=0, metavar="N", help="time N up/down cycles and exit")
    args = parser.parse_args()
    names = [f"node{i:02d}" for i in range(1, args.nodes + 1)]
    base = args.dir or Path(tempfile.mkdtemp(prefix="jueying-slurm-"))
    if args.time:
        ups, downs = [], []
        for i in range(args.time):
            cluster = SlurmCluster(base / f"run{i}", names)
            start = time.monotonic()
            cluster.up()
            ups.append(time.monotonic() - start)
            start = time.monotonic()
            cluster.down()
            downs.append(time.monotonic() - start)
        print(f"{args.nodes} nodes: up median {statistics.median(ups):.2f} s (max {max(ups):.2f}), "
              f"down median {statistics.median(downs):.2f} s (max {max(downs):.2f}) over {args.time} runs")
        return
    with SlurmCluster(base, names) as cluster:
        print(f"# {args.nodes} nodes under {base}; slurm.conf: {cluster.conf_path}")
        for key, value in cluster.env.items():
            print(f"export {key}={value}")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
