"""clush -b style output: nodes with identical output and exit code grouped under one folded nodeset.

Plain text on purpose (no rich): command output must reach the terminal byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import IO

from jueying_cli.inventory.select import fold
from jueying_cli.outcome import Outcome
from jueying_cli.vocab import OutcomeStatus

RULE = "-" * 15


def print_gathered(outcomes: Iterable[Outcome], out: IO[str]) -> None:
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
        out.write(f"{RULE}\n{header}\n{RULE}\n")
        out.write(stdout if stdout.endswith("\n") or not stdout else stdout + "\n")


def print_prefixed(outcome: Outcome, out: IO[str], err: IO[str]) -> None:
    """--no-gather: every line as `node: line`, as it arrives."""
    for line in outcome.stdout.splitlines():
        out.write(f"{outcome.node}: {line}\n")
    for line in outcome.stderr.splitlines():
        err.write(f"{outcome.node}: {line}\n")
    out.flush()


def print_stderr_gathered(outcomes: Iterable[Outcome], err: IO[str]) -> None:
    groups: dict[str, list[str]] = {}
    for o in outcomes:
        if o.stderr:
            groups.setdefault(o.stderr, []).append(o.node)
    for text, nodes in groups.items():
        err.write(f"{fold(nodes)} (stderr):\n")
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
        lines.append(f"{status} ({len(group)}): {fold(o.node for o in group)}")
        for o in group[:limit_reasons]:
            lines.append(f"  {o.node}: {o.error or status}")
        if len(group) > limit_reasons:
            lines.append(f"  ... and {len(group) - limit_reasons} more (use --json for all)")
    return lines


def outcome_dict(o: Outcome) -> dict[str, object]:
    return {"node": o.node, "status": o.status, "rc": o.rc, "stdout": o.stdout, "stderr": o.stderr,
            "duration_s": round(o.duration_s, 4), "error": o.error, "truncated": o.truncated}


def jsonl(o: Outcome) -> str:
    return json.dumps(outcome_dict(o))
