"""`jueying status --watch`: refresh in place over kept SSH connections and kept probes (sessions.py).

Each refresh has its own deadline; a node that misses it keeps its last values, marked stale, so one hung
node never freezes the screen. History is recorded at most every HISTORY_EVERY_S. Ends with Ctrl-C
(exit 0) or after --count refreshes.
"""

from __future__ import annotations

import functools
import gc
import sys
import time
from typing import TYPE_CHECKING

from jueying_cli.cli import common
from jueying_cli.cli import status_output as output
from jueying_cli.errors import ExitCode

if TYPE_CHECKING:
    from jueying_cli.checks import CheckConfig
    from jueying_cli.facts.collected import NodeFacts
    from jueying_cli.inventory.model import Inventory, Node

HISTORY_EVERY_S = 60.0


def refresh_deadline_s(opts: common.FleetOptions, interval_s: float) -> float:
    """How long one refresh may wait for nodes (seconds)."""
    return opts.deadline_s or max(3 * interval_s, 5.0)


def probe_idle_s(interval_s: float, timeout_s: float) -> float:
    """Seconds a kept probe waits for the next request before it leaves on its own (a controller that
    vanished without closing): long enough for a first refresh of thousands of nodes."""
    return max(900.0, 4 * interval_s + timeout_s)


def watch_status(opts: common.FleetOptions, selected: list[Node], *, interval_s: float, timeout_s: float,
                 gpus: bool, sort: str, fold: bool, json_output: bool = False, count: int | None = None,
                 inventory: Inventory | None = None, history: bool = True, checks: CheckConfig | None = None) -> int:
    """Refresh the status view until Ctrl-C or --count; each refresh runs `checks` (default: the built-in set)
    on what it collected and reads the flap state, as one-shot `status` does."""
    from jueying_cli.checks import builtin_config
    from jueying_cli.collect.sessions import ProbeSessions
    from jueying_cli.inventory.model import Inventory as InventoryModel
    from jueying_cli.render.terminal import LiveView, make_console
    from jueying_cli.status.view import build_view, merge_stale
    from jueying_cli.transport.fanout import raise_open_files_limit

    transport = common.make_transport(opts, keep_open=True)
    transport.prepare(selected)
    raise_open_files_limit(len(selected), len(selected))  # a kept connection, channel and probe per node
    sessions = ProbeSessions(transport, fanout=opts.fanout, connect_timeout_s=opts.connect_timeout_s,
                             probe_timeout_s=timeout_s, idle_s=probe_idle_s(interval_s, timeout_s))
    console = make_console()
    live = LiveView(console) if console.is_terminal and not json_output else None
    last: dict[str, NodeFacts] = {}
    config = checks or builtin_config()
    health_inventory = inventory or InventoryModel(nodes={n.name: n for n in selected}, groups={})
    deadline = refresh_deadline_s(opts, interval_s)
    refreshes = 0
    recorded_at = float("-inf")
    rc = int(ExitCode.OK)
    try:
        if live is not None:
            live.__enter__()
        while count is None or refreshes < count:
            started = time.monotonic()
            # The first refresh opens every connection: per-node limits only. Later ones reuse them and
            # must not freeze the screen: they get the refresh deadline.
            results, interrupted = sessions.refresh(selected, deadline if refreshes else opts.deadline_s)
            if interrupted:
                raise KeyboardInterrupt
            if history and time.monotonic() - recorded_at >= HISTORY_EVERY_S:
                common.record_history(results)
                recorded_at = time.monotonic()
            merged, stale = merge_stale(results, last)
            scheduler = output.read_scheduler(opts, inventory, selected, transport) \
                if inventory and inventory.source else None
            health = output.read_health(merged, health_inventory, config)
            view = build_view(merged, sort=sort, fold=fold, stale=stale, scheduler=scheduler, health=health)
            if live is not None:
                rc = live.show(functools.partial(output.render_status, view, gpus=gpus, json_output=False))
            else:
                rc = output.render_status(view, gpus=gpus, json_output=json_output)
                sys.stdout.flush()
            refreshes += 1
            if refreshes == 1:
                # The connections, threads and sessions made by the first refresh live until the end: keep
                # the garbage collector from walking them (a thousand nodes' worth) during every refresh.
                gc.freeze()
            if count is not None and refreshes >= count:
                break
            time.sleep(max(0.0, interval_s - (time.monotonic() - started)))
    except KeyboardInterrupt:
        rc = int(ExitCode.OK)  # Ctrl-C is how a watch ends
    finally:
        if live is not None:
            live.__exit__()
        transport.close()  # first: closing the connections ends every probe at once
        sessions.close()
    return rc
