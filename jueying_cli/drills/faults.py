"""Built-in faults, each with its undo, and the dead-man's switch that undoes a node-side fault on the node
itself when its time-to-live passes, even if the controller (this process) vanished.

Node-side faults (gpu_fault, stop_process, kill_process, stop_unit, block_network, command) run one shell
script on the node that, in order: checks the fault can be made (else exit 3, nothing changed); writes the
undo script to `${JUEYING_NODE_STATE_DIR:-/var/lib/jueying}/drills/<tag>.undo`; starts a detached timer
(`setsid sh -c 'sleep TTL; ...'`, its own session, so neither the SSH session's end nor the controller's death
stops it); then makes the fault. Whoever undoes first (the controller's rollback, `drill recover`, or the
timer) claims the undo file with one rename, so an undo runs once; a failed controller undo puts the file
back and leaves the timer armed.

Every value from the playbook reaches the node's shell quoted (shlex); tags are [A-Za-z0-9-] only.

drain and resume go through actions.drain (the cap, the audit log, jueying-owned resumes only); a drain has no
node-side timer (the scheduler holds it, not the node): the journal and `drill recover` undo it.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jueying_cli.drills.playbook import Action, FaultKind, substitute
from jueying_cli.inventory.model import Node
from jueying_cli.outcome import Outcome
from jueying_cli.transport.base import Cancel, Command, Transport

SCRIPT_SLACK_S = 30.0  # over an action's own timeout, for the connection
_TAG_RE = re.compile(r"[^A-Za-z0-9-]")
_DIR = 'd="${JUEYING_NODE_STATE_DIR:-/var/lib/jueying}/drills"'
# The timer: sleep TTL, then claim the undo file (rename) and run it; a failed undo leaves <tag>.ttl-failed.
_TIMER = ('sleep "$1"; if mv -f "$2" "$2.ttl" 2>/dev/null; then if sh "$2.ttl" >"$2.ttl.log" 2>&1; '
          'then rm -f "$2.ttl" "$2.ttl.log"; else mv -f "$2.ttl" "$2.ttl-failed"; fi; fi')


def make_tag(run_id: str, index: int, phase: str = "m") -> str:
    """A name for one action of one run on the node: safe in a file name, a sed pattern and an nft table."""
    return _TAG_RE.sub("-", f"jy-{run_id}-{phase}{index}")[:60]


@dataclass
class FaultResult:
    ok: bool
    output: str  # what happened, per node, for the journal
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeScripts:
    precheck: str  # exit 3 with a reason when the fault cannot be made here
    inject: str
    undo: str


def node_scripts(action: Action, tag: str, refs: Mapping[str, str]) -> NodeScripts:
    """The shell of a node-side fault (values quoted)."""
    p = action.params
    kind = action.kind
    if kind == FaultKind.GPU_FAULT:
        return _gpu_scripts(p, tag)
    if kind == FaultKind.STOP_PROCESS:
        name = shlex.quote(str(p["name"]))
        return NodeScripts(f"pgrep -x {name} >/dev/null || {{ echo 'no process named '{name} >&2; exit 3; }}",
                           f"pkill -STOP -x {name}", f"pkill -CONT -x {name}; true")
    if kind == FaultKind.KILL_PROCESS:
        name = shlex.quote(str(p["name"]))
        restart = substitute(str(p["restart"]), refs, quote=True)
        return NodeScripts(f"pgrep -x {name} >/dev/null || {{ echo 'no process named '{name} >&2; exit 3; }}",
                           f"pkill -KILL -x {name}", f"pgrep -x {name} >/dev/null || {{ {restart}\n}}")
    if kind == FaultKind.STOP_UNIT:
        unit = shlex.quote(str(p["unit"]))
        return NodeScripts(f"systemctl is-active --quiet {unit} || {{ echo 'unit '{unit}' is not active' >&2; "
                           "exit 3; }", f"systemctl stop {unit}", f"systemctl start {unit}")
    if kind == FaultKind.BLOCK_NETWORK:
        table = "jueying_" + tag.replace("-", "_")
        match_in, match_out = [], []
        if p.get("address"):
            address = shlex.quote(str(p["address"]))
            match_in.append(f"ip saddr {address}")
            match_out.append(f"ip daddr {address}")
        if p.get("port"):
            port = int(p["port"])
            match_in.append(f"tcp dport {port}")
            match_out.append(f"tcp dport {port}")
        rule_in, rule_out = " ".join(match_in), " ".join(match_out)
        inject = (f"nft add table inet {table} && "
                  f"nft add chain inet {table} input '{{ type filter hook input priority -10; }}' && "
                  f"nft add chain inet {table} output '{{ type filter hook output priority -10; }}' && "
                  f"nft add rule inet {table} input {rule_in} drop && "
                  f"nft add rule inet {table} output {rule_out} drop")
        return NodeScripts("command -v nft >/dev/null || { echo 'nft (nftables) is not installed' >&2; exit 3; }",
                           inject, f"nft delete table inet {table} 2>/dev/null; ! nft list table inet {table} "
                           ">/dev/null 2>&1")
    if kind == FaultKind.COMMAND:
        run = substitute(str(p["run"]), refs, quote=True)
        undo = substitute(str(p["undo"]), refs, quote=True) if p.get("undo") else "true"
        return NodeScripts("true", run, undo)
    raise ValueError(f"{kind} is not a node-side fault")


def _gpu_scripts(p: Mapping[str, Any], tag: str) -> NodeScripts:
    """GPU faults seen by the health checks. lost / ecc / row_remap_failure are written into the simulated
    NVML's state file (JUEYING_NVMLSIM_STATE) between marker comments; xid is a kernel log line, written as
    the driver would, into JUEYING_PROBE_KERNEL_LOG when it names a file (else /dev/kmsg, which cannot be
    taken back: the xid check forgets it after its window)."""
    gpu = int(p.get("gpu", 0))
    fault = str(p["fault"])
    if fault == "xid":
        xid = int(p["xid"])
        line = f"NVRM: Xid (PCI:0000:{0x18 + gpu:02x}:00): {xid}, pid=0, name={tag}, injected by jueying drill"
        quoted = shlex.quote(line)
        precheck = ('k="${JUEYING_PROBE_KERNEL_LOG:-}"; if [ -z "$k" ] && [ ! -w /dev/kmsg ]; then '
                    "echo 'cannot write /dev/kmsg (root needed)' >&2; exit 3; fi")
        inject = ('if [ -n "$k" ]; then printf \'%s %s\\n\' "$(date -u +%Y-%m-%dT%H:%M:%S,000000+00:00)" '
                  f'{quoted} >> "$k"; else printf \'<3>%s\\n\' {quoted} > /dev/kmsg; fi')
        undo = (f'k="${{JUEYING_PROBE_KERNEL_LOG:-}}"; if [ -n "$k" ] && [ -f "$k" ]; then t="$k.jy.$$"; '
                f'grep -v -F "name={tag}," "$k" > "$t"; mv -f "$t" "$k"; fi; true')
        return NodeScripts(precheck, inject, undo)
    count = int(p.get("count", 1))
    key = {"lost": ("lost", 1), "ecc": ("ecc_uncorrected_volatile", count),
           "row_remap_failure": ("remapped_rows_failure", 1)}[fault]
    lines = f"gpu.{gpu}.{key[0]} = {key[1]}"
    precheck = ('s="${JUEYING_NVMLSIM_STATE:-}"; if [ -z "$s" ] || [ ! -f "$s" ]; then echo "gpu_fault ' + fault +
                ' needs the NVML simulator (JUEYING_NVMLSIM_STATE) on this node; on real GPUs use a command '
                'action (e.g. dcgmi test --inject)" >&2; exit 3; fi')
    inject = (f't="$s.jy.$$"; cp -p "$s" "$t" && printf \'# jueying-drill-begin %s\\n%s\\n# jueying-drill-end %s\\n\' '
              f'{tag} {shlex.quote(lines)} {tag} >> "$t" && mv -f "$t" "$s"')
    undo = (f's="${{JUEYING_NVMLSIM_STATE:-}}"; [ -n "$s" ] && [ -f "$s" ] || exit 0; t="$s.jy.$$"; '
            f'sed "/^# jueying-drill-begin {tag}\\$/,/^# jueying-drill-end {tag}\\$/d" "$s" > "$t" && '
            'mv -f "$t" "$s"')
    return NodeScripts(precheck, inject, undo)


def inject_script(scripts: NodeScripts, tag: str, ttl_s: float, state_dir: str | None) -> str:
    """Precheck; write the undo file; arm the node-side timer; make the fault."""
    prefix = f": \"${{JUEYING_NODE_STATE_DIR:={shlex.quote(state_dir)}}}\"; " if state_dir else ""
    return (f"{prefix}{scripts.precheck}\n{_DIR}; mkdir -p \"$d\" || exit 3; f=\"$d/{tag}.undo\"; "
            f"printf '%s\\n' {shlex.quote(scripts.undo)} > \"$f.tmp\" && mv -f \"$f.tmp\" \"$f\" || exit 3\n"
            f"setsid sh -c {shlex.quote(_TIMER)} timer {int(ttl_s)} \"$f\" </dev/null >/dev/null 2>&1 &\n"
            f"echo $! > \"$d/{tag}.timer\"\n{scripts.inject}\n")


def undo_script(tag: str, state_dir: str | None) -> str:
    """Claim the undo file (or a failed TTL undo's) and run it; stop the timer once undone. Exit 0 when undone
    or when there is nothing to undo (never injected, or the timer already undid it)."""
    prefix = f": \"${{JUEYING_NODE_STATE_DIR:={shlex.quote(state_dir)}}}\"; " if state_dir else ""
    return (f"{prefix}{_DIR}; f=\"$d/{tag}.undo\"; r=\"$d/{tag}.run.$$\"\n"
            "if mv -f \"$f\" \"$r\" 2>/dev/null || mv -f \"$f.ttl-failed\" \"$r\" 2>/dev/null; then\n"
            "  if sh \"$r\"; then rm -f \"$r\"; t=$(cat \"$d/" + tag + ".timer\" 2>/dev/null); "
            "[ -n \"$t\" ] && kill -- -\"$t\" 2>/dev/null; rm -f \"$d/" + tag + ".timer\"; echo undone; exit 0\n"
            "  else rc=$?; mv -f \"$r\" \"$f\"; echo \"undo failed (exit $rc); the node's timer stays armed\" >&2; "
            "exit 1; fi\n"
            "else echo 'nothing to undo (never injected, or already undone by its time-to-live)'; exit 0; fi\n")


def armed(tag: str, state_dir: str | None) -> str:
    """A script printing `armed` while the fault's undo is still pending on the node (tests, recover)."""
    prefix = f": \"${{JUEYING_NODE_STATE_DIR:={shlex.quote(state_dir)}}}\"; " if state_dir else ""
    return f"{prefix}{_DIR}; if [ -e \"$d/{tag}.undo\" ]; then echo armed; else echo clear; fi"


def run_on_nodes(transport: Transport, nodes: Sequence[Node], script: Callable[[Node], str], timeout_s: float,
                 cancel: Cancel | None) -> dict[str, Outcome]:
    """One script per node, in parallel (at most 64 at once), each within timeout_s; a set `cancel` stops
    them on the nodes (the transport's lifeline)."""
    from concurrent.futures import ThreadPoolExecutor

    deadline = time.monotonic() + timeout_s + SCRIPT_SLACK_S

    def one(node: Node) -> Outcome:
        return transport.run(node, Command(script=script(node), timeout_s=timeout_s), deadline, cancel)

    if len(nodes) == 1:
        return {nodes[0].name: one(nodes[0])}
    with ThreadPoolExecutor(max_workers=min(64, len(nodes)), thread_name_prefix="jueying-drill") as pool:
        return dict(zip([n.name for n in nodes], pool.map(one, nodes), strict=True))


def summarize(outcomes: Mapping[str, Outcome]) -> FaultResult:
    nodes: dict[str, dict[str, Any]] = {}
    for name, o in outcomes.items():
        nodes[name] = {"status": str(o.status), "rc": o.rc, "stdout": o.stdout[-2000:], "stderr": o.stderr[-2000:],
                       "error": o.error, "duration_s": round(o.duration_s, 3)}
    ok = bool(outcomes) and all(o.ok for o in outcomes.values())
    bad = [f"{n}: {o.stderr.strip()[-300:] or o.error or f'exit {o.rc}'}" for n, o in outcomes.items() if not o.ok]
    return FaultResult(ok, "; ".join(bad) if bad else f"ok on {len(outcomes)} node(s)", nodes)


def now() -> float:
    return time.time()
