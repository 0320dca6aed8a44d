"""`jueying drill validate|run|list|show|recover`: failure drills from a playbook, with a journal."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from jueying_cli.cli import common
from jueying_cli.errors import ExitCode
from jueying_cli.render.text import say

if TYPE_CHECKING:
    from jueying_cli.actions.context import ActionContext
    from jueying_cli.drills.playbook import Playbook

drill_app = typer.Typer(
    name="drill", no_args_is_help=True, rich_markup_mode=None,
    help="Failure drills: inject a fault, measure detection, always roll back, keep a journal. Exit codes: 0 "
    "objectives met and rollback done; 1 the drill failed, deviated or missed an objective; 2 bad playbook or "
    "usage; 3 aborted by a guard (rollback done); 4 the rollback failed: a person must act (see the journal); "
    "130 interrupted (after the rollback).")

VarOpt = typer.Option(None, "--var", metavar="NAME=VALUE",
                      help="Set a variable the playbook declares under vars (repeatable).")


def register(app: typer.Typer) -> None:
    app.add_typer(drill_app, name="drill")


def _vars(values: list[str] | None) -> dict[str, str]:
    from jueying_cli.errors import BadInputError

    out: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise BadInputError(f"{item!r} is not NAME=VALUE", field="--var")
        out[name] = value
    return out


def _load(file: str, var: list[str] | None) -> Playbook:
    from jueying_cli.drills.playbook import PlaybookError, load_playbook
    from jueying_cli.errors import BadInputError

    path = Path(file)
    if not path.is_file():
        raise BadInputError("no such playbook file", path=file, field="FILE")
    try:
        return load_playbook(path, _vars(var))
    except PlaybookError as exc:  # one line per problem (main() would print the message as one line)
        say("jueying: playbook refused, nothing was run:", err=True)
        for problem in exc.problems:
            say(f"  {problem}", err=True)
        raise typer.Exit(int(ExitCode.BAD_INPUT)) from None


@drill_app.command("validate")
def validate(
    file: str = typer.Argument(..., metavar="FILE", help="The drill playbook (YAML)."),
    var: list[str] | None = VarOpt,
) -> None:
    """Check a playbook whole, changing nothing: every problem is listed as file:line: field: message.
    Exit codes: 0 valid; 2 invalid."""
    book = _load(file, var)
    steps = len(book.method)
    say(f"{book.source}: drill {book.name} is valid: {len(book.targets)} target(s), {steps} step(s), "
        f"{len(book.rollback_steps)} rollback step(s), rollback {book.strategy}")
    raise typer.Exit(int(ExitCode.OK))


def _context(inventory: str | None, ssh_config: str | None, connect_timeout: float) -> ActionContext:
    from jueying_cli.actions.context import ActionContext

    opts = common.FleetOptions(inventory, None, None, 64, connect_timeout, None, False, ssh_config)
    inv, nodes = common.select(opts)
    transport = common.make_transport(opts)
    store = common.open_store()
    try:
        return ActionContext.open(inv, nodes, transport, store)
    except BaseException:
        store.close()
        transport.close()
        raise


def exit_code(journal: dict[str, Any]) -> int:
    """4 the rollback failed (wins over everything: a person must act); 0 completed (or skipped) with the
    rollback done; 3 aborted by a guard and rolled back; 130 interrupted and rolled back; 1 anything else."""
    from jueying_cli.vocab import DrillStatus, RollbackStatus

    if journal["rollback_status"] == RollbackStatus.FAILED:
        return int(ExitCode.DRILL_ROLLBACK_FAILED)
    rolled_back = journal["rollback_status"] in (RollbackStatus.SUCCEEDED, RollbackStatus.NOT_NEEDED,
                                                 RollbackStatus.SKIPPED)
    if journal["status"] in (DrillStatus.COMPLETED, DrillStatus.SKIPPED) and rolled_back:
        return int(ExitCode.OK)
    if journal["status"] == DrillStatus.INTERRUPTED and rolled_back:
        return int(ExitCode.INTERRUPTED)
    if journal["status"] == DrillStatus.ABORTED and rolled_back:
        return int(ExitCode.DRILL_ABORTED)
    return int(ExitCode.NODES_FAILED)


def _print_journal(journal: dict[str, Any], json_output: bool, command: str) -> None:
    from jueying_cli.drills.report import text_lines

    if json_output:
        from jueying_cli.render.json import envelope, print_json

        code = exit_code(journal)
        print_json(envelope(command, journal, status="ok" if code == 0 else "error"))
        return
    for line in text_lines(journal):
        say(line)


def _emit(json_output: bool) -> Any:
    def emit(message: str) -> None:
        say(f"jueying drill: {message}", err=True)
    return emit


@drill_app.command("run")
def run(
    file: str = typer.Argument(..., metavar="FILE", help="The drill playbook (YAML)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve targets, read every probe once, print the "
                                 "plan; change nothing and write no journal."),
    yes: bool = typer.Option(False, "-y", "--yes", help="Do not ask before acting (required without a terminal)."),
    scheduled: bool = typer.Option(False, "--scheduled", help="For cron: run only inside the playbook's "
                                   "schedule.window (else do nothing, exit 0) and never beside another scheduled "
                                   "drill (exit 1); implies --yes."),
    var: list[str] | None = VarOpt,
    json_output: bool = typer.Option(False, "--json", help="Print the journal in the JSON envelope."),
    inventory: str | None = common.InventoryOpt,
    connect_timeout: float = common.ConnectTimeoutOpt,
    ssh_config: str | None = common.SshConfigOpt,
) -> None:
    """Run a drill: check guards and steady state, run the method, always roll back what started (also on
    Ctrl-C, SIGTERM, a guard abort or an error), report timings against objectives, keep the journal."""
    from jueying_cli.drills.runner import DrillRunner
    from jueying_cli.errors import BadInputError

    book = _load(file, var)
    if scheduled:
        import time

        if book.schedule is None:
            raise BadInputError("--scheduled needs schedule.window in the playbook", path=book.source,
                                field="schedule")
        if not book.schedule.allows(time.time()):
            say(f"drill {book.name}: outside its schedule.window: nothing done")
            raise typer.Exit(int(ExitCode.OK))
        yes = True
    ctx = _context(inventory, ssh_config, connect_timeout)
    scheduled_lock = None
    try:
        if scheduled:
            from jueying_cli.store.lock import RunLock

            scheduled_lock = RunLock(ctx.store.drill_locks().directory / "scheduled.lock").acquire()
        runner = DrillRunner(book, ctx, emit=_emit(json_output))
        if dry_run or not yes:
            plan = runner.plan()
            if dry_run:
                _print_plan(plan, json_output)
                raise typer.Exit(int(ExitCode.OK))
            if not sys.stdin.isatty():
                raise BadInputError("refusing to run a drill without a terminal to confirm on: add --yes",
                                    field="--yes")
            _print_plan(plan, False)
            if not typer.confirm("run this drill?", default=False):
                raise typer.Exit(int(ExitCode.OK))
            runner = DrillRunner(book, ctx, emit=_emit(json_output))
        journal = runner.run()
        _print_journal(journal, json_output, "drill run")
        raise typer.Exit(exit_code(journal))
    finally:
        if scheduled_lock is not None:
            scheduled_lock.release()
        ctx.close()


def _print_plan(plan: dict[str, Any], json_output: bool) -> None:
    if json_output:
        from jueying_cli.render.json import envelope, print_json

        print_json(envelope("drill run", plan))
        return
    say(f"drill {plan['drill']} (dry run: nothing changed)" if plan.get("dry_run") else f"drill {plan['drill']}")
    for name, t in plan["targets_resolved"].items():
        seed = f", seed {t['seed']}" if t.get("seed") is not None else ""
        left = f"; left out as unavailable: {','.join(t['left_out_unavailable'])}" if t["left_out_unavailable"] else ""
        say(f"target {name}: {','.join(t['nodes']) or '(empty)'} ({t['mode']}{seed}){left}")
    if plan.get("guard"):
        say(f"guard: {plan['guard']}")
    for p in plan["probes"]:
        state = "holds" if p["tolerance_met"] else "does NOT hold"
        say(f"probe {p['name']} ({p['probe']}): {p['value']!r} {state}" + (f": {p['error']}" if p["error"] else ""))
    for i, step in enumerate(plan["steps"], start=1):
        say(f"{i}. {step}")
    for step in plan["rollback"]:
        say(f"rollback: {step}")


@drill_app.command("list")
def list_runs(
    limit: int = typer.Option(20, "-n", "--limit", min=1, metavar="N", help="Newest runs to show."),
    json_output: bool = typer.Option(False, "--json", help="Print the JSON envelope."),
) -> None:
    """Past runs, newest first: run id, drill, targets, status, rollback, timings against objectives."""
    store = common.open_store(readonly=True)
    try:
        rows = store.drills.latest(limit)
    finally:
        store.close()
    if json_output:
        from jueying_cli.render.json import envelope, print_json

        print_json(envelope("drill list", {"runs": [
            {"run_id": r.run_id, "drill": r.drill, "start": r.journal.get("start"), "targets": r.targets,
             "status": r.status, "rollback_status": r.rollback_status, "objectives": r.journal.get("objectives"),
             "pid": r.run_pid, "host": r.run_host} for r in rows]}))
        raise typer.Exit(int(ExitCode.OK))
    for r in rows:
        objectives = ", ".join(f"{k} {v['value_s'] if v['value_s'] is not None else '-'}/{v['limit_s']:g}s "
                               f"{'met' if v['met'] else 'MISSED'}"
                               for k, v in (r.journal.get("objectives") or {}).items())
        say(f"{r.run_id}  {r.drill}  {r.journal.get('start')}  {r.targets}  {r.status}  rollback {r.rollback_status}"
            + (f"  {objectives}" if objectives else ""))
    raise typer.Exit(int(ExitCode.OK))


def _journal(run_id: str) -> dict[str, Any]:
    from jueying_cli.errors import BadInputError

    store = common.open_store(readonly=True)
    try:
        row = store.drills.get(run_id)
    finally:
        store.close()
    if row is None:
        raise BadInputError(f"no drill run {run_id!r} in the journal (see jueying drill list)", field="RUN")
    return row.journal


@drill_app.command("show")
def show(
    run_id: str = typer.Argument(..., metavar="RUN", help="The run id (jueying drill list)."),
    json_output: bool = typer.Option(False, "--json", help="The whole journal in the JSON envelope."),
    markdown: bool = typer.Option(False, "--markdown", help="The report as Markdown."),
) -> None:
    """One run's journal as a report. Exit code 0, or 2 for an unknown run."""
    journal = _journal(run_id)
    if markdown:
        from jueying_cli.drills.report import markdown as to_markdown
        from jueying_cli.render.text import safe_block

        sys.stdout.write(safe_block(to_markdown(journal)))
        raise typer.Exit(int(ExitCode.OK))
    _print_journal(journal, json_output, "drill show")
    raise typer.Exit(int(ExitCode.OK))


@drill_app.command("recover")
def recover(
    run_id: str = typer.Argument(..., metavar="RUN", help="The run id (jueying drill list)."),
    force: bool = typer.Option(False, "--force", help="Recover a run started on another host (its locks "
                               "cannot be seen from here: make sure that host and run are gone)."),
    json_output: bool = typer.Option(False, "--json", help="Print the journal in the JSON envelope."),
    inventory: str | None = common.InventoryOpt,
    connect_timeout: float = common.ConnectTimeoutOpt,
    ssh_config: str | None = common.SshConfigOpt,
) -> None:
    """Finish the rollback of a run that was killed: undo, newest first, every action its journal says
    started and was not undone, replaying the playbook text kept in the journal. Refused while the run is
    alive. Exit codes: 0 rolled back (or nothing to do); 1 the run still holds its nodes; 2 unknown run;
    3 the run had been aborted by a guard (now rolled back); 4 an undo failed: a person must act."""
    from jueying_cli.drills.playbook import parse_playbook
    from jueying_cli.drills.runner import recover as recover_run
    from jueying_cli.vocab import DrillStatus, RollbackStatus
    from jueying_cli.yamlfile import load_yaml_text

    journal = _journal(run_id)
    if journal["status"] != DrillStatus.RUNNING and journal["rollback_status"] in (
            RollbackStatus.SUCCEEDED, RollbackStatus.NOT_NEEDED, RollbackStatus.SKIPPED):
        say(f"drill run {run_id} ended {journal['status']}, rollback {journal['rollback_status']}: nothing to recover")
        raise typer.Exit(int(ExitCode.OK))
    import socket

    if journal["host"] != socket.gethostname() and not force:
        from jueying_cli.errors import JueyingError

        raise JueyingError(f"drill run {run_id} was started on {journal['host']} (pid {journal['pid']}), whose "
                           "locks this host cannot see: recover it there, or add --force once that run is "
                           "surely gone")
    doc = load_yaml_text(journal["playbook_text"], journal["drill"]["source"])
    book = parse_playbook(doc, journal["drill"]["source"], journal["playbook_text"], journal.get("vars") or {})
    ctx = _context(inventory, ssh_config, connect_timeout)
    try:
        result = recover_run(book, ctx, journal, emit=_emit(json_output))
        _print_journal(result, json_output, "drill recover")
        code = exit_code(result)
        raise typer.Exit(int(ExitCode.OK) if code == ExitCode.INTERRUPTED else code)
    finally:
        ctx.close()
