"""`jueying failover NODE`: replace a failed node by a healthy spare, with a plan shown first."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from jueying_cli.cli import common
from jueying_cli.cli.drain import open_context
from jueying_cli.errors import ExitCode
from jueying_cli.render.text import say

if TYPE_CHECKING:
    from jueying_cli.actions.failover.run import StepRecord


def register(app: typer.Typer) -> None:
    app.command("failover")(failover)


def failover(
    node: str = typer.Argument(..., metavar="NODE", help="The node that failed."),
    spare: str | None = typer.Option(None, "--spare", metavar="NODE",
                                     help="Use this spare (default: the first healthy one)."),
    playbook: str | None = typer.Option(None, "--playbook", metavar="FILE", help="Failover steps (default: "
                                        "playbooks/failover/<role>.yaml beside the inventory, or in this directory)."),
    reason: str | None = typer.Option(None, "-r", "--reason", metavar="TEXT",
                                      help="Why (goes into the drain reason and the log)."),
    yes: bool = typer.Option(False, "-y", "--yes", help="Do not ask before acting."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan and the chosen spare; change nothing."),
    force: bool = typer.Option(False, "--force", help="Drain the failed node even past max_unavailable."),
    checks_file: str | None = typer.Option(None, "--checks", envvar="JUEYING_CHECKS", metavar="FILE",
                                           help="Check set used to judge the spares."),
    json_output: bool = typer.Option(False, "--json", help="Print the JSON envelope."),
    inventory: str | None = common.InventoryOpt,
    connect_timeout: float = common.ConnectTimeoutOpt,
    ssh_config: str | None = common.SshConfigOpt,
) -> None:
    """Replace a failed node by a healthy spare from its spare pool (same GPU model and count, passing the
    health checks): drain it, run the promote steps of its role, verify, record. A plan is shown first
    (--yes to skip the question; without a terminal --yes is required). If a step or the verification fails,
    the steps done are undone in reverse order and the output says what state was left; the failed node
    stays drained. Exit codes: 0 done (or --dry-run); 1 rolled back, no healthy spare, or the cap refused;
    2 bad usage, inventory or playbook.
    """
    from jueying_cli.actions.failover.playbook import find_playbook, load_playbook
    from jueying_cli.actions.failover.run import FailoverRequest, describe_plan
    from jueying_cli.actions.failover.run import failover as run_failover
    from jueying_cli.actions.failover.spares import healthy_spare, judge_spares, spare_candidates
    from jueying_cli.checks import builtin_config, load_check_config
    from jueying_cli.errors import BadInputError

    ctx = open_context(node, inventory, ssh_config, connect_timeout)
    try:
        if len(ctx.nodes) != 1:
            raise BadInputError("failover takes exactly one node", field="NODE")
        failed = ctx.nodes[0]
        book = load_playbook(find_playbook(playbook, str(failed.vars.get("role") or "compute"), ctx.inventory))
        candidates, rejected = spare_candidates(ctx.inventory, failed)
        if spare is not None:
            if spare not in {c.name for c in candidates}:
                why = dict(rejected).get(spare, "not a spare in the same spare_pool")
                raise BadInputError(f"{spare} cannot replace {failed.name}: {why}", field="--spare")
            candidates = [c for c in candidates if c.name == spare]
        config = load_check_config(Path(checks_file)) if checks_file else builtin_config()
        verdicts = judge_spares(ctx, candidates, failed, config, connect_timeout_s=connect_timeout)
        chosen = healthy_spare(candidates, verdicts)
        rows = [{"spare": n, "verdict": why} for n, why in rejected] + [
            {"spare": c.name, "verdict": verdicts.get(c.name) or "healthy"} for c in candidates]
        if chosen is None:
            _out(json_output, failed.name, None, "no_spare", "no healthy spare available", rows, [], [])
            raise typer.Exit(int(ExitCode.NODES_FAILED))
        plan = describe_plan(book, failed.name, chosen.name)
        if dry_run:
            _out(json_output, failed.name, chosen.name, "planned", "dry run: nothing changed", rows, plan, [])
            raise typer.Exit(int(ExitCode.OK))
        if not yes:
            if not sys.stdin.isatty():
                raise BadInputError("refusing to act without a terminal to confirm on: add --yes", field="--yes")
            for line in [f"failover {failed.name} -> {chosen.name} ({book.source}):", *plan]:
                say(line)
            if not typer.confirm("go ahead?", default=False):
                raise typer.Exit(int(ExitCode.OK))

        def progress(record: StepRecord) -> None:
            if not json_output:
                say(f"jueying: {record.phase} '{record.step.name}' on {record.target}: {record.outcome.status}",
                    err=True)

        report = run_failover(ctx, FailoverRequest(failed, chosen, book, reason, force), on_record=progress)
        _out(json_output, failed.name, chosen.name, report.result, report.left, rows, plan,
             [{"phase": r.phase, "step": r.step.name, "target": r.target, "status": r.outcome.status,
               "rc": r.outcome.rc, "error": r.outcome.error} for r in report.records])
        raise typer.Exit(int(ExitCode.OK if report.result == "done" else ExitCode.NODES_FAILED))
    finally:
        ctx.close()


def _out(json_output: bool, failed: str, spare: str | None, result: str, left: str,
         spares: list[dict[str, str]], plan: list[str], steps: list[dict[str, object]]) -> None:
    if json_output:
        from jueying_cli.render.json import envelope, print_json

        print_json(envelope("failover", {"failed": failed, "spare": spare, "result": result, "left": left,
                                         "spares": spares, "plan": plan, "steps": steps},
                            status="ok" if result in ("done", "planned") else "error"))
        return
    for row in spares:
        say(f"spare {row['spare']}: {row['verdict']}")
    if plan:
        say(f"plan ({failed} -> {spare}):")
        for line in plan:
            say(line)
    say(f"failover {result}: {left}")
