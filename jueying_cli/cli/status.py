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
    from jueying_cli.status import summarize

    node, facts = collect_local()
    summary = summarize(node, facts)
    if json_output:
        from jueying_cli.render.json import dumps, envelope

        data: dict[str, object] = {"nodes": [summary], "summary": _totals([summary])}
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
    totals = _totals([summary])
    print_message(console, _summary_line(totals))
    raise typer.Exit(int(ExitCode.OK))


def _gpu_row(gpu: object) -> dict[str, object]:
    from jueying_cli.render.json import to_jsonable

    row = to_jsonable(gpu)
    assert isinstance(row, dict)
    return row


def _totals(summaries: list[object]) -> dict[str, object]:
    from jueying_cli.status import NodeSummary

    nodes = [s for s in summaries if isinstance(s, NodeSummary)]
    by_model: dict[str, int] = {}
    for s in nodes:
        for model in s.gpu_models:
            by_model[model] = by_model.get(model, 0) + 1
    return {
        "nodes_total": len(nodes),
        "nodes_up": sum(1 for s in nodes if s.state in ("ok", "degraded", "no_driver")),
        "nodes_ok": sum(1 for s in nodes if s.state == "ok"),
        "gpus_healthy": sum(s.gpus_present for s in nodes),
        "gpus_total": sum(s.gpus_present + s.gpus_lost for s in nodes),
        "gpu_models": by_model,
    }


def _summary_line(totals: dict[str, object]) -> str:
    models = totals["gpu_models"]
    assert isinstance(models, dict)
    model_text = ", ".join(f"{name} on {count} node(s)" for name, count in models.items()) or "no GPUs"
    return (f"nodes up {totals['nodes_up']}/{totals['nodes_total']}, "
            f"GPUs healthy {totals['gpus_healthy']}/{totals['gpus_total']} ({model_text})")
