"""Options shared by every fleet command, and the one place that turns them into nodes and a transport."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import typer

from jueying_cli.vocab import OutputFormat

if TYPE_CHECKING:
    from jueying_cli.facts.collected import NodeFacts
    from jueying_cli.inventory.model import Inventory, Node
    from jueying_cli.store import Store
    from jueying_cli.transport.router import RoutingTransport

InventoryOpt = typer.Option(None, "-i", "--inventory", metavar="FILE",
                            help="Inventory file (jueying YAML or Ansible INI/YAML). Default: $JUEYING_INVENTORY, "
                            "./inventory.yaml, ~/.config/jueying/inventory.yaml, "
                            "/etc/jueying/inventory.yaml; none: this machine only.")
def complete_nodes(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion for -w/-x: the inventory's node names, @groups and @all (nothing on a bad inventory)."""
    from jueying_cli.errors import JueyingError
    from jueying_cli.inventory.loader import load_inventory

    try:
        inventory = load_inventory(ctx.params.get("inventory_") or ctx.params.get("inventory"))
    except (JueyingError, OSError):
        return []
    words = list(dict.fromkeys([*inventory.nodes, *(f"@{g}" for g in inventory.groups), "@all"]))
    return [w for w in words if w.startswith(incomplete)][:1000]


NodesOpt = typer.Option(None, "-w", "--nodes", metavar="NODESET", autocompletion=complete_nodes,
                        help="Nodes to act on, NodeSet syntax: 'gpu[001-128,200]', '@group', operators , ! & ^ "
                        "(default: all). Repeatable: the union, as in clush.")
ExcludeOpt = typer.Option(None, "-x", "--exclude", metavar="NODESET", autocompletion=complete_nodes,
                          help="Nodes to leave out (NodeSet syntax). Repeatable: every one is left out.")
FanoutOpt = typer.Option(64, "-f", "--fanout", min=1, max=4096, metavar="N", help="How many nodes to work on at once.")
ConnectTimeoutOpt = typer.Option(10.0, "--connect-timeout", min=0.1, metavar="SECONDS",
                                 help="Seconds for TCP connect + SSH handshake + authentication, per node.")
DeadlineOpt = typer.Option(None, "--deadline", min=0.1, metavar="SECONDS",
                           help="Seconds for the whole run; nodes still busy then are reported as timeout.")
AcceptNewOpt = typer.Option(False, "--accept-new-hostkeys",
                            help="Trust and record host keys of nodes not yet in known_hosts (never changed keys).")
SshConfigOpt = typer.Option(None, "--ssh-config", envvar="JUEYING_SSH_CONFIG", metavar="FILE",
                            help="ssh_config file to use instead of ~/.ssh/config and /etc/ssh/ssh_config "
                            "(like ssh -F).")


FormatOpt = typer.Option(None, "--format", case_sensitive=False, metavar="FORMAT",
                         help="table (default), json (the envelope, as --json), csv (RFC 4180) or tsv (one row a "
                         "line, tab/newline/backslash escaped); rows carry the fields of --json.")
FieldsOpt = typer.Option(None, "-o", "--fields", metavar="FIELD,...",
                         help="Columns to print (table, csv, tsv), named as in --json; a.b.c reaches into a "
                         "nested object. Repeatable.")
NoHeaderOpt = typer.Option(False, "--no-header", help="csv, tsv and -o tables: no header line.")


@dataclass(frozen=True)
class Output:
    """How a table command prints: the format, the chosen fields (None: the command's default) and the header."""

    format: OutputFormat
    fields: list[str] | None
    header: bool

    @property
    def json(self) -> bool:
        return self.format == OutputFormat.JSON

    @property
    def rows(self) -> bool:
        """Rows of --json fields (csv, tsv, or a table of -o fields) instead of the command's own table."""
        return self.format in (OutputFormat.CSV, OutputFormat.TSV) or self.fields is not None


def output_choice(json_output: bool, fmt: OutputFormat | None, fields: list[str] | None, no_header: bool,
                  valid: Sequence[str]) -> Output:
    """The output asked for; BadInputError (exit 2) for --json with another --format, -o with json, or an
    unknown field (named, with the valid ones listed), before any work is done."""
    from jueying_cli.errors import BadInputError
    from jueying_cli.render.records import parse_fields

    if json_output and fmt not in (None, OutputFormat.JSON):
        raise BadInputError(f"--json is --format json; it cannot be combined with --format {fmt}", field="--format")
    chosen = OutputFormat.JSON if json_output else OutputFormat(fmt or OutputFormat.TABLE)
    parsed = parse_fields(fields, valid)
    if parsed is not None and chosen == OutputFormat.JSON:
        raise BadInputError("chooses the columns of table, csv and tsv output; --format json prints every field",
                            field="-o/--fields")
    return Output(chosen, parsed, not no_header)


def print_rows(output: Output, rows: Sequence[Mapping[str, object]], default_fields: Sequence[str]) -> None:
    """Rows (objects of the command's --json output) as csv, tsv, or a table of the chosen fields."""
    from jueying_cli.render.records import check_paths, write_rows

    fields = output.fields or list(default_fields)
    if output.fields:
        check_paths(rows, fields)
    if output.format == OutputFormat.TABLE:
        from jueying_cli.render.terminal import make_console, print_records

        print_records(rows, fields, make_console(), header=output.header)
    else:
        write_rows(rows, fields, output.format, sys.stdout, header=output.header)


Patterns = str | Sequence[str] | None  # one NodeSet expression, several (repeated -w/-x), or none


@dataclass(frozen=True)
class FleetOptions:
    inventory: str | None
    nodes: Patterns
    exclude: Patterns
    fanout: int
    connect_timeout_s: float
    deadline_s: float | None
    accept_new_hostkeys: bool
    ssh_config: str | None


def select(opts: FleetOptions) -> tuple[Inventory, list[Node]]:
    """(inventory, selected nodes); BadInputError (exit 2) for a bad file or node set."""
    from jueying_cli.errors import BadInputError
    from jueying_cli.inventory.loader import load_inventory
    from jueying_cli.inventory.select import select_nodes

    inventory = load_inventory(opts.inventory)
    wanted, unwanted = _patterns(opts.nodes), _patterns(opts.exclude)
    if len(wanted) <= 1 and len(unwanted) <= 1:
        nodes = select_nodes(inventory, wanted[0] if wanted else None, unwanted[0] if unwanted else None)
    else:  # each expression on its own (`-w 'a!b' -w c` is (a!b) | c), then the union, as clush does
        chosen = {n.name for w in wanted for n in select_nodes(inventory, w)} if wanted else set(inventory.nodes)
        for x in unwanted:
            chosen &= {n.name for n in select_nodes(inventory, None, x)}
        nodes = [node for name, node in inventory.nodes.items() if name in chosen]
    if not nodes:
        raise BadInputError("no nodes selected", field="-w/-x")
    return inventory, nodes


def _patterns(value: Patterns) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def make_transport(opts: FleetOptions, *, keep_open: bool = False) -> RoutingTransport:
    from jueying_cli.transport.router import RoutingTransport
    from jueying_cli.transport.ssh.options import SshOptions

    ssh_options = SshOptions(connect_timeout_s=opts.connect_timeout_s,
                             accept_new_hostkeys=opts.accept_new_hostkeys,
                             ssh_config_path=os.path.expanduser(opts.ssh_config) if opts.ssh_config else None,
                             keep_open=keep_open)
    return RoutingTransport(ssh_options)


class Progress(Protocol):
    def __enter__(self) -> Progress: ...

    def __exit__(self, *exc: object) -> None: ...

    def advance(self) -> None: ...


class _NoProgress:
    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self) -> None:
        return None


def progress_for(total: int, *, enabled: bool = True) -> Progress:
    """A progress bar on stderr for long runs when stderr is a terminal; otherwise a no-op."""
    if not enabled or total < 16 or not sys.stderr.isatty():
        return _NoProgress()
    from jueying_cli.render.terminal import NodeProgress

    return NodeProgress(total)


def collect(opts: FleetOptions, selected: Sequence[Node], timeout_s: float) -> tuple[list[NodeFacts], bool]:
    """Facts from every selected node, with a progress bar on a terminal; (results, interrupted).

    Without --deadline each node is bounded by its own limits (connect + probe timeout), so a hung node
    costs only its own time; a fixed global default would cut off healthy nodes of a large cluster."""
    from jueying_cli.collect.oneshot import collect_nodes

    transport = make_transport(opts)
    transport.prepare(selected)
    progress = progress_for(len(selected))
    try:
        with progress:
            return collect_nodes(transport, selected, fanout=opts.fanout, deadline_s=opts.deadline_s,
                                 timeout_s=timeout_s, on_result=lambda _: progress.advance())
    finally:
        transport.close()


def open_store(*, readonly: bool = False) -> Store:
    """The state database; StateDbError (exit 2) naming the file when it cannot be used."""
    from jueying_cli.store import Store

    return Store(readonly=readonly)


def warn(message: str) -> None:
    """`jueying: warning: MESSAGE` on stderr, made safe (render.text)."""
    from jueying_cli.render.text import warn as say_warning

    say_warning(message)


def record_history(results: Sequence[NodeFacts]) -> None:
    """Keep the key facts of this collection, and each node's audited attributes and identity when they
    changed (`jueying audit --since`); history is a side effect, so a failure only warns."""
    from jueying_cli.audit.history import snapshot_rows
    from jueying_cli.status.history import history_rows

    try:
        store = open_store()
        try:
            store.history.record(history_rows(results))
            store.snapshots.record(snapshot_rows(results), store.history.retention_days())
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 - the command's own output was still produced
        warn(f"history not recorded: {exc}")


def prometheus_source(source: str) -> str | None:
    """--source of status and check: None for ssh; the URL of prometheus=URL; BadParameter otherwise."""
    if source == "ssh":
        return None
    kind, sep, url = source.partition("=")
    if kind != "prometheus" or not sep or not url.startswith(("http://", "https://")):
        raise typer.BadParameter("must be ssh or prometheus=http(s)://HOST:PORT", param_hint="--source")
    return url
