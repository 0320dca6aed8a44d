"""`jueying check`: health checks over the selection, for people and for cron (Nagios exit codes)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from jueying_cli.cli import common

DEFAULT_CHECK_DEADLINE_S = 120.0


def register(app: typer.Typer) -> None:
    app.command("check")(check)


@dataclass(frozen=True)
class Finding:
    """A check result with its flap-control standing."""

    result: Any  # checks.CheckResult
    consecutive: int  # runs in a row it has held (1 for OK results)
    confirm_runs: int  # runs it must hold before it is reported

    @property
    def confirmed(self) -> bool:
        return self.consecutive >= self.confirm_runs


def check(
    checks_file: str | None = typer.Option(None, "--checks", envvar="JUEYING_CHECKS",
                                           help="Check set YAML (default: the built-in set, documented in "
                                           "playbooks/health/default.yaml)."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="List every result, OK ones too."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only confirmed problems; nothing when healthy."),
    json_output: bool = typer.Option(False, "--json", help="Print the JSON envelope."),
    prometheus: Path | None = typer.Option(None, "--prometheus", metavar="FILE",
                                           help="Also write a node_exporter textfile (atomically)."),
    unreachable: str = typer.Option("unknown", "--unreachable", help="Level for nodes that gave no facts: "
                                    "unknown or critical."),
    lock_wait: float = typer.Option(0.0, "--lock-wait", min=0.0, help="Seconds to wait for another running "
                                    "jueying check to finish before giving up (UNKNOWN)."),
    timeout: float = typer.Option(30.0, "-t", "--timeout", min=0.5, help="Seconds the probe may run on each node."),
    history_: bool = typer.Option(True, "--history/--no-history", help="Record key facts in the state database."),
    drain: bool = typer.Option(False, "--drain", help="Drain nodes whose confirmed CRITICAL results recommend it "
                               "(drain, reset_gpu, reboot, rma), within max_unavailable (never forced)."),
    resume: bool = typer.Option(False, "--resume", help="Resume nodes this automation drained once they pass "
                                "--resume-after consecutive clean runs."),
    resume_after: int = typer.Option(3, "--resume-after", min=1, help="Clean runs (every check OK) before --resume "
                                      "puts a node back."),
    inventory_: str | None = common.InventoryOpt,
    nodes_: str | None = common.NodesOpt,
    exclude: str | None = common.ExcludeOpt,
    fanout: int = common.FanoutOpt,
    connect_timeout: float = common.ConnectTimeoutOpt,
    deadline: float = typer.Option(DEFAULT_CHECK_DEADLINE_S, "--deadline", min=1.0,
                                   help="Seconds for the whole run; nodes still busy then count as unreachable."),
    accept_new_hostkeys: bool = common.AcceptNewOpt,
    ssh_config: str | None = common.SshConfigOpt,
) -> None:
    """Run the health checks on every selected node (or this machine) and report what is not OK.

    Exit codes (Nagios): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (also: another run holds the lock, or a
    node gave no facts with --unreachable unknown). A bad check file or inventory exits 2 with file:line.
    A result is reported once it has held for its check's confirm_runs consecutive runs (flap control);
    until then it is shown as pending and does not change the exit code.
    """
    from jueying_cli.checks import Level, builtin_config, load_check_config

    if unreachable not in ("unknown", "critical"):
        raise typer.BadParameter("must be unknown or critical", param_hint="--unreachable")
    config = load_check_config(Path(checks_file)) if checks_file else builtin_config()
    opts = common.FleetOptions(inventory_, nodes_, exclude, fanout, connect_timeout, deadline,
                               accept_new_hostkeys, ssh_config)
    inventory, selected = common.select(opts)

    from jueying_cli.errors import LockBusy
    from jueying_cli.store import default_path
    from jueying_cli.store.lock import RunLock

    try:
        lock = RunLock(default_path().parent / "check.lock").acquire(lock_wait)
    except LockBusy as exc:
        _say_unknown(f"jueying check: UNKNOWN - {exc}", json_output)
        raise typer.Exit(int(Level.UNKNOWN)) from None
    with lock:
        started = time.monotonic()
        findings, results = _run(opts, selected, inventory, config, timeout, unreachable, history_)
        exit_level = _exit_level(findings)
        actions: list[dict[str, Any]] = []
        if drain or resume:
            from jueying_cli.actions.automation import automate

            actions = automate(opts, inventory, selected, findings, results, drain=drain, resume=resume,
                               resume_after=resume_after)
        duration = time.monotonic() - started
        if prometheus is not None:
            _write_prometheus(prometheus, findings, results, exit_level, duration)
        _render(findings, results, exit_level, verbose=verbose, quiet=quiet, json_output=json_output,
                actions=actions)
    raise typer.Exit(int(exit_level))


def _run(opts: common.FleetOptions, selected: list[Any], inventory: Any, config: Any, timeout: float,
         unreachable: str, keep_history: bool) -> tuple[list[Finding], list[Any]]:
    from jueying_cli.checks import CheckResult, Level, run_checks
    from jueying_cli.cli.status import collect_facts, record_history
    from jueying_cli.store import FindingKey, SeenFinding, Store

    results, interrupted = collect_facts(opts, selected, timeout)
    if interrupted:
        raise KeyboardInterrupt
    if keep_history:
        record_history(results)
    now = time.time()
    answered = [(r.node, r.facts) for r in results if r.facts is not None]
    check_results = list(run_checks(answered, config, inventory, now=now))
    missing_level = Level.CRITICAL if unreachable == "critical" else Level.UNKNOWN
    for r in results:
        if r.facts is None:
            check_results.append(CheckResult(node=r.name, check="reachability", level=missing_level,
                                             message=f"{r.outcome.status}: {r.outcome.error or 'no facts'}",
                                             code=r.outcome.status.upper()))
    problems = [c for c in check_results if c.level != Level.OK]
    store = Store()
    try:
        counts = store.flap.track_findings(
            [r.name for r in results],
            [SeenFinding(FindingKey(c.node, c.check, c.gpu, c.code), int(c.level)) for c in problems], now)
    finally:
        store.close()
    by_node = {r.name: r.node for r in results}
    findings = []
    for c in check_results:
        if c.level == Level.OK:
            findings.append(Finding(c, 1, 1))
            continue
        confirm = 1 if c.check == "reachability" else config.confirm_runs(c.check, by_node[c.node], inventory)
        consecutive = counts.get(FindingKey(c.node, c.check, c.gpu, c.code), 1)
        findings.append(Finding(c, consecutive, confirm))
    return findings, results


def _exit_level(findings: list[Finding]) -> Any:
    from jueying_cli.checks import worst

    return worst(f.result.level for f in findings if f.confirmed)


def _node_levels(findings: list[Finding]) -> dict[str, Any]:
    from jueying_cli.checks import Level, worst

    levels: dict[str, list[Any]] = {}
    for f in findings:
        levels.setdefault(f.result.node, []).append(f.result.level if f.confirmed else Level.OK)
    return {node: worst(values) for node, values in levels.items()}


def _write_prometheus(path: Path, findings: list[Finding], results: list[Any], exit_level: Any,
                      duration: float) -> None:
    from jueying_cli.checks import Level, worst
    from jueying_cli.render.prometheus import exposition, write_atomically

    per_check: dict[tuple[str, str], list[Any]] = {}
    for f in findings:
        per_check.setdefault((f.result.node, f.result.check), []).append(f.result.level if f.confirmed else Level.OK)
    states = {r.name: r.outcome.status for r in results}
    text = exposition([(n, c, int(worst(levels))) for (n, c), levels in per_check.items()],
                      {n: int(level) for n, level in _node_levels(findings).items()}, states,
                      run_timestamp=time.time(), duration_s=duration, exit_code=int(exit_level))
    try:
        write_atomically(path, text)
    except OSError as exc:
        from jueying_cli.errors import BadInputError

        raise BadInputError(f"cannot write the Prometheus file: {exc.strerror}", path=str(path)) from exc


def _say_unknown(message: str, json_output: bool) -> None:
    if json_output:
        from jueying_cli.render.json import dumps, envelope

        print(dumps(envelope("check", {"exit_level": "UNKNOWN"}, status="error",
                             errors=[{"node": None, "status": "lock_busy", "message": message}])))
    else:
        print(message)


def _render(findings: list[Finding], results: list[Any], exit_level: Any, *, verbose: bool, quiet: bool,
            json_output: bool, actions: list[dict[str, Any]]) -> None:
    from jueying_cli.checks import Level

    confirmed = [f for f in findings if f.result.level != Level.OK and f.confirmed]
    pending = [f for f in findings if f.result.level != Level.OK and not f.confirmed]
    nodes_total = len(results)
    problem_nodes = len({f.result.node for f in confirmed})
    counts = {level.name.lower(): sum(1 for f in confirmed if f.result.level == level)
              for level in (Level.CRITICAL, Level.WARNING, Level.UNKNOWN)}
    headline = (f"jueying check {exit_level.name} - {counts['critical']} critical, {counts['warning']} warning, "
                f"{counts['unknown']} unknown on {problem_nodes} of {nodes_total} node(s)"
                + (f"; {len(pending)} pending" if pending else ""))
    if json_output:
        from jueying_cli.render.json import dumps, envelope

        rows = [{"node": f.result.node, "check": f.result.check, "gpu": f.result.gpu, "level": f.result.level.name,
                 "message": f.result.message, "action": str(f.result.action), "code": f.result.code,
                 "value": f.result.value, "threshold": f.result.threshold, "consecutive_runs": f.consecutive,
                 "confirm_runs": f.confirm_runs, "confirmed": f.confirmed}
                for f in findings if verbose or f.result.level != Level.OK]
        data = {"exit_level": exit_level.name, "exit_code": int(exit_level), "summary": {**counts,
                "pending": len(pending), "nodes_total": nodes_total, "nodes_with_problems": problem_nodes},
                "nodes": {n: level.name for n, level in _node_levels(findings).items()}, "results": rows,
                "actions": actions}
        missing = [r for r in results if r.facts is None]
        print(dumps(envelope("check", data, status="ok" if not missing else "partial",
                             errors=[{"node": r.name, "status": r.outcome.status, "message": r.outcome.error}
                                     for r in missing])))
        return
    if quiet:
        for f in _ordered(confirmed):
            r = f.result
            gpu = f" gpu{r.gpu}" if r.gpu is not None else ""
            print(f"{r.node}{gpu} {r.check} {r.level.name}: {r.message} (action: {r.action})")
        for a in actions:
            print(f"{a['node']} {a['action']}: {a['result']}: {a['note']}")
        return
    from jueying_cli.render.terminal import make_console, print_check_results, print_message

    console = make_console()
    shown = findings if verbose else confirmed + pending
    if shown:
        print_check_results([(f.result, f.confirmed, f.consecutive, f.confirm_runs) for f in _ordered(shown)],
                            console)
    for a in actions:
        print_message(console, f"{a['node']} {a['action']}: {a['result']}: {a['note']}")
    print_message(console, headline)


def _ordered(findings: list[Finding]) -> list[Finding]:
    from jueying_cli.checks import Level

    rank = {Level.CRITICAL: 0, Level.WARNING: 1, Level.UNKNOWN: 2, Level.OK: 3}
    return sorted(findings, key=lambda f: (not f.confirmed, rank[f.result.level], f.result.node, f.result.check,
                                           -1 if f.result.gpu is None else f.result.gpu))

