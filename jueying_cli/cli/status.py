"""`jueying status`, `jueying inventory` and `jueying history`: the cluster at a glance, and over time."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from jueying_cli.cli import common
from jueying_cli.cli import status_output as output
from jueying_cli.errors import ExitCode
from jueying_cli.vocab import OutputFormat

if TYPE_CHECKING:
    from collections.abc import Callable

    from jueying_cli.inventory.model import Node
    from jueying_cli.status.view import SchedulerView

DEFAULT_WATCH_S = 2.0
INVENTORY_FIELDS = ("node", "status", "error", "facts")
# The columns of the inventory table, as paths into the facts document (csv/tsv without -o).
INVENTORY_DEFAULT_FIELDS = ("node", "status", "error", "facts.host.cpu.model", "facts.host.cpu.threads",
                            "facts.host.memory.total_bytes", "facts.nvml.gpu_count", "facts.gpus.0.name",
                            "facts.nvml.driver_version", "facts.nvml.cuda_driver_version", "facts.host.kernel",
                            "facts.host.os.pretty_name")


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("inventory")(inventory)
    app.command("history")(history)


def status(
    gpus: bool = typer.Option(False, "--gpus", help="One row per GPU across the selection."),
    json_output: bool = typer.Option(False, "--json", help="Print the JSON envelope instead of a table."),
    fmt: OutputFormat | None = common.FormatOpt,
    fields: list[str] | None = common.FieldsOpt,
    no_header: bool = common.NoHeaderOpt,
    sort: str = typer.Option("state", "--sort", metavar="KEY",
                             help="state (problems first), node, util, temp, power, gpu-mem, "
                             "load or age."),
    fold: bool = typer.Option(True, "--fold/--no-fold", help="Fold healthy nodes that look alike into one row."),
    watch: float | None = typer.Option(None, "--watch", min=0.5, metavar="[SECONDS]",
                                       help=f"Refresh every SECONDS (default {DEFAULT_WATCH_S:g}) until Ctrl-C "
                                       "(exit 0), keeping SSH connections and one probe per node open; a node "
                                       "that misses a refresh shows its last values marked stale."),
    count: int | None = typer.Option(None, "--count", min=1, metavar="N",
                                     help="With --watch: stop after this many refreshes."),
    history_: bool = typer.Option(True, "--history/--no-history", help="Record key facts in the state database."),
    timeout: float = typer.Option(30.0, "-t", "--timeout", min=0.5, metavar="SECONDS",
                                  help="Seconds the probe may run on each node."),
    checks_file: str | None = typer.Option(None, "--checks", envvar="JUEYING_CHECKS", metavar="FILE",
                                           help="Check set whose confirmed levels are shown (default: the built-in "
                                           "set, as for jueying check)."),
    source: str = typer.Option("ssh", "--source", metavar="ssh|prometheus=URL",
                               help="Where the facts come from: ssh (default: each node, now) or prometheus=URL "
                               "(one query to a Prometheus server that scrapes jueying exporters)."),
    inventory_: str | None = common.InventoryOpt,
    nodes_: list[str] | None = common.NodesOpt,
    exclude: list[str] | None = common.ExcludeOpt,
    fanout: int = common.FanoutOpt,
    connect_timeout: float = common.ConnectTimeoutOpt,
    deadline: float | None = common.DeadlineOpt,
    accept_new_hostkeys: bool = common.AcceptNewOpt,
    ssh_config: str | None = common.SshConfigOpt,
) -> None:
    """Show every selected node: state, health (the worst confirmed level of the health checks and its check),
    GPUs present/expected, utilisation avg/max, GPU memory, hottest GPU, power, load, host memory and the age
    of the data. Problems come first (unreachable, timed out, no driver, lost GPUs, confirmed check problems);
    healthy nodes that look alike fold into one row. The checks are counted as the last `jueying check`
    counted them (flap state read, never written): status never confirms a problem on its own behalf.

    Exit codes: 0 every node answered (a degraded node is shown, not an error); 1 some nodes failed, timed
    out or were unreachable; 2 bad usage or inventory; 130 interrupted.
    """
    from jueying_cli.status.summary import SORT_KEYS

    if sort not in SORT_KEYS:
        raise typer.BadParameter(f"must be one of {', '.join(SORT_KEYS)}", param_hint="--sort")
    out = common.output_choice(json_output, fmt, fields, no_header, output.status_fields(gpus=gpus))
    if out.rows and watch is not None:
        raise typer.BadParameter("--watch draws the table in place; for rows use --format csv/tsv without "
                                 "--watch (or --watch --json for one envelope per refresh)", param_hint="--format")
    opts = common.FleetOptions(inventory_, nodes_, exclude, fanout, connect_timeout, deadline,
                               accept_new_hostkeys, ssh_config)
    url = common.prometheus_source(source)
    if url is not None and (watch is not None or gpus):
        raise typer.BadParameter("prometheus= cannot be used with --watch or --gpus", param_hint="--source")
    from jueying_cli.checks import builtin_config, load_check_config

    config = load_check_config(Path(checks_file)) if checks_file else builtin_config()
    inventory, selected = common.select(opts)
    if url is not None:
        # Drain state is the scheduler's: asked as below (one scontrol per Slurm controller, the builtin ledger),
        # not node by node, so it costs the same at 10,000 nodes.
        scheduler = output.read_scheduler(opts, inventory, selected) if inventory.source else None
        raise typer.Exit(_status_from_prometheus(url, selected, sort=sort, fold=fold, json_output=out.json,
                                                 timeout_s=timeout, scheduler=scheduler,
                                                 confirm_runs=lambda check, node: config.confirm_runs(
                                                     check, node, inventory),
                                                 output_rows=out if out.rows else None))
    if watch is not None:
        from jueying_cli.cli.watch import watch_status

        raise typer.Exit(watch_status(opts, selected, interval_s=watch, timeout_s=timeout, gpus=gpus, sort=sort,
                                      fold=fold, json_output=out.json, count=count, inventory=inventory,
                                      history=history_, checks=config))
    from jueying_cli.status.view import build_view

    results, interrupted = common.collect(opts, selected, timeout)
    if history_:
        common.record_history(results)
    scheduler = output.read_scheduler(opts, inventory, selected) if inventory.source else None
    health = output.read_health(results, inventory, config)
    rc = output.render_status(build_view(results, sort=sort, fold=fold, scheduler=scheduler, health=health),
                              gpus=gpus, json_output=out.json, rows=out if out.rows else None)
    raise typer.Exit(int(ExitCode.INTERRUPTED) if interrupted else rc)


def _status_from_prometheus(url: str, selected: list[Node], *, sort: str, fold: bool, json_output: bool,
                            timeout_s: float, scheduler: dict[str, SchedulerView] | None,
                            confirm_runs: Callable[[str, Node], int], output_rows: common.Output | None) -> int:
    """The status table from two PromQL queries (the node rows, the check levels) and the scheduler's states;
    exit 1 when some node has no fresh data (or only stale data), or when the server cannot be asked."""
    from jueying_cli.exporter.check_readback import health_by_node_from
    from jueying_cli.exporter.readback import status_rows
    from jueying_cli.facts.collected import NodeFacts
    from jueying_cli.inventory.select import fold as fold_names
    from jueying_cli.outcome import Outcome
    from jueying_cli.status.summary import fold_healthy, sort_summaries, totals
    from jueying_cli.status.view import StatusView
    from jueying_cli.transport.promql import PrometheusError
    from jueying_cli.vocab import ANSWERED, OutcomeStatus

    try:
        health = health_by_node_from(url, selected, confirm_runs=confirm_runs, timeout_s=timeout_s)
        rows = sort_summaries(status_rows(url, selected, timeout_s, scheduler, health), sort)
    except PrometheusError as exc:
        common.warn(str(exc))
        return int(ExitCode.NODES_FAILED)
    by_name = {n.name: n for n in selected}
    missing = [NodeFacts(by_name[r.node], Outcome(r.node, OutcomeStatus.TIMEOUT if r.stale else (
        OutcomeStatus(str(r.state)) if str(r.state) in {str(o) for o in OutcomeStatus} else OutcomeStatus.UNREACHABLE),
        error=("stale: " if r.stale else "") + (r.reason or str(r.state))), None)
        for r in rows if r.state not in ANSWERED or r.stale]
    view = StatusView(rows=rows, shown=fold_healthy(rows, fold_names) if fold else rows, totals=totals(rows),
                      answered=[], missing=missing, scheduler=scheduler or {}, nodes_total=len(rows))
    return output.render_status(view, gpus=False, json_output=json_output, rows=output_rows)


def inventory(
    json_output: bool = typer.Option(False, "--json", help="Print every node's full facts document."),
    fmt: OutputFormat | None = common.FormatOpt,
    fields: list[str] | None = common.FieldsOpt,
    no_header: bool = common.NoHeaderOpt,
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
    """Show each node's CPU, memory, GPU model x count, driver, CUDA, kernel and OS; --json prints every node's
    full facts document.

    Exit codes: 0 every node answered; 1 some failed or were unreachable; 2 bad usage or inventory; 130
    interrupted.
    """
    out = common.output_choice(json_output, fmt, fields, no_header, INVENTORY_FIELDS)
    opts = common.FleetOptions(inventory_, nodes_, exclude, fanout, connect_timeout, deadline,
                               accept_new_hostkeys, ssh_config)
    _, selected = common.select(opts)
    results, interrupted = common.collect(opts, selected, timeout)
    missing = [r for r in results if r.facts is None]
    nodes = [{"node": r.name, "status": r.outcome.status, "error": r.outcome.error,
              "facts": r.facts.to_document() if r.facts else None} for r in results]
    if out.rows:
        common.print_rows(out, nodes, INVENTORY_DEFAULT_FIELDS)
    elif out.json:
        from jueying_cli.render.json import envelope, print_json

        print_json(envelope("inventory", {"nodes": nodes}, status=output.envelope_status(len(missing), len(results)),
                            errors=[{"node": r.name, "status": r.outcome.status, "message": r.outcome.error}
                                    for r in missing]))
    else:
        from jueying_cli.render.terminal import make_console, print_inventory, print_nodes
        from jueying_cli.status.summary import unanswered

        console = make_console()
        print_inventory([(r.name, r.facts) for r in results if r.facts is not None], console)
        if missing:
            print_nodes([unanswered(r.name, r.outcome.status, r.outcome.error or "") for r in missing], console)
    if interrupted:
        raise typer.Exit(int(ExitCode.INTERRUPTED))
    raise typer.Exit(int(ExitCode.NODES_FAILED if missing else ExitCode.OK))


def history(
    node: str = typer.Argument(..., help="The node to show."),
    limit: int = typer.Option(50, "-n", "--limit", min=1, metavar="N", help="Show at most this many changes (newest)."),
    all_rows: bool = typer.Option(False, "--all", help="Show every collection, not only changes."),
    json_output: bool = typer.Option(False, "--json", help="Print the JSON envelope."),
    fmt: OutputFormat | None = common.FormatOpt,
    fields: list[str] | None = common.FieldsOpt,
    no_header: bool = common.NoHeaderOpt,
) -> None:
    """Show how a node's key facts changed over time: status, GPU count, lost GPUs, ECC counts, pending row
    remaps, driver, CUDA and kernel, from the state database (JUEYING_STATE_DB, default
    ~/.local/state/jueying/state.db).

    Exit codes: 0 shown (also when there is no history yet); 2 bad usage, or a state database that cannot
    be read (the message names the file and what to do).
    """
    from jueying_cli.status.history import history_changes
    from jueying_cli.store import HistoryRow

    out = common.output_choice(json_output, fmt, fields, no_header, [f.name for f in dataclasses.fields(HistoryRow)])
    store = common.open_store(readonly=True)
    try:
        rows = store.history.read(node, limit=100_000)
    finally:
        store.close()
    shown = rows if all_rows else history_changes(rows)
    shown = shown[-limit:]
    if out.rows:
        from jueying_cli.render.json import to_jsonable

        common.print_rows(out, to_jsonable(shown), [f.name for f in dataclasses.fields(HistoryRow)])
        raise typer.Exit(int(ExitCode.OK))
    if out.json:
        from jueying_cli.render.json import envelope, print_json

        print_json(envelope("history", {"node": node, "rows": shown, "collections": len(rows)}))
        raise typer.Exit(int(ExitCode.OK))
    from jueying_cli.render.terminal import make_console, print_history, print_message

    console = make_console()
    if not rows:
        print_message(console, f"no history for {node} yet (it is recorded by jueying status)")
        raise typer.Exit(int(ExitCode.OK))
    print_history(shown, console)
    print_message(console, f"{len(shown)} change(s) shown of {len(rows)} collection(s)" if not all_rows
                  else f"{len(rows)} collection(s)")
    raise typer.Exit(int(ExitCode.OK))

