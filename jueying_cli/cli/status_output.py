"""How `jueying status` (one-shot and --watch) reads scheduler states and prints a status view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from jueying_cli.cli import common
from jueying_cli.errors import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

    from jueying_cli.checks import CheckConfig
    from jueying_cli.facts.collected import NodeFacts
    from jueying_cli.inventory.model import Inventory, Node
    from jueying_cli.status.summary import HealthFinding
    from jueying_cli.status.view import SchedulerView, StatusView
    from jueying_cli.transport.base import Transport


def read_scheduler(opts: common.FleetOptions, inventory: Inventory, selected: Sequence[Node],
                   transport: Transport | None = None) -> dict[str, SchedulerView]:
    """What each node's backend says (drained, draining, reason); a backend or state database that cannot be
    read is a warning on stderr, never a failed status. `transport` (kept open by --watch) reaches the Slurm
    controller node and builtin markers; without one, a transport is opened for this read."""
    from jueying_cli.errors import JueyingError
    from jueying_cli.status.view import scheduler_states

    try:
        store = common.open_store()
    except (OSError, JueyingError) as exc:
        common.warn(f"state database unavailable: {exc}")
        return {}
    own = transport is None
    via = common.make_transport(opts) if transport is None else transport
    try:
        found, warnings = scheduler_states(inventory, selected, via, store)
    except JueyingError as exc:
        found, warnings = {}, [f"scheduler state unavailable: {exc}"]
    finally:
        if own:
            via.close()
        store.close()
    for message in warnings:
        common.warn(message)
    return found


def status_fields(*, gpus: bool) -> list[str]:
    """The fields of one `status --json` row: a node summary, or with --gpus a GPU of the facts document."""
    import dataclasses

    from jueying_cli.facts.schema import GPU_KEYS
    from jueying_cli.status.summary import NodeSummary

    return ["node", *GPU_KEYS, *GPU_HEALTH_FIELDS] if gpus else [f.name for f in dataclasses.fields(NodeSummary)]


def read_health(results: Sequence[NodeFacts], inventory: Inventory, config: CheckConfig,
                now: float | None = None) -> dict[str, list[HealthFinding]]:
    """Each answering node's non-OK check results, counted as the last `jueying check` counted them: the same
    check set on the facts just collected, and the flap state read (never written) from the state database
    (checks.flap.read_findings). A database that cannot be read is a warning: only checks that need one run
    can then be confirmed."""
    import time

    from jueying_cli.checks.flap import read_findings
    from jueying_cli.errors import JueyingError
    from jueying_cli.render.health import health_by_node

    try:
        store = common.open_store(readonly=True)
    except (OSError, JueyingError) as exc:
        common.warn(f"state database unavailable, check results needing several runs shown as pending: {exc}")
        store = None
    try:
        findings = read_findings(results, config, inventory, store, now=time.time() if now is None else now)
    finally:
        if store is not None:
            store.close()
    return health_by_node(findings)


def render_status(view: StatusView, *, gpus: bool, json_output: bool, console: Console | None = None,
                  rows: common.Output | None = None) -> int:
    """Print one status view; returns the exit code (1 when some node gave no facts, or only stale ones).
    With `rows`, the --json rows as csv/tsv or a table of chosen fields (nodes that gave no facts, under
    --gpus, are named on stderr)."""
    rc = int(ExitCode.NODES_FAILED if view.missing else ExitCode.OK)
    errors = [{"node": r.name, "status": r.outcome.status, "message": r.outcome.error} for r in view.missing]
    if rows is not None:
        from jueying_cli.render.json import to_jsonable

        if gpus:
            common.print_rows(rows, to_jsonable([{"node": name, **g.to_document(), **_gpu_health(view, name, g.index)}
                                                 for name, facts in view.answered for g in facts.gpus]),
                              status_fields(gpus=True))
            for e in errors:
                common.warn(f"{e['node']}: {e['status']}: {e['message']}")
        else:
            common.print_rows(rows, to_jsonable(view.rows), status_fields(gpus=False))
        return rc
    if json_output:
        from jueying_cli.render.json import envelope, print_json

        data: dict[str, object] = {"nodes": view.rows, "summary": view.totals}
        if gpus:
            data["gpus"] = [{"node": name, **g.to_document(), **_gpu_health(view, name, g.index)}
                            for name, facts in view.answered for g in facts.gpus]
        print_json(envelope("status", data, status=envelope_status(len(view.missing), view.nodes_total),
                            errors=errors))
        return rc
    from jueying_cli.render.terminal import make_console, print_gpus, print_message, print_nodes
    from jueying_cli.status.summary import summary_line

    console = console or make_console()
    if gpus:
        print_gpus(view.answered, console, view.health)
        if view.missing:
            print_nodes([row for row in view.rows if row.gpus_present is None], console)
    else:
        print_nodes(view.shown, console)
    print_message(console, summary_line(view.totals))
    if view.backends:
        print_message(console, "drain/resume through " + ", ".join(
            f"{backend} for {names}" for backend, names in view.backends.items()))
    return rc


GPU_HEALTH_FIELDS = ("health", "health_check", "problems", "pending")  # what status adds to a GPU's facts


def _gpu_health(view: StatusView, node: str, gpu: int) -> dict[str, object]:
    """A GPU's `health` (worst confirmed level of its own check results, null when no checks ran),
    `health_check`, and its non-OK results (`problems`: confirmed, `pending`)."""
    from jueying_cli.vocab import Level

    if view.health is None:
        return dict(zip(GPU_HEALTH_FIELDS, (None, None, [], []), strict=True))
    mine = [f for f in view.health.get(node, ()) if f.gpu == gpu]
    confirmed = sorted((f for f in mine if f.confirmed), key=lambda f: (-f.level.severity, f.check))
    return {"health": confirmed[0].level if confirmed else Level.OK,
            "health_check": confirmed[0].check if confirmed else None,
            "problems": confirmed, "pending": [f for f in mine if not f.confirmed]}


def envelope_status(missing: int, total: int) -> str:
    """The JSON envelope's status: ok, partial (some nodes gave no facts) or error (none did)."""
    return "ok" if not missing else ("error" if missing == total else "partial")
