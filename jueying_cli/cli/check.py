"""`jueying check`: health checks over the selection, for people and for cron (Nagios exit codes)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from jueying_cli.cli import common
from jueying_cli.render.text import say
from jueying_cli.vocab import Level, OutputFormat

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jueying_cli.actions.automation import AutoAction
    from jueying_cli.checks import CheckConfig
    from jueying_cli.checks.flap import Finding, HealthReport
    from jueying_cli.facts.collected import NodeFacts
    from jueying_cli.inventory.model import Inventory, Node

DEFAULT_CHECK_DEADLINE_S = 120.0
RESULT_FIELDS = ("node", "check", "gpu", "level", "message", "action", "code", "value", "threshold",
                 "consecutive_runs", "confirm_runs", "confirmed")


def register(app: typer.Typer) -> None:
    app.command("check")(check)


def check(
    checks_file: str | None = typer.Option(None, "--checks", envvar="JUEYING_CHECKS", metavar="FILE",
                                           help="Check set YAML (default: the built-in set, documented in "
                                           "playbooks/health/default.yaml)."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="List every result, OK ones too."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only confirmed problems; nothing when healthy."),
    json_output: bool = typer.Option(False, "--json", help="Print the JSON envelope."),
    nagios: bool = typer.Option(False, "--nagios", help="Nagios/NRPE plugin output: first line 'JUEYING CHECK "
                                "LEVEL - summary | perfdata', then one line per problem."),
    fmt: OutputFormat | None = common.FormatOpt,
    fields: list[str] | None = common.FieldsOpt,
    no_header: bool = common.NoHeaderOpt,
    prometheus: Path | None = typer.Option(None, "--prometheus", metavar="FILE",
                                           help="Also write a node_exporter textfile (atomically)."),
    unreachable: str = typer.Option("unknown", "--unreachable", metavar="LEVEL",
                                    help="Level for nodes that gave no facts: "
                                    "unknown or critical."),
    lock_wait: float = typer.Option(0.0, "--lock-wait", min=0.0, metavar="SECONDS",
                                    help="Seconds to wait for another running "
                                    "jueying check to finish before giving up (UNKNOWN)."),
    timeout: float = typer.Option(30.0, "-t", "--timeout", min=0.5, metavar="SECONDS",
                                  help="Seconds the probe may run on each node."),
    history_: bool = typer.Option(True, "--history/--no-history", help="Record key facts in the state database."),
    drain: bool = typer.Option(False, "--drain", help="Drain nodes whose confirmed CRITICAL results recommend it "
                               "(drain, reset_gpu, reboot, rma), within max_unavailable (never forced)."),
    resume: bool = typer.Option(False, "--resume", help="Resume nodes this automation drained once they pass "
                                "--resume-after consecutive clean runs."),
    resume_after: int = typer.Option(3, "--resume-after", min=1, metavar="N",
                                     help="Clean runs (every check OK) before --resume "
                                      "puts a node back."),
    source: str = typer.Option("ssh", "--source", metavar="ssh|prometheus=URL",
                               help="Where the results come from: ssh (default: run the checks now) or "
                               "prometheus=URL (the levels jueying exporters confirmed, in one query)."),
    inventory_: str | None = common.InventoryOpt,
    nodes_: list[str] | None = common.NodesOpt,
    exclude: list[str] | None = common.ExcludeOpt,
    fanout: int = common.FanoutOpt,
    connect_timeout: float = common.ConnectTimeoutOpt,
    deadline: float = typer.Option(DEFAULT_CHECK_DEADLINE_S, "--deadline", min=1.0, metavar="SECONDS",
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
    from jueying_cli.checks import builtin_config, load_check_config

    if nagios and (json_output or fmt not in (None, OutputFormat.TABLE) or fields):
        raise typer.BadParameter("--nagios cannot be used with --json, --format or -o", param_hint="--nagios")
    if unreachable not in ("unknown", "critical"):
        raise typer.BadParameter("must be unknown or critical", param_hint="--unreachable")
    out = common.output_choice(json_output, fmt, fields, no_header, RESULT_FIELDS)
    json_output = out.json
    config = load_check_config(Path(checks_file)) if checks_file else builtin_config()
    opts = common.FleetOptions(inventory_, nodes_, exclude, fanout, connect_timeout, deadline,
                               accept_new_hostkeys, ssh_config)
    url = common.prometheus_source(source)
    if url is not None and (drain or resume or prometheus is not None):
        raise typer.BadParameter("prometheus= cannot be used with --drain, --resume or --prometheus",
                                 param_hint="--source")
    inventory, selected = common.select(opts)
    if url is not None:
        raise typer.Exit(_check_from_prometheus(url, selected, inventory, config, timeout_s=timeout,
                                                unreachable=unreachable, verbose=verbose, quiet=quiet,
                                                json_output=json_output, nagios=nagios,
                                                rows=out if out.rows else None))

    from jueying_cli.errors import LockBusy, StateDbError
    from jueying_cli.store import default_path
    from jueying_cli.store.lock import RunLock

    lock_path = default_path().parent / "check.lock"
    try:
        lock = RunLock(lock_path).acquire(lock_wait)
    except LockBusy as exc:
        _say_unknown(f"jueying check: UNKNOWN - {exc}", json_output, nagios=nagios)
        raise typer.Exit(int(Level.UNKNOWN)) from None
    except OSError as exc:
        _say_unknown(f"jueying check: UNKNOWN - cannot take the run lock {lock_path}: {exc.strerror or exc}; set "
                     "JUEYING_STATE_DB to a file in a directory you can write", json_output, "state_db",
                     nagios=nagios)
        raise typer.Exit(int(Level.UNKNOWN)) from None
    started = time.monotonic()
    try:
        with lock:
            report, results, actions = _run_checks(opts, selected, inventory, config, timeout=timeout,
                                                   history=history_, unreachable=unreachable, drain=drain,
                                                   resume=resume, resume_after=resume_after, prometheus=prometheus)
    except StateDbError as exc:  # flap counts and drain automation live there: the run cannot be judged
        _say_unknown(f"jueying check: UNKNOWN - {exc}", json_output, "state_db", nagios=nagios)
        raise typer.Exit(int(Level.UNKNOWN)) from None
    if nagios:
        _render_nagios(report, len(results), actions, time.monotonic() - started, verbose=verbose)
    else:
        _render(report, len(results), [r for r in results if r.facts is None], verbose=verbose, quiet=quiet,
                json_output=json_output, actions=actions, rows=out if out.rows else None)
    raise typer.Exit(int(report.exit_level))


def _check_from_prometheus(url: str, selected: list[Node], inventory: Inventory, config: CheckConfig, *,
                           timeout_s: float, unreachable: str, verbose: bool, quiet: bool, json_output: bool,
                           nagios: bool, rows: common.Output | None) -> int:
    """The confirmed levels read back from Prometheus, printed as a check run prints them (same exit codes); a
    node without fresh data is a `reachability` result at --unreachable, never OK; a server that cannot be
    asked is UNKNOWN."""
    from jueying_cli.checks.exported import check_findings
    from jueying_cli.checks.flap import HealthReport
    from jueying_cli.checks.model import worst
    from jueying_cli.facts.collected import NodeFacts
    from jueying_cli.outcome import Outcome
    from jueying_cli.transport.promql import PrometheusError
    from jueying_cli.vocab import OutcomeStatus

    started = time.monotonic()
    try:
        findings, missing = check_findings(
            url, selected, unreachable=Level.CRITICAL if unreachable == "critical" else Level.UNKNOWN,
            confirm_runs=lambda check, node: config.confirm_runs(check, node, inventory), timeout_s=timeout_s)
    except PrometheusError as exc:
        _say_unknown(f"jueying check: UNKNOWN - {exc}", json_output, "prometheus", nagios=nagios)
        return int(Level.UNKNOWN)
    report = HealthReport(findings, worst(f.result.level for f in findings if f.confirmed))
    results = [NodeFacts(n, Outcome(n.name, OutcomeStatus.UNREACHABLE, error=missing[n.name]), None) for n in selected
               if n.name in missing]
    if nagios:
        _render_nagios(report, len(selected), [], time.monotonic() - started, verbose=verbose)
    else:
        _render(report, len(selected), results, verbose=verbose, quiet=quiet, json_output=json_output, actions=[],
                rows=rows)
    return int(report.exit_level)


def _run_checks(opts: common.FleetOptions, selected: list[Node], inventory: Inventory, config: CheckConfig, *,
                timeout: float, history: bool, unreachable: str, drain: bool, resume: bool, resume_after: int,
                prometheus: Path | None) -> tuple[HealthReport, list[NodeFacts], list[AutoAction]]:
    """Collect, record, assess, automate and write the textfile, under the run lock."""
    started, read_at = time.monotonic(), time.time()
    results, interrupted = common.collect(opts, selected, timeout)
    if interrupted:
        raise KeyboardInterrupt
    if history:
        common.record_history(results)
    report = _assess(results, config, inventory, Level.CRITICAL if unreachable == "critical" else Level.UNKNOWN)
    actions: list[AutoAction] = []
    if drain or resume:
        actions = _automate(opts, inventory, selected, report, results, drain=drain, resume=resume,
                            resume_after=resume_after, facts_read_at=read_at, config=config, timeout=timeout)
    duration = time.monotonic() - started
    if prometheus is not None:
        _write_prometheus(prometheus, report, results, duration)
    return report, results, actions


def _assess(results: list[NodeFacts], config: CheckConfig, inventory: Inventory, unreachable: Level) -> HealthReport:
    from jueying_cli.checks.flap import assess

    store = common.open_store()
    try:
        return assess(results, config, inventory, store, unreachable=unreachable)
    finally:
        store.close()


def _automate(opts: common.FleetOptions, inventory: Inventory, selected: list[Node], report: HealthReport,
              results: list[NodeFacts], *, drain: bool, resume: bool, resume_after: int,
              facts_read_at: float, config: CheckConfig, timeout: float) -> list[AutoAction]:
    from jueying_cli.actions.automation import automate
    from jueying_cli.actions.context import ActionContext

    ctx = ActionContext.open(inventory, selected, common.make_transport(opts), common.open_store(),
                             settle_pending=False)
    try:
        by_name = {n.name: n for n in selected}

        def reread(names: Sequence[str]) -> tuple[list[NodeFacts], float]:
            began = time.time()
            fresh, interrupted = common.collect(opts, [by_name[n] for n in names], timeout)
            if interrupted:
                raise KeyboardInterrupt
            return fresh, began

        done = automate(ctx, report.findings, results, drain=drain, resume=resume, resume_after=resume_after,
                        facts_read_at=facts_read_at, reread=(reread, config))
    finally:
        ctx.close()
    if done.stopped:
        common.warn(f"drain/resume automation stopped: {done.stopped}")
    return done.actions


def _write_prometheus(path: Path, report: HealthReport, results: list[NodeFacts], duration: float) -> None:
    """The node_exporter textfile: the same families and labels as `jueying exporter` (README)."""
    from jueying_cli.exporter.metrics import exposition, write_atomically
    from jueying_cli.render.health import health_by_node
    from jueying_cli.render.prometheus import check_families, node_families, run_families
    from jueying_cli.status.view import rows_for

    families = [*check_families(report.findings),
                *node_families(rows_for(results), {r.name: r.outcome.status for r in results},
                               gpu_rows=rows_for(results, health=health_by_node(report.findings))),
                *run_families(run_timestamp=time.time(), duration_s=duration, exit_code=int(report.exit_level))]
    try:
        write_atomically(path, exposition(families))
    except OSError as exc:
        from jueying_cli.errors import BadInputError

        raise BadInputError(f"cannot write the Prometheus file: {exc.strerror}", path=str(path)) from exc


def _say_unknown(message: str, json_output: bool, status: str = "lock_busy", *, nagios: bool = False) -> None:
    """UNKNOWN without results (the run lock, or the state database): on stdout, where Nagios reads it."""
    if nagios:
        say(nagios_text(message.removeprefix("jueying check: UNKNOWN - "), "JUEYING CHECK UNKNOWN - "))
    elif json_output:
        from jueying_cli.render.json import envelope, print_json

        print_json(envelope("check", {"exit_level": "UNKNOWN"}, status="error",
                            errors=[{"node": None, "status": status, "message": message}]))
    else:
        say(message)


def nagios_text(text: str, prefix: str = "") -> str:
    """One line of plugin output: made safe, and without `|`, which would start Nagios performance data."""
    return prefix + text.replace("|", "/")


def _render_nagios(report: HealthReport, nodes_total: int, actions: list[AutoAction], duration_s: float, *,
                   verbose: bool) -> None:
    """Nagios plugin guidelines: the first line is `JUEYING CHECK LEVEL - summary | perfdata` (what NRPE and
    Nagios show and graph), then one line per confirmed problem, pending result and automation action."""
    from jueying_cli.checks.flap import ordered, problems

    confirmed, pending = problems(report.findings)
    counts = {level: sum(1 for f in confirmed if f.result.level == level)
              for level in (Level.CRITICAL, Level.WARNING, Level.UNKNOWN)}
    problem_nodes = len({f.result.node for f in confirmed})
    summary = (f"{counts[Level.CRITICAL]} critical, {counts[Level.WARNING]} warning, {counts[Level.UNKNOWN]} unknown "
               f"on {problem_nodes} of {nodes_total} node(s)" + (f"; {len(pending)} pending" if pending else ""))
    perfdata = " ".join([
        f"critical={counts[Level.CRITICAL]};;;0", f"warning={counts[Level.WARNING]};;;0",
        f"unknown={counts[Level.UNKNOWN]};;;0", f"pending={len(pending)};;;0",
        f"nodes={nodes_total};;;0", f"nodes_with_problems={problem_nodes};;;0;{nodes_total}",
        f"duration={duration_s:.3f}s;;;0",
    ])
    say(f"JUEYING CHECK {report.exit_level.name} - {nagios_text(summary)} | {perfdata}")
    shown = report.findings if verbose else confirmed + pending
    for f in ordered(shown):
        r = f.result
        gpu = f" gpu{r.gpu}" if r.gpu is not None else ""
        state = r.level.name if f.confirmed else f"{r.level.name} (pending {f.consecutive}/{f.confirm_runs})"
        say(nagios_text(f"{r.node}{gpu} {r.check} {state}: {r.message} (action: {r.action})"))
    for a in actions:
        say(nagios_text(f"{a.node} {a.action}: {a.result}: {a.note}"))


def _render(report: HealthReport, nodes_total: int, missing: list[NodeFacts], *, verbose: bool, quiet: bool,
            json_output: bool, actions: list[AutoAction], rows: common.Output | None = None) -> None:
    from jueying_cli.checks.flap import node_levels, ordered, problems

    findings, exit_level = report.findings, report.exit_level
    confirmed, pending = problems(findings)
    problem_nodes = len({f.result.node for f in confirmed})
    counts = {level.name.lower(): sum(1 for f in confirmed if f.result.level == level)
              for level in (Level.CRITICAL, Level.WARNING, Level.UNKNOWN)}
    headline = (f"jueying check {exit_level.name} - {counts['critical']} critical, {counts['warning']} warning, "
                f"{counts['unknown']} unknown on {problem_nodes} of {nodes_total} node(s)"
                + (f"; {len(pending)} pending" if pending else ""))
    if rows is not None:  # csv/tsv/-o: the --json results on stdout; the headline and actions on stderr
        shown_rows = [_result_row(f) for f in (ordered(confirmed) if quiet else findings)
                      if quiet or verbose or f.result.level != Level.OK]
        common.print_rows(rows, shown_rows, RESULT_FIELDS)
        if not quiet:
            for a in actions:
                say(f"{a.node} {a.action}: {a.result}: {a.note}", err=True)
            say(headline, err=True)
        return
    if json_output:
        from jueying_cli.render.json import envelope, print_json

        rows_ = [_result_row(f) for f in findings if verbose or f.result.level != Level.OK]
        data = {"exit_level": exit_level.name, "exit_code": int(exit_level), "summary": {**counts,
                "pending": len(pending), "nodes_total": nodes_total, "nodes_with_problems": problem_nodes},
                "nodes": {n: level.name for n, level in node_levels(findings).items()}, "results": rows_,
                "actions": actions}
        print_json(envelope("check", data, status="ok" if not missing else "partial",
                            errors=[{"node": r.name, "status": r.outcome.status, "message": r.outcome.error}
                                    for r in missing]))
        return
    if quiet:
        for f in ordered(confirmed):
            r = f.result
            gpu = f" gpu{r.gpu}" if r.gpu is not None else ""
            say(f"{r.node}{gpu} {r.check} {r.level.name}: {r.message} (action: {r.action})")
        for a in actions:
            say(f"{a.node} {a.action}: {a.result}: {a.note}")
        return
    from jueying_cli.render.terminal import make_console, print_check_results, print_message

    console = make_console()
    shown = findings if verbose else confirmed + pending
    if shown:
        print_check_results([(f.result, f.confirmed, f.consecutive, f.confirm_runs) for f in ordered(shown)],
                            console)
    for a in actions:
        print_message(console, f"{a.node} {a.action}: {a.result}: {a.note}")
    print_message(console, headline)


def _result_row(f: Finding) -> dict[str, object]:
    """One result as `data.results` of --json holds it."""
    from jueying_cli.render.json import to_jsonable

    row: dict[str, object] = to_jsonable({
        "node": f.result.node, "check": f.result.check, "gpu": f.result.gpu, "level": f.result.level.name,
        "message": f.result.message, "action": str(f.result.action), "code": f.result.code,
        "value": f.result.value, "threshold": f.result.threshold, "consecutive_runs": f.consecutive,
        "confirm_runs": f.confirm_runs, "confirmed": f.confirmed})
    return row
