"""node_exporter textfile output for `jueying check --prometheus FILE`, written atomically.

node_exporter reads every *.prom file in its textfile directory on each scrape; writing a temporary file
in the same directory and renaming it means a scrape never sees half a file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def exposition(check_levels: Iterable[tuple[str, str, int]], node_levels: Mapping[str, int],
               node_states: Mapping[str, str], *, run_timestamp: float, duration_s: float, exit_code: int) -> str:
    """Text exposition format: per node and check the worst level (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN),
    per node the worst level, and the run's own timestamp, duration and exit code."""
    lines = [
        "# HELP jueying_check_level Worst level of a health check on a node (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).",
        "# TYPE jueying_check_level gauge",
    ]
    for node, check, level in sorted(check_levels):
        lines.append(f"jueying_check_level{_labels({'node': node, 'check': check})} {level}")
    lines += [
        "# HELP jueying_node_level Worst level of all checks on a node (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).",
        "# TYPE jueying_node_level gauge",
    ]
    for node, level in sorted(node_levels.items()):
        lines.append(f"jueying_node_level{_labels({'node': node, 'state': node_states.get(node, '')})} {level}")
    lines += [
        "# HELP jueying_check_last_run_timestamp_seconds When this jueying check run finished (unix time).",
        "# TYPE jueying_check_last_run_timestamp_seconds gauge",
        f"jueying_check_last_run_timestamp_seconds {run_timestamp:.3f}",
        "# HELP jueying_check_duration_seconds How long this jueying check run took.",
        "# TYPE jueying_check_duration_seconds gauge",
        f"jueying_check_duration_seconds {duration_s:.3f}",
        "# HELP jueying_check_exit_code The run's exit code (Nagios: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).",
        "# TYPE jueying_check_exit_code gauge",
        f"jueying_check_exit_code {exit_code}",
    ]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write text to path via a temporary file in the same directory and rename (mode 0644)."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
