"""Reading one GPU through NVML, field by field: each read may fail on its own (the value becomes None and an
entry lands in the errors list), so one unsupported field or one lost GPU never costs the rest. Takes the
pynvml module as an argument (imported in nvml.py only). Python 3.8, standard library only.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Tuple

from jueying_cli.facts.schema import (
    ECC_ERRORS_KEYS,
    ERROR_KEYS,
    GPU_KEYS,
    GPU_STATIC_KEYS,
    NVLINK_KEYS,
    PCIE_KEYS,
    PCIE_STATIC_KEYS,
    PROCESS_KEYS,
    REMAPPED_ROWS_KEYS,
    RETIRED_PAGES_KEYS,
    nulls,
    record,
)

# One JSON object of the document (a GPU, the nvml section, an errors entry).
Obj = Dict[str, object]
Errors = List[Obj]

# NVML clocks-event (formerly "throttle") reason bits, named as DCGM and nvidia-smi name them.
CLOCKS_EVENT_REASONS = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)

COMPUTE_MODES = {0: "default", 1: "exclusive_thread", 2: "prohibited", 3: "exclusive_process"}

# nvidia-ml-py raises subclasses of NVMLError; we name errors by NVML's own constant, without prefix.
_ERROR_NAMES = {
    1: "UNINITIALIZED", 2: "INVALID_ARGUMENT", 3: "NOT_SUPPORTED", 4: "NO_PERMISSION",
    5: "ALREADY_INITIALIZED", 6: "NOT_FOUND", 7: "INSUFFICIENT_SIZE", 8: "INSUFFICIENT_POWER",
    9: "DRIVER_NOT_LOADED", 10: "TIMEOUT", 11: "IRQ_ISSUE", 12: "LIBRARY_NOT_FOUND",
    13: "FUNCTION_NOT_FOUND", 14: "CORRUPTED_INFOROM", 15: "GPU_IS_LOST", 16: "RESET_REQUIRED",
    17: "OPERATING_SYSTEM", 18: "LIB_RM_VERSION_MISMATCH", 19: "IN_USE", 20: "MEMORY",
    21: "NO_DATA", 22: "VGPU_ECC_NOT_SUPPORTED", 23: "INSUFFICIENT_RESOURCES", 24: "FREQ_NOT_SUPPORTED",
    25: "ARGUMENT_VERSION_MISMATCH", 26: "DEPRECATED", 27: "NOT_READY", 28: "GPU_NOT_FOUND", 29: "INVALID_STATE",
    999: "UNKNOWN",
}

# Returned by a link index past the last NVLink the GPU has.
_END_OF_LINKS = ("NOT_SUPPORTED", "INVALID_ARGUMENT", "NOT_FOUND")


class GpuLost(Exception):
    """Raised inside one GPU's read when NVML says the GPU is lost: stop reading that GPU only."""


def error_name(exc: BaseException) -> str:
    """NVML's name for an error (`NOT_SUPPORTED`, `GPU_IS_LOST`, ...)."""
    value = getattr(exc, "value", None)
    if isinstance(value, int):
        return _ERROR_NAMES.get(value, "ERROR_%d" % value)
    return type(exc).__name__


def error_message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - pynvml's __str__ calls into the library, which may be gone
        return error_name(exc)


class Reader:
    """Calls NVML for one document, turning each failure into None plus an errors entry."""

    def __init__(self, pynvml: ModuleType, errors: Errors) -> None:
        self.nv = pynvml
        self.errors = errors

    def call(self, gpu: Optional[int], field: str, fn: Callable[..., Any], *args: object) -> Any:
        try:
            return fn(*args)
        except self.nv.NVMLError as exc:
            name = error_name(exc)
            self.errors.append(record(ERROR_KEYS, gpu=gpu, field=field, error=name, message=error_message(exc)))
            if name == "GPU_IS_LOST" and gpu is not None:
                raise GpuLost() from exc
            return None

    def call_with_fallback(self, gpu: Optional[int], field: str, fn: Callable[..., Any],
                           older: Callable[..., Any], *args: object) -> Any:
        """Call fn; where the driver predates it (function missing), call its older name instead."""
        value, err = self.call_quiet(fn, *args)
        if err == "FUNCTION_NOT_FOUND":
            return self.call(gpu, field, older, *args)
        if err is not None:
            self.record(gpu, field, err)
        return value

    def record(self, gpu: Optional[int], field: str, err: str) -> None:
        """Record an error found through call_quiet; a lost GPU stops that GPU's read."""
        self.errors.append(record(ERROR_KEYS, gpu=gpu, field=field, error=err, message=err))
        if err == "GPU_IS_LOST" and gpu is not None:
            raise GpuLost()

    def call_quiet(self, fn: Callable[..., Any], *args: object) -> Tuple[Any, Optional[str]]:
        """Call without recording: for probing (link counts, fallbacks). Returns (value, error name)."""
        try:
            return fn(*args), None
        except self.nv.NVMLError as exc:
            return None, error_name(exc)


def text(value: object) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _watts(milliwatts: Optional[int]) -> Optional[float]:
    return None if milliwatts is None else round(milliwatts / 1000.0, 3)


def decode_clocks_event_reasons(mask: int) -> List[str]:
    """Names of the set bits, in NVML's bit order; unknown bits as `bit_0x...`."""
    names = [name for bit, name in CLOCKS_EVENT_REASONS if mask & bit]
    known = 0
    for bit, _ in CLOCKS_EVENT_REASONS:
        known |= bit
    rest = mask & ~known
    bit = 1
    while rest:
        if rest & bit:
            names.append("bit_0x%x" % bit)
            rest &= ~bit
        bit <<= 1
    return names


def cuda_version(raw: Optional[int]) -> Optional[str]:
    """NVML reports CUDA 12.4 as 12040."""
    if raw is None:
        return None
    return "%d.%d" % (raw // 1000, (raw % 1000) // 10)


def _process_name(nv: ModuleType, pid: int) -> Optional[str]:
    try:
        with open("/proc/%d/comm" % pid) as fh:
            return fh.read().strip() or None
    except OSError:
        pass
    try:
        return text(nv.nvmlSystemGetProcessName(pid))
    except Exception:  # noqa: BLE001 - a name is nice to have; any NVML or ctypes failure means unknown
        return None


def _read_processes(r: Reader, index: int, handle: object) -> Optional[List[Obj]]:
    nv = r.nv
    procs = r.call_with_fallback(index, "processes", nv.nvmlDeviceGetComputeRunningProcesses_v3,
                                 nv.nvmlDeviceGetComputeRunningProcesses_v2, handle)
    if procs is None:
        return None
    return [record(PROCESS_KEYS, pid=int(p.pid), name=_process_name(nv, int(p.pid)), used_memory_bytes=p.usedGpuMemory)
            for p in procs]


def _read_nvlinks(r: Reader, index: int, handle: object) -> Optional[List[Obj]]:
    nv = r.nv
    max_links = int(getattr(nv, "NVML_NVLINK_MAX_LINKS", 18))
    links: List[Obj] = []
    for link in range(max_links):
        state, err = r.call_quiet(nv.nvmlDeviceGetNvLinkState, handle, link)
        if err is None:
            links.append(record(NVLINK_KEYS, link=link, active=bool(state)))
            continue
        if link == 0 or err not in _END_OF_LINKS:
            r.record(index, "nvlinks", err)
            return None if link == 0 else links
        break
    return links


def _read_clock_reasons(r: Reader, index: int, handle: object) -> Optional[int]:
    nv = r.nv
    # Drivers before 535 only have the old "throttle reasons" name.
    mask = r.call_with_fallback(index, "clocks_event_reasons", nv.nvmlDeviceGetCurrentClocksEventReasons,
                                nv.nvmlDeviceGetCurrentClocksThrottleReasons, handle)
    return None if mask is None else int(mask)


def _pair(value: Optional[Tuple[object, object]]) -> Tuple[object, object]:
    if value is None:
        return None, None
    return value[0], value[1]


def _flag(value: object) -> Optional[bool]:
    return None if value is None else bool(value)


def _bus_id(pci_info: object) -> Optional[str]:
    return None if pci_info is None else text(getattr(pci_info, "busId", None))


# The GPU's static fields (schema.GPU_STATIC_KEYS) and its static pcie fields (schema.PCIE_STATIC_KEYS): they
# cannot change while the driver stays loaded, so a kept session reads them once per GPU and repeats them,
# with any errors they gave, in every later document.
Static = Tuple[Obj, Obj]


# Errors that mean "this driver or pynvml has no v2 memory call": fall back to v1 without a word.
_NO_MEMORY_V2 = ("FUNCTION_NOT_FOUND", "NOT_SUPPORTED", "ARGUMENT_VERSION_MISMATCH", "INVALID_ARGUMENT")


def _read_memory(r: Reader, index: int, handle: object) -> Tuple[Any, Optional[int]]:
    """(memory info, 2 or 1): NVML's v2 call where the driver has it, whose `used` leaves out the memory the
    driver reserves (as nvidia-smi, gpustat and nvitop show it: an idle H100 uses ~4 MiB, not ~0.5 GiB);
    v1 (reserved counted as used) on older drivers."""
    nv = r.nv
    v2 = getattr(nv, "nvmlMemory_v2", None)  # an old pynvml has neither the constant nor the argument
    if v2 is not None:
        value, err = r.call_quiet(nv.nvmlDeviceGetMemoryInfo, handle, v2)
        if err is None:
            return value, 2
        if err not in _NO_MEMORY_V2:
            r.record(index, "memory", err)
            return None, None
    value = r.call(index, "memory", nv.nvmlDeviceGetMemoryInfo, handle)
    return value, (1 if value is not None else None)


def _read_static(r: Reader, index: int, handle: object) -> Static:
    nv = r.nv
    c = r.call
    gpu = record(
        GPU_STATIC_KEYS,
        name=text(c(index, "name", nv.nvmlDeviceGetName, handle)),
        uuid=text(c(index, "uuid", nv.nvmlDeviceGetUUID, handle)),
        serial=text(c(index, "serial", nv.nvmlDeviceGetSerial, handle)),
        pci_bus_id=_bus_id(c(index, "pci_bus_id", nv.nvmlDeviceGetPciInfo, handle)),
        vbios_version=text(c(index, "vbios_version", nv.nvmlDeviceGetVbiosVersion, handle)),
        temperature_slowdown_c=c(index, "temperature_slowdown_c", nv.nvmlDeviceGetTemperatureThreshold, handle,
                                 nv.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN),
        temperature_shutdown_c=c(index, "temperature_shutdown_c", nv.nvmlDeviceGetTemperatureThreshold, handle,
                                 nv.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN),
        clock_sm_max_mhz=c(index, "clock_sm_max_mhz", nv.nvmlDeviceGetMaxClockInfo, handle, nv.NVML_CLOCK_SM),
        clock_mem_max_mhz=c(index, "clock_mem_max_mhz", nv.nvmlDeviceGetMaxClockInfo, handle, nv.NVML_CLOCK_MEM),
    )
    pcie = record(
        PCIE_STATIC_KEYS,
        gen_max=c(index, "pcie.gen_max", nv.nvmlDeviceGetMaxPcieLinkGeneration, handle),
        width_max=c(index, "pcie.width_max", nv.nvmlDeviceGetMaxPcieLinkWidth, handle),
    )
    return gpu, pcie


# Errors that a static field keeps for as long as the driver stays loaded; a static read that failed
# otherwise (TIMEOUT, IN_USE, ...) is tried again on the next read instead of being remembered.
_LASTING_ERRORS = ("NOT_SUPPORTED", "NO_PERMISSION", "FUNCTION_NOT_FOUND", "CORRUPTED_INFOROM")


class StaticCache:
    """Static fields per GPU index, valid for one GPU count: when the count changes, indexes may now name
    other GPUs, so everything is forgotten before the read that sees the new count."""

    def __init__(self) -> None:
        self.count: Optional[int] = None
        self.gpus: Dict[int, Tuple[Static, Errors]] = {}

    def check_count(self, count: Optional[int]) -> None:
        if count != self.count:
            self.gpus = {}
            self.count = count


def read_gpu(r: Reader, index: int, handle: object, gpu: Obj, cache: Optional[StaticCache] = None) -> None:
    """Fill `gpu` field by field; raises GpuLost as soon as NVML says the GPU is gone, leaving the fields not
    read yet null. With `cache` (a kept session), the static fields come from it after the first read."""
    nv = r.nv
    c = r.call
    if cache is not None and index in cache.gpus:
        static, static_errors = cache.gpus[index]
        r.errors.extend(dict(e) for e in static_errors)
    else:
        mark = len(r.errors)
        static = _read_static(r, index, handle)
        errors = r.errors[mark:]
        if cache is not None and all(e["error"] in _LASTING_ERRORS for e in errors):
            cache.gpus[index] = (static, [dict(e) for e in errors])
    static_gpu, static_pcie = static
    gpu.update(static_gpu)

    mem, version = _read_memory(r, index, handle)
    gpu["memory_total_bytes"] = mem.total if mem is not None else None
    gpu["memory_used_bytes"] = mem.used if mem is not None else None
    gpu["memory_free_bytes"] = mem.free if mem is not None else None
    gpu["memory_reserved_bytes"] = getattr(mem, "reserved", None) if mem is not None else None
    gpu["memory_info_version"] = version
    util = c(index, "utilization", nv.nvmlDeviceGetUtilizationRates, handle)
    gpu["utilization_gpu_pct"] = util.gpu if util is not None else None
    gpu["utilization_memory_pct"] = util.memory if util is not None else None

    gpu["temperature_c"] = c(index, "temperature_c", nv.nvmlDeviceGetTemperature, handle,
                             nv.NVML_TEMPERATURE_GPU)

    gpu["power_watts"] = _watts(c(index, "power_watts", nv.nvmlDeviceGetPowerUsage, handle))
    gpu["power_limit_watts"] = _watts(c(index, "power_limit_watts", nv.nvmlDeviceGetEnforcedPowerLimit, handle))

    gpu["clock_sm_mhz"] = c(index, "clock_sm_mhz", nv.nvmlDeviceGetClockInfo, handle, nv.NVML_CLOCK_SM)
    gpu["clock_mem_mhz"] = c(index, "clock_mem_mhz", nv.nvmlDeviceGetClockInfo, handle, nv.NVML_CLOCK_MEM)
    mask = _read_clock_reasons(r, index, handle)
    gpu["clocks_event_reasons_mask"] = mask
    gpu["clocks_event_reasons"] = None if mask is None else decode_clocks_event_reasons(mask)

    gpu["performance_state"] = c(index, "performance_state", nv.nvmlDeviceGetPerformanceState, handle)
    gpu["persistence_mode"] = _flag(c(index, "persistence_mode", nv.nvmlDeviceGetPersistenceMode, handle))
    mode = c(index, "compute_mode", nv.nvmlDeviceGetComputeMode, handle)
    gpu["compute_mode"] = None if mode is None else COMPUTE_MODES.get(mode, str(mode))
    ecc_current, ecc_pending = _pair(c(index, "ecc_mode", nv.nvmlDeviceGetEccMode, handle))
    gpu["ecc_mode_current"] = _flag(ecc_current)
    gpu["ecc_mode_pending"] = _flag(ecc_pending)

    def ecc(name: str, kind: int, counter: int) -> Optional[int]:
        count: Optional[int] = c(index, "ecc_errors." + name, nv.nvmlDeviceGetTotalEccErrors, handle, kind, counter)
        return count

    corrected, uncorrected = nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    volatile, aggregate = nv.NVML_VOLATILE_ECC, nv.NVML_AGGREGATE_ECC
    gpu["ecc_errors"] = record(
        ECC_ERRORS_KEYS,
        corrected_volatile=ecc("corrected_volatile", corrected, volatile),
        corrected_aggregate=ecc("corrected_aggregate", corrected, aggregate),
        uncorrected_volatile=ecc("uncorrected_volatile", uncorrected, volatile),
        uncorrected_aggregate=ecc("uncorrected_aggregate", uncorrected, aggregate),
    )

    sbe = c(index, "retired_pages.single_bit_ecc", nv.nvmlDeviceGetRetiredPages, handle,
            nv.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)
    dbe = c(index, "retired_pages.double_bit_ecc", nv.nvmlDeviceGetRetiredPages, handle,
            nv.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
    pending = c(index, "retired_pages.pending", nv.nvmlDeviceGetRetiredPagesPendingStatus, handle)
    gpu["retired_pages"] = record(RETIRED_PAGES_KEYS, single_bit_ecc=None if sbe is None else len(sbe),
                                  double_bit_ecc=None if dbe is None else len(dbe), pending=_flag(pending))

    rows = c(index, "remapped_rows", nv.nvmlDeviceGetRemappedRows, handle)
    if rows is not None:
        gpu["remapped_rows"] = record(REMAPPED_ROWS_KEYS, corrected=rows[0], uncorrected=rows[1],
                                      pending=bool(rows[2]), failure=bool(rows[3]))

    gpu["pcie"] = record(
        PCIE_KEYS,
        gen_current=c(index, "pcie.gen_current", nv.nvmlDeviceGetCurrPcieLinkGeneration, handle),
        width_current=c(index, "pcie.width_current", nv.nvmlDeviceGetCurrPcieLinkWidth, handle),
        replay_counter=c(index, "pcie.replay_counter", nv.nvmlDeviceGetPcieReplayCounter, handle),
        **static_pcie,
    )
    gpu["nvlinks"] = _read_nvlinks(r, index, handle)
    gpu["processes"] = _read_processes(r, index, handle)
    mig_current, mig_pending = _pair(c(index, "mig_mode", nv.nvmlDeviceGetMigMode, handle))
    gpu["mig_mode_current"] = _flag(mig_current)
    gpu["mig_mode_pending"] = _flag(mig_pending)
    gpu["energy_consumed_mj"] = c(index, "energy_consumed_mj", nv.nvmlDeviceGetTotalEnergyConsumption, handle)


def empty_gpu(index: int) -> Obj:
    """A GPU entry with every key of the schema, down to its sub-objects, null: what a lost GPU keeps of the
    fields not read before the loss."""
    gpu = nulls(GPU_KEYS)
    gpu.update(index=index, lost=False, ecc_errors=nulls(ECC_ERRORS_KEYS), retired_pages=nulls(RETIRED_PAGES_KEYS),
               remapped_rows=nulls(REMAPPED_ROWS_KEYS), pcie=nulls(PCIE_KEYS))
    return gpu
