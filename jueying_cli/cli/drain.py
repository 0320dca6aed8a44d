"""`jueying drain`, `jueying resume` and `jueying log`: take nodes out of service and back, with an audit trail."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import typer

from jueying_cli.cli import common
from jueying_cli.errors import ExitCode
from jueying_cli.render.text import say
from jueying_cli.vocab import OutputFormat

if TYPE_CHECKING:
    from jueying_cli.actions.cap import Cap
    from jueying_cli.actions.context import ActionContext
    from jueying_cli.actions.drain import NodeChange, WaitResult


def register(app: typer.Typer) -> None:
    app.command("drain")(drain)
    app.command("resume")(resume)
    app.command("log")(log)


def open_context(nodes_arg: str, inventory: str | None, ssh_config: str | None,
                 connect_timeout: float) -> ActionContext:
    """The selected nodes with their schedulers; says on stderr when an interrupted run's entries were settled."""
    from jueying_cli.actions.context import ActionContext

    opts = common.FleetOptions(inventory, nodes_arg, None, 64, connect_timeout, None, False, ssh_config)
    inv, nodes = common.select(opts)
    transport = common.make_transport(opts)
    store = common.open_store()
    try:
        ctx = ActionContext.open(inv, nodes, transport, store)
    except BaseException:
        store.close()
        transport.close()
        raise
    if ctx.settled:
        say(f"jueying: settled {ctx.settled} audit entr{'y' if ctx.settled == 1 else 'ies'} left "
            "pending by an interrupted run (see jueying log)", err=True)
    _say_left(ctx)
    return ctx


def _say_left(ctx: ActionContext, most: int = 8) -> None:
    """One line per reason for the pending entries left as they are (another run's, unreadable markers)."""
    by_why: dict[str, list[str]] = {}
    for entry, why in ctx.reconciled.left:
        by_why.setdefault(why, []).append(f"{entry.node} ({entry.action})")
    for why, entries in by_why.items():
        shown = ", ".join(entries[:most]) + (f" and {len(entries) - most} more" if len(entries) > most else "")
        say(f"jueying: {len(entries)} pending audit entr{'y' if len(entries) == 1 else 'ies'} left "
            f"as {'it is' if len(entries) == 1 else 'they are'}: {shown}: {why}", err=True)


def drain(
    nodes: str = typer.Argument(..., metavar="NODES", help="Nodes to drain (NodeSet syntax: gpu[001-004], @group)."),
    reason: str | None = typer.Option(None, "-r", "--reason", metavar="TEXT",
                                      help="Why (required); stored as 'REASON [jueying:you]', your words first "
                                      "(sinfo -R shows 20 characters)."),
    update_reason: bool = typer.Option(False, "--update-reason", help="Replace the reason of nodes already drained."),
    wait: bool = typer.Option(False, "--wait", help="Wait until no job runs on the nodes."),
    timeout: float = typer.Option(3600.0, "--timeout", min=1.0, metavar="SECONDS",
                                  help="Seconds --wait may wait (default 3600)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; change nothing."),
    force: bool = typer.Option(False, "--force", help="Drain even past the cluster's max_unavailable."),
    json_output: bool = typer.Option(False, "--json", help="Print the JSON envelope."),
    inventory: str | None = common.InventoryOpt,
    connect_timeout: float = common.ConnectTimeoutOpt,
    ssh_config: str | None = common.SshConfigOpt,
) -> None:
    """Take nodes out of service: new jobs stop landing on them, running jobs finish.

    Idempotent: a node already drained is left alone (its drainer and reason are shown) unless
    --update-reason. With --wait, ends as drained, timed out (listing the jobs still running) or aborted
    (Ctrl-C; the nodes stay drained). Exit codes: 0 done (or nothing to do); 1 a node failed, the wait timed
    out, or max_unavailable refused the drain; 2 bad usage or inventory; 130 aborted.
    """
    from jueying_cli.actions.cap import OverCap
    from jueying_cli.actions.drain import ChangeResult, DrainRequest, execute, plan_drains
    from jueying_cli.actions.plan import require_reason

    full_reason = require_reason(reason)
    ctx = open_context(nodes, inventory, ssh_config, connect_timeout)
    try:
        plan = plan_drains(ctx, [DrainRequest(n.name, full_reason) for n in ctx.nodes],
                           over_cap=OverCap.FORCE if force else OverCap.REFUSE, update_reason=update_reason,
                           dry_run=dry_run)
        if plan.cap is not None and not json_output and (dry_run or plan.cap.down):
            say(f"jueying: max_unavailable {plan.cap.limit} ({plan.cap.source}); of {plan.cap.total} "
                f"nodes, {plan.cap.breakdown()}", err=True)
        rows = plan.preview() if dry_run else execute(ctx, plan)
        wait_result = None
        if wait and not dry_run:
            wait_result = _wait(ctx, [r.node for r in rows if r.result in (
                ChangeResult.DRAINED, ChangeResult.REASON_UPDATED) or (r.result == ChangeResult.UNCHANGED and (
                    r.change.before is not None and r.change.before.drain))], timeout, json_output)
        _finish(rows, wait_result, json_output, "drain", plan.cap)
        if wait_result is not None and wait_result.outcome == "aborted":
            raise typer.Exit(int(ExitCode.INTERRUPTED))
        failed = any(r.result == ChangeResult.FAILED for r in rows)
        timed_out = wait_result is not None and wait_result.outcome == "timeout"
        raise typer.Exit(int(ExitCode.NODES_FAILED if failed or timed_out else ExitCode.OK))
    finally:
        ctx.close()


def _wait(ctx: ActionContext, names: Sequence[str], timeout_s: float, quiet: bool) -> WaitResult | None:
    """Wait for the jobs on the drained nodes, backend by backend; stop at the first that does not end drained."""
    from jueying_cli.actions.drain import wait_drained

    result = None
    for scheduler, members in ctx.schedulers.values():
        mine = [n for n in members if n in names]
        if not mine:
            continue
        if not quiet:
            say(f"jueying: waiting up to {timeout_s:g} s for jobs on {len(mine)} node(s) to end", err=True)
        result = wait_drained(scheduler, mine, timeout_s=timeout_s)
        if result.outcome != "drained":
            break
    return result


def _finish(rows: Sequence[NodeChange], wait_result: WaitResult | None, json_output: bool, command: str,
            cap: Cap | None = None) -> None:
    if json_output:
        from jueying_cli.render.json import envelope, print_json

        data: dict[str, object] = {"nodes": [{"node": r.node, "backend": r.backend, "result": r.result,
                                              "note": r.note} for r in rows]}
        if cap is not None:
            data["cap"] = {"max_unavailable": cap.limit, "unavailable_before": cap.unavailable, "total": cap.total,
                           "drained_before": len(cap.drained), "down_before": len(cap.down),
                           "down": dict(sorted(cap.down.items()))}
        if wait_result is not None:
            data["wait"] = {"outcome": wait_result.outcome, "waited_s": round(wait_result.waited_s, 1),
                            "blocking_jobs": {n: list(j) for n, j in wait_result.blocking.items()}}
        failed = [r for r in rows if r.result == "failed"]
        print_json(envelope(command, data, status="ok" if not failed else "partial",
                            errors=[{"node": r.node, "status": "failed", "message": r.note} for r in failed]))
        return
    for row in rows:
        say(f"{row.node}: {row.result}: {row.note}")
    sys.stdout.flush()
    if wait_result is not None:
        if wait_result.outcome == "drained":
            say(f"drained: no jobs left after {wait_result.waited_s:.0f} s")
        else:
            what = "timed out" if wait_result.outcome == "timeout" else "aborted (the nodes stay drained)"
            say(f"wait {what} after {wait_result.waited_s:.0f} s; still running:")
            for node, jobs in sorted(wait_result.blocking.items()):
                say(f"  {node}: {', '.join(jobs) if jobs else '(completing)'}")


def resume(
    nodes: str = typer.Argument(..., metavar="NODES", help="Nodes to put back in service (NodeSet syntax)."),
    force: bool = typer.Option(False, "--force", help="Also resume drains jueying did not write."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; change nothing."),
    json_output: bool = typer.Option(False, "--json", help="Print the JSON envelope."),
    inventory: str | None = common.InventoryOpt,
    connect_timeout: float = common.ConnectTimeoutOpt,
    ssh_config: str | None = common.SshConfigOpt,
) -> None:
    """Put drained nodes back in service. Only drains jueying wrote (reason '... [jueying:USER]', or
    'jueying: ...' from earlier versions) are resumed;
    anything else needs --force. Exit codes: 0 done (or nothing to do); 1 a node failed or was skipped as a
    foreign drain; 2 bad usage or inventory.
    """
    from jueying_cli.actions.drain import ChangeResult, execute, plan_resumes

    ctx = open_context(nodes, inventory, ssh_config, connect_timeout)
    try:
        plan = plan_resumes(ctx, [n.name for n in ctx.nodes], force=force)
        foreign = [c for changes in plan.changes.values() for c in changes
                   if c.action == "none" and c.before is not None and c.before.drain]
        rows = plan.preview() if dry_run else execute(
            ctx, plan, message="forced: not a jueying drain" if force else None)
        _finish(rows, None, json_output, "resume")
        failed = any(r.result == ChangeResult.FAILED for r in rows)
        raise typer.Exit(int(ExitCode.NODES_FAILED if failed or foreign else ExitCode.OK))
    finally:
        ctx.close()


def log(
    nodes: str | None = typer.Argument(None, metavar="[NODES]", help="Only these nodes (NodeSet syntax)."),
    limit: int = typer.Option(50, "-n", "--limit", min=1, metavar="N", help="Newest entries to show."),
    json_output: bool = typer.Option(False, "--json", help="Print the JSON envelope."),
    fmt: OutputFormat | None = common.FormatOpt,
    fields: list[str] | None = common.FieldsOpt,
    no_header: bool = common.NoHeaderOpt,
) -> None:
    """Show the audit log: every drain, resume and reason change jueying made or tried, with who, when, why,
    the state before and after, and the result (done, failed, or not_done/pending for an interrupted run)."""
    import dataclasses

    from jueying_cli.inventory.select import expand
    from jueying_cli.store.audit import AuditEntry

    entry_fields = [f.name for f in dataclasses.fields(AuditEntry)]
    out = common.output_choice(json_output, fmt, fields, no_header, entry_fields)
    store = common.open_store(readonly=True)
    try:
        if nodes:
            wanted = expand(nodes)
            entries = sorted((e for n in wanted for e in store.audit.log(n, limit)), key=lambda e: e.id or 0)[-limit:]
        else:
            entries = store.audit.log(None, limit)
    finally:
        store.close()
    if out.rows:
        from jueying_cli.render.json import to_jsonable

        common.print_rows(out, to_jsonable(entries), entry_fields)
        raise typer.Exit(int(ExitCode.OK))
    if out.json:
        from jueying_cli.render.json import envelope, print_json

        print_json(envelope("log", {"entries": entries}))
        raise typer.Exit(int(ExitCode.OK))
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
        say(f"{when} {e.actor} {e.action} {e.node} [{e.backend}] {e.result}: "
            f"{e.before_state or '?'} -> {e.after_state or '?'}"
            + (f"; reason: {e.reason}" if e.reason else "") + (f"; {e.message}" if e.message else ""))
    raise typer.Exit(int(ExitCode.OK))
