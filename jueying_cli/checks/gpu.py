"""Node checks of the GPUs: NVML status and count, thermals, clocks, links, modes, processes
(XIDs and memory errors: gpu_errors.py).

Each check is a pure function of one node's facts. A value NVML could not read (None) makes the finding
UNKNOWN, never CRITICAL; hardware that legitimately lacks a feature (no NVLink on a PCIe board, no row
remapping before Ampere) is OK and says so. Lost GPUs are the nvml check's business: the per-GPU checks
skip them.
"""

from __future__ import annotations

from collections.abc import Mapping

from jueying_cli.checks.gpu_base import (
    NOT_SUPPORTED,
    count_text,
    has_any,
    indexes,
    is_busy,
    no_data,
    nvml_error,
    per_gpu,
)
from jueying_cli.checks.model import CheckResult, NodeContext
from jueying_cli.facts.model import GpuFacts
from jueying_cli.vocab import Action, Level

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
        why = f" ({indexes(lost)} lost)" if lost else ""
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
            return [no_data(ctx, name, gpu, "temperature", "temperature_c")]
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

    return per_gpu(ctx, name, one, summary)


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
            return [no_data(ctx, name, gpu, "clock event reasons", "clocks_event_reasons")]
        active = set(reasons) & set(_CLOCK_REASONS)
        if active & {"hw_thermal_slowdown", "hw_power_brake_slowdown"}:
            active.discard("hw_slowdown")  # the umbrella bit of the two specific ones
        if not active or not is_busy(gpu, busy_pct):
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

    return per_gpu(ctx, name, one, lambda gpus: f"no hardware or thermal slowdown on a busy GPU ({len(gpus)} GPUs)")


# ---------------------------------------------------------------- PCIe


def check_pcie_link(ctx: NodeContext) -> list[CheckResult]:
    """PCIe link below its maximum generation or width while busy, and the replay counter."""
    name, busy_pct, replay_limit = "pcie_link", ctx.params["busy_util_pct"], ctx.params["replay_warning"]

    def one(gpu: GpuFacts) -> list[CheckResult]:
        pcie = gpu.pcie
        if not has_any(pcie):
            return [no_data(ctx, name, gpu, "PCIe link state", "pcie")]
        found = []
        gen, gen_max = pcie.get("gen_current"), pcie.get("gen_max")
        width, width_max = pcie.get("width_current"), pcie.get("width_max")
        slow_gen = gen is not None and gen_max is not None and gen < gen_max
        narrow = width is not None and width_max is not None and width < width_max
        busy = is_busy(gpu, busy_pct)
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
            found.append(ctx.result(name, Level.WARNING, f"GPU {gpu.index}: {count_text(replays)} PCIe replays since "
                                                         f"boot (> {count_text(replay_limit)}): a marginal link",
                                    gpu=gpu.index, code="PCIE_REPLAYS", value=replays, threshold=replay_limit))
        return found

    return per_gpu(ctx, name, one, lambda gpus: f"PCIe links at full speed when busy, replays within limit "
                                                 f"({len(gpus)} GPUs)")


# ---------------------------------------------------------------- NVLink


def check_nvlink(ctx: NodeContext) -> list[CheckResult]:
    """Every NVLink the GPU has is active; a GPU without NVLink (PCIe board) is fine."""
    name = "nvlink"

    def one(gpu: GpuFacts) -> list[CheckResult]:
        links = gpu.nvlinks_active
        if links is None:
            err = nvml_error(ctx, gpu.index, "nvlinks")
            if err is not None and err not in NOT_SUPPORTED:
                return [no_data(ctx, name, gpu, "NVLink state", "nvlinks")]
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

    return per_gpu(ctx, name, one, summary)


# ---------------------------------------------------------------- modes and processes


def check_persistence_mode(ctx: NodeContext) -> list[CheckResult]:
    """Persistence mode keeps the driver initialised between jobs (no init delay, no lost state)."""
    name = "persistence_mode"

    def one(gpu: GpuFacts) -> list[CheckResult]:
        if gpu.persistence_mode is None:
            return [no_data(ctx, name, gpu, "persistence mode", "persistence_mode")]
        if not gpu.persistence_mode:
            return [ctx.result(name, Level.WARNING, f"GPU {gpu.index}: persistence mode is off: run "
                                                    "`nvidia-smi -pm 1` or enable nvidia-persistenced",
                               gpu=gpu.index, code="PERSISTENCE_OFF")]
        return []

    return per_gpu(ctx, name, one, lambda gpus: f"persistence mode on for {len(gpus)} GPUs")


def check_stray_processes(ctx: NodeContext) -> list[CheckResult]:
    """Compute processes on a node that should be idle (enable it for idle nodes, e.g. in an epilog)."""
    name, params = "stray_processes", ctx.params
    allowed, min_bytes = set(params["ignore_names"]), params["min_memory_mib"] * 1024 * 1024

    def one(gpu: GpuFacts) -> list[CheckResult]:
        if gpu.processes is None:
            return [no_data(ctx, name, gpu, "process list", "processes")]
        stray = [p for p in gpu.processes if p.name not in allowed
                 and (p.used_memory_bytes is None or p.used_memory_bytes >= min_bytes)]
        if not stray:
            return []
        shown = ", ".join(f"{p.name or '?'} (pid {p.pid}, "
                          f"{'?' if p.used_memory_bytes is None else count_text(p.used_memory_bytes / 2**20)} MiB)"
                          for p in stray[:3])
        more = f" and {len(stray) - 3} more" if len(stray) > 3 else ""
        return [ctx.result(name, Level.WARNING, f"GPU {gpu.index}: {len(stray)} compute processes on a node that "
                                                f"should be idle: {shown}{more}",
                           gpu=gpu.index, code="STRAY_PROCESS", value=len(stray), threshold=0)]

    return per_gpu(ctx, name, one, lambda gpus: f"no compute processes on {len(gpus)} GPUs")
