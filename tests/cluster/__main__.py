"""Command line for the simulated cluster: ``scripts/sim-cluster`` (or ``python -m tests.cluster``).

    sim-cluster up N [--dir DIR] [--prefix node] [--octets 127.77] [--gpu-lib-dir D] [--env K=V ...]
    sim-cluster status [--dir DIR] [--json]
    sim-cluster env [--dir DIR]                      # eval "$(scripts/sim-cluster env)"
    sim-cluster down [--dir DIR]
    sim-cluster stop|start|freeze|thaw|blackhole|unblackhole NODESET [--dir DIR]
    sim-cluster change-host-key|forget-host-key|trust-host-key NODESET [--dir DIR]
    sim-cluster set-gpus NODESET KEY=VALUE ... [--dir DIR]

``up`` leaves the sshd processes running after it exits and records their pids in DIR/cluster.json;
``down`` reads them back and stops them (and anything below them), and removes black holes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from tests.cluster._sim import STATE_FILE, SimCluster, SimNode

DEFAULT_DIR = Path("/tmp/jueying-sim")

NODE_ACTIONS = {
    "stop": SimNode.stop,
    "start": SimNode.start,
    "freeze": SimNode.freeze,
    "thaw": SimNode.thaw,
    "blackhole": SimNode.blackhole,
    "unblackhole": SimNode.unblackhole,
    "change-host-key": SimNode.change_host_key,
    "forget-host-key": SimNode.forget_host_key,
    "trust-host-key": SimNode.trust_host_key,
}


def _attach(directory: Path) -> SimCluster:
    if not (directory / STATE_FILE).exists():
        raise SystemExit(f"sim-cluster: no simulated cluster in {directory} (run: sim-cluster up N --dir DIR)")
    return SimCluster.attach(directory)


def _select(cluster: SimCluster, pattern: str) -> list[SimNode]:
    from ClusterShell.NodeSet import NodeSet

    try:
        return [cluster.node(name) for name in NodeSet(pattern)]
    except KeyError as exc:
        raise SystemExit(f"sim-cluster: {exc.args[0]}") from None


def _exports(cluster: SimCluster) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in cluster.client_env().items())


def cmd_up(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    if (directory / STATE_FILE).exists():
        running = [n.name for n in SimCluster.attach(directory).nodes if n.is_running()]
        if running:
            print(
                f"sim-cluster: {len(running)} nodes already run from {directory}; "
                f"run: sim-cluster down --dir {directory}",
                file=sys.stderr,
            )
            return 1
    octets = tuple(int(part) for part in args.octets.split("."))
    if len(octets) != 2:
        raise SystemExit("sim-cluster: --octets takes two numbers, e.g. 127.77")
    env = dict(item.split("=", 1) for item in args.env)
    gpu_lib_dir = args.gpu_lib_dir
    if gpu_lib_dir is None and not args.no_gpus:  # every node gets the simulated 8x H100 NVML by default
        from tests.nvmlsim import build_library

        gpu_lib_dir = build_library(directory / "nvmlsim")
    cluster = SimCluster(
        directory,
        args.count,
        prefix=args.prefix,
        first_octets=(octets[0], octets[1]),
        start_index=args.start_index,
        digits=args.digits,
        gpu_lib_dir=gpu_lib_dir,
        extra_env=env,
    )
    start = time.monotonic()
    cluster.up(timeout_s=args.timeout)
    cluster.detach()
    first, last = cluster.nodes[0], cluster.nodes[-1]
    me = "scripts/sim-cluster"
    print(
        f"{len(cluster.nodes)} simulated nodes {cluster.nodeset} ({first.address} .. {last.address}) "
        f"up in {time.monotonic() - start:.1f} s; state in {directory}\n\n"
        f"Use them:\n{_exports(cluster)}"
        f"  ssh -F {cluster.ssh_config_path} {first.name} hostname\n\n"
        f"Faults:  {me} freeze|stop|blackhole|change-host-key {first.name} --dir {directory}  "
        f"(undo: thaw|start|unblackhole|trust-host-key)\n"
        f"GPUs:    {me} set-gpus {first.name} gpu.3.lost=1 --dir {directory}; "
        f"{me} xid {first.name} 79 --gpu 0 --dir {directory}\n"
        f"Status:  {me} status --dir {directory}\n"
        f"Stop:    {me} down --dir {directory}"
    )
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    if not (args.dir / STATE_FILE).exists():
        print(f"sim-cluster: nothing to stop in {args.dir}")
        return 0
    cluster = SimCluster.attach(args.dir)
    running = sum(1 for n in cluster.nodes if n.is_running())
    cluster.down()
    print(f"stopped {running} simulated nodes from {args.dir}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cluster = _attach(args.dir)
    rows = [
        {"name": n.name, "address": n.address, "port": n.port, "pid": n.pid, "status": n.status()}
        for n in cluster.nodes
    ]
    if args.json:
        print(json.dumps({"dir": str(args.dir), "nodeset": cluster.nodeset, "nodes": rows}, indent=1))
        return 0
    print(f"{'NAME':<12} {'ADDRESS':<16} {'PID':>8}  STATUS")
    for row in rows:
        print(f"{row['name']:<12} {row['address']:<16} {row['pid'] or '-':>8}  {row['status']}")
    running = sum(1 for r in rows if not str(r["status"]).startswith("stopped"))
    print(f"{running}/{len(rows)} running; {cluster.nodeset}; state in {args.dir}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    print(_exports(_attach(args.dir)), end="")
    return 0


def cmd_node_action(args: argparse.Namespace) -> int:
    cluster = _attach(args.dir)
    action = NODE_ACTIONS[args.command]
    for node in _select(cluster, args.nodes):
        action(node)
        print(f"{node.name}: {args.command} -> {node.status()}")
    return 0


def cmd_set_gpus(args: argparse.Namespace) -> int:
    cluster = _attach(args.dir)
    fields: dict[str, object] = {}
    for item in args.fields:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"sim-cluster: expected KEY=VALUE, got {item!r}")
        fields[key.strip()] = value.strip()
    for node in _select(cluster, args.nodes):
        node.set_gpus(**fields)
        print(f"{node.name}: {node.state_path}")
    return 0


def cmd_xid(args: argparse.Namespace) -> int:
    """Append an `NVRM: Xid` line to the nodes' kernel logs, on the PCI address of GPU --gpu."""
    cluster = _attach(args.dir)
    for node in _select(cluster, args.nodes):
        bus = node.read_gpu_state().get(f"gpu.{args.gpu}.pci_bus_id", "00000000:18:00.0")
        pci = bus[4:-2] if bus.count(":") == 2 and len(bus) >= 12 else bus  # NVML's 00000000:18:00.0 -> 0000:18:00
        node.add_kernel_log(f"NVRM: Xid (PCI:{pci}): {args.xid}, pid=0, name=sim, {args.text}")
        print(f"{node.name}: XID {args.xid} on GPU {args.gpu} ({pci})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sim-cluster", description="Simulated cluster of real sshd nodes.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"state directory (default {DEFAULT_DIR})")
        return p

    up = add("up", "start N nodes and leave them running")
    up.add_argument("count", type=int)
    up.add_argument("--prefix", default="node")
    up.add_argument("--octets", default="127.77", help="first two address octets (default 127.77)")
    up.add_argument("--start-index", type=int, default=1)
    up.add_argument("--digits", type=int, default=2)
    up.add_argument("--gpu-lib-dir", type=Path, default=None,
                    help="LD_LIBRARY_PATH for node sessions (default: build the simulated NVML into DIR/nvmlsim)")
    up.add_argument("--no-gpus", action="store_true", help="nodes without any NVML library")
    up.add_argument("--env", action="append", default=[], metavar="K=V", help="extra session environment")
    up.add_argument("--timeout", type=float, default=120.0)
    up.set_defaults(func=cmd_up)
    add("down", "stop every node started from DIR").set_defaults(func=cmd_down)
    status = add("status", "show each node's state")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    add("env", "print the shell exports for jueying").set_defaults(func=cmd_env)
    for name in NODE_ACTIONS:
        p = add(name, f"{name} the given nodes")
        p.add_argument("nodes", help="nodeset, e.g. node[01-03]")
        p.set_defaults(func=cmd_node_action)
    gpus = add("set-gpus", "merge KEY=VALUE into the nodes' GPU state files")
    gpus.add_argument("nodes")
    gpus.add_argument("fields", nargs="+", metavar="KEY=VALUE")
    gpus.set_defaults(func=cmd_set_gpus)
    xid = add("xid", "append an NVRM Xid line to the nodes' kernel logs (what jueying check reads)")
    xid.add_argument("nodes")
    xid.add_argument("xid", type=int)
    xid.add_argument("--gpu", type=int, default=0)
    xid.add_argument("--text", default="injected by sim-cluster")
    xid.set_defaults(func=cmd_xid)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.dir = args.dir.resolve()
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
