"""`jueying run` and `jueying nodes`: commands on many nodes, and node-set arithmetic."""

from __future__ import annotations

import sys

import typer

from jueying_cli.cli import common
from jueying_cli.errors import ExitCode
from jueying_cli.render.text import say
from jueying_cli.vocab import OutputFormat

NODE_FIELDS = ("node",)  # a row of `nodes --format csv`: one of the names in data.nodes of --json
RUN_FIELDS = ("node", "status", "rc", "stdout", "stderr", "duration_s", "error", "truncated")


def register(app: typer.Typer) -> None:
    app.command("run", context_settings={"allow_interspersed_args": False})(run)
    app.command("nodes")(nodes)


def run(
    command: list[str] = typer.Argument(..., metavar="-- CMD...", help="Shell command run by each node's /bin/sh "
                                        "(arguments are joined with spaces, as ssh does)."),
    inventory: str | None = common.InventoryOpt,
    nodes_: list[str] | None = common.NodesOpt,
    exclude: list[str] | None = common.ExcludeOpt,
    fanout: int = common.FanoutOpt,
    connect_timeout: float = common.ConnectTimeoutOpt,
    timeout: float | None = typer.Option(None, "-t", "--timeout", min=0.1, metavar="SECONDS",
                                         help="Seconds the command may run on each node (default: no limit)."),
    deadline: float | None = common.DeadlineOpt,
    sudo: bool = typer.Option(False, "--sudo", help="Run through `sudo -n` (fails at once without NOPASSWD)."),
    gather: bool = typer.Option(True, "--gather/--no-gather",
                                help="Group identical output under folded node sets (default), or prefix each "
                                "line with its node as it arrives."),
    raw: bool = typer.Option(False, "--raw", help="Write the command's output as it came even to a terminal "
                             "(default there: control characters shown escaped, e.g. \\x1b; to a pipe or a file "
                             "output is always written as it came)."),
    json_output: bool = typer.Option(False, "--json", help="One JSON envelope with every node's outcome."),
    jsonl: bool = typer.Option(False, "--jsonl", help="One JSON object per node, printed as each node finishes."),
    fmt: OutputFormat | None = common.FormatOpt,
    fields: list[str] | None = common.FieldsOpt,
    no_header: bool = common.NoHeaderOpt,
    accept_new_hostkeys: bool = common.AcceptNewOpt,
    ssh_config: str | None = common.SshConfigOpt,
) -> None:
    """Run a shell command on many nodes at once, like clush -b.

    Each node ends as ok, failed (with its exit code), timeout, unreachable, auth_failed or hostkey_failed;
    a summary lists every node that was not ok. The command's output goes to a pipe or a file as it came;
    on a terminal its control characters are shown escaped (--raw: as it came). Node names, errors and
    the summary are always escaped. Exit codes: 0 all ok; 1 some nodes failed, timed out or
    were unreachable; 2 bad usage or inventory; 130 interrupted (what was gathered is printed first).
    """
    from jueying_cli.outcome import Outcome
    from jueying_cli.render import gather as render
    from jueying_cli.transport.base import Command
    from jueying_cli.transport.fanout import run_many

    out = common.output_choice(json_output, fmt, fields, no_header, RUN_FIELDS)
    json_output = out.json
    if jsonl and (out.json or out.rows):
        raise typer.BadParameter("--jsonl prints its own rows; it cannot be combined with --json, --format "
                                 "or -o", param_hint="--jsonl")
    opts = common.FleetOptions(inventory, nodes_, exclude, fanout, connect_timeout, deadline,
                               accept_new_hostkeys, ssh_config)
    _, selected = common.select(opts)
    transport = common.make_transport(opts)
    transport.prepare(selected)
    progress = common.progress_for(len(selected), enabled=not (json_output or jsonl or out.rows) and gather)
    raw_out = raw or not sys.stdout.isatty()
    raw_err = raw or not sys.stderr.isatty()

    shown: set[str] = set()

    def on_outcome(outcome: Outcome) -> None:
        shown.add(outcome.node)
        if jsonl:
            sys.stdout.write(render.jsonl(outcome) + "\n")
            sys.stdout.flush()
        elif not gather and not json_output and not out.rows:
            render.print_prefixed(outcome, sys.stdout, sys.stderr, raw_out=raw_out, raw_err=raw_err)
        progress.advance()

    script = " ".join(command)
    try:
        with progress:
            result = run_many(transport, selected, Command(script=script, timeout_s=timeout, sudo=sudo),
                              fanout=fanout, deadline_s=deadline, on_outcome=on_outcome)
    finally:
        transport.close()
    outcomes = result.outcomes
    all_ok = all(o.ok for o in outcomes.values())
    if out.rows:  # one row per node, as --json holds it; the summary stays on stderr
        common.print_rows(out, [render.outcome_dict(o) for o in outcomes.values()], RUN_FIELDS)
        if not all_ok or len(outcomes) > 1:
            for line in render.summary_lines(outcomes):
                say(f"jueying: {line}", err=True)
    elif json_output:
        from jueying_cli.render.json import envelope, print_json

        failed = [o for o in outcomes.values() if not o.ok]
        print_json(envelope("run", {"command": script, "nodes": [render.outcome_dict(o) for o in outcomes.values()],
                                    "interrupted": result.interrupted},
                            status="ok" if all_ok else ("error" if len(failed) == len(outcomes) else "partial"),
                            errors=[{"node": o.node, "status": o.status, "message": o.error} for o in failed]))
    elif jsonl:
        # Nodes stopped by the global deadline or Ctrl-C may not have passed through on_outcome.
        for o in outcomes.values():
            if o.node not in shown:
                sys.stdout.write(render.jsonl(o) + "\n")
    else:
        if gather:
            render.print_gathered(outcomes.values(), sys.stdout, raw=raw_out)
            render.print_stderr_gathered(outcomes.values(), sys.stderr, raw=raw_err)
        sys.stdout.flush()
        if not all_ok or len(outcomes) > 1:
            for line in render.summary_lines(outcomes):
                say(f"jueying: {line}", err=True)
    if result.interrupted:
        raise typer.Exit(int(ExitCode.INTERRUPTED))
    raise typer.Exit(int(ExitCode.OK if all_ok else ExitCode.NODES_FAILED))


def nodes(
    inventory: str | None = common.InventoryOpt,
    nodes_: list[str] | None = common.NodesOpt,
    exclude: list[str] | None = common.ExcludeOpt,
    expand: bool = typer.Option(False, "--expand", "-e", help="List every node on its own line, in the order "
                                "ClusterShell's `nodeset -e` lists them."),
    json_output: bool = typer.Option(False, "--json", help="Print the JSON envelope."),
    fmt: OutputFormat | None = common.FormatOpt,
    fields: list[str] | None = common.FieldsOpt,
    no_header: bool = common.NoHeaderOpt,
) -> None:
    """Print the selected nodes as a folded node set and a count (exit 2 if the selection is bad)."""
    from jueying_cli.inventory.select import fold
    from jueying_cli.render.text import safe

    out = common.output_choice(json_output, fmt, fields, no_header, NODE_FIELDS)
    opts = common.FleetOptions(inventory, nodes_, exclude, 1, 1.0, None, False, None)
    inv, selected = common.select(opts)
    names = [n.name for n in selected]
    if out.rows:  # a row per node, in `nodeset -e` order
        from jueying_cli.inventory.select import nodeset_order

        common.print_rows(out, [{"node": name} for name in nodeset_order(names)], NODE_FIELDS)
    elif out.json:
        from jueying_cli.render.json import envelope, print_json

        print_json(envelope("nodes", {"nodeset": fold(names), "count": len(names), "nodes": names,
                                      "inventory": inv.source}))
    elif expand:
        from jueying_cli.inventory.select import nodeset_order

        sys.stdout.write("".join(f"{safe(name)}\n" for name in nodeset_order(names)))
    else:
        say(f"{fold(names)} ({len(names)})")
    raise typer.Exit(int(ExitCode.OK))
