"""Cold fan-out of `uname -r` to 64, 256 and 512 simulated nodes: jueying run vs clush vs pdsh vs ansible.

One simulated cluster of real sshd nodes (tests/cluster, 127.90.x.y) is brought up once with max(sizes)
nodes; each size uses its first N nodes. Every tool runs as a fresh process with fresh SSH connections
(what a person pays), fan-out 64, interleaved run by run (tool order rotated each run) so machine noise
hits all alike. Each run's output is checked: a run counts only if every one of the N nodes answered
with this kernel's release; any other run is reported as failed, never timed.

Per tool and size: median wall time, client CPU per node (user+sys of the tool's whole process tree,
from RUSAGE_CHILDREN deltas, divided by N) and how many times faster jueying is.

    python3 benchmarks/fanout.py [--sizes 64,256,512] [--runs 3] [--tools jueying,clush,pdsh,ansible]

The tools talk to the nodes with the simulated cluster's own ssh_config, known_hosts and key (host key
checking on for all). ansible runs with ControlMaster off (its default ControlPersist would let later
runs reuse the first run's connections and leave ssh masters behind) and no fact gathering.
On a 2-core machine most of the wall time is the nodes' sshd CPU (see DESIGN.md "Performance notes");
client CPU per node is the figure that carries over to a real cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ClusterShell.NodeSet import NodeSet  # noqa: E402

from tests.cluster import SimCluster  # noqa: E402

ALL_TOOLS = ("jueying", "clush", "pdsh", "ansible")
COMMAND = "uname -r"
FIRST_OCTETS = (127, 90)  # test suites use 127.61, 127.77, 127.79-81
PREFIX = "fo"


@dataclass
class Outcome:
    """One invocation of one tool: wall seconds, client CPU seconds, and which nodes answered right."""

    wall_s: float
    cpu_s: float
    ok_nodes: int
    expected: int
    problem: str = ""  # why the run does not count ("" when every node answered)

    @property
    def ok(self) -> bool:
        return not self.problem and self.ok_nodes == self.expected


@dataclass
class Cell:
    """All runs of one tool at one size."""

    runs: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(run.ok for run in self.runs)

    def median_wall(self) -> float:
        return statistics.median(run.wall_s for run in self.runs)

    def median_cpu_ms_per_node(self) -> float:
        return statistics.median(run.cpu_s * 1000 / run.expected for run in self.runs)


# --------------------------------------------------------------------------------------------------
# finding the tools


def find_program(name: str) -> str | None:
    """The tool's real executable: this interpreter's bin/ first (a pyenv shim costs ~60 ms a call)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


# --------------------------------------------------------------------------------------------------
# output checks: each returns the names of the nodes that answered with the expected line


def _nodes_in(nodeset: str) -> list[str]:
    return list(NodeSet(nodeset))


def check_jueying(stdout: str, release: str) -> set[str]:
    try:
        doc = json.loads(stdout)
        nodes = doc["data"]["nodes"]
    except (ValueError, KeyError, TypeError):
        return set()
    return {n["node"] for n in nodes if n.get("status") == "ok" and (n.get("stdout") or "").strip() == release}


def check_clush(stdout: str, release: str) -> set[str]:
    """clush -b: blocks of '-----' / 'nodeset (count)' / '-----' followed by the group's output."""
    answered: set[str] = set()
    lines = stdout.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("----") and i + 2 < len(lines) and lines[i + 2].startswith("----"):
            header = re.sub(r"\s+\(\d+\)$", "", lines[i + 1].strip())
            body: list[str] = []
            i += 3
            while i < len(lines) and not (
                lines[i].startswith("----") and i + 2 < len(lines) and lines[i + 2].startswith("----")
            ):
                body.append(lines[i])
                i += 1
            if [b.strip() for b in body if b.strip()] == [release]:
                answered.update(_nodes_in(header))
        else:
            i += 1
    return answered


def check_pdsh(stdout: str, release: str) -> set[str]:
    """pdsh: one 'node: line' per output line; a node counts if its only line is the release."""
    by_node: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        node, sep, text = line.partition(": ")
        if sep:
            by_node.setdefault(node, []).append(text.strip())
    return {node for node, texts in by_node.items() if texts == [release]}


_ANSIBLE_HEADER = re.compile(r"^(\S+) \| (CHANGED|SUCCESS|FAILED!?|UNREACHABLE!)(?=\s|$)(.*)$")
# what ssh -tt itself prints on the pty when the session ends
_SSH_CLOSED = re.compile(r"^(Shared connection|Connection) to \S+ closed\.$")


def check_ansible(stdout: str, release: str) -> set[str]:
    """ansible -m raw: 'node | CHANGED | rc=0 >>' then the output (through a pty: may end in CR)."""
    answered: set[str] = set()
    current: tuple[str, bool] | None = None
    body: list[str] = []

    def close() -> None:
        if current and current[1] and [b for b in body if b] == [release]:
            answered.add(current[0])

    for line in stdout.splitlines():
        match = _ANSIBLE_HEADER.match(line)
        if match:
            close()
            good = match.group(2) in ("CHANGED", "SUCCESS") and "rc=0" in match.group(3)
            current, body = (match.group(1), good), []
        elif current and not _SSH_CLOSED.match(line.strip()):
            body.append(line.strip())
    close()
    return answered


# --------------------------------------------------------------------------------------------------
# running


def run_once(argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float) -> tuple[float, float, str, str, str]:
    """(wall s, CPU s of the process tree, stdout, stderr, problem) of one invocation."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    problem = ""
    # own session: on timeout the whole tree (ssh children too) is killed, by its process group id
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        problem = f"timed out after {timeout_s:g} s"
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if not problem and proc.returncode != 0:
        problem = f"exit code {proc.returncode}"
    return wall, cpu, out.decode(errors="replace"), err.decode(errors="replace"), problem


@dataclass
class Tool:
    name: str
    argv: Callable[[list[str]], list[str]]  # node names -> argv
    env: dict[str, str]
    check: Callable[[str, str], set[str]]
    # pdsh and clush exit 0 even when nodes failed; jueying exits 1 and ansible 4 then: the exit code
    # alone is never trusted, the output is always checked
    nonzero_is_failure: bool = True


def fold(names: list[str]) -> str:
    return str(NodeSet.fromlist(names))


def jueying_argv(prefix: list[str], fanout: int, nodes: list[str]) -> list[str]:
    return [*prefix, "run", "-w", fold(nodes), "-f", str(fanout), "--json", "--", COMMAND]


def clush_argv(program: str, fanout: int, ssh_config: str, nodes: list[str]) -> list[str]:
    # -o passes options to ssh; clush -b gathers identical output like jueying's default
    return [program, "-b", "-w", fold(nodes), "-f", str(fanout), "-o", f"-F {ssh_config}", COMMAND]


def pdsh_argv(program: str, fanout: int, nodes: list[str]) -> list[str]:
    return [program, "-R", "ssh", "-f", str(fanout), "-w", fold(nodes), COMMAND]


def ansible_argv(program: str, fanout: int, inventories: AnsibleInventories, nodes: list[str]) -> list[str]:
    return [program, "all", "-i", str(inventories.for_nodes(nodes)), "-m", "raw", "-a", COMMAND, "-f", str(fanout)]


def make_tools(
    wanted: list[str], cluster: SimCluster, work: Path, fanout: int, jueying_fanout: int
) -> tuple[list[Tool], list[str]]:
    """The tools to run, and a line for each wanted tool that is skipped (not installed)."""
    tools: list[Tool] = []
    skipped: list[str] = []
    base_env = {**os.environ, "NO_COLOR": "1", "LC_ALL": "C.UTF-8"}
    ssh_config = str(cluster.ssh_config_path)

    for name in wanted:
        if name == "jueying":
            program = find_program("jueying")
            prefix = [program] if program else [sys.executable, "-m", "jueying_cli"]
            env = {**base_env, **cluster.client_env()}
            tools.append(Tool("jueying", partial(jueying_argv, prefix, jueying_fanout), env, check_jueying))
            continue
        program = find_program(name)
        if not program:
            how = {"clush": "pip install ClusterShell", "pdsh": "apt-get install pdsh"}
            skipped.append(f"{name}: not installed ({how.get(name, 'pip install -r benchmarks/requirements.txt')})")
            continue
        if name == "clush":
            argv = partial(clush_argv, program, fanout, ssh_config)
            tools.append(Tool("clush", argv, base_env, check_clush, nonzero_is_failure=False))
        elif name == "pdsh":
            # pdsh's ssh module runs 'ssh $PDSH_SSH_ARGS <cmd>' with %u / %h replaced by user and host
            # (its default is '-2 -a -x -l%u %h'; -2 is a no-op since OpenSSH 7.6)
            env = {**base_env, "PDSH_RCMD_TYPE": "ssh", "PDSH_SSH_ARGS": f"-F {ssh_config} -a -x -l%u %h"}
            tools.append(Tool("pdsh", partial(pdsh_argv, program, fanout), env, check_pdsh, nonzero_is_failure=False))
        elif name == "ansible":
            env = {
                **base_env,
                "ANSIBLE_HOME": str(work / "ansible" / "home"),
                "ANSIBLE_CONFIG": str(work / "ansible" / "ansible.cfg"),  # empty: ignore any ./ansible.cfg
                "ANSIBLE_PIPELINING": "True",
                "ANSIBLE_GATHERING": "explicit",
                "ANSIBLE_SSH_ARGS": "-o ControlMaster=no",  # cold connections, no lingering masters
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_DEPRECATION_WARNINGS": "False",
                "ANSIBLE_LOCALHOST_WARNING": "False",
            }
            env.pop("ANSIBLE_HOST_KEY_CHECKING", None)  # stays at its default: on
            argv = partial(ansible_argv, program, fanout, AnsibleInventories(cluster, work / "ansible"))
            tools.append(Tool("ansible", argv, env, check_ansible))
    return tools, skipped


class AnsibleInventories:
    """INI inventories by address, with the cluster's key and known_hosts: one file per node list.

    One file per size rather than `-l a,b,c...`: matching a 512-name limit would be ansible CPU that
    no operator pays. With ansible_host set to the address, ssh no longer matches the ssh_config's
    'Host <name>' blocks, so known_hosts (keyed by node name) is named here and each host gets
    HostKeyAlias=<name>; host key checking stays on.
    """

    def __init__(self, cluster: SimCluster, directory: Path) -> None:
        self.cluster = cluster
        self.directory = directory
        self.paths: dict[tuple[str, ...], Path] = {}
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ansible.cfg").write_text("[defaults]\n")

    def for_nodes(self, names: list[str]) -> Path:
        key = tuple(names)
        if key in self.paths:
            return self.paths[key]
        cluster = self.cluster
        common = (
            f"-F {cluster.ssh_config_path} -o UserKnownHostsFile={cluster.known_hosts_path} "
            "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes"
        )
        lines = ["[sim]"]
        lines += [
            f"{node.name} ansible_host={node.address} ansible_ssh_extra_args='-o HostKeyAlias={node.name}'"
            for node in map(cluster.node, names)
        ]
        lines += [
            "",
            "[sim:vars]",
            "ansible_user=root",
            f"ansible_ssh_private_key_file={cluster.client_key_path}",
            f"ansible_ssh_common_args='{common}'",
        ]
        path = self.directory / f"hosts-{len(self.paths)}.ini"
        path.write_text("\n".join(lines) + "\n")
        self.paths[key] = path
        return path


def measure(tool: Tool, nodes: list[str], release: str, work: Path, timeout_s: float) -> Outcome:
    wall, cpu, out, err, problem = run_once(tool.argv(nodes), tool.env, work, timeout_s)
    if problem.startswith("exit code") and not tool.nonzero_is_failure:
        problem = ""  # judged by the output below
    answered = tool.check(out, release) & set(nodes)
    problems = [problem] if problem else []
    if len(answered) != len(nodes):
        missing = fold(sorted(set(nodes) - answered))
        problems.append(f"{len(nodes) - len(answered)} nodes did not answer: {missing}")
    tail = " | ".join(err.strip().splitlines()[-3:])
    if problems and tail:
        problems.append(f"stderr: {tail[:300]}")
    outcome = Outcome(wall, cpu, len(answered), len(nodes), "; ".join(problems))
    return outcome


# --------------------------------------------------------------------------------------------------
# report


def table(sizes: list[int], tools: list[Tool], cells: dict[tuple[str, int], Cell], runs: int) -> str:
    rows = [
        f"| nodes | tool | wall s (median of {runs}) | min–max s | client CPU ms/node | jueying faster (wall) "
        "| jueying CPU ratio |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        base = cells.get(("jueying", size))
        base_ok = base is not None and base.ok
        for tool in tools:
            cell = cells[(tool.name, size)]
            if not cell.ok:
                failed = [run for run in cell.runs if not run.ok]
                worst = min(run.ok_nodes for run in failed)
                rows.append(
                    f"| {size} | {tool.name} | FAILED ({len(failed)}/{len(cell.runs)} runs; "
                    f"worst {worst}/{size} nodes ok) | | | | |"
                )
                continue
            walls = [run.wall_s for run in cell.runs]
            wall, cpu = cell.median_wall(), cell.median_cpu_ms_per_node()
            if tool.name == "jueying":
                speed, cpu_ratio = "—", "—"
            elif base_ok and base is not None:
                speed = f"{wall / base.median_wall():.2f}x"
                cpu_ratio = f"{cpu / base.median_cpu_ms_per_node():.2f}x"
            else:
                speed = cpu_ratio = "n/a"
            rows.append(
                f"| {size} | {tool.name} | {wall:.2f} | {min(walls):.2f}–{max(walls):.2f} | {cpu:.1f} "
                f"| {speed} | {cpu_ratio} |"
            )
    return "\n".join(rows)


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --sizes {text!r}: want e.g. 64,256,512") from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError("--sizes: positive node counts")
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, default=[64, 256, 512], help="node counts (default 64,256,512)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool and size; the median is reported")
    parser.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated, from " + ",".join(ALL_TOOLS))
    parser.add_argument("--fanout", type=int, default=64, help="fan-out of clush, pdsh and ansible (default 64)")
    parser.add_argument("--jueying-fanout", type=int, default=None, help="fan-out of jueying (default: --fanout)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per invocation before it is killed")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed first run of each tool")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    if unknown := [t for t in wanted if t not in ALL_TOOLS]:
        parser.error(f"unknown tools {', '.join(unknown)} (known: {', '.join(ALL_TOOLS)})")
    jueying_fanout = args.jueying_fanout or args.fanout
    sizes: list[int] = args.sizes
    release = platform.release()  # the nodes share this kernel (namespaces, not VMs)

    work = Path(tempfile.mkdtemp(prefix="jueying-fanout-"))
    cluster = SimCluster(work / "cluster", max(sizes), prefix=PREFIX, first_octets=FIRST_OCTETS, digits=3)
    try:
        tools, skipped = make_tools(wanted, cluster, work, args.fanout, jueying_fanout)
        for line in skipped:
            print(f"skipped {line}")
        if not tools:
            print("no tool to run")
            return 1
        started = time.perf_counter()
        cluster.up(timeout_s=max(30.0, max(sizes) / 5))
        print(
            f"{max(sizes)} simulated nodes {cluster.nodeset} up in {time.perf_counter() - started:.1f} s; "
            f"fan-out {args.fanout} (jueying {jueying_fanout}); kernel {release}",
            file=sys.stderr,
        )
        names = [node.name for node in cluster.nodes]
        if not any(os.environ.get(var) for var in ("LOGNAME", "USER", "LNAME", "USERNAME")):
            # paramiko's ssh_config lookup calls getpass.getuser() for every Host block it skips: without
            # these variables that is a getpwuid() each time, O(nodes) per node for a per-node ssh_config
            print(
                "note: USER and LOGNAME are unset (cron, CI, containers): jueying's per-node ssh_config "
                "lookups cost more than in a login shell",
                file=sys.stderr,
            )

        if not args.no_warmup:  # page cache, and an early word if a tool cannot work at all
            for tool in tools:
                outcome = measure(tool, names[: min(sizes)], release, work, args.timeout)
                print(
                    f"warm-up {tool.name:<8} {min(sizes)} nodes: {outcome.wall_s:.2f} s"
                    f"{'' if outcome.ok else ' NOT OK: ' + outcome.problem}",
                    file=sys.stderr,
                )

        cells = {(tool.name, size): Cell() for tool in tools for size in sizes}
        for size in sizes:
            nodes = names[:size]
            for run in range(args.runs):
                order = tools[run % len(tools) :] + tools[: run % len(tools)]
                for tool in order:
                    outcome = measure(tool, nodes, release, work, args.timeout)
                    cells[(tool.name, size)].runs.append(outcome)
                    status = "ok" if outcome.ok else f"FAILED: {outcome.problem}"
                    print(
                        f"{size:>5} nodes run {run + 1}/{args.runs} {tool.name:<8} {outcome.wall_s:7.2f} s "
                        f"cpu {outcome.cpu_s * 1000 / size:6.1f} ms/node  {outcome.ok_nodes}/{size} {status}",
                        file=sys.stderr,
                    )

        print()
        print(table(sizes, tools, cells, args.runs))
        failures = [(key, run) for key, cell in cells.items() for run in cell.runs if not run.ok]
        if failures:
            print("\nFailed runs (not timed):")
            for (name, size), failed in failures:
                print(f"- {name} at {size} nodes: {failed.ok_nodes}/{size} ok; {failed.problem}")
        print(
            f"\n`uname -r`, fresh connections, fan-out {args.fanout} (jueying {jueying_fanout}); "
            f"'jueying faster' = tool wall / jueying wall; CPU = user+sys of the client process tree / nodes."
        )
        return 1 if failures else 0
    finally:
        cluster.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
