"""Node checks of the GPUs: NVML status, count, XIDs, memory errors, thermals, links, modes, processes.

Each check is a pure function of one node's facts. A value NVML could not read (None) makes the finding
UNKNOWN, never CRITICAL; hardware that legitimately lacks a feature (no NVLink on a PCIe board, no row
remapping before Ampere) is OK and says so. Lost GPUs are the nvml check's business: the per-GPU checks
skip them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jueying_cli.checks import xid as xid_catalog
from jueying_cli.checks.model import CheckResult, NodeContext
from jueying_cli.facts.model import GpuFacts, XidEvent
from jueying_cli.vocab import Action, Level

# ---------------------------------------------------------------- shared helpers

_NOT_SUPPORTED = ("NOT_SUPPORTED", "FUNCTION_NOT_FOUND")


def nvml_error(ctx: NodeContext, gpu: int | None, field: str) -> str | None:
    """NVML's error name recorded for `field` (or a sub-field of it) of this GPU, if any."""
    for err in ctx.facts.errors:
        if err.gpu == gpu and (err.field == field or err.field.startswith(field + ".")):
            return err.error
    return None


def _no_data(ctx: NodeContext, check: str, gpu: GpuFacts, what: str, field: str) -> CheckResult:
    """UNKNOWN: this GPU did not report what the check needs (with NVML's reason when recorded)."""
    why = nvml_error(ctx, gpu.index, field) or "not reported"
    return ctx.result(check, Level.UNKNOWN, f"GPU {gpu.index}: {what} unreadable ({why})", gpu=gpu.index,
                      code="NO_DATA")


def no_gpus_result(ctx: NodeContext, check: str) -> CheckResult:
    """The result of a GPU check on a node with no readable GPU. The nvml check is the one that reports why
    (CRITICAL, or UNKNOWN); the others say they were skipped, so one cause is not counted nine times."""
    facts = ctx.facts
    lost = [g.index for g in facts.gpus if g.lost]
    if lost:
        return ctx.result(check, Level.OK, f"skipped: every GPU is lost ({_indexes(lost)}), see the nvml check",
                          code="SKIPPED")
    if facts.nvml.status == "ok":
        return ctx.result(check, Level.OK, "no GPUs on this node", code="NO_GPUS")
    if ctx.node.expected_gpus == 0:
        return ctx.result(check, Level.OK, "no GPUs expected on this node (expected_gpus: 0)", code="NO_GPUS")
    return ctx.result(check, Level.OK, f"skipped: no GPU facts (NVML {facts.nvml.status}), see the nvml check",
                      code="SKIPPED")


def _indexes(indexes: Iterable[int]) -> str:
    items = list(indexes)
    return ("GPU " if len(items) == 1 else "GPUs ") + ", ".join(str(i) for i in items)


def _lost_note(ctx: NodeContext) -> str:
    lost = [g.index for g in ctx.facts.gpus if g.lost]
    return f"; {_indexes(lost)} lost, see nvml" if lost else ""


def _per_gpu(ctx: NodeContext, check: str, one: Callable[[GpuFacts], list[CheckResult]],
             summary: Callable[[list[GpuFacts]], str]) -> list[CheckResult]:
    """Run `one` on every GPU that answered; one OK result with `summary` when nothing was found."""
    gpus = [g for g in ctx.facts.gpus if not g.lost]
    if not gpus:
        return [no_gpus_result(ctx, check)]
    found = [result for gpu in gpus for result in one(gpu)]
    if found:
        return found
    return [ctx.result(check, Level.OK, summary(gpus) + _lost_note(ctx), code="OK")]


def _busy(gpu: GpuFacts, busy_util_pct: float) -> bool | None:
    """Whether the GPU is working: utilization at or above busy_util_pct (%), else NVML's idle flag."""
    if gpu.utilization_gpu_pct is not None:
        return gpu.utilization_gpu_pct >= busy_util_pct
    if gpu.clocks_event_reasons is not None:
        return "gpu_idle" not in gpu.clocks_event_reasons
    return None


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _ago(seconds: float) -> str:
    """A short age: '40 s', '12 min', '1.5 h'."""
    if seconds < 0:
        return "in the future (clock skew)"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _hours(hours: float) -> str:
    return f"{hours:g} h"


# ---------------------------------------------------------------- nvml

# status -> (level when expected_gpus > 0, level when expected_gpus is unset, action, meaning). A node
# without any driver and without expected_gpus may simply be a CPU node: UNKNOWN, with the hint to say so.
# Failures of our own access (permission, missing pynvml, --no-gpus) are never CRITICAL.
_NVML_STATUS: Mapping[str, tuple[Level, Level, Action, str]] = {
    "driver_not_loaded": (Level.CRITICAL, Level.CRITICAL, Action.DRAIN,
                          "the NVIDIA kernel module is not loaded: load it or reboot"),
    "library_not_found": (Level.CRITICAL, Level.UNKNOWN, Action.DRAIN,
                          "no NVIDIA driver installed (libnvidia-ml.so.1 not found)"),
    "library_mismatch": (Level.CRITICAL, Level.CRITICAL, Action.DRAIN,
                         "the NVML library does not match what the driver provides: reinstall the driver"),
    "error": (Level.CRITICAL, Level.CRITICAL, Action.DRAIN, "NVML failed to initialise"),
    "no_permission": (Level.UNKNOWN, Level.UNKNOWN, Action.NONE, "no permission to use NVML: run the probe as root"),
    "pynvml_missing": (Level.UNKNOWN, Level.UNKNOWN, Action.NONE,
                       "the probe's Python lacks pynvml (nvidia-ml-py): GPUs not read"),
    "skipped": (Level.UNKNOWN, Level.UNKNOWN, Action.NONE, "the probe was told not to read GPUs"),
}


def check_nvml(ctx: NodeContext) -> list[CheckResult]:
    """NVML answers, and no GPU is lost (GPU_IS_LOST is XID 79's twin: the GPU fell off the bus)."""
    name, nvml, expected = "nvml", ctx.facts.nvml, ctx.node.expected_gpus
    if nvml.status != "ok":
        if expected == 0:
            return [ctx.result(name, Level.OK, f"no GPUs expected (expected_gpus: 0); NVML status {nvml.status}",
                               code="NO_GPUS")]
        when_expected, when_unset, action, meaning = _NVML_STATUS.get(nvml.status, _NVML_STATUS["error"])
        level = when_expected if expected else when_unset
        detail = f" ({nvml.message})" if nvml.message else ""
        hint = "; set expected_gpus: 0 for a node without GPUs" if level is Level.UNKNOWN and expected is None \
            and nvml.status == "library_not_found" else ""
        return [ctx.result(name, level, f"NVML {nvml.status}: {meaning}{detail}{hint}",
                           action=action if level is Level.CRITICAL else Action.NONE,
                           code=f"NVML_{(nvml.status if nvml.status in _NVML_STATUS else 'error').upper()}")]
    lost = [g for g in ctx.facts.gpus if g.lost]
    if lost:
        return [ctx.result(name, Level.CRITICAL,
                           f"GPU {g.index} is lost (GPU_IS_LOST): it fell off the bus, like XID 79; "
                           "reboot the node, RMA if it recurs", gpu=g.index, action=Action.REBOOT, code="GPU_LOST")
                for g in lost]
    return [ctx.result(name, Level.OK, f"NVML ok: driver {nvml.driver_version or '?'}, "
                                       f"CUDA {nvml.cuda_driver_version or '?'}, {len(ctx.facts.gpus)} GPUs",
                       code="OK")]


# ---------------------------------------------------------------- gpu_count


def check_gpu_count(ctx: NodeContext) -> list[CheckResult]:
    """GPUs that answer (not lost) against the inventory's expected_gpus."""
    name, expected, facts = "gpu_count", ctx.node.expected_gpus, ctx.facts
    present = [g.index for g in facts.gpus if not g.lost]
    lost = [g.index for g in facts.gpus if g.lost]
    if expected is None:
        return [ctx.result(name, Level.OK, f"{len(present)} GPUs present; no expected_gpus set for this node",
                           code="NO_EXPECTATION", value=len(present))]
    if facts.nvml.status != "ok":
        if expected == 0:
            return [ctx.result(name, Level.OK, "no GPUs expected, none read", code="OK", value=0, threshold=0)]
        return [ctx.result(name, Level.UNKNOWN, f"cannot count GPUs: NVML status {facts.nvml.status} "
                                                "(see the nvml check)", code="NO_DATA", threshold=expected)]
    if len(present) < expected:
        why = f" ({_indexes(lost)} lost)" if lost else ""
        return [ctx.result(name, Level.CRITICAL,
                           f"{len(present)} of {expected} expected GPUs present{why}: drain; "
                           "RMA if a reboot does not bring it back",
                           action=Action.DRAIN, code="GPU_MISSING", value=len(present), threshold=expected)]
    if len(present) > expected:
        return [ctx.result(name, Level.WARNING, f"{len(present)} GPUs present, the inventory expects {expected}: "
                                                "update expected_gpus?",
                           code="GPU_EXTRA", value=len(present), threshold=expected)]
    return [ctx.result(name, Level.OK, f"{len(present)} of {expected} expected GPUs present", code="OK",
                       value=len(present), threshold=expected)]


# ---------------------------------------------------------------- xid

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
    when = f"last {_ago(ctx.now - max(timed))}" if timed else "time unknown"
    if not timed and level is Level.CRITICAL:
        # Without a time we cannot tell whether it is still in the window: never a drain on that alone.
        level, when = Level.WARNING, "time unknown, so not windowed: check the kernel log"
    where = f"GPU {gpu}" if gpu is not None else f"PCI {pci} (no GPU with that address answered)"
    count = f"{len(events)}x" if len(events) > 1 else "once"
    todo = {Action.NONE: "", Action.DRAIN: "drain", Action.RESET_GPU: "drain and reset the GPU",
            Action.REBOOT: "reboot the node", Action.RMA: "RMA"}[action]
    tail = "; ".join(part for part in (todo, advice) if part)
    code = f"XID_{xid}" if gpu is not None or not pci else f"XID_{xid}@{pci}"
    return ctx.result("xid", level, f"XID {xid} ({meaning}) on {where}: {count} in the last {_hours(window_h)}, "
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
    return [ctx.result(name, Level.OK, f"no XID in the last {_hours(window_h)}{extra}; kernel log "
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
            return [_no_data(ctx, name, gpu, "uncorrected ECC count", "ecc_errors.uncorrected_volatile")]
        if count > 0:
            return [ctx.result(name, Level.CRITICAL,
                               f"GPU {gpu.index}: {_count(count)} uncorrected ECC errors since the driver loaded "
                               "(limit 0): drain and reset the GPU",
                               gpu=gpu.index, action=Action.RESET_GPU, code="ECC_DBE_VOLATILE", value=count,
                               threshold=0)]
        return []

    return _per_gpu(ctx, name, one, lambda gpus: f"no uncorrected ECC errors on {len(gpus)} GPUs")


def check_ecc_corrected(ctx: NodeContext) -> list[CheckResult]:
    """Corrected ECC errors since the driver loaded, against warning / critical counts."""
    name, warning, critical = "ecc_corrected", ctx.params["warning"], ctx.params["critical"]

    def one(gpu: GpuFacts) -> list[CheckResult]:
        if gpu.ecc_mode_current is False:
            return [_ecc_off(ctx, name, gpu, "corrected errors")]
        count = gpu.ecc_errors.get("corrected_volatile")
        if count is None:
            return [_no_data(ctx, name, gpu, "corrected ECC count", "ecc_errors.corrected_volatile")]
        for limit, level in ((critical, Level.CRITICAL), (warning, Level.WARNING)):
            if limit is not None and count > limit:
                return [ctx.result(name, level, f"GPU {gpu.index}: {_count(count)} corrected ECC errors since the "
                                                f"driver loaded (> {_count(limit)}); see `nvidia-smi -q -d ECC` "
                                                "for SRAM vs DRAM",
                                   gpu=gpu.index, action=Action.DRAIN if level is Level.CRITICAL else Action.NONE,
                                   code="ECC_SBE_VOLATILE", value=count, threshold=limit)]
        return []

    def summary(gpus: list[GpuFacts]) -> str:
        top = max((g.ecc_errors.get("corrected_volatile") or 0 for g in gpus), default=0)
        limit = "off" if warning is None else _count(warning)
        return f"corrected ECC errors at most {_count(top)} per GPU (warning above {limit})"

    return _per_gpu(ctx, name, one, summary)


def _has_any(values: Mapping[str, Any]) -> bool:
    return any(v is not None for v in values.values())


def _level(name: str) -> Level:
    return Level.CRITICAL if name == "critical" else Level.WARNING


def check_retired_pages(ctx: NodeContext) -> list[CheckResult]:
    """Pre-Ampere page retirement: a pending retirement wants a reset; too many retired pages, an RMA."""
    name, limit, pending_level = "retired_pages", ctx.params["limit"], _level(ctx.params["pending_level"])

    def one(gpu: GpuFacts) -> list[CheckResult]:
        if _has_any(gpu.remapped_rows):
            return []  # Ampere and later remap rows instead: remapped_rows checks them
        pages = gpu.retired_pages
        if not _has_any(pages):
            return [_no_data(ctx, name, gpu, "retired pages (and remapped rows)", "retired_pages")]
        found = []
        if pages.get("pending"):
            found.append(ctx.result(name, pending_level, f"GPU {gpu.index}: a page retirement is pending: "
                                                         "drain and reset the GPU to apply it",
                                    gpu=gpu.index, action=Action.RESET_GPU, code="RETIRED_PAGES_PENDING"))
        sbe, dbe = pages.get("single_bit_ecc"), pages.get("double_bit_ecc")
        if sbe is None and dbe is None:
            found.append(_no_data(ctx, name, gpu, "retired page counts", "retired_pages.single_bit_ecc"))
        elif (total := (sbe or 0) + (dbe or 0)) >= limit:
            found.append(ctx.result(name, Level.CRITICAL,
                                    f"GPU {gpu.index} (serial {gpu.serial or '?'}): {total} retired pages "
                                    f"({sbe or 0} single-bit, {dbe or 0} double-bit) >= {limit}: RMA",
                                    gpu=gpu.index, action=Action.RMA, code="RETIRED_PAGES_LIMIT", value=total,
                                    threshold=limit))
        return found

    def summary(gpus: list[GpuFacts]) -> str:
        legacy = [g for g in gpus if not _has_any(g.remapped_rows)]
        if not legacy:
            return f"not applicable: all {len(gpus)} GPUs remap rows instead (see remapped_rows)"
        top = max((g.retired_pages.get("single_bit_ecc") or 0) + (g.retired_pages.get("double_bit_ecc") or 0)
                  for g in legacy)
        return f"no pending retirement; at most {top} retired pages per GPU (limit {limit})"

    return _per_gpu(ctx, name, one, summary)


def check_remapped_rows(ctx: NodeContext) -> list[CheckResult]:
    """Ampere+ row remapping: failure is an RMA, pending wants a reset, many uncorrectable remaps a warning."""
    name, params = "remapped_rows", ctx.params
    unc_limit, pending_level = params["uncorrectable_warning"], _level(params["pending_level"])

    def one(gpu: GpuFacts) -> list[CheckResult]:
        rows = gpu.remapped_rows
        if not _has_any(rows):
            if _has_any(gpu.retired_pages):
                return []  # pre-Ampere: retired_pages checks it
            return [_no_data(ctx, name, gpu, "remapped rows (and retired pages)", "remapped_rows")]
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
        modern = [g for g in gpus if _has_any(g.remapped_rows)]
        if not modern:
            return f"not applicable: all {len(gpus)} GPUs predate row remapping (see retired_pages)"
        unc = max(g.remapped_rows.get("uncorrected") or 0 for g in modern)
        return f"no pending or failed row remap; at most {unc} uncorrectable remaps per GPU"

    return _per_gpu(ctx, name, one, summary)


# ---------------------------------------------------------------- temperature


def check_temperature(ctx: NodeContext) -> list[CheckResult]:
    """GPU temperature (°C) against the GPU's own slowdown threshold, warning margin_c below it."""
    name, params = "temperature", ctx.params
    margin = params["margin_c"]

    def limits(gpu: GpuFacts) -> tuple[float, float, str]:
        if gpu.temperature_slowdown_c is not None:
            slow = gpu.temperature_slowdown_c
            return slow - margin, slow, f"slowdown {slow} °C"
        return params["fallback_warning_c"], params["fallback_critical_c"], "fallback limits: slowdown unreadable"

    def one(gpu: GpuFacts) -> list[CheckResult]:
        temp = gpu.temperature_c
        if temp is None:
            return [_no_data(ctx, name, gpu, "temperature", "temperature_c")]
        warn, crit, basis = limits(gpu)
        if temp >= crit:
            return [ctx.result(name, Level.CRITICAL, f"GPU {gpu.index}: {temp} °C >= {crit:g} °C ({basis}): "
                                                     "the GPU is slowing itself down; drain and check cooling",
                               gpu=gpu.index, action=Action.DRAIN, code="TEMP_SLOWDOWN", value=temp,
                               threshold=crit)]
        if temp >= warn:
            return [ctx.result(name, Level.WARNING, f"GPU {gpu.index}: {temp} °C >= {warn:g} °C "
                                                    f"({basis}, margin {margin} °C)",
                               gpu=gpu.index, code="TEMP_NEAR_SLOWDOWN", value=temp, threshold=warn)]
        return []

    def summary(gpus: list[GpuFacts]) -> str:
        hottest = max(gpus, key=lambda g: g.temperature_c or 0)
        return f"hottest GPU {hottest.index} at {hottest.temperature_c} °C ({limits(hottest)[2]})"

    return _per_gpu(ctx, name, one, summary)


# ---------------------------------------------------------------- clocks events

# reason -> (code, action, what, advice). The hardware reasons are asserted by the board (thermal sensor or
# the chassis' power-brake line) and cut clocks hard: a busy GPU that holds them for confirm_runs runs makes
# every multi-node job a straggler, so the recommendation is to drain and fix cooling / power. Software
# thermal slowdown is the driver protecting the GPU: a warning, no drain. sw_power_cap is normal under load.
_CLOCK_REASONS: Mapping[str, tuple[str, Action, str, str]] = {
    "hw_thermal_slowdown": ("CLOCKS_HW_THERMAL", Action.DRAIN, "hardware thermal slowdown", "drain, check cooling"),
    "hw_power_brake_slowdown": ("CLOCKS_HW_POWER_BRAKE", Action.DRAIN, "hardware power brake",
                                "drain, check the PSUs and chassis power"),
    "hw_slowdown": ("CLOCKS_HW_SLOWDOWN", Action.DRAIN, "hardware slowdown", "drain, check cooling and power"),
    "sw_thermal_slowdown": ("CLOCKS_SW_THERMAL", Action.NONE, "driver thermal slowdown", "check airflow"),
}


def check_clocks_events(ctx: NodeContext) -> list[CheckResult]:
    """Clock slowdowns a busy GPU should not have (idle GPUs and the software power cap are normal)."""
    name, busy_pct = "clocks_events", ctx.params["busy_util_pct"]

    def one(gpu: GpuFacts) -> list[CheckResult]:
        reasons = gpu.clocks_event_reasons
        if reasons is None:
            return [_no_data(ctx, name, gpu, "clock event reasons", "clocks_event_reasons")]
        active = set(reasons) & set(_CLOCK_REASONS)
        if active & {"hw_thermal_slowdown", "hw_power_brake_slowdown"}:
            active.discard("hw_slowdown")  # the umbrella bit of the two specific ones
        if not active or not _busy(gpu, busy_pct):
            return []
        util = "?" if gpu.utilization_gpu_pct is None else f"{gpu.utilization_gpu_pct}%"
        clocks = f", SM {gpu.clock_sm_mhz}/{gpu.clock_sm_max_mhz} MHz" if gpu.clock_sm_mhz is not None else ""
        found = []
        for reason in sorted(active):
            code, action, what, advice = _CLOCK_REASONS[reason]
            found.append(ctx.result(name, Level.WARNING, f"GPU {gpu.index}: {what} while busy ({util} "
                                                         f"utilization{clocks}): {advice}",
                                    gpu=gpu.index, action=action, code=code))
        return found

    return _per_gpu(ctx, name, one, lambda gpus: f"no hardware or thermal slowdown on a busy GPU ({len(gpus)} GPUs)")


# ---------------------------------------------------------------- PCIe


def check_pcie_link(ctx: NodeContext) -> list[CheckResult]:
    """PCIe link below its maximum generation or width while busy, and the replay counter."""
    name, busy_pct, replay_limit = "pcie_link", ctx.params["busy_util_pct"], ctx.params["replay_warning"]

    def one(gpu: GpuFacts) -> list[CheckResult]:
        pcie = gpu.pcie
        if not _has_any(pcie):
            return [_no_data(ctx, name, gpu, "PCIe link state", "pcie")]
        found = []
        gen, gen_max = pcie.get("gen_current"), pcie.get("gen_max")
        width, width_max = pcie.get("width_current"), pcie.get("width_max")
        slow_gen = gen is not None and gen_max is not None and gen < gen_max
        narrow = width is not None and width_max is not None and width < width_max
        busy = _busy(gpu, busy_pct)
        if (slow_gen or narrow) and busy is None:
            found.append(ctx.result(name, Level.UNKNOWN, f"GPU {gpu.index}: PCIe link Gen{gen} x{width} below "
                                                         f"Gen{gen_max} x{width_max}, and utilization unreadable: "
                                                         "cannot tell a fault from idle downtraining",
                                    gpu=gpu.index, code="NO_DATA"))
        elif (slow_gen or narrow) and busy:
            found.append(ctx.result(name, Level.WARNING,
                                    f"GPU {gpu.index}: PCIe link Gen{gen} x{width} while busy, capable of "
                                    f"Gen{gen_max} x{width_max}: drain and reseat; RMA if it persists",
                                    gpu=gpu.index, action=Action.DRAIN, code="PCIE_DOWNTRAINED",
                                    value=width if narrow else gen, threshold=width_max if narrow else gen_max))
        replays = pcie.get("replay_counter")
        if replays is not None and replay_limit is not None and replays > replay_limit:
            found.append(ctx.result(name, Level.WARNING, f"GPU {gpu.index}: {_count(replays)} PCIe replays since "
                                                         f"boot (> {_count(replay_limit)}): a marginal link",
                                    gpu=gpu.index, code="PCIE_REPLAYS", value=replays, threshold=replay_limit))
        return found

    return _per_gpu(ctx, name, one, lambda gpus: f"PCIe links at full speed when busy, replays within limit "
                                                 f"({len(gpus)} GPUs)")


# ---------------------------------------------------------------- NVLink


def check_nvlink(ctx: NodeContext) -> list[CheckResult]:
    """Every NVLink the GPU has is active; a GPU without NVLink (PCIe board) is fine."""
    name = "nvlink"

    def one(gpu: GpuFacts) -> list[CheckResult]:
        links = gpu.nvlinks_active
        if links is None:
            err = nvml_error(ctx, gpu.index, "nvlinks")
            if err is not None and err not in _NOT_SUPPORTED:
                return [_no_data(ctx, name, gpu, "NVLink state", "nvlinks")]
            return []  # no NVLink on this board: never a fault (NVSentinel's false positive)
        down = [i for i, active in enumerate(links) if not active]
        if down:
            return [ctx.result(name, Level.CRITICAL,
                               f"GPU {gpu.index}: {len(down)} of {len(links)} NVLinks inactive (link "
                               f"{', '.join(map(str, down))}): drain and reset the GPU; RMA if they stay down",
                               gpu=gpu.index, action=Action.RESET_GPU, code="NVLINK_DOWN", value=len(down),
                               threshold=0)]
        return []

    def summary(gpus: list[GpuFacts]) -> str:
        with_links = [g for g in gpus if g.nvlinks_active]
        if not with_links:
            return "no NVLink on this node's GPUs"
        links = sum(len(g.nvlinks_active or ()) for g in with_links)
        return f"all NVLinks active on {len(with_links)} GPUs ({links} links)"

    return _per_gpu(ctx, name, one, summary)


# ---------------------------------------------------------------- modes and processes


def check_persistence_mode(ctx: NodeContext) -> list[CheckResult]:
    """Persistence mode keeps the driver initialised between jobs (no init delay, no lost state)."""
    name = "persistence_mode"

    def one(gpu: GpuFacts) -> list[CheckResult]:
        if gpu.persistence_mode is None:
            return [_no_data(ctx, name, gpu, "persistence mode", "persistence_mode")]
        if not gpu.persistence_mode:
            return [ctx.result(name, Level.WARNING, f"GPU {gpu.index}: persistence mode is off: run "
                                                    "`nvidia-smi -pm 1` or enable nvidia-persistenced",
                               gpu=gpu.index, code="PERSISTENCE_OFF")]
        return []

    return _per_gpu(ctx, name, one, lambda gpus: f"persistence mode on for {len(gpus)} GPUs")


def check_stray_processes(ctx: NodeContext) -> list[CheckResult]:
    """Compute processes on a node that should be idle (enable it for idle nodes, e.g. in an epilog)."""
    name, params = "stray_processes", ctx.params
    allowed, min_bytes = set(params["ignore_names"]), params["min_memory_mib"] * 1024 * 1024

    def one(gpu: GpuFacts) -> list[CheckResult]:
        if gpu.processes is None:
            return [_no_data(ctx, name, gpu, "process list", "processes")]
        stray = [p for p in gpu.processes if p.name not in allowed
                 and (p.used_memory_bytes is None or p.used_memory_bytes >= min_bytes)]
        if not stray:
            return []
        shown = ", ".join(f"{p.name or '?'} (pid {p.pid}, "
                          f"{'?' if p.used_memory_bytes is None else _count(p.used_memory_bytes / 2**20)} MiB)"
                          for p in stray[:3])
        more = f" and {len(stray) - 3} more" if len(stray) > 3 else ""
        return [ctx.result(name, Level.WARNING, f"GPU {gpu.index}: {len(stray)} compute processes on a node that "
                                                f"should be idle: {shown}{more}",
                           gpu=gpu.index, code="STRAY_PROCESS", value=len(stray), threshold=0)]

    return _per_gpu(ctx, name, one, lambda gpus: f"no compute processes on {len(gpus)} GPUs")
