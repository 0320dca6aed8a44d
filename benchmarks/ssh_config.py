"""Resolving endpoints through ssh_config: 1,024 node names against a 1,000-host config, in process.

What a fan-out pays before its first connection: reading the config (`SshConfig(path)`) and resolving
every selected node (`Endpoints.resolve`, which looks the name up in the config and applies the
defaults). The config is what a large cluster's generated ssh_config looks like: 1,000 `Host gpuNNNN`
blocks (HostName, IdentityFile with a token, UserKnownHostsFile with %n), a few patterns (`Host *.ib
!bad.ib`, `Host gpu[0-9]*`) and a `Host *` block of defaults at the end. 1,024 names: the 1,000 hosts plus
24 that only the patterns match. With `--match`, the config also has two `Match` blocks (`Match host
gpu09* user root`, `Match final`), which force a second pass and sequential evaluation.

    python3 benchmarks/ssh_config.py [--runs 15] [--match]

Prints the median and the best of `--runs` runs, each in a fresh SshConfig, in milliseconds of CPU time
(`time.process_time`: on a shared 2-core machine, wall time mostly measures the neighbours).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jueying_cli.transport.ssh.config import SshConfig  # noqa: E402
from jueying_cli.transport.ssh.endpoint import Endpoints  # noqa: E402
from jueying_cli.transport.ssh.options import SshOptions  # noqa: E402


def config_text(match: bool) -> str:
    head = "Host *.ib !bad.ib\n  User ibuser\nHost gpu[0-9]*\n  Port 2200\n"
    hosts = "".join(f"Host gpu{i:04d}\n  HostName 10.1.{i // 250}.{i % 250}\n  IdentityFile ~/.ssh/k-%n\n"
                    f"  UserKnownHostsFile /etc/kh/%n\n" for i in range(1000))
    extra = "Match host gpu09* user root\n  ConnectTimeout 4\nMatch final\n  HashKnownHosts no\n" if match else ""
    return head + hosts + extra + "Host *\n  IdentityFile ~/.ssh/id_ed25519\n  ConnectTimeout 7\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--match", action="store_true", help="add two Match blocks (second pass)")
    args = parser.parse_args()
    names = [f"gpu{i:04d}" for i in range(1000)] + [f"n{i}.ib" for i in range(24)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ssh_config"
        path.write_text(config_text(args.match))
        parse, resolve = [], []
        for _ in range(args.runs):
            started = time.process_time()
            config = SshConfig(str(path))
            parsed = time.process_time()
            endpoints = Endpoints(config, SshOptions())
            for name in names:
                endpoints.resolve(name, None, None, None, None, None)
            done = time.process_time()
            parse.append((parsed - started) * 1000)
            resolve.append((done - parsed) * 1000)
    print(f"{len(names)} names, 1000-host config{' with Match blocks' if args.match else ''}, {args.runs} runs")
    print(f"  read config       CPU median {statistics.median(parse):7.1f} ms   best {min(parse):7.1f} ms")
    print(f"  resolve all names CPU median {statistics.median(resolve):7.1f} ms   best {min(resolve):7.1f} ms"
          f"   ({statistics.median(resolve) / len(names) * 1000:.1f} us/name)")


if __name__ == "__main__":
    main()
