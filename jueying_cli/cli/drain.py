"""`jueying drain`, `jueying resume` and `jueying log`: take nodes out of service and back, with an audit trail."""

from __future__ import annotations

import sys
import time
from typing import Any

import typer

from jueying_cli.cli import common
from jueying_cli.errors import ExitCode


def register(app: typer.Typer) -> None:
    app.command("drain")(drain)
    app.command("resume")(resume)
    app.command("log")(log)
    app.command("failover")(failover)


class _Context:
    """Inventory, nodes, transport, store and schedulers for one drain/resume run."""

    def __init__(self, nodes_arg: str, inventory: str | None, ssh_config: str | None, connect_timeout: float) -> None:
        from jueying_cli.actions.drain import reconcile
        from jueying_cli.scheduler import schedulers_for
        from jueying_cli.store import Store

        opts = common.FleetOptions(inventory, nodes_arg, None, 64, connect_timeout, None, False, ssh_config)
        self.inventory, self.nodes = common.select(opts)
        self.transport = common.make_transport(opts)
        self.store = Store()
        self.schedulers = schedulers_for(self.inventory, self.nodes, self.transport, self.store)
        settled = reconcile(self.store, {name: s for name, (s, _) in self.schedulers.items()})
        if settled:
            sys.stderr.write(f"jueying: settled {settled} audit entr{'y' if settled == 1 else 'ies'} left pending "
                             "by an interrupted run (see jueying log)\n")

    def close(self) -> None:
        self.store.close()
        self.transport.close()


def _print_changes(report_rows: list[dict[str, Any]]) -> None:
    for row in report_rows:
        sys.stdout.write(f"{row['node']}: {row['result']}: {row['note']}\n")
    sys.stdout.flush()


def drain(
    nodes: str = typer.Argument(..., metavar="NODES", help="Nodes to drain (NodeSet syntax: gpu[001-004], @group)."),
    reason: str | None = typer.Option(None, "-r", "--reason",
                                      help="Why (required); stored as 'jueying: REASON [you]'."),
    update_reason: bool = typer.Option(False, "--update-reason", help="Replace the reason of nodes already drained."),
    wait: bool = typer.Option(False, "--wait", help="Wait until no job runs on the nodes."),
    timeout: float = typer.Option(3600.0, "--timeout", min=1.0, help="Seconds --wait may wait (default 3600)."),
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
    from jueying_cli.actions.cap import cap_for
    from jueying_cli.actions.drain import apply, plan_drain, require_reason, wait_drained
    from jueying_cli.scheduler import all_states

    full_reason = require_reason(reason)
    ctx = _Context(nodes, inventory, ssh_config, connect_timeout)
    try:
        rows: list[dict[str, Any]] = []
        exit_code = ExitCode.OK
        drained_names: list[str] = []
        plans = {}
        for backend, (scheduler, names) in ctx.schedulers.items():
            plans[backend] = plan_drain(names, scheduler.states(names), update_reason=update_reason)
        adding = sum(1 for changes in plans.values() for c in changes if c.action == "drain")
        cap = cap_for(ctx.inventory, all_states(ctx.schedulers, ctx.inventory))
        if adding and not force:
            cap.check(adding)
        for backend, changes in plans.items():
            scheduler = ctx.schedulers[backend][0]
            if dry_run:
                rows += [{"node": c.node, "backend": backend, "result": "would " + c.action if c.action != "none"
                          else "unchanged", "note": c.note} for c in changes]
                continue
            report = apply(changes, scheduler, ctx.store, reason=full_reason,
                           message="forced past max_unavailable" if force and adding and
                           cap.unavailable + adding > cap.limit else None)
            for c in changes:
                if c.node in report.failed:
                    rows.append({"node": c.node, "backend": backend, "result": "failed", "note": report.failed[c.node]})
                    exit_code = ExitCode.NODES_FAILED
                elif c.action == "none":
                    rows.append({"node": c.node, "backend": backend, "result": "unchanged", "note": c.note})
                    if c.before is not None and c.before.drain:
                        drained_names.append(c.node)
                else:
                    after = report.after.get(c.node)
                    rows.append({"node": c.node, "backend": backend, "result": "drained" if c.action == "drain"
                                 else "reason updated", "note": f"{after.state if after else '?'}: {full_reason}"})
                    drained_names.append(c.node)
        wait_result = None
        if wait and not dry_run and drained_names:
            for _backend, (scheduler, names) in ctx.schedulers.items():
                mine = [n for n in names if n in drained_names]
                if not mine:
                    continue
                if not json_output:
                    sys.stderr.write(f"jueying: waiting up to {timeout:g} s for jobs on {len(mine)} node(s) to end\n")
                wait_result = wait_drained(scheduler, mine, timeout_s=timeout)
                if wait_result.outcome != "drained":
                    break
        _finish(rows, wait_result, json_output, "drain", cap)
        if wait_result is not None and wait_result.outcome == "aborted":
            raise typer.Exit(int(ExitCode.INTERRUPTED))
        if wait_result is not None and wait_result.outcome == "timeout":
            exit_code = ExitCode.NODES_FAILED
        raise typer.Exit(int(exit_code))
    finally:
        ctx.close()


def _finish(rows: list[dict[str, Any]], wait_result: Any, json_output: bool, command: str, cap: Any = None) -> None:
    if json_output:
        from jueying_cli.render.json import dumps, envelope

        data: dict[str, Any] = {"nodes": rows}
        if cap is not None:
            data["cap"] = {"max_unavailable": cap.limit, "unavailable_before": cap.unavailable, "total": cap.total}
        if wait_result is not None:
            data["wait"] = {"outcome": wait_result.outcome, "waited_s": round(wait_result.waited_s, 1),
                            "blocking_jobs": {n: list(j) for n, j in wait_result.blocking.items()}}
        failed = [r for r in rows if r["result"] == "failed"]
        print(dumps(envelope(command, data, status="ok" if not failed else "partial",
                             errors=[{"node": r["node"], "status": "failed", "message": r["note"]} for r in failed])))
        return
    _print_changes(rows)
    if wait_result is not None:
        if wait_result.outcome == "drained":
            print(f"drained: no jobs left after {wait_result.waited_s:.0f} s")
        else:
            what = "timed out" if wait_result.outcome == "timeout" else "aborted (the nodes stay drained)"
            print(f"wait {what} after {wait_result.waited_s:.0f} s; still running:")
            for node, jobs in sorted(wait_result.blocking.items()):
                print(f"  {node}: {', '.join(jobs) if jobs else '(completing)'}")


def resume(
    nodes: str = typer.Argument(..., metavar="NODES", help="Nodes to put back in service (NodeSet syntax)."),
    force: bool = typer.Option(False, "--force", help="Also resume drains jueying did not write."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; change nothing."),
    json_output: bool = typer.Option(False, "--json", help="Print the JSON envelope."),
    inventory: str | None = common.InventoryOpt,
    connect_timeout: float = common.ConnectTimeoutOpt,
    ssh_config: str | None = common.SshConfigOpt,
) -> None:
    """Put drained nodes back in service. Only drains jueying wrote (reason 'jueying: ...') are resumed;
    anything else needs --force. Exit codes: 0 done (or nothing to do); 1 a node failed or was skipped as a
    foreign drain; 2 bad usage or inventory.
    """
    from jueying_cli.actions.drain import apply, plan_resume

    ctx = _Context(nodes, inventory, ssh_config, connect_timeout)
    try:
        rows: list[dict[str, Any]] = []
        exit_code = ExitCode.OK
        for backend, (scheduler, names) in ctx.schedulers.items():
            changes = plan_resume(names, scheduler.states(names), force=force)
            foreign = [c for c in changes if c.action == "none" and c.before is not None and c.before.drain]
            if foreign:
                exit_code = ExitCode.NODES_FAILED
            if dry_run:
                rows += [{"node": c.node, "backend": backend, "result": "would resume" if c.action == "resume"
                          else "unchanged", "note": c.note} for c in changes]
                continue
            report = apply(changes, scheduler, ctx.store, reason=None,
                           message="forced: not a jueying drain" if force else None)
            for c in changes:
                if c.node in report.failed:
                    rows.append({"node": c.node, "backend": backend, "result": "failed", "note": report.failed[c.node]})
                    exit_code = ExitCode.NODES_FAILED
                elif c.action == "none":
                    rows.append({"node": c.node, "backend": backend, "result": "unchanged", "note": c.note})
                else:
                    after = report.after.get(c.node)
                    was = c.before.reason if c.before else ""
                    rows.append({"node": c.node, "backend": backend, "result": "resumed",
                                 "note": f"{after.state if after else '?'} (was: {was})"})
        _finish(rows, None, json_output, "resume")
        raise typer.Exit(int(exit_code))
    finally:
        ctx.close()


def log(
    nodes: str | None = typer.Argument(None, metavar="[NODES]", help="Only these nodes (NodeSet syntax)."),
    limit: int = typer.Option(50, "-n", "--limit", min=1, help="Newest entries to show."),
    json_output: bool = typer.Option(False, "--json", help="Print the JSON envelope."),
) -> None:
    """Show the audit log: every drain, resume and reason change jueying made or tried, with who, when, why,
    the state before and after, and the result (done, failed, or not_done/pending for an interrupted run)."""
    from ClusterShell.NodeSet import NodeSet

    from jueying_cli.store import Store

    store = Store()
    try:
        if nodes:
            wanted = list(NodeSet(nodes))
            entries = sorted((e for n in wanted for e in store.audit.log(n, limit)), key=lambda e: e.id or 0)[-limit:]
        else:
            entries = store.audit.log(None, limit)
    finally:
        store.close()
    if json_output:
        from jueying_cli.render.json import dumps, envelope

        print(dumps(envelope("log", {"entries": entries})))
        raise typer.Exit(int(ExitCode.OK))
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
        print(f"{when} {e.actor} {e.action} {e.node} [{e.backend}] {e.result}: "
              f"{e.before_state or '?'} -> {e.after_state or '?'}"
              + (f"; reason: {e.reason}" if e.reason else "") + (f"; {e.message}" if e.message else ""))
    raise typer.Exit(int(ExitCode.OK))


def failover(
    node: str = typer.Argument(..., metavar="NODE", help="The node that failed."),
    spare: str | None = typer.Option(None, "--spare", help="Use this spare (default: the first healthy one)."),
    playbook: str | None = typer.Option(None, "--playbook", help="Failover steps (default: "
                                        "playbooks/failover/<role>.yaml beside the inventory, or in this directory)."),
    reason: str | None = typer.Option(None, "-r", "--reason", help="Why (goes into the drain reason and the log)."),
    yes: bool = typer.Option(False, "-y", "--yes", help="Do not ask before acting."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan and the chosen spare; change nothing."),
    force: bool = typer.Option(False, "--force", help="Drain the failed node even past max_unavailable."),
    checks_file: str | None = typer.Option(None, "--checks", envvar="JUEYING_CHECKS",
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
    from jueying_cli.actions.failover import describe_plan, find_playbook, load_playbook, spare_candidates
    from jueying_cli.errors import BadInputError

    ctx = _Context(node, inventory, ssh_config, connect_timeout)
    try:
        if len(ctx.nodes) != 1:
            raise BadInputError("failover takes exactly one node", field="NODE")
        failed = ctx.nodes[0]
        role = str(failed.vars.get("role") or "compute")
        book = load_playbook(find_playbook(playbook, role, ctx.inventory))
        candidates, rejected = spare_candidates(ctx.inventory, failed)
        if spare is not None:
            if spare not in {c.name for c in candidates}:
                why = dict(rejected).get(spare, "not a spare in the same spare_pool")
                raise BadInputError(f"{spare} cannot replace {failed.name}: {why}", field="--spare")
            candidates = [c for c in candidates if c.name == spare]
        verdicts = _judge_spares(ctx, candidates, failed, checks_file, connect_timeout)
        chosen = next((c for c in candidates if verdicts.get(c.name) is None), None)
        rows = [{"spare": n, "verdict": why} for n, why in rejected] + [
            {"spare": c.name, "verdict": verdicts.get(c.name) or "healthy"} for c in candidates]
        if chosen is None:
            _failover_out(json_output, failed.name, None, "no_spare", "no healthy spare available", rows, [], [])
            raise typer.Exit(int(ExitCode.NODES_FAILED))
        plan = describe_plan(book, failed.name, chosen.name)
        if dry_run:
            _failover_out(json_output, failed.name, chosen.name, "planned", "dry run: nothing changed", rows, plan, [])
            raise typer.Exit(int(ExitCode.OK))
        if not yes:
            if not sys.stdin.isatty():
                raise BadInputError("refusing to act without a terminal to confirm on: add --yes", field="--yes")
            print("\n".join([f"failover {failed.name} -> {chosen.name} ({book.source}):", *plan]))
            if not typer.confirm("go ahead?", default=False):
                raise typer.Exit(int(ExitCode.OK))
        report = _do_failover(ctx, failed, chosen, book, reason, force, json_output)
        _failover_out(json_output, failed.name, chosen.name, report.result, report.left, rows, plan,
                      [{"phase": r.phase, "step": r.step.name, "target": r.target, "status": r.outcome.status,
                        "rc": r.outcome.rc, "error": r.outcome.error} for r in report.records])
        raise typer.Exit(int(ExitCode.OK if report.result == "done" else ExitCode.NODES_FAILED))
    finally:
        ctx.close()


def _judge_spares(ctx: _Context, candidates: list[Any], failed: Any, checks_file: str | None,
                  connect_timeout: float) -> dict[str, str | None]:
    """None for a healthy spare, else why not: drained, unreachable, wrong GPUs, or a CRITICAL check."""
    from pathlib import Path

    from jueying_cli.checks import Level, builtin_config, load_check_config, run_checks
    from jueying_cli.collect.oneshot import collect_nodes
    from jueying_cli.scheduler import schedulers_for

    verdicts: dict[str, str | None] = {}
    for scheduler, names in schedulers_for(ctx.inventory, candidates, ctx.transport, ctx.store).values():
        for name, state in scheduler.states(names).items():
            if state.drain or state.state == "down":
                verdicts[name] = f"{state.state}: {state.reason or ''}".strip()
    live = [c for c in candidates if c.name not in verdicts]
    if not live:
        return verdicts
    ctx.transport.prepare(live)
    results, _ = collect_nodes(ctx.transport, live, fanout=64, deadline_s=connect_timeout + 40)
    config = load_check_config(Path(checks_file)) if checks_file else builtin_config()
    answered = [(r.node, r.facts) for r in results if r.facts is not None]
    findings = run_checks(answered, config, ctx.inventory, now=time.time())
    model = failed.vars.get("gpu_model")
    for r in results:
        if r.facts is None:
            verdicts[r.name] = f"{r.outcome.status}: {r.outcome.error}"
            continue
        critical = [f for f in findings if f.node == r.name and f.level == Level.CRITICAL]
        models = {g.name or "?" for g in r.facts.gpus if not g.lost}
        if critical:
            verdicts[r.name] = f"{critical[0].check} CRITICAL: {critical[0].message}"
        elif model and models and models != {model}:
            verdicts[r.name] = f"GPUs are {', '.join(sorted(models))}, not {model}"
        else:
            verdicts[r.name] = None
    return verdicts


def _do_failover(ctx: _Context, failed: Any, spare: Any, book: Any, reason: str | None, force: bool,
                 json_output: bool) -> Any:
    from jueying_cli.actions.cap import cap_for
    from jueying_cli.actions.drain import apply, plan_drain
    from jueying_cli.actions.failover import run_steps
    from jueying_cli.scheduler import all_states
    from jueying_cli.scheduler.base import jueying_reason
    from jueying_cli.store import AuditEntry, Settlement

    scheduler = next(s for s, names in ctx.schedulers.values() if failed.name in names)
    full_reason = jueying_reason(f"failover to {spare.name}" + (f": {reason}" if reason else ""))
    changes = plan_drain([failed.name], scheduler.states([failed.name]), update_reason=False)
    if any(c.action == "drain" for c in changes) and not force:
        cap_for(ctx.inventory, all_states(ctx.schedulers, ctx.inventory)).check(1)
    entry = ctx.store.audit.intent([AuditEntry(at=time.time(), actor=_operator(), action="failover",
                                               node=failed.name, backend=scheduler.name, reason=full_reason,
                                               message=f"to {spare.name} ({book.source})")])[0]
    drain_report = apply(changes, scheduler, ctx.store, reason=full_reason, message=f"failover to {spare.name}")
    if drain_report.failed:
        ctx.store.audit.finish([Settlement(entry, "failed", None, None, f"drain failed: {drain_report.failed}")])
        from jueying_cli.errors import JueyingError

        raise JueyingError(f"could not drain {failed.name}: {drain_report.failed[failed.name]}; nothing else done")

    def progress(record: Any) -> None:
        if not json_output:
            sys.stderr.write(f"jueying: {record.phase} '{record.step.name}' on {record.target}: "
                             f"{record.outcome.status}\n")

    report = run_steps(book, failed, spare, ctx.transport, on_record=progress)
    ctx.store.audit.finish([Settlement(entry, "done" if report.result == "done" else "failed", report.result, None,
                                      report.left)])
    return report


def _operator() -> str:
    from jueying_cli.scheduler.base import operator

    return operator()


def _failover_out(json_output: bool, failed: str, spare: str | None, result: str, left: str,
                  spares: list[dict[str, Any]], plan: list[str], steps: list[dict[str, Any]]) -> None:
    if json_output:
        from jueying_cli.render.json import dumps, envelope

        print(dumps(envelope("failover", {"failed": failed, "spare": spare, "result": result, "left": left,
                                          "spares": spares, "plan": plan, "steps": steps},
                             status="ok" if result in ("done", "planned") else "error")))
        return
    for row in spares:
        print(f"spare {row['spare']}: {row['verdict']}")
    if plan:
        print(f"plan ({failed} -> {spare}):")
        print("\n".join(plan))
    print(f"failover {result}: {left}")
