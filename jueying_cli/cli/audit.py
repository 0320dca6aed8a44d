"""`jueying audit`: drift and identity across the fleet, as a table, JSON, Markdown or one HTML page."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from jueying_cli.cli import common
from jueying_cli.errors import BadInputError, ExitCode

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jueying_cli.audit.drift import Baseline
    from jueying_cli.audit.report import AuditReport
    from jueying_cli.facts.collected import NodeFacts
    from jueying_cli.store import Store

FORMATS = ("table", "json", "markdown", "html")


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)


def audit(
    baseline: str | None = typer.Option(None, "--baseline", metavar="FILE",
                                        help="Compare with this baseline (written by --save-baseline) instead of "
                                        "the majority of each GPU model."),
    save_baseline: str | None = typer.Option(None, "--save-baseline", metavar="FILE",
                                             help="Write the majority values of each GPU model to FILE as the "
                                             "baseline for later audits (and audit against them now)."),
    since: str | None = typer.Option(None, "--since", metavar="DURATION",
                                     help="Also show what changed on each node over this time (30m, 12h, 7d, 2w), "
                                     "from the state database; GPU boards swapped in that time are findings."),
    format_: str = typer.Option("table", "--format", metavar="FORMAT",
                                help="table, json, markdown or html (html and markdown: one report)."),
    json_output: bool = typer.Option(False, "--json", help="The same as --format json."),
    output: str | None = typer.Option(None, "-o", "--output", metavar="FILE",
                                      help="Write the report to FILE instead of stdout (atomically)."),
    history_: bool = typer.Option(True, "--history/--no-history",
                                  help="Record this collection in the state database (GPU swaps are found "
                                  "against the last recorded collection)."),
    timeout: float = typer.Option(30.0, "-t", "--timeout", min=0.5, metavar="SECONDS",
                                  help="Seconds the probe may run on each node."),
    inventory_: str | None = common.InventoryOpt,
    nodes_: list[str] | None = common.NodesOpt,
    exclude: list[str] | None = common.ExcludeOpt,
    fanout: int = common.FanoutOpt,
    connect_timeout: float = common.ConnectTimeoutOpt,
    deadline: float | None = common.DeadlineOpt,
    accept_new_hostkeys: bool = common.AcceptNewOpt,
    ssh_config: str | None = common.SshConfigOpt,
) -> None:
    """Audit the selected nodes: per attribute (driver, CUDA, NVML, VBIOS, GPU model and count, NVLinks active,
    ECC, MIG and persistence mode, PCIe generation and width, InfiniBand ports, kernel, OS, CPU, memory), the
    nodes that differ from the baseline, the inventory (expected_gpus, gpu_model, an `audit:` variable) or the
    majority of the nodes with the same GPU model; and identity: a hostname that is not the inventory name,
    GPU UUIDs or a machine id two nodes share, a GPU serial or UUID that changed since the last collection.

    Exit codes: 0 no drift and no identity finding; 1 drift or identity findings, or some nodes gave no facts;
    2 bad usage, inventory or baseline file; 130 interrupted.
    """
    from jueying_cli.audit.history import parse_duration

    fmt = "json" if json_output else format_
    if fmt not in FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(FORMATS)}", param_hint="--format")
    if baseline and save_baseline:
        raise BadInputError("give --baseline or --save-baseline, not both", field="--baseline")
    window = (since, parse_duration(since)) if since else None
    loaded = None
    if baseline:
        from jueying_cli.audit.baseline import load_baseline

        loaded = load_baseline(Path(baseline))
    opts = common.FleetOptions(inventory_, nodes_, exclude, fanout, connect_timeout, deadline,
                               accept_new_hostkeys, ssh_config)
    inventory, selected = common.select(opts)
    results, interrupted = common.collect(opts, selected, timeout)

    from jueying_cli.audit.run import run_audit

    store = _open_store()
    try:
        if save_baseline:
            loaded = _save(Path(save_baseline), results)
        report = run_audit(results, inventory, baseline=loaded, store=store, since=window, now=time.time())
    finally:
        if store is not None:
            store.close()
    if history_:
        common.record_history(results)
    _print(report, fmt, output)
    if interrupted:
        raise typer.Exit(int(ExitCode.INTERRUPTED))
    raise typer.Exit(int(ExitCode.NODES_FAILED if report.findings or report.unanswered else ExitCode.OK))


def _open_store() -> Store | None:
    """The state database for reading identities and changes; a warning, not a failure, when it cannot be used."""
    from jueying_cli.errors import JueyingError

    try:
        return common.open_store(readonly=True)
    except (OSError, JueyingError) as exc:
        common.warn(f"state database unavailable, GPU swaps and --since not checked: {exc}")
        return None


def _save(path: Path, results: Sequence[NodeFacts]) -> Baseline:
    from jueying_cli.audit.baseline import baseline_from, save_baseline
    from jueying_cli.audit.drift import Baseline, audit_nodes

    models, warnings = baseline_from(audit_nodes([(r.node, r.facts) for r in results if r.facts is not None]))
    for message in warnings:
        common.warn(message)
    save_baseline(path, models)
    return Baseline(models, str(path))


def _print(report: AuditReport, fmt: str, output: str | None) -> None:
    from jueying_cli.audit.report import emit, render

    if fmt == "table" and output is None:
        _print_table(report)
        return
    emit(render(report, "markdown" if fmt == "table" else fmt), Path(output) if output else None)


def _print_table(report: AuditReport) -> None:
    from jueying_cli.audit.report import fold, headline, label
    from jueying_cli.render.terminal import make_console, print_message, print_table

    console = make_console()
    if report.findings:
        print_table(["NODE", "KIND", "ATTRIBUTE", "VALUE", "EXPECTED", "FROM", "DETAIL"],
                    [(f.node, f.kind, label(f.attribute), f.value, f.expected, f.source, f.detail)
                     for f in report.findings], console, wrap=("DETAIL",))
    if report.changes:
        import time as clock

        print_table(["WHEN (UTC)", "NODE", "ATTRIBUTE", "BEFORE", "AFTER"],
                    [(clock.strftime("%Y-%m-%d %H:%M:%S", clock.gmtime(c.at_unix)), c.node, label(c.attribute),
                      c.before, c.after) for c in report.changes], console, title=f"changes since {report.since}")
    if report.unanswered:
        print_table(["NODE", "STATUS", "REASON"], [(u.node, u.status, u.error) for u in report.unanswered], console,
                    wrap=("REASON",))
    for model, per in report.matrix().items():
        rows = [(label(name), v, f"{len(ns)}: {fold(ns)}") for name, values in per.items() for v, ns in values
                if len(values) > 1]
        if rows:
            print_table(["ATTRIBUTE", "VALUE", "NODES"], rows, console, title=f"versions that differ, {model}")
    print_message(console, headline(report))
