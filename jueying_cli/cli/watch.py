"""`jueying status --watch`: refresh in place, SSH connections kept open between refreshes.

Each refresh has its own deadline; a node that misses it keeps its last values, marked stale, so one hung
node never freezes the screen. Ends with Ctrl-C (exit 0) or after --count refreshes.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from jueying_cli.cli import common
from jueying_cli.errors import ExitCode
from jueying_cli.transport.base import TIMEOUT


def refresh_deadline_s(opts: common.FleetOptions, interval_s: float) -> float:
    """How long one refresh may wait for nodes (seconds)."""
    return opts.deadline_s or max(3 * interval_s, 5.0)


def watch_status(opts: common.FleetOptions, selected: list[Any], *, interval_s: float, timeout_s: float,
                 gpus: bool, sort: str, fold: bool, json_output: bool = False, count: int | None = None) -> int:
    from rich.live import Live
    from rich.text import Text

    from jueying_cli.cli.status import render_status
    from jueying_cli.collect import collect_nodes
    from jueying_cli.render.table import make_console

    transport = common.make_transport(opts, keep_open=True)
    transport.prepare(selected)
    console = make_console()
    live = Live(console=console, auto_refresh=False, transient=False) if console.is_terminal and not json_output \
        else None
    last: dict[str, Any] = {}
    deadline = refresh_deadline_s(opts, interval_s)
    refreshes = 0
    rc = int(ExitCode.OK)
    try:
        if live is not None:
            live.start()
        while count is None or refreshes < count:
            started = time.monotonic()
            # The first refresh opens every connection: per-node limits only. Later ones reuse them and
            # must not freeze the screen: they get the refresh deadline.
            limit = deadline if refreshes else opts.deadline_s
            results, interrupted = collect_nodes(transport, selected, fanout=opts.fanout, deadline_s=limit,
                                                 timeout_s=min(timeout_s, limit) if limit else timeout_s)
            if interrupted:
                break
            merged, stale = _merge_stale(results, last)
            if live is not None:
                with console.capture() as capture:
                    rc = render_status(merged, gpus=gpus, json_output=False, sort=sort, fold=fold, console=console,
                                       stale=stale)
                live.update(Text.from_ansi(capture.get()), refresh=True)
            else:
                rc = render_status(merged, gpus=gpus, json_output=json_output, sort=sort, fold=fold, stale=stale)
            refreshes += 1
            if count is not None and refreshes >= count:
                break
            time.sleep(max(0.0, interval_s - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
        transport.close()
    return rc


def _merge_stale(results: list[Any], last: dict[str, Any]) -> tuple[list[Any], set[str]]:
    """Replace nodes that missed this refresh's deadline by their last answer; remember fresh answers."""
    merged = []
    stale: set[str] = set()
    for r in results:
        if r.facts is not None:
            last[r.name] = r
            merged.append(r)
        elif r.outcome.status == TIMEOUT and r.name in last:
            merged.append(dataclasses.replace(last[r.name]))
            stale.add(r.name)
        else:
            merged.append(r)
    return merged, stale
