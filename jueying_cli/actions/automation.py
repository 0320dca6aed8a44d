"""`jueying check --drain/--resume`: act on confirmed results, inside the cap, and say what was done.

Automatic drains carry the reason prefix `jueying: auto:`; --resume only ever resumes those, never a drain an
operator made (even with `jueying drain`), and only after --resume-after clean runs in a row.
"""

from __future__ import annotations

from typing import Any

from jueying_cli.cli import common

AUTO_PREFIX = "jueying: auto:"
_DRAIN_ACTIONS = ("drain", "reset_gpu", "reboot", "rma")


def automate(opts: common.FleetOptions, inventory: Any, selected: list[Any], findings: list[Any],
             results: list[Any], *, drain: bool, resume: bool, resume_after: int) -> list[dict[str, Any]]:
    from jueying_cli.actions.cap import cap_for
    from jueying_cli.actions.drain import apply, plan_drain, plan_resume
    from jueying_cli.checks import Level
    from jueying_cli.scheduler import all_states, schedulers_for
    from jueying_cli.scheduler.base import jueying_reason
    from jueying_cli.store import Store

    answered = {r.name for r in results if r.facts is not None}
    store = Store()
    transport = common.make_transport(opts)
    actions: list[dict[str, Any]] = []
    try:
        clean = {name: not any(f.result.node == name and f.result.level != Level.OK for f in findings)
                 for name in answered}
        clean_runs = store.flap.track_clean(clean)
        schedulers = schedulers_for(inventory, selected, transport, store)
        causes: dict[str, Any] = {}
        for f in findings:
            r = f.result
            if f.confirmed and r.level == Level.CRITICAL and str(r.action) in _DRAIN_ACTIONS:
                causes.setdefault(r.node, r)
        budget = None
        if drain and causes:
            cap = cap_for(inventory, all_states(schedulers, inventory))
            budget = max(0, cap.limit - cap.unavailable)
        for scheduler, names in schedulers.values():
            states = scheduler.states(names)
            if drain:
                wanted = [n for n in names if n in causes]
                changes = [c for c in plan_drain(wanted, states, update_reason=False) if c.action == "drain"]
                allowed, held = changes[:budget or 0], changes[budget or 0:]
                budget = (budget or 0) - len(allowed)
                for change in held:
                    actions.append({"node": change.node, "action": "drain", "result": "held back",
                                    "note": "max_unavailable reached: automation never drains past it"})
                for change in allowed:
                    cause = causes[change.node]
                    gpu = f" gpu{cause.gpu}" if cause.gpu is not None else ""
                    reason = jueying_reason(f"auto: {cause.check} {cause.code}{gpu}", "jueying-check")
                    report = apply([change], scheduler, store, reason=reason, actor="jueying-check",
                                   message=cause.message)
                    ok = change.node in report.done
                    actions.append({"node": change.node, "action": "drain", "result": "drained" if ok else "failed",
                                    "note": reason if ok else report.failed.get(change.node, "")})
            if resume:
                candidates = [n for n in names if states.get(n) is not None and states[n].drain
                              and (states[n].reason or "").startswith(AUTO_PREFIX)]
                ready = [n for n in candidates if clean_runs.get(n, 0) >= resume_after]
                for n in candidates:
                    if n not in ready and n in answered:
                        actions.append({"node": n, "action": "resume", "result": "waiting",
                                        "note": f"{clean_runs.get(n, 0)}/{resume_after} clean runs"})
                changes = [c for c in plan_resume(ready, states, force=False) if c.action == "resume"]
                if changes:
                    report = apply(changes, scheduler, store, reason=None, actor="jueying-check",
                                   message=f"{resume_after} clean check runs")
                    for c in changes:
                        ok = c.node in report.done
                        actions.append({"node": c.node, "action": "resume", "result": "resumed" if ok else "failed",
                                        "note": f"after {clean_runs.get(c.node, 0)} clean runs" if ok
                                        else report.failed.get(c.node, "")})
    finally:
        transport.close()
        store.close()
    return actions
