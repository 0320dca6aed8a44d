"""Node checks of the host: filesystems, memory, load and clock.

Pure functions of the host section of one node's facts. A value the probe could not read is UNKNOWN.
"""

from __future__ import annotations

from jueying_cli.checks.model import CheckResult, NodeContext
from jueying_cli.facts.model import Filesystem
from jueying_cli.vocab import Level


def _pct(value: float) -> str:
    return f"{value:.1f}%"


def _threshold_level(value: float, warning: float | None, critical: float | None) -> tuple[Level, float | None]:
    """(level, limit crossed) for value >= critical / warning; a None limit is off."""
    if critical is not None and value >= critical:
        return Level.CRITICAL, critical
    if warning is not None and value >= warning:
        return Level.WARNING, warning
    return Level.OK, None


# ---------------------------------------------------------------- filesystem


def _used_pct(fs: Filesystem) -> float | None:
    """Used space in % as df shows it, from the probe or from total and free bytes."""
    if fs.used_pct is not None:
        return float(fs.used_pct)
    if fs.total_bytes and fs.free_bytes is not None:
        return 100.0 * (fs.total_bytes - fs.free_bytes) / fs.total_bytes
    return None


def check_filesystem(ctx: NodeContext) -> list[CheckResult]:
    """Used space (%) per local filesystem; `mountpoints` limits the check to those (empty: all collected)."""
    name, params = "filesystem", ctx.params
    warning, critical = params["warning_pct"], params["critical_pct"]
    collected = {fs.mountpoint: fs for fs in ctx.facts.host.filesystems}
    wanted = list(params["mountpoints"]) or list(collected)
    if not wanted:
        return [ctx.result(name, Level.UNKNOWN, "the probe reported no local filesystems", code="NO_DATA")]
    results = []
    fine = []
    for mount in wanted:
        fs = collected.get(mount)
        if fs is None:
            results.append(ctx.result(name, Level.UNKNOWN, f"{mount}: not reported (not mounted, or a network "
                                                           "filesystem the probe skips)", code=f"NO_DATA:{mount}"))
            continue
        used = _used_pct(fs)
        if used is None:
            results.append(ctx.result(name, Level.UNKNOWN, f"{mount}: usage unreadable", code=f"NO_DATA:{mount}"))
            continue
        level, limit = _threshold_level(used, warning, critical)
        if level is Level.OK:
            fine.append((used, mount))
            continue
        results.append(ctx.result(name, level, f"{mount} is {_pct(used)} full (>= {limit:g}%)",
                                  code=f"FS_FULL:{mount}", value=round(used, 1), threshold=limit))
    if not results:
        used, mount = max(fine)
        results.append(ctx.result(name, Level.OK, f"{len(fine)} filesystems below {warning:g}%; fullest {mount} "
                                                  f"at {_pct(used)}", code="OK", value=round(used, 1),
                                  threshold=warning))
    return results


# ---------------------------------------------------------------- memory


def check_memory(ctx: NodeContext) -> list[CheckResult]:
    """Host memory in use (%), counting page cache as free (total - available), as the kernel's OOM does."""
    name, host = "memory", ctx.facts.host
    total = host.memory_total_bytes
    if not total:
        return [ctx.result(name, Level.UNKNOWN, "total memory not reported", code="NO_DATA")]
    if host.memory_available_bytes is not None:
        used = 100.0 * (total - host.memory_available_bytes) / total
    elif host.memory_used_bytes is not None:
        used = 100.0 * host.memory_used_bytes / total
    else:
        return [ctx.result(name, Level.UNKNOWN, "memory use not reported", code="NO_DATA")]
    warning, critical = ctx.params["warning_pct"], ctx.params["critical_pct"]
    level, limit = _threshold_level(used, warning, critical)
    gib = total / 2**30
    if level is Level.OK:
        return [ctx.result(name, Level.OK, f"{_pct(used)} of {gib:,.0f} GiB in use (warning at {warning:g}%)",
                           code="OK", value=round(used, 1), threshold=warning)]
    return [ctx.result(name, level, f"{_pct(used)} of {gib:,.0f} GiB in use (>= {limit:g}%): jobs risk the OOM killer",
                       code="MEMORY_HIGH", value=round(used, 1), threshold=limit)]


# ---------------------------------------------------------------- load


def check_load(ctx: NodeContext) -> list[CheckResult]:
    """5-minute load average per CPU thread: a node far above 1 starves its GPU feeders."""
    name, host = "load", ctx.facts.host
    if host.load5 is None or not host.cpu_threads:
        return [ctx.result(name, Level.UNKNOWN, "load average or CPU thread count not reported", code="NO_DATA")]
    per_thread = host.load5 / host.cpu_threads
    warning, critical = ctx.params["warning_per_thread"], ctx.params["critical_per_thread"]
    level, limit = _threshold_level(per_thread, warning, critical)
    text = f"load5 {host.load5:.2f} on {host.cpu_threads} CPU threads = {per_thread:.2f} per thread"
    if level is Level.OK:
        return [ctx.result(name, Level.OK, f"{text} (warning at {warning:g})", code="OK",
                           value=round(per_thread, 2), threshold=warning)]
    return [ctx.result(name, level, f"{text} (>= {limit:g})", code="LOAD_HIGH", value=round(per_thread, 2),
                       threshold=limit)]


# ---------------------------------------------------------------- clock


def check_clock(ctx: NodeContext) -> list[CheckResult]:
    """Clock offset from its time source (s) and whether it is synchronised at all.

    A node with no time daemon the probe can ask (neither chronyc nor timedatectl answers) is OK with a
    note: the probe lacks the instrument, which says nothing about the clock, and UNKNOWN there would turn
    every run on such hosts (containers, minimal images) into exit code 3 for good.
    """
    name, sync = "clock", ctx.facts.host.time_sync
    if sync is None:
        return [ctx.result(name, Level.UNKNOWN, "time sync not reported by this probe", code="NO_DATA")]
    if sync.source is None:
        return [ctx.result(name, Level.OK, "no time sync daemon to ask (no chronyc, no timedatectl): "
                                           "clock not checked", code="NO_TIME_SOURCE")]
    results = []
    if sync.offset_s is not None:
        offset = abs(sync.offset_s)
        level, limit = _threshold_level(offset, ctx.params["warning_s"], ctx.params["critical_s"])
        if level is not Level.OK:
            direction = "fast" if sync.offset_s > 0 else "slow"
            results.append(ctx.result(name, level, f"clock {offset:.3f} s {direction} of its time source "
                                                   f"(>= {limit:g} s, {sync.source}): fix NTP/chrony",
                                      code="CLOCK_OFFSET", value=round(offset, 6), threshold=limit))
    if sync.synchronized is False:
        results.append(ctx.result(name, Level.WARNING, f"clock not synchronised ({sync.source}): check chrony/NTP",
                                  code="CLOCK_UNSYNCED"))
    if results:
        return results
    if sync.offset_s is None and sync.synchronized is None:
        return [ctx.result(name, Level.UNKNOWN, f"{sync.source} gave neither offset nor sync state", code="NO_DATA")]
    offset_text = f", offset {sync.offset_s * 1000:+.1f} ms" if sync.offset_s is not None else ""
    state = "synchronised" if sync.synchronized else "offset within limits"
    return [ctx.result(name, Level.OK, f"{state} ({sync.source}{offset_text})", code="OK",
                       value=None if sync.offset_s is None else round(abs(sync.offset_s), 6))]
