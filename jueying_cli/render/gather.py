"""clush -b style output: nodes with identical output and exit code grouped under one folded nodeset.

Plain text on purpose (no rich). The command's own output is written as it came (`raw=True`: to a pipe or
a file, or with `jueying run --raw`), or with its control characters escaped (`raw=False`: on a terminal,
so a node's output cannot clear the screen, retitle the window or rewrite the lines above it; newlines
and tabs are kept). Headers, node names, errors and the summary are always made safe (render.text).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import IO

from jueying_cli.inventory.select import fold
from jueying_cli.outcome import Outcome
from jueying_cli.render.text import safe, safe_block
from jueying_cli.vocab import OutcomeStatus

RULE = "-" * 15


def _output(text: str, raw: bool) -> str:
    return text if raw else safe_block(text)


def print_gathered(outcomes: Iterable[Outcome], out: IO[str], *, raw: bool = True) -> None:
    """Groups of nodes that ran the command (ok, failed, or stopped part-way with what they had printed),
    largest group first."""
    groups: dict[tuple[str, int | None], list[str]] = {}
    for o in outcomes:
        if o.rc is None and not o.stdout:
            continue  # never ran, or printed nothing: listed in the summary, never as output
        groups.setdefault((o.stdout, o.rc), []).append(o.node)
    for (stdout, rc), nodes in sorted(groups.items(), key=lambda item: (-len(item[1]), item[1][0])):
        header = f"{fold(nodes)} ({len(nodes)})"
        if rc is None:
            header += " stopped before it ended"
        elif rc:
            header += f" exit code {rc}"
        out.write(f"{RULE}\n{safe(header)}\n{RULE}\n")
        text = _output(stdout, raw)
        out.write(text if text.endswith("\n") or not text else text + "\n")


def print_prefixed(outcome: Outcome, out: IO[str], err: IO[str], *, raw_out: bool = True,
                   raw_err: bool = True) -> None:
    """--no-gather: every line as `node: line`, as it arrives."""
    node = safe(outcome.node)
    for line in outcome.stdout.splitlines():
        out.write(f"{node}: {_output(line, raw_out)}\n")
    for line in outcome.stderr.splitlines():
        err.write(f"{node}: {_output(line, raw_err)}\n")
    out.flush()


def print_stderr_gathered(outcomes: Iterable[Outcome], err: IO[str], *, raw: bool = True) -> None:
    groups: dict[str, list[str]] = {}
    for o in outcomes:
        if o.stderr:
            groups.setdefault(o.stderr, []).append(o.node)
    for stderr, nodes in groups.items():
        err.write(f"{safe(fold(nodes))} (stderr):\n")
        text = _output(stderr, raw)
        err.write(text if text.endswith("\n") else text + "\n")


def summary_lines(outcomes: Mapping[str, Outcome], limit_reasons: int = 20) -> list[str]:
    """One line per non-ok status with the folded set, then each node's reason (up to a limit per status)."""
    by_status: dict[str, list[Outcome]] = {}
    for o in outcomes.values():
        by_status.setdefault(o.status, []).append(o)
    lines = []
    ok_count = len(by_status.get(OutcomeStatus.OK, []))
    lines.append(f"{ok_count}/{len(outcomes)} nodes ok")
    for status in tuple(OutcomeStatus):
        if status == OutcomeStatus.OK or status not in by_status:
            continue
        group = by_status[status]
        lines.append(f"{status} ({len(group)}): {safe(fold(o.node for o in group))}")
        for o in group[:limit_reasons]:
            lines.append(f"  {safe(o.node)}: {safe(o.error or status)}")
        if len(group) > limit_reasons:
            lines.append(f"  ... and {len(group) - limit_reasons} more (use --json for all)")
    return lines


def outcome_dict(o: Outcome) -> dict[str, object]:
    return {"node": o.node, "status": o.status, "rc": o.rc, "stdout": o.stdout, "stderr": o.stderr,
            "duration_s": round(o.duration_s, 4), "error": o.error, "truncated": o.truncated}


def jsonl(o: Outcome) -> str:
    return json.dumps(outcome_dict(o))
