"""The terminal: tables, the live `--watch` view and the progress bar; the only module that imports rich.

Colour follows gpustat's habits (heat red, load green, memory yellow, errors red) and is dropped
when NO_COLOR is set or stdout is not a terminal; then the table is plain text without box lines,
wide enough never to wrap, so `grep` and `awk` work on it.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any, TypeVar

from rich import box
from rich.console import Console
from rich.live import Live
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from jueying_cli.checks.model import CheckResult
from jueying_cli.facts.model import Facts, GpuFacts
from jueying_cli.render.records import cell_text, value_at
from jueying_cli.render.text import safe
from jueying_cli.status.summary import HealthFinding, NodeSummary
from jueying_cli.store import HistoryRow

GIB = 1024**3
T = TypeVar("T")

STATE_STYLE = {
    "ok": "green",
    "degraded": "bold red",
    "no_driver": "bold red",
    "failed": "bold red",
    "unreachable": "bold red",
    "timeout": "bold red",
    "auth_failed": "bold red",
    "hostkey_failed": "bold red",
    "drained": "yellow",
}


def make_console(file: IO[str] | None = None) -> Console:
    out = file or sys.stdout
    tty = out.isatty()
    plain = not tty or "NO_COLOR" in os.environ
    return Console(
        file=out,
        no_color=plain,
        highlight=False,
        force_terminal=tty and not plain,
        width=None if tty else 250,
        soft_wrap=not tty,
    )


def _emit(console: Console, table: Table) -> None:
    """Print a table; piped, as wide as its widest row (the README: piped output is never cut, so `grep`
    and `awk` see every cell whole), on a terminal as wide as the terminal."""
    if _is_tty(console):
        console.print(table)
        return
    natural = Measurement.get(console, console.options.update_width(1_000_000), table).maximum
    width = console.width
    console.width = max(width, natural)  # print(width=) cannot pass the console's own width
    try:
        console.print(table)
    finally:
        console.width = width


def _t(value: object, style: str = "") -> Text:
    """A cell or message from data jueying did not write: control characters escaped, never read as markup."""
    return Text(safe(value), style=style)


def _add_row(table: Table, cells: Iterable[str | Text]) -> None:
    """Every cell becomes a Text: a plain string cell would be parsed as rich markup ("[red]", "[/]")."""
    table.add_row(*(cell if isinstance(cell, Text) else _t(cell) for cell in cells))


def _table(console: Console, title: str | None = None) -> Table:
    plain = console.no_color or not console.is_terminal
    return Table(title=title, box=None if plain else box.SIMPLE_HEAD, pad_edge=False,
                 show_edge=False, header_style="" if plain else "bold")


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _heat(temp: int | None, slowdown: int | None = None) -> Text:
    if temp is None:
        return Text("-")
    style = ""
    limit = slowdown or 87
    if temp >= limit - 5:
        style = "bold red"
    elif temp >= 75:
        style = "red"
    elif temp >= 50:
        style = "yellow"
    return Text(f"{temp}°C", style=style)


def _load(util: float | None) -> Text:
    if util is None:
        return Text("-")
    style = "bold green" if util >= 75 else ("green" if util >= 10 else "")
    return Text(f"{util:.0f}%", style=style)


def _age(collected_at_unix: float, now: float) -> str:
    seconds = max(0.0, now - collected_at_unix)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


# Dropped first, in this order, when a terminal is too narrow for every column.
_NODE_COLUMNS_BY_PRIORITY = ("HOST MEM GiB", "LOAD", "POWER W", "AGE", "HOTTEST", "GPU MEM GiB", "UTIL avg/max")
_NODE_COLUMNS = ("NODE", "STATE", "HEALTH", "GPUS", "UTIL avg/max", "GPU MEM GiB", "HOTTEST", "POWER W", "LOAD",
                 "HOST MEM GiB", "AGE")


def print_nodes(summaries: Sequence[NodeSummary], console: Console, now: float | None = None) -> None:
    now = time.time() if now is None else now
    rows = [_node_cells(s, now) for s in summaries]
    # On a terminal a long reason is cut (the full text is in --json and in piped output), and the least
    # useful columns go when the screen is too narrow, so the numbers are never squeezed into "…".
    on_screen = _is_tty(console)  # NO_COLOR on a terminal still has the terminal's width
    state_limit = max(24, console.width // 4) if on_screen else None
    columns = list(_NODE_COLUMNS)
    hidden: list[str] = []
    table = _node_table(console, columns, rows, state_limit)
    if on_screen:
        for candidate in _NODE_COLUMNS_BY_PRIORITY:
            if Measurement.get(console, console.options.update_width(100_000), table).maximum <= console.width:
                break
            columns.remove(candidate)
            hidden.append(candidate)
            table = _node_table(console, columns, rows, state_limit)
    _emit(console, table)
    if hidden:
        print_message(console, f"(not shown for lack of width: {', '.join(reversed(hidden))})", style="dim")


def _is_tty(console: Console) -> bool:
    isatty = getattr(console.file, "isatty", None)
    return bool(isatty and isatty())


def _node_table(console: Console, columns: list[str], rows: list[list[str | Text]], state_limit: int | None) -> Table:
    table = _table(console)
    for column in columns:
        table.add_column(column, no_wrap=True, overflow="ellipsis",
                         max_width=state_limit if column == "STATE" else None)
    keep = [i for i, c in enumerate(_NODE_COLUMNS) if c in columns]
    for row in rows:
        _add_row(table, (row[i] for i in keep))
    return table


def _node_cells(s: NodeSummary, now: float) -> list[str | Text]:
    gpus = "-" if s.gpus_present is None else str(s.gpus_present)
    if s.gpus_expected is not None:
        gpus += f"/{s.gpus_expected}"
    if s.gpus_lost:
        gpus += f" ({s.gpus_lost} lost)"
    state = _t(s.state, style=STATE_STYLE.get(s.state, ""))
    if s.reason:
        state.append(f" ({safe(s.reason)})")
    util = _load(s.utilization_avg_pct)
    util.append("/" + ("-" if s.utilization_max_pct is None else f"{s.utilization_max_pct}%"))
    if s.utilization_max_node is not None:
        util.append(f" ({safe(s.utilization_max_node)})")
    hottest = _heat(s.hottest_gpu_c)
    if s.hottest_gpu_node is not None:  # a folded row: name where its hottest GPU is
        hottest.append(f" ({safe(s.hottest_gpu_node)} gpu{s.hottest_gpu_index})")
    elif s.hottest_gpu_index is not None:
        hottest.append(f" gpu{s.hottest_gpu_index}")
    power = "-" if s.power_watts is None else f"{s.power_watts:.0f}"
    if s.power_limit_watts:
        power += f"/{s.power_limit_watts:.0f}"
    load = "-" if s.load1 is None else f"{s.load1:.2f}"
    if s.cpu_threads:
        load += f"/{s.cpu_threads}"
    if s.load1_node is not None:
        load += f" ({safe(s.load1_node)})"
    node = s.node if s.nodes == 1 else f"{s.node} ({s.nodes})"
    age = "-" if s.collected_at_unix is None else _age(s.collected_at_unix, now)
    if s.stale:
        age += " stale"
    return [node, state, _health(s), gpus, util, f"{_gib(s.gpu_memory_used_bytes)}/{_gib(s.gpu_memory_total_bytes)}",
            hottest, power, load, f"{_gib(s.host_memory_used_bytes)}/{_gib(s.host_memory_total_bytes)}",
            Text(age, style="yellow" if s.stale else "")]


def _finding(f: HealthFinding, *, gpu: bool = True) -> str:
    """`CRITICAL xid gpu3`; a pending one as `pending WARNING temperature gpu2 (1/2)`."""
    text = f"{f.level.name} {f.check}" + (f" gpu{f.gpu}" if gpu and f.gpu is not None else "")
    return text if f.confirmed else f"pending {text} ({f.runs}/{f.confirm_runs})"


def _health(s: NodeSummary) -> Text:
    """The HEALTH cell: the worst confirmed level and its check (`+N` more confirmed), or OK, then the first
    pending result; `-` when no checks ran (no facts, or --source prometheus)."""
    if s.health is None:
        return Text("-")
    if s.problems:
        cell = _t(_finding(s.problems[0]), style=LEVEL_STYLE.get(s.health.name, ""))
        if len(s.problems) > 1:
            cell.append(f" +{len(s.problems) - 1}")
    else:
        cell = Text(s.health.name, style=LEVEL_STYLE.get(s.health.name, ""))
    if s.pending:
        cell.append(_t(f"; {_finding(s.pending[0])}" + (f" +{len(s.pending) - 1}" if len(s.pending) > 1 else ""),
                       style="dim"))
    return cell


def _gpu_state(facts: Facts, gpu: GpuFacts, health: Sequence[HealthFinding] | None) -> Text:
    """LOST, else the worst confirmed check result of this GPU (`CRITICAL ecc_uncorrected`), else `ok`; then
    unreadable fields (`2 errors`) and the first pending result."""
    if gpu.lost:
        return Text("LOST", style="bold red")
    mine = [f for f in health or () if f.gpu == gpu.index]
    confirmed = sorted((f for f in mine if f.confirmed), key=lambda f: (-f.level.severity, f.check))
    errors = [e for e in facts.errors_for(gpu.index) if e.error != "NOT_SUPPORTED"]
    if confirmed:
        cell = _t(_finding(confirmed[0], gpu=False), style=LEVEL_STYLE.get(confirmed[0].level.name, ""))
        if len(confirmed) > 1:
            cell.append(f" +{len(confirmed) - 1}")
    elif errors:
        return Text(f"{len(errors)} errors", style="red")
    else:
        cell = Text("ok", style="green")
    if confirmed and errors:
        cell.append(f"; {len(errors)} errors", style="red")
    pending = [f for f in mine if not f.confirmed]
    if pending:
        cell.append(_t(f"; {_finding(pending[0], gpu=False)}", style="dim"))
    return cell


def print_gpus(rows: Iterable[tuple[str, Facts]], console: Console,
               health: Mapping[str, Sequence[HealthFinding]] | None = None) -> None:
    """One row per GPU, gpustat-like: index, name, heat, load, memory, power, processes, and its state with
    the health checks' confirmed level (`health`: each node's non-OK results; None: no checks ran)."""
    table = _table(console)
    for column in ("NODE", "GPU", "NAME", "TEMP", "UTIL", "MEM GiB", "POWER W", "PSTATE", "PROCS", "STATE"):
        table.add_column(column, no_wrap=True)
    for node, facts in rows:
        if not facts.gpus:
            _add_row(table, (node, "-", _t(facts.nvml.message or "no GPUs", style="yellow"),
                             "", "", "", "", "", "", _t(facts.nvml.status, style=STATE_STYLE.get("failed", ""))))
            continue
        for gpu in facts.gpus:
            mem = f"{_gib(gpu.memory_used_bytes)}/{_gib(gpu.memory_total_bytes)}"
            mem_pct = gpu.memory_used_pct
            mem_text = Text(mem, style="yellow" if mem_pct is not None and mem_pct >= 80 else "")
            power = "-" if gpu.power_watts is None else f"{gpu.power_watts:.0f}"
            if gpu.power_limit_watts:
                power += f"/{gpu.power_limit_watts:.0f}"
            procs = "-" if gpu.processes is None else str(len(gpu.processes))
            pstate = "-" if gpu.performance_state is None else f"P{gpu.performance_state}"
            name = _t(gpu.name or "-", style="bold red" if gpu.lost else "")
            _add_row(table, (node, str(gpu.index), name, _heat(gpu.temperature_c, gpu.temperature_slowdown_c),
                             _load(gpu.utilization_gpu_pct), mem_text, power, pstate, procs,
                             _gpu_state(facts, gpu, None if health is None else health.get(node, ()))))
    _emit(console, table)


def print_inventory(rows: Iterable[tuple[str, Facts]], console: Console) -> None:
    """Hardware table: what each node is made of."""
    table = _table(console)
    for column in ("NODE", "CPU", "THREADS", "MEM GiB", "GPUS", "DRIVER", "CUDA", "KERNEL", "OS"):
        table.add_column(column, no_wrap=True)
    for node, facts in rows:
        models: dict[str, int] = {}
        for gpu in facts.gpus:
            key = gpu.name or ("lost" if gpu.lost else "unknown")
            models[key] = models.get(key, 0) + 1
        gpus = ", ".join(f"{count}x {name}" for name, count in models.items()) or facts.nvml.status
        _add_row(table, (node, facts.host.cpu_model or "-", str(facts.host.cpu_threads or "-"),
                         _gib(facts.host.memory_total_bytes), gpus, facts.nvml.driver_version or "-",
                         facts.nvml.cuda_driver_version or "-", facts.host.kernel or "-",
                         facts.host.os_pretty_name or "-"))
    _emit(console, table)


def print_records(rows: Sequence[Mapping[str, Any]], fields: Sequence[str], console: Console, *,
                  header: bool = True) -> None:
    """A table of the chosen --json fields (`-o`), one row per object; headers are the field names."""
    table = _table(console)
    table.show_header = header
    for field in fields:
        table.add_column(field.upper(), no_wrap=True)
    for row in rows:
        _add_row(table, (cell_text(value_at(row, f)) or "-" for f in fields))
    _emit(console, table)


def print_message(console: Console, message: str, style: str = "") -> None:
    """One line, made safe: a newline inside it is shown as \\n."""
    console.print(_t(message, style=style))


def print_history(rows: Sequence[HistoryRow], console: Console) -> None:
    table = _table(console)
    for column in ("WHEN (UTC)", "STATUS", "GPUS", "LOST", "ECC UNCORR vol/agg", "ECC CORR vol/agg", "REMAP PENDING",
                   "DRIVER", "CUDA", "KERNEL"):
        table.add_column(column, no_wrap=True)

    def n(value: object) -> str:
        return "-" if value is None else str(value)

    for r in rows:
        state = _t(r.status, style=STATE_STYLE.get(r.status, ""))
        if r.reason:
            state.append(f" ({safe(r.reason)})")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.collected_at))
        _add_row(table, (when, state, n(r.gpus_present), n(r.gpus_lost),
                         f"{n(r.ecc_uncorrected_volatile)}/{n(r.ecc_uncorrected_aggregate)}",
                         f"{n(r.ecc_corrected_volatile)}/{n(r.ecc_corrected_aggregate)}",
                         n(r.remapped_rows_pending), n(r.driver_version), n(r.cuda_driver_version), n(r.kernel)))
    _emit(console, table)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]], console: Console,
                title: str | None = None, wrap: Sequence[str] = ()) -> None:
    """A plain table of text cells (audit findings, capacity groups): every cell made safe; None shows as -.
    Columns named in `wrap` may wrap on a terminal; the others never do."""
    if title:
        print_message(console, title, style="bold")
    table = _table(console)
    for column in headers:
        table.add_column(column, no_wrap=column not in wrap)
    for row in rows:
        _add_row(table, ["-" if cell is None else str(cell) for cell in row])
    _emit(console, table)


LEVEL_STYLE = {"OK": "green", "WARNING": "yellow", "CRITICAL": "bold red", "UNKNOWN": "magenta"}


def print_check_results(rows: Sequence[tuple[CheckResult, bool, int, int]], console: Console) -> None:
    """(result, confirmed, consecutive runs, runs needed): confirmed problems, then pending ones."""
    table = _table(console)
    for column in ("NODE", "CHECK", "GPU", "LEVEL", "ACTION", "MESSAGE"):
        table.add_column(column, no_wrap=column != "MESSAGE")
    for result, confirmed, consecutive, needed in rows:
        level = _t(result.level.name, style=LEVEL_STYLE.get(result.level.name, ""))
        if not confirmed:
            level = _t(f"pending {result.level.name} ({consecutive}/{needed})", style="dim")
        _add_row(table, (result.node, result.check, "-" if result.gpu is None else str(result.gpu), level,
                         str(result.action), result.message))
    _emit(console, table)


class NodeProgress:
    """A transient progress bar on stderr while a fan-out runs."""

    def __init__(self, total: int) -> None:
        self._progress = Progress(TextColumn("nodes"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  console=Console(file=sys.stderr), transient=True)
        self._task = self._progress.add_task("nodes", total=total)

    def __enter__(self) -> NodeProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def advance(self) -> None:
        self._progress.advance(self._task)


class _Screen(io.StringIO):
    """An off-screen terminal: where the live view draws a frame before it replaces the one shown."""

    def isatty(self) -> bool:
        return True


class LiveView:
    """Redraws one screen in place (`status --watch` on a terminal): `show(draw)` calls `draw(console=...)` on
    an off-screen console as wide as the terminal, replaces the previous frame with what it printed, and
    returns what it returned. (Capturing on the console Live itself draws on stacks frames.)"""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live = Live(console=console, auto_refresh=False, transient=False, redirect_stdout=False,
                          redirect_stderr=False)

    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()

    def show(self, draw: Callable[..., T]) -> T:
        screen = Console(file=_Screen(), width=self.console.width, height=self.console.height, highlight=False,
                         force_terminal=True, no_color=self.console.no_color,
                         color_system="auto")
        result = draw(console=screen)
        frame = screen.file.getvalue() if isinstance(screen.file, _Screen) else ""
        self._live.update(Text.from_ansi(frame.rstrip("\n")), refresh=True)
        return result
