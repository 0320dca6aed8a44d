"""`jueying status`: the cluster (for now: this machine) at a glance."""

from __future__ import annotations

import typer

from jueying_cli.errors import ExitCode


def register(app: typer.Typer) -> None:
    app.command("status")(status)


def status(
    gpus: bool = typer.Option(False, "--gpus", help="One row per GPU instead of one per node."),
    json_output: bool = typer.Option(False, "--json", help="Print the JSON envelope instead of a table."),
) -> None:
    """Show nodes with GPU count, utilisation, memory, hottest GPU, power, load and host memory.

    Exit codes: 0 when every node answered (a degraded node is shown, not an error), 1 when some
    nodes failed or were unreachable, 2 on bad usage.
    """
    from jueying_cli.collect import collect_local
    from jueying_cli.status import summarize, summary_line, totals

    node, facts = collect_local()
    summary = summarize(node, facts)
    if json_output:
        from jueying_cli.render.json import dumps, envelope

        data: dict[str, object] = {"nodes": [summary], "summary": totals([summary])}
        if gpus:
            data["gpus"] = [{"node": node, **_gpu_row(g)} for g in facts.gpus]
        typer.echo(dumps(envelope("status", data)))
        raise typer.Exit(int(ExitCode.OK))

    from jueying_cli.render.table import make_console, print_gpus, print_message, print_nodes

    console = make_console()
    if gpus:
        print_gpus([(node, facts)], console)
    else:
        print_nodes([summary], console)
    print_message(console, summary_line(totals([summary])))
    raise typer.Exit(int(ExitCode.OK))


def _gpu_row(gpu: object) -> dict[str, object]:
    from jueying_cli.render.json import to_jsonable

    row = to_jsonable(gpu)
    assert isinstance(row, dict)
    return row
