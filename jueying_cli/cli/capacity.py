"""`jueying capacity`: healthy compute by model, site, rack or partition; peak throughput; N+1; power."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from jueying_cli.cli import common
from jueying_cli.errors import ExitCode

if TYPE_CHECKING:
    from jueying_cli.audit.capacity import CapacityReport, NodeReading
    from jueying_cli.checks import CheckConfig
    from jueying_cli.inventory.model import Inventory, Node
    from jueying_cli.scheduler.base import NodeState
    from jueying_cli.store import Store


FORMATS = ("table", "json", "markdown", "html")


def register(app: typer.Typer) -> None:
    app.command("capacity")(capacity)


def capacity(
    by: str = typer.Option("model", "--by", metavar="GROUP",
                           help="Group by model (GPU model), site, rack or partition (inventory variables)."),
    floor: int | None = typer.Option(None, "--floor", min=0, metavar="GPUS",
                                     help="The healthy schedulable GPUs promised: say whether they stay at or above "
                                     "it now and if the largest rack, or the largest site, were lost."),
    since: str | None = typer.Option(None, "--since", metavar="DURATION",
                                     help="Energy used and healthy GPUs per day over this time (30m, 12h, 7d), from "
                                     "the state database (with --source prometheus: energy from Prometheus, no "
                                     "per-day trend)."),
    checks_file: str | None = typer.Option(None, "--checks", envvar="JUEYING_CHECKS", metavar="FILE",
                                           help="Check set deciding what is degraded (default: the built-in set)."),
    format_: str = typer.Option("table", "--format", metavar="FORMAT",
                                help="table, json, markdown or html (markdown and html: one report, with the trend "
                                "over --since as a chart)."),
    json_output: bool = typer.Option(False, "--json", help="The same as --format json."),
    output: str | None = typer.Option(None, "-o", "--output", metavar="FILE",
                                      help="Write the report to FILE instead of stdout (atomically; table is "
                                      "written as Markdown)."),
    history_: bool = typer.Option(True, "--history/--no-history", help="Record key facts in the state database."),
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
    source: str = typer.Option("ssh", "--source", metavar="ssh|prometheus=URL",
                               help="Where the facts come from: every node over SSH (default), or a Prometheus "
                               "server scraping jueying exporters (prometheus=http://HOST:9090)."),
) -> None:
    """Count healthy, degraded, drained, down and unreachable GPUs and nodes per group (spares apart), from live
    facts, the scheduler's states and the health checks' confirmed results; sum the healthy GPUs' dense peak
    throughput by precision from published datasheets (unknown models are listed, not guessed); show power draw,
    enforced limits and throughput per kW; with --floor, whether losing the largest rack or site keeps the
    healthy schedulable GPUs at or above the floor.

    Exit codes: 0 shown, every node answered and the floor (if given) holds; 1 some nodes gave no facts, or the
    floor does not hold now or after losing the largest rack or site; 2 bad usage, inventory or check file;
    130 interrupted.
    """
    from jueying_cli.audit.capacity import GROUP_BY, reading_of
    from jueying_cli.audit.capacity_run import run_capacity
    from jueying_cli.audit.history import parse_duration
    from jueying_cli.checks import builtin_config, load_check_config
    from jueying_cli.cli import status_output

    if by not in GROUP_BY:
        raise typer.BadParameter(f"must be one of {', '.join(GROUP_BY)}", param_hint="--by")
    fmt = "json" if json_output else format_
    if fmt not in FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(FORMATS)}", param_hint="--format")
    window = (since, parse_duration(since)) if since else None
    config = load_check_config(Path(checks_file)) if checks_file else builtin_config()
    opts = common.FleetOptions(inventory_, nodes_, exclude, fanout, connect_timeout, deadline,
                               accept_new_hostkeys, ssh_config)
    url = common.prometheus_source(source)
    inventory, selected = common.select(opts)
    views = status_output.read_scheduler(opts, inventory, selected) if inventory.source else {}
    scheduler = {n: v.state for n, v in views.items()}
    store = _open_store()
    interrupted = False
    try:
        if url is None:
            results, interrupted = common.collect(opts, selected, timeout)
            report = run_capacity(results, inventory, scheduler=scheduler, config=config, store=store, by=by,
                                  floor=floor, since=window, now=time.time())
            if history_:
                common.record_history(results)
            readings = [reading_of(r) for r in results]
        else:
            readings, report = _from_prometheus(url, selected, inventory, config, scheduler=scheduler, store=store,
                                                by=by, floor=floor, since=window, timeout_s=timeout)
    finally:
        if store is not None:
            store.close()
    missing = [r for r in readings if r.gpus is None]
    if fmt == "json":
        from jueying_cli.audit.report import emit
        from jueying_cli.render.json import dumps, envelope

        emit(dumps(envelope("capacity", report.to_json(),
                            status=status_output.envelope_status(len(missing), len(readings)),
                            errors=[{"node": r.name, "status": r.status, "message": r.why} for r in missing]))
             + "\n", Path(output) if output else None)
    elif fmt == "table" and output is None:
        _print(report)
    else:
        from jueying_cli.audit.capacity_report import render
        from jueying_cli.audit.report import emit

        emit(render(report, "html" if fmt == "html" else "markdown"), Path(output) if output else None)
    if interrupted:
        raise typer.Exit(int(ExitCode.INTERRUPTED))
    failed = bool(missing) or report.floor_met is False
    raise typer.Exit(int(ExitCode.NODES_FAILED if failed else ExitCode.OK))


def _from_prometheus(url: str, selected: list[Node], inventory: Inventory, config: CheckConfig, *,
                     scheduler: dict[str, NodeState | None], store: Store | None, by: str, floor: int | None,
                     since: tuple[str, float] | None, timeout_s: float) -> tuple[list[NodeReading], CapacityReport]:
    """The readings and the report from Prometheus (audit/capacity_prometheus.py); a server that cannot be asked
    is a warning and exit 1, as for `status --source prometheus`."""
    from jueying_cli.audit.capacity_prometheus import read_capacity
    from jueying_cli.audit.capacity_run import capacity_of
    from jueying_cli.transport.promql import PrometheusError

    try:
        exported = read_capacity(url, selected, since_s=since[1] if since else None, timeout_s=timeout_s,
                                 confirm_runs=lambda check, node: config.confirm_runs(check, node, inventory))
    except PrometheusError as exc:
        common.warn(str(exc))
        raise typer.Exit(int(ExitCode.NODES_FAILED)) from None
    report = capacity_of(exported.readings, exported.problems, scheduler=scheduler, store=store, by=by,
                         floor=floor, since=since, now=time.time(), energy_kwh=exported.energy_kwh)
    return exported.readings, report


def _open_store() -> Store | None:
    from jueying_cli.errors import JueyingError

    try:
        return common.open_store(readonly=True)
    except (OSError, JueyingError) as exc:
        common.warn(f"state database unavailable, confirmed check levels and --since not read: {exc}")
        return None


def _n(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _print(report: CapacityReport) -> None:
    from jueying_cli.audit.capacity import sparkline
    from jueying_cli.render.terminal import make_console, print_message, print_table
    from jueying_cli.vocab import HealthClass

    console = make_console()
    classes = list(HealthClass)
    rows = []
    for g in [*report.groups, report.total]:
        doc = g.to_json()
        tflops = doc["peak_tflops_dense"]
        per_kw = doc["tflops_per_kw"]
        rows.append((
            g.name,
            "/".join(str(g.nodes[c]) for c in classes),
            "/".join(str(g.gpus[c]) for c in classes),
            f"{sum(g.spare_gpus.values())} ({g.spare_gpus[HealthClass.HEALTHY]} healthy)" if any(
                g.spare_nodes.values()) else "-",
            _n(tflops.get("fp64_tensor", tflops.get("fp64")), 1), _n(tflops.get("tf32"), 1),
            _n(tflops.get("bf16", tflops.get("fp16")), 1), _n(tflops.get("fp8"), 1),
            f"{_n(g.power_watts / 1000, 1)}/{_n(g.power_limit_watts / 1000, 1)}",
            _n(per_kw.get("bf16", per_kw.get("fp16")), 1),
            _n(g.energy_kwh, 1),
        ))
    print_table([f"{report.by.upper()}", "NODES ok/deg/drain/down/unr", "GPUS ok/deg/drain/down/unr", "SPARE GPUS",
                 "FP64 TC TF", "TF32 TF", "BF16 TF", "FP8 TF", "POWER kW draw/limit", "BF16 TF/kW", "ENERGY kWh"],
                rows, console)
    unknown = sorted({m for g in report.groups for m in g.to_json()["unknown_models"]})
    if unknown:
        print_message(console, "no datasheet figures for: " + ", ".join(unknown) + " (left out of the sums)")
    problems = [n for n in report.nodes if n.state != HealthClass.HEALTHY]
    if problems:
        print_table(["NODE", "STATE", "GPUS ok/deg/drain/down/unr", "REASON"],
                    [(n.node + (" (spare)" if n.spare else ""), n.state, "/".join(str(n.gpus[c]) for c in classes),
                      n.reason) for n in problems], console, wrap=("REASON",))
    if report.floor is not None:
        verdict = "holds" if report.floor_met else "DOES NOT HOLD"
        print_message(console, f"floor {report.floor} GPUs {verdict}: {report.schedulable_healthy} healthy "
                      "schedulable now")
        for loss in report.losses:
            if loss.largest is None:
                print_message(console, f"  losing a {loss.level}: the inventory names no {loss.level} for these nodes")
            else:
                print_message(console, f"  losing {loss.level} {loss.largest} ({loss.lost_gpus} healthy GPUs): "
                              f"{loss.remaining_gpus} left, {'above' if loss.above_floor else 'BELOW'} the floor")
    if report.trend:
        values = [n for _, n in report.trend]
        print_message(console, f"healthy GPUs per day over the last {report.since}: {sparkline(values)} "
                      f"({report.trend[0][0]}: {values[0]} .. {report.trend[-1][0]}: {values[-1]})")
