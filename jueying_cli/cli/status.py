"""`jueying status`, `jueying inventory` and `jueying history`: the cluster at a glance, and over time."""

from __future__ import annotations

import sys
from typing import Any

import typer

from jueying_cli.cli import common
from jueying_cli.errors import ExitCode

DEFAULT_WATCH_S = 2.0


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("inventory")(inventory)
    app.command("history")(history)


def status(
    gpus: bool = typer.Option(False, "--gpus", help="One row per GPU across the selection."),
    json_output: bool = typer.Option(False, "--json", help="Print the JSON envelope instead of a table."),
    sort: str = typer.Option("state", "--sort", help="state (problems first), node, util, temp, power, gpu-mem, "
                             "load or age."),
    fold: bool = typer.Option(True, "--fold/--no-fold", help="Fold healthy nodes that look alike into one row."),
    watch: float | None = typer.Option(None, "--watch", min=0.5, metavar="[SECONDS]",
                                       help=f"Refresh every SECONDS (default {DEFAULT_WATCH_S:g}) until Ctrl-C "
                                       "(exit 0), keeping SSH connections and one probe per node open; a node "
                                       "that misses a refresh shows its last values marked stale."),
    count: int | None = typer.Option(None, "--count", min=1, help="With --watch: stop after this many refreshes."),
    history_: bool = typer.Option(True, "--history/--no-history", help="Record key facts in the state database."),
    timeout: float = typer.Option(30.0, "-t", "--timeout", min=0.5, help="Seconds the probe may run on each node."),
    inventory_: str | None = common.InventoryOpt,
    nodes_: str | None = common.NodesOpt,
    exclude: str | None = common.ExcludeOpt,
    fanout: int = common.FanoutOpt,
    connect_timeout: float = common.ConnectTimeoutOpt,
    deadline: float | None = common.DeadlineOpt,
    accept_new_hostkeys: bool = common.AcceptNewOpt,
    ssh_config: str | None = common.SshConfigOpt,
) -> None:
    """Show every selected node: state, GPUs present/expected, utilisation avg/max, GPU memory, hottest GPU,
    power, load, host memory and the age of the data. Problems come first (unreachable, timed out, lost GPUs,
    no driver); healthy nodes that look alike fold into one row.

    Exit codes: 0 every node answered (a degraded node is shown, not an error); 1 some nodes failed, timed
    out or were unreachable; 2 bad usage or inventory; 130 interrupted.
    """
    from jueying_cli.status.summary import SORT_KEYS

    if sort not in SORT_KEYS:
        raise typer.BadParameter(f"must be one of {', '.join(SORT_KEYS)}", param_hint="--sort")
    opts = common.FleetOptions(inventory_, nodes_, exclude, fanout, connect_timeout, deadline,
                               accept_new_hostkeys, ssh_config)
    inventory, selected = common.select(opts)
    if watch is not None:
        from jueying_cli.cli.watch import watch_status

        raise typer.Exit(watch_status(opts, selected, interval_s=watch, timeout_s=timeout, gpus=gpus, sort=sort,
                                      fold=fold, json_output=json_output, count=count, inventory=inventory,
                                      history=history_))
    results, interrupted = collect_facts(opts, selected, timeout)
    if history_:
        record_history(results)
    rc = render_status(results, gpus=gpus, json_output=json_output, sort=sort, fold=fold,
                       scheduler=scheduler_states(inventory, selected) if inventory.source else None)
    raise typer.Exit(int(ExitCode.INTERRUPTED) if interrupted else rc)


def collect_facts(opts: common.FleetOptions, selected: list[Any], timeout: float) -> tuple[list[Any], bool]:
    """Facts from every selected node, with a progress bar on a terminal; (results, interrupted)."""
    from jueying_cli.collect.oneshot import collect_nodes

    transport = common.make_transport(opts)
    transport.prepare(selected)
    progress = common.progress_for(len(selected))
    # Without --deadline each node is bounded by its own limits (connect + probe timeout), so a hung node
    # costs only its own time; a fixed global default would cut off healthy nodes of a large cluster.
    deadline = opts.deadline_s
    try:
        with progress:
            return collect_nodes(transport, selected, fanout=opts.fanout, deadline_s=deadline, timeout_s=timeout,
                                 on_result=lambda _: progress.advance())
    finally:
        transport.close()


def summaries_for(results: list[Any], stale: set[str] | frozenset[str] = frozenset(),
                  scheduler_states: dict[str, tuple[str, Any]] | None = None) -> list[Any]:
    import dataclasses

    from jueying_cli.status.summary import summarize, unanswered, with_scheduler

    rows = []
    for r in results:
        if r.facts is not None:
            row = summarize(r.name, r.facts, r.node.expected_gpus)
            row = dataclasses.replace(row, stale=True) if r.name in stale else row
        else:
            row = unanswered(r.name, r.outcome.status, r.outcome.error or r.outcome.status, r.node.expected_gpus)
        if scheduler_states and r.name in scheduler_states:
            row = with_scheduler(row, *scheduler_states[r.name])
        rows.append(row)
    return rows


def scheduler_states(inventory: Any, selected: list[Any]) -> dict[str, tuple[str, Any]]:
    """{node: (backend, NodeState or None)}: one scontrol call for Slurm nodes, the ledger for builtin ones.
    Best effort: a scheduler that cannot be asked is reported on stderr and the status is still shown."""
    from jueying_cli.errors import JueyingError
    from jueying_cli.scheduler import schedulers_for
    from jueying_cli.store import Store

    found: dict[str, tuple[str, Any]] = {}
    try:
        store = Store()
    except (OSError, JueyingError) as exc:
        sys.stderr.write(f"jueying: warning: state database unavailable: {exc}\n")
        return found
    try:
        for backend, (scheduler, names) in schedulers_for(inventory, selected, None, store).items():
            try:
                states = scheduler.states(names)
            except JueyingError as exc:
                sys.stderr.write(f"jueying: warning: {backend} scheduler state unavailable: {exc}\n")
                continue
            for name in names:
                found[name] = (backend, states.get(name))
    finally:
        store.close()
    return found


def render_status(results: list[Any], *, gpus: bool, json_output: bool, sort: str, fold: bool,
                  console: Any = None, stale: set[str] | frozenset[str] = frozenset(),
                  scheduler: dict[str, tuple[str, Any]] | None = None) -> int:
    """Print one status view; returns the exit code (1 when some node gave no facts)."""
    from jueying_cli.inventory.select import fold as fold_names
    from jueying_cli.status.summary import fold_healthy, sort_summaries, summary_line, totals

    rows = sort_summaries(summaries_for(results, stale, scheduler), sort)
    missing = [r for r in results if r.facts is None or r.name in stale]
    rc = int(ExitCode.NODES_FAILED if missing else ExitCode.OK)
    if json_output:
        from jueying_cli.render.json import dumps, envelope

        data: dict[str, object] = {"nodes": rows, "summary": totals(rows)}
        if gpus:
            data["gpus"] = [{"node": r.name, **g.to_document()} for r in results if r.facts for g in r.facts.gpus]
        errors = [{"node": r.name, "status": r.outcome.status, "message": r.outcome.error} for r in missing]
        state = "ok" if not missing else ("error" if len(missing) == len(results) else "partial")
        print(dumps(envelope("status", data, status=state, errors=errors)))
        return rc
    from jueying_cli.render.terminal import make_console, print_gpus, print_message, print_nodes

    console = console or make_console()
    if gpus:
        print_gpus([(r.name, r.facts) for r in results if r.facts is not None], console)
        if missing:
            print_nodes([row for row in rows if row.gpus_present is None], console)
    else:
        print_nodes(fold_healthy(rows, fold_names) if fold else rows, console)
    print_message(console, summary_line(totals(rows)))
    if scheduler:
        by_backend: dict[str, list[str]] = {}
        for name, (backend, _) in scheduler.items():
            by_backend.setdefault(backend, []).append(name)
        print_message(console, "drain/resume through " + ", ".join(
            f"{backend} for {fold_names(names)}" for backend, names in sorted(by_backend.items())))
    return rc


def record_history(results: list[Any]) -> None:
    from jueying_cli.status.history import history_row
    from jueying_cli.store import Store

    try:
        store = Store()
        try:
            store.record_history(history_row(r.name, r.facts, r.outcome.status, r.outcome.error,
                                             r.node.expected_gpus) for r in results)
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 - history is a side effect; the status itself was still shown
        sys.stderr.write(f"jueying: warning: history not recorded: {exc}\n")


def inventory(
    json_output: bool = typer.Option(False, "--json", help="Print every node's full facts document."),
    timeout: float = typer.Option(30.0, "-t", "--timeout", min=0.5, help="Seconds the probe may run on each node."),
    inventory_: str | None = common.InventoryOpt,
    nodes_: str | None = common.NodesOpt,
    exclude: str | None = common.ExcludeOpt,
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
    opts = common.FleetOptions(inventory_, nodes_, exclude, fanout, connect_timeout, deadline,
                               accept_new_hostkeys, ssh_config)
    _, selected = common.select(opts)
    results, interrupted = collect_facts(opts, selected, timeout)
    missing = [r for r in results if r.facts is None]
    if json_output:
        from jueying_cli.render.json import dumps, envelope

        nodes = [{"node": r.name, "status": r.outcome.status, "error": r.outcome.error,
                  "facts": r.facts.to_document() if r.facts else None} for r in results]
        state = "ok" if not missing else ("error" if len(missing) == len(results) else "partial")
        print(dumps(envelope("inventory", {"nodes": nodes}, status=state,
                             errors=[{"node": r.name, "status": r.outcome.status, "message": r.outcome.error}
                                     for r in missing])))
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
    limit: int = typer.Option(50, "-n", "--limit", min=1, help="Show at most this many changes (newest)."),
    all_rows: bool = typer.Option(False, "--all", help="Show every collection, not only changes."),
    json_output: bool = typer.Option(False, "--json", help="Print the JSON envelope."),
) -> None:
    """Show how a node's key facts changed over time: status, GPU count, lost GPUs, ECC counts, pending row
    remaps, driver, CUDA and kernel, from the state database (JUEYING_STATE_DB, default
    ~/.local/state/jueying/state.db).

    Exit codes: 0 shown (also when there is no history yet); 2 bad usage.
    """
    from jueying_cli.status.history import history_changes
    from jueying_cli.store import Store

    store = Store()
    try:
        rows = store.history(node, limit=100_000)
    finally:
        store.close()
    shown = rows if all_rows else history_changes(rows)
    shown = shown[-limit:]
    if json_output:
        from jueying_cli.render.json import dumps, envelope

        print(dumps(envelope("history", {"node": node, "rows": shown, "collections": len(rows)})))
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

