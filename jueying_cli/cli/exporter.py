"""`jueying exporter`: Prometheus /metrics for this machine (node mode) or the selected nodes (controller
mode, over kept SSH probes), collected on a background loop; ends cleanly on SIGINT or SIGTERM."""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from jueying_cli.cli import common
from jueying_cli.errors import ExitCode
from jueying_cli.render.text import say

if TYPE_CHECKING:
    from types import FrameType

    from jueying_cli.status.view import SchedulerView

DEFAULT_LISTEN = ":9835"
DEFAULT_INTERVAL_S = 15.0


def register(app: typer.Typer) -> None:
    app.command("exporter")(exporter)


def parse_listen(text: str) -> tuple[str, int]:
    """ADDR:PORT, [IPv6]:PORT or :PORT (every interface) -> (address, port); BadParameter otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise typer.BadParameter("must be ADDR:PORT, [IPV6]:PORT or :PORT", param_hint="--listen")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise typer.BadParameter("an IPv6 address goes in brackets: [::1]:9835", param_hint="--listen")
    return host or "0.0.0.0", int(port)  # noqa: S104 - an exporter serves the network by default, like node_exporter


def exporter(
    listen: str = typer.Option(DEFAULT_LISTEN, "--listen", metavar="ADDR:PORT",
                               help="Where to serve /metrics: ADDR:PORT, [IPV6]:PORT or :PORT (every interface). "
                               "Port 0 picks a free port (printed on stderr)."),
    interval: float = typer.Option(DEFAULT_INTERVAL_S, "--interval", min=0.5, metavar="SECONDS",
                                   help="Seconds between collections (on a background loop, never during a scrape)."),
    this_machine: bool = typer.Option(False, "--this-machine", help="Node mode: export this machine only (in "
                                      "process, NVML kept initialised), even when an inventory is found."),
    expected_gpus: int | None = typer.Option(None, "--expected-gpus", min=0, metavar="N",
                                             help="Node mode: GPUs this machine should have (the inventory's "
                                             "expected_gpus; the gpu_count check and the degraded state need it)."),
    checks_file: str | None = typer.Option(None, "--checks", envvar="JUEYING_CHECKS", metavar="FILE",
                                           help="Check set YAML (default: the built-in set)."),
    timeout: float = typer.Option(30.0, "-t", "--timeout", min=0.5, metavar="SECONDS",
                                  help="Seconds a kept probe may take to answer before it is given up."),
    deadline: float | None = typer.Option(None, "--deadline", min=0.1, metavar="SECONDS",
                                          help="Seconds one collection waits for nodes (default: the interval, at "
                                          "least 5); a node that misses it keeps its last values, marked stale."),
    gpu_metrics: bool = typer.Option(True, "--gpu-metrics/--no-gpu-metrics",
                                     help="Export each GPU's DCGM_FI_DEV_* and NVLink series (--no-gpu-metrics: "
                                     "only jueying_*, for sites whose nodes run dcgm-exporter already)."),
    inventory_: str | None = common.InventoryOpt,
    nodes_: list[str] | None = common.NodesOpt,
    exclude: list[str] | None = common.ExcludeOpt,
    fanout: int = common.FanoutOpt,
    connect_timeout: float = common.ConnectTimeoutOpt,
    accept_new_hostkeys: bool = common.AcceptNewOpt,
    ssh_config: str | None = common.SshConfigOpt,
) -> None:
    """Serve Prometheus metrics: GPU telemetry under dcgm-exporter's names (DCGM_FI_DEV_*), and jueying's check
    levels, node states and drain states (jueying_*). Without an inventory (or with --this-machine) it reads this
    machine; with one, the selected nodes over kept SSH probes, as `status --watch` does.

    Exit codes: 0 stopped by SIGINT or SIGTERM; 2 bad usage, inventory or check file, or the address cannot be
    listened on.
    """
    from jueying_cli.checks import builtin_config, load_check_config
    from jueying_cli.collect.sessions import ProbeSessions
    from jueying_cli.exporter.loop import Collection
    from jueying_cli.exporter.metrics import MetricsServer
    from jueying_cli.transport.fanout import raise_open_files_limit

    address, port = parse_listen(listen)
    config = load_check_config(Path(checks_file)) if checks_file else builtin_config()
    opts = common.FleetOptions(inventory_, nodes_, exclude, fanout, connect_timeout, None, accept_new_hostkeys,
                               ssh_config)
    if this_machine:
        from jueying_cli.inventory.loader import local_inventory

        inventory = local_inventory()
    else:
        inventory, selected = common.select(opts)
    if inventory.source is None:  # node mode: this machine, with what the controller's inventory would say of it
        if expected_gpus is not None:
            nodes = {name: dataclasses.replace(node, vars={**node.vars, "expected_gpus": expected_gpus})
                     for name, node in inventory.nodes.items()}
            inventory = dataclasses.replace(inventory, nodes=nodes)
        selected = list(inventory.nodes.values())
    elif expected_gpus is not None:
        raise typer.BadParameter("is for node mode (--this-machine); with an inventory, set expected_gpus there",
                                 param_hint="--expected-gpus")
    refresh_deadline = deadline or max(interval, 5.0)
    transport = common.make_transport(opts, keep_open=True)
    transport.prepare(selected)
    raise_open_files_limit(len(selected), len(selected))
    sessions = ProbeSessions(transport, fanout=fanout, connect_timeout_s=connect_timeout, probe_timeout_s=timeout,
                             idle_s=max(900.0, 4 * interval + timeout))
    read_scheduler: Callable[[], dict[str, SchedulerView]] | None = None
    if inventory.source:
        from jueying_cli.cli import status_output

        def read_scheduler_now() -> dict[str, SchedulerView]:
            return status_output.read_scheduler(opts, inventory, selected, transport)

        read_scheduler = read_scheduler_now

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    server = None
    collection = None
    try:
        try:
            server = MetricsServer(address, port)
        except OSError as exc:
            common.warn(f"cannot listen on {listen}: {exc.strerror or exc}")
            raise typer.Exit(int(ExitCode.BAD_INPUT)) from None
        shown = f"[{address}]" if ":" in address else address
        say(f"jueying exporter: serving http://{shown}:{server.port}/metrics for {len(selected)} node(s), "
            f"collecting every {interval:g} s", err=True)
        collection = Collection(selected, sessions.refresh, interval_s=interval, deadline_s=refresh_deadline,
                                config=config, inventory=inventory, read_scheduler=read_scheduler,
                                publish=server.publish, gpu_metrics=gpu_metrics)
        collection.start()
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            server.stop()
        if collection is not None:
            collection.stop(refresh_deadline + 5.0)
        transport.close()
        sessions.close()
    raise typer.Exit(int(ExitCode.OK))
