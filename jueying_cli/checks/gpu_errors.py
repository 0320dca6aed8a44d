"""GPU error checks: XID events (with the XID catalog's actions) and memory errors: ECC, retired pages,
remapped rows. A value NVML could not read makes the finding UNKNOWN, never CRITICAL."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from jueying_cli.checks import xid as xid_catalog
from jueying_cli.checks.gpu_base import ago, count_text, has_any, hours_text, no_data, per_gpu
from jueying_cli.checks.model import CheckResult, NodeContext
from jueying_cli.facts.model import GpuFacts, XidEvent
from jueying_cli.vocab import Action, Level

_PCI_RE = re.compile(r"^(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})(?:\.[0-7])?$")


def pci_key(bus_id: str | None) -> tuple[int, int, int] | None:
    """(domain, bus, device) of a PCI address; the kernel prints 0000:18:00, NVML 00000000:18:00.0."""
    match = _PCI_RE.match(bus_id.strip()) if bus_id else None
    if not match:
        return None
    return int(match.group(1) or "0", 16), int(match.group(2), 16), int(match.group(3), 16)


def _xid_groups(ctx: NodeContext, events: Iterable[XidEvent], window_s: float,
                ignore: set[int]) -> tuple[dict[tuple[int | None, str, int], list[XidEvent]], int, int]:
    """Events in the window grouped by (GPU index, PCI address, XID); also (#ignored, #older than window)."""
    by_pci = {key: g.index for g in ctx.facts.gpus if (key := pci_key(g.pci_bus_id)) is not None}
    groups: dict[tuple[int | None, str, int], list[XidEvent]] = {}
    ignored = old = 0
    for event in events:
        if event.time_unix is not None and ctx.now - event.time_unix > window_s:
            old += 1
            continue
        if event.xid in ignore:
            ignored += 1
            continue
        key = pci_key(event.pci_bus_id)
        gpu = by_pci.get(key) if key else None
        pci = "" if gpu is not None else (event.pci_bus_id or "unknown PCI address")
        groups.setdefault((gpu, pci, event.xid), []).append(event)
    return groups, ignored, old


def _xid_result(ctx: NodeContext, gpu: int | None, pci: str, xid: int, events: list[XidEvent],
                window_h: float, overrides: Mapping[int, Level], companions: set[int]) -> CheckResult:
    info = xid_catalog.lookup(xid)
    level, action, meaning, advice = info.level, info.action, info.meaning, info.advice
    last = max(events, key=lambda e: e.time_unix if e.time_unix is not None else float("-inf"))
    if xid == 154:
        parsed = xid_catalog.recovery_action_154(last.text)
        if parsed:
            level, action, advice = parsed[0], parsed[1], ""
            meaning = f"{meaning} to: {parsed[2]}"
            level = Level.WARNING if level is Level.OK else level  # it changed: worth a look, even back to none
    if xid == 48 and companions & {63, 64}:
        advice = "seen with XID 63/64, NVIDIA's drain-and-reset case; run field diagnostics if it returns"
    level = overrides.get(xid, level)
    timed = [e.time_unix for e in events if e.time_unix is not None]
    when = f"last {ago(ctx.now - max(timed))}" if timed else "time unknown"
    if not timed and level is Level.CRITICAL:
        # Without a time we cannot tell whether it is still in the window: never a drain on that alone.
        level, when = Level.WARNING, "time unknown, so not windowed: check the kernel log"
    where = f"GPU {gpu}" if gpu is not None else f"PCI {pci} (no GPU with that address answered)"
    count = f"{len(events)}x" if len(events) > 1 else "once"
    todo = {Action.NONE: "", Action.DRAIN: "drain", Action.RESET_GPU: "drain and reset the GPU",
            Action.REBOOT: "reboot the node", Action.RMA: "RMA"}[action]
    tail = "; ".join(part for part in (todo, advice) if part)
    code = f"XID_{xid}" if gpu is not None or not pci else f"XID_{xid}@{pci}"
    return ctx.result("xid", level, f"XID {xid} ({meaning}) on {where}: {count} in the last {hours_text(window_h)}, "
                                    f"{when}" + (f"; {tail}" if tail else ""),
                      gpu=gpu, action=action, code=code, value=len(events))


def check_xid(ctx: NodeContext) -> list[CheckResult]:
    """XIDs from the kernel log within window_hours of now, one result per (GPU, XID) with count and age."""
    name, params, log = "xid", ctx.params, ctx.facts.kernel_log
    if log is None or log.status != "ok" or log.xid_events is None:
        why = (log.message if log and log.message else "not collected by this probe")
        return [ctx.result(name, Level.UNKNOWN, f"kernel log unavailable, XIDs not checked: {why}",
                           code="KERNEL_LOG_UNAVAILABLE")]
    window_h = float(params["window_hours"])
    overrides = {x: Level.WARNING for x in params["as_warning"]} | {x: Level.CRITICAL for x in params["as_critical"]}
    groups, ignored, old = _xid_groups(ctx, log.xid_events, window_h * 3600, set(params["ignore"]))
    per_gpu: dict[tuple[int | None, str], set[int]] = {}
    for gpu, pci, xid in groups:
        per_gpu.setdefault((gpu, pci), set()).add(xid)
    results = [_xid_result(ctx, gpu, pci, xid, events, window_h, overrides, per_gpu[(gpu, pci)])
               for (gpu, pci, xid), events in sorted(groups.items(), key=lambda kv: (kv[0][0] is None, kv[0]))]
    if results:
        return results
    notes = [f"{n} {what}" for n, what in ((ignored, "ignored"), (old, "older")) if n]
    extra = f" ({', '.join(notes)})" if notes else ""
    return [ctx.result(name, Level.OK, f"no XID in the last {hours_text(window_h)}{extra}; kernel log "
                                       f"{log.source or 'read'}", code="OK", value=0)]


# ---------------------------------------------------------------- ECC


def _ecc_off(ctx: NodeContext, check: str, gpu: GpuFacts, what: str) -> CheckResult:
    return ctx.result(check, Level.UNKNOWN, f"GPU {gpu.index}: ECC is disabled, so {what} are not counted "
                                            "(enable with `nvidia-smi -e 1` and a reset)",
                      gpu=gpu.index, code="ECC_DISABLED")


def check_ecc_uncorrected(ctx: NodeContext) -> list[CheckResult]:
    """Uncorrected (double-bit) ECC errors since the driver loaded: any at all is a drain and reset."""
    name = "ecc_uncorrected"

    def one(gpu: GpuFacts) -> list[CheckResult]:
        if gpu.ecc_mode_current is False:
            return [_ecc_off(ctx, name, gpu, "uncorrected errors")]
        count = gpu.ecc_errors.get("uncorrected_volatile")
        if count is None:
            return [no_data(ctx, name, gpu, "uncorrected ECC count", "ecc_errors.uncorrected_volatile")]
        if count > 0:
            return [ctx.result(name, Level.CRITICAL,
                               f"GPU {gpu.index}: {count_text(count)} uncorrected ECC errors since the driver loaded "
                               "(limit 0): drain and reset the GPU",
                               gpu=gpu.index, action=Action.RESET_GPU, code="ECC_DBE_VOLATILE", value=count,
                               threshold=0)]
        return []

    return per_gpu(ctx, name, one, lambda gpus: f"no uncorrected ECC errors on {len(gpus)} GPUs")


def check_ecc_corrected(ctx: NodeContext) -> list[CheckResult]:
    """Corrected ECC errors since the driver loaded, against warning / critical counts."""
    name, warning, critical = "ecc_corrected", ctx.params["warning"], ctx.params["critical"]

    def one(gpu: GpuFacts) -> list[CheckResult]:
        if gpu.ecc_mode_current is False:
            return [_ecc_off(ctx, name, gpu, "corrected errors")]
        count = gpu.ecc_errors.get("corrected_volatile")
        if count is None:
            return [no_data(ctx, name, gpu, "corrected ECC count", "ecc_errors.corrected_volatile")]
        for limit, level in ((critical, Level.CRITICAL), (warning, Level.WARNING)):
            if limit is not None and count > limit:
                return [ctx.result(name, level, f"GPU {gpu.index}: {count_text(count)} corrected ECC errors since the "
                                                f"driver loaded (> {count_text(limit)}); see `nvidia-smi -q -d ECC` "
                                                "for SRAM vs DRAM",
                                   gpu=gpu.index, action=Action.DRAIN if level is Level.CRITICAL else Action.NONE,
                                   code="ECC_SBE_VOLATILE", value=count, threshold=limit)]
        return []

    def summary(gpus: list[GpuFacts]) -> str:
        top = max((g.ecc_errors.get("corrected_volatile") or 0 for g in gpus), default=0)
        limit = "off" if warning is None else count_text(warning)
        return f"corrected ECC errors at most {count_text(top)} per GPU (warning above {limit})"

    return per_gpu(ctx, name, one, summary)


def _level(name: str) -> Level:
    return Level.CRITICAL if name == "critical" else Level.WARNING


def check_retired_pages(ctx: NodeContext) -> list[CheckResult]:
    """Pre-Ampere page retirement: a pending retirement wants a reset; too many retired pages, an RMA."""
    name, limit, pending_level = "retired_pages", ctx.params["limit"], _level(ctx.params["pending_level"])

    def one(gpu: GpuFacts) -> list[CheckResult]:
        if has_any(gpu.remapped_rows):
            return []  # Ampere and later remap rows instead: remapped_rows checks them
        pages = gpu.retired_pages
        if not has_any(pages):
            return [no_data(ctx, name, gpu, "retired pages (and remapped rows)", "retired_pages")]
        found = []
        if pages.get("pending"):
            found.append(ctx.result(name, pending_level, f"GPU {gpu.index}: a page retirement is pending: "
                                                         "drain and reset the GPU to apply it",
                                    gpu=gpu.index, action=Action.RESET_GPU, code="RETIRED_PAGES_PENDING"))
        sbe, dbe = pages.get("single_bit_ecc"), pages.get("double_bit_ecc")
        if sbe is None and dbe is None:
            found.append(no_data(ctx, name, gpu, "retired page counts", "retired_pages.single_bit_ecc"))
        elif (total := (sbe or 0) + (dbe or 0)) >= limit:
            found.append(ctx.result(name, Level.CRITICAL,
                                    f"GPU {gpu.index} (serial {gpu.serial or '?'}): {total} retired pages "
                                    f"({sbe or 0} single-bit, {dbe or 0} double-bit) >= {limit}: RMA",
                                    gpu=gpu.index, action=Action.RMA, code="RETIRED_PAGES_LIMIT", value=total,
                                    threshold=limit))
        return found

    def summary(gpus: list[GpuFacts]) -> str:
        legacy = [g for g in gpus if not has_any(g.remapped_rows)]
        if not legacy:
            return f"not applicable: all {len(gpus)} GPUs remap rows instead (see remapped_rows)"
        top = max((g.retired_pages.get("single_bit_ecc") or 0) + (g.retired_pages.get("double_bit_ecc") or 0)
                  for g in legacy)
        return f"no pending retirement; at most {top} retired pages per GPU (limit {limit})"

    return per_gpu(ctx, name, one, summary)


def check_remapped_rows(ctx: NodeContext) -> list[CheckResult]:
    """Ampere+ row remapping: failure is an RMA, pending wants a reset, many uncorrectable remaps a warning."""
    name, params = "remapped_rows", ctx.params
    unc_limit, pending_level = params["uncorrectable_warning"], _level(params["pending_level"])

    def one(gpu: GpuFacts) -> list[CheckResult]:
        rows = gpu.remapped_rows
        if not has_any(rows):
            if has_any(gpu.retired_pages):
                return []  # pre-Ampere: retired_pages checks it
            return [no_data(ctx, name, gpu, "remapped rows (and retired pages)", "remapped_rows")]
        found = []
        if rows.get("failure"):
            found.append(ctx.result(name, Level.CRITICAL,
                                    f"GPU {gpu.index} (serial {gpu.serial or '?'}): row remapping failed, no spare "
                                    "rows left for a bad memory row: drain and RMA",
                                    gpu=gpu.index, action=Action.RMA, code="ROW_REMAP_FAILURE"))
        if rows.get("pending"):
            found.append(ctx.result(name, pending_level, f"GPU {gpu.index}: a row remap is pending: drain and reset "
                                                         "the GPU to apply it",
                                    gpu=gpu.index, action=Action.RESET_GPU, code="ROW_REMAP_PENDING"))
        unc = rows.get("uncorrected")
        if unc_limit is not None and unc is not None and unc >= unc_limit:
            found.append(ctx.result(name, Level.WARNING,
                                    f"GPU {gpu.index}: {unc} rows remapped for uncorrectable errors (>= {unc_limit}): "
                                    "spare rows running out, plan an RMA",
                                    gpu=gpu.index, code="ROW_REMAP_UNCORRECTABLE_HIGH", value=unc,
                                    threshold=unc_limit))
        return found

    def summary(gpus: list[GpuFacts]) -> str:
        modern = [g for g in gpus if has_any(g.remapped_rows)]
        if not modern:
            return f"not applicable: all {len(gpus)} GPUs predate row remapping (see retired_pages)"
        unc = max(g.remapped_rows.get("uncorrected") or 0 for g in modern)
        return f"no pending or failed row remap; at most {unc} uncorrectable remaps per GPU"

    return per_gpu(ctx, name, one, summary)
