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

import json
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


def node_scripts(action: Action, tag: str, refs: Mapping[str, str], ttl_s: float = 1800.0) -> NodeScripts:
    """The shell of a node-side fault (values quoted)."""
    p = action.params
    kind = action.kind
    if kind == FaultKind.GPU_FAULT:
        return _gpu_scripts(p, tag, ttl_s)
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


# Where the probe reads injected GPU faults (probe/inject.py): one JSON overlay file per fault.
_INJECT_DIR = 'i="${JUEYING_PROBE_INJECT_DIR:-/run/jueying/inject}"'


def _gpu_scripts(p: Mapping[str, Any], tag: str, ttl_s: float) -> NodeScripts:
    """GPU faults as the probe's overlay (probe/inject.py): `<inject dir>/<tag>.json` on the node (dir 0700,
    file 0600, written whole with one rename), which every collection (one-shot or kept) applies to the
    facts it read from NVML and the kernel log, marked in the document's `injected` list; so `jueying
    check`, `check --drain` and `status` react as to a real fault, on real GPUs as in the simulator. The
    file holds its expiry (now + ttl): the probe ignores it afterwards even if the undo timer never ran. The
    undo removes the file."""
    gpu = int(p.get("gpu", 0))
    fault = str(p["fault"])
    body: dict[str, Any] = {"fault": fault, "gpu": gpu}
    if fault == "ecc":
        body["count"] = int(p.get("count", 1))
    if fault == "xid":
        body["xid"] = int(p["xid"])
    fields = json.dumps(body, separators=(",", ":"))[1:-1]  # ints and fixed words only: safe in the format
    precheck = (f'{_INJECT_DIR}; (umask 077; mkdir -p "$i") && chmod 700 "$i" && [ -w "$i" ] || {{ echo "cannot '
                'create the GPU fault overlay directory $i (root needed, or set JUEYING_PROBE_INJECT_DIR)" >&2; '
                'exit 3; }')
    fmt = shlex.quote('{' + fields.replace('%', '%%') + ',"injected_at_unix":%s,"expires_at_unix":%s}\n')
    inject = (f'n=$(date +%s); o="$i/{tag}.json"; (umask 077; printf {fmt} "$n" "$((n + {int(ttl_s)}))" '
              f'> "$i/.{tag}.tmp") && mv -f "$i/.{tag}.tmp" "$o"')
    undo = f'{_INJECT_DIR}; rm -f "$i/{tag}.json" "$i/.{tag}.tmp"'
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
