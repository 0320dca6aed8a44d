"""`jueying inventory`: what each node is made of (hardware, driver, OS), or every facts document."""

from __future__ import annotations

import typer

from jueying_cli.errors import ExitCode


def register(app: typer.Typer) -> None:
    app.command("inventory")(inventory)


def inventory(
    json_output: bool = typer.Option(False, "--json", help="Print every node's full facts document."),
) -> None:
    """Show each node's CPU, memory, GPU model x count, driver, CUDA, kernel and OS.

    Exit codes: 0 when every node answered, 1 when some failed or were unreachable, 2 on bad usage.
    """
    from jueying_cli.collect import collect_local

    node, facts = collect_local()
    if json_output:
        from jueying_cli.render.json import dumps, envelope

        typer.echo(dumps(envelope("inventory", {"nodes": [{"node": node, "facts": facts.document}]})))
        raise typer.Exit(int(ExitCode.OK))
    from jueying_cli.render.table import make_console, print_inventory

    print_inventory([(node, facts)], make_console())
    raise typer.Exit(int(ExitCode.OK))
