"""A drill journal as a person reads it: plain lines for the terminal, or Markdown for a ticket. Pure
functions of the journal; the CLI makes every line safe before printing (render.text)."""

from __future__ import annotations

from typing import Any


def _secs(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f} s"


def summary_line(j: dict[str, Any]) -> str:
    met = [f"{k} {_secs(v['value_s'])} <= {_secs(v['limit_s'])}: {'met' if v['met'] else 'MISSED'}"
           for k, v in j.get("objectives", {}).items()]
    return (f"drill {j['drill']['name']} run {j['run_id']}: {j['status']}"
            + (" (deviated)" if j.get("deviated") else "") + f", rollback {j['rollback_status']}"
            + (f"; {'; '.join(met)}" if met else "")
            + (f"; stopped by: {j['aborted_by']}" if j.get("aborted_by") else ""))


def text_lines(j: dict[str, Any]) -> list[str]:
    lines = [summary_line(j),
             f"started {j['start']} by {j['operator']}@{j['host']}, took {_secs(j.get('duration'))}"]
    for name, t in j.get("targets_resolved", {}).items():
        seed = f" (seed {t['seed']})" if t.get("seed") is not None else ""
        lines.append(f"target {name}: {','.join(t['nodes']) or '(empty)'} [{t['mode']}{seed}]")
    for phase in ("preflight",):
        for r in j.get(phase, []):
            lines.append(f"preflight {r['name']}: {'ok' if r['tolerance_met'] else 'FAILED'} ({r['value']!r})")
    for phase, results in j.get("steady_states", {}).items():
        if phase == "during":
            results = [r for group in results for r in group["probes"]]
        for r in results:
            lines.append(f"steady {phase} {r['name']}: {'ok' if r['tolerance_met'] else 'FAILED'} ({r['value']!r})")
    for e in j.get("run", []):
        lines.append(f"step {e['name']}: {e['status']} {_secs(e.get('duration'))}"
                     + (f": {e['output']}" if e.get("output") else ""))
    for e in j.get("rollbacks", []):
        lines.append(f"rollback {e['name']}: {e['status']} {_secs(e.get('duration'))}"
                     + (f": {e['output']}" if e.get("output") else ""))
    for name, m in j.get("marks", {}).items():
        lines.append(f"mark {name}: {m['at']}")
    for name, value in j.get("timings", {}).items():
        lines.append(f"timing {name}: {_secs(value)}")
    for err in j.get("errors", []):
        lines.append(f"note: {err}")
    return lines


def markdown(j: dict[str, Any]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    out = [f"# Drill `{cell(j['drill']['name'])}` run `{cell(j['run_id'])}`", "",
           f"- **Status:** {cell(j['status'])}" + (" (deviated)" if j.get("deviated") else ""),
           f"- **Rollback:** {cell(j['rollback_status'])}",
           f"- **Started:** {cell(j['start'])} by {cell(j['operator'])} on {cell(j['host'])}; "
           f"duration {_secs(j.get('duration'))}",
           f"- **Playbook:** {cell(j['drill']['source'])} (sha256 `{j['drill']['sha256'][:16]}`)"]
    if j.get("aborted_by"):
        out.append(f"- **Stopped by:** {cell(j['aborted_by'])}")
    out += ["", "## Targets", "", "| target | nodes | pick | seed |", "|---|---|---|---|"]
    for name, t in j.get("targets_resolved", {}).items():
        out.append(f"| {cell(name)} | {cell(','.join(t['nodes']))} | {cell(t['mode'])} | {cell(t.get('seed'))} |")
    out += ["", "## Objectives", "", "| timing | measured | objective | met |", "|---|---|---|---|"]
    for name, o in j.get("objectives", {}).items():
        out.append(f"| {cell(name)} | {_secs(o['value_s'])} | {_secs(o['limit_s'])} | {'yes' if o['met'] else 'NO'} |")
    out += ["", "## Steps", "", "| phase | step | status | duration | output |", "|---|---|---|---|---|"]
    for e in [*j.get("run", []), *j.get("rollbacks", [])]:
        out.append(f"| {cell(e['phase'])} | {cell(e['name'])} | {cell(e['status'])} | {_secs(e.get('duration'))} "
                   f"| {cell(e.get('output') or '')} |")
    return "\n".join(out) + "\n"
