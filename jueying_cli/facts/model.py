"""Frozen dataclasses shared by all layers after the facts JSON: parsed, validated, immutable.

`Facts.from_document` is the gate between a node's output and the rest of jueying: anything that is not
a well-formed schema-1 facts document raises FactsError naming the bad field, so a lying node is
reported as failed and never crashes a render or a check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jueying_cli.errors import FactsError
from jueying_cli.facts.schema import FACTS_SCHEMA


def _typed(doc: Mapping[str, Any], key: str, kinds: tuple[type, ...], where: str, *,
           required: bool = False) -> Any:
    """doc[key] if it is None or one of kinds (bool is never accepted as a number)."""
    if key not in doc:
        if required:
            raise FactsError(f"facts document: {where}{key} is missing")
        return None
    value = doc[key]
    if value is None:
        if required:
            raise FactsError(f"facts document: {where}{key} is null")
        return None
    numeric = int in kinds or float in kinds
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds) or (
            numeric and isinstance(value, bool) and bool not in kinds):
        raise FactsError(f"facts document: {where}{key} has type {type(value).__name__}, "
                         f"expected {'/'.join(k.__name__ for k in kinds)}")
    return value


_INT = (int,)
_NUM = (int, float)
_STR = (str,)
_BOOL = (bool,)


def _section(doc: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise FactsError(f"facts document: {where}{key} must be an object")
    return value


def _counts(doc: Mapping[str, Any], key: str, where: str, kinds: tuple[type, ...]) -> Mapping[str, Any]:
    section = _section(doc, key, where)
    return {k: _typed(section, k, kinds, f"{where}{key}.") for k in section}


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str | None
    used_memory_bytes: int | None


@dataclass(frozen=True)
class GpuFacts:
    """One GPU as NVML reported it; None means unsupported or unreadable (see Facts.errors)."""

    index: int
    lost: bool
    name: str | None = None
    uuid: str | None = None
    serial: str | None = None
    pci_bus_id: str | None = None
    vbios_version: str | None = None
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    memory_free_bytes: int | None = None
    utilization_gpu_pct: int | None = None
    utilization_memory_pct: int | None = None
    temperature_c: int | None = None
    temperature_slowdown_c: int | None = None
    temperature_shutdown_c: int | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    clock_sm_mhz: int | None = None
    clock_sm_max_mhz: int | None = None
    clock_mem_mhz: int | None = None
    clock_mem_max_mhz: int | None = None
    clocks_event_reasons: tuple[str, ...] | None = None
    performance_state: int | None = None
    persistence_mode: bool | None = None
    compute_mode: str | None = None
    ecc_mode_current: bool | None = None
    ecc_mode_pending: bool | None = None
    ecc_errors: Mapping[str, int | None] = field(default_factory=dict)
    retired_pages: Mapping[str, Any] = field(default_factory=dict)
    remapped_rows: Mapping[str, Any] = field(default_factory=dict)
    pcie: Mapping[str, int | None] = field(default_factory=dict)
    nvlinks_active: tuple[bool, ...] | None = None
    processes: tuple[GpuProcess, ...] | None = None
    mig_mode_current: bool | None = None
    mig_mode_pending: bool | None = None

    @classmethod
    def from_document(cls, doc: Any, position: int) -> GpuFacts:
        where = f"gpus[{position}]."
        if not isinstance(doc, Mapping):
            raise FactsError(f"facts document: gpus[{position}] must be an object")
        reasons = doc.get("clocks_event_reasons")
        if reasons is not None and not (isinstance(reasons, list) and all(isinstance(r, str) for r in reasons)):
            raise FactsError(f"facts document: {where}clocks_event_reasons must be a list of strings")
        links = doc.get("nvlinks")
        if links is not None and not (isinstance(links, list) and all(
                isinstance(link, Mapping) and isinstance(link.get("active"), bool) for link in links)):
            raise FactsError(f"facts document: {where}nvlinks must be a list of {{link, active}}")
        procs = doc.get("processes")
        if procs is not None and not (isinstance(procs, list) and all(isinstance(p, Mapping) for p in procs)):
            raise FactsError(f"facts document: {where}processes must be a list of objects")
        return cls(
            index=_typed(doc, "index", _INT, where, required=True),
            lost=bool(_typed(doc, "lost", _BOOL, where)),
            name=_typed(doc, "name", _STR, where),
            uuid=_typed(doc, "uuid", _STR, where),
            serial=_typed(doc, "serial", _STR, where),
            pci_bus_id=_typed(doc, "pci_bus_id", _STR, where),
            vbios_version=_typed(doc, "vbios_version", _STR, where),
            memory_total_bytes=_typed(doc, "memory_total_bytes", _INT, where),
            memory_used_bytes=_typed(doc, "memory_used_bytes", _INT, where),
            memory_free_bytes=_typed(doc, "memory_free_bytes", _INT, where),
            utilization_gpu_pct=_typed(doc, "utilization_gpu_pct", _INT, where),
            utilization_memory_pct=_typed(doc, "utilization_memory_pct", _INT, where),
            temperature_c=_typed(doc, "temperature_c", _INT, where),
            temperature_slowdown_c=_typed(doc, "temperature_slowdown_c", _INT, where),
            temperature_shutdown_c=_typed(doc, "temperature_shutdown_c", _INT, where),
            power_watts=_typed(doc, "power_watts", _NUM, where),
            power_limit_watts=_typed(doc, "power_limit_watts", _NUM, where),
            clock_sm_mhz=_typed(doc, "clock_sm_mhz", _INT, where),
            clock_sm_max_mhz=_typed(doc, "clock_sm_max_mhz", _INT, where),
            clock_mem_mhz=_typed(doc, "clock_mem_mhz", _INT, where),
            clock_mem_max_mhz=_typed(doc, "clock_mem_max_mhz", _INT, where),
            clocks_event_reasons=None if reasons is None else tuple(reasons),
            performance_state=_typed(doc, "performance_state", _INT, where),
            persistence_mode=_typed(doc, "persistence_mode", _BOOL, where),
            compute_mode=_typed(doc, "compute_mode", _STR, where),
            ecc_mode_current=_typed(doc, "ecc_mode_current", _BOOL, where),
            ecc_mode_pending=_typed(doc, "ecc_mode_pending", _BOOL, where),
            ecc_errors=_counts(doc, "ecc_errors", where, _INT),
            retired_pages=_counts(doc, "retired_pages", where, (int, bool)),
            remapped_rows=_counts(doc, "remapped_rows", where, (int, bool)),
            pcie=_counts(doc, "pcie", where, _INT),
            nvlinks_active=None if links is None else tuple(bool(link["active"]) for link in links),
            processes=None if procs is None else tuple(
                GpuProcess(pid=_typed(p, "pid", _INT, f"{where}processes[{i}].", required=True),
                           name=_typed(p, "name", _STR, f"{where}processes[{i}]."),
                           used_memory_bytes=_typed(p, "used_memory_bytes", _INT, f"{where}processes[{i}]."))
                for i, p in enumerate(procs)),
            mig_mode_current=_typed(doc, "mig_mode_current", _BOOL, where),
            mig_mode_pending=_typed(doc, "mig_mode_pending", _BOOL, where),
        )

    @property
    def memory_used_pct(self) -> float | None:
        if not self.memory_total_bytes or self.memory_used_bytes is None:
            return None
        return 100.0 * self.memory_used_bytes / self.memory_total_bytes


@dataclass(frozen=True)
class NvmlFacts:
    """`status` is ok, library_not_found, driver_not_loaded, no_permission, library_mismatch,
    pynvml_missing, skipped or error; `message` says why when it is not ok."""

    status: str
    message: str | None
    driver_version: str | None
    cuda_driver_version: str | None
    nvml_version: str | None
    gpu_count: int | None


@dataclass(frozen=True)
class HostFacts:
    """The host fields jueying reads itself; the full section stays in Facts.document."""

    hostname: str
    kernel: str | None
    os_pretty_name: str | None
    cpu_model: str | None
    cpu_threads: int | None
    load1: float | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    uptime_s: float | None
    load5: float | None = None
    load15: float | None = None
    memory_available_bytes: int | None = None
    filesystems: tuple[Filesystem, ...] = ()
    time_sync: TimeSync | None = None


@dataclass(frozen=True)
class Filesystem:
    mountpoint: str
    fstype: str | None
    total_bytes: int | None
    free_bytes: int | None
    used_pct: float | None


@dataclass(frozen=True)
class TimeSync:
    """`source` is chrony, timedatectl or None (nothing to ask); offset_s > 0 means the clock is fast."""

    source: str | None
    synchronized: bool | None
    offset_s: float | None


@dataclass(frozen=True)
class XidEvent:
    time_unix: float | None
    pci_bus_id: str | None
    xid: int
    pid: int | None
    text: str


@dataclass(frozen=True)
class KernelLog:
    """`status` ok or unavailable; xid_events is None when the log could not be read (never "no XIDs")."""

    status: str
    source: str | None
    message: str | None
    xid_events: tuple[XidEvent, ...] | None


def _filesystems(host: Mapping[str, Any]) -> tuple[Filesystem, ...]:
    items = host.get("filesystems") or []
    if not isinstance(items, list) or not all(isinstance(f, Mapping) for f in items):
        raise FactsError("facts document: host.filesystems must be a list of objects")
    return tuple(Filesystem(mountpoint=_typed(f, "mountpoint", _STR, f"host.filesystems[{i}].", required=True),
                            fstype=_typed(f, "fstype", _STR, f"host.filesystems[{i}]."),
                            total_bytes=_typed(f, "total_bytes", _INT, f"host.filesystems[{i}]."),
                            free_bytes=_typed(f, "free_bytes", _INT, f"host.filesystems[{i}]."),
                            used_pct=_typed(f, "used_pct", _NUM, f"host.filesystems[{i}]."))
                 for i, f in enumerate(items))


def _time_sync(host: Mapping[str, Any]) -> TimeSync | None:
    sync = host.get("time_sync")
    if sync is None:
        return None
    if not isinstance(sync, Mapping):
        raise FactsError("facts document: host.time_sync must be an object")
    return TimeSync(source=_typed(sync, "source", _STR, "host.time_sync."),
                    synchronized=_typed(sync, "synchronized", _BOOL, "host.time_sync."),
                    offset_s=_typed(sync, "offset_s", _NUM, "host.time_sync."))


def _kernel_log(doc: Mapping[str, Any]) -> KernelLog | None:
    log = doc.get("kernel_log")
    if log is None:
        return None
    if not isinstance(log, Mapping):
        raise FactsError("facts document: kernel_log must be an object")
    events = log.get("xid_events")
    if events is not None and not (isinstance(events, list) and all(isinstance(e, Mapping) for e in events)):
        raise FactsError("facts document: kernel_log.xid_events must be a list of objects")
    return KernelLog(
        status=_typed(log, "status", _STR, "kernel_log.", required=True),
        source=_typed(log, "source", _STR, "kernel_log."),
        message=_typed(log, "message", _STR, "kernel_log."),
        xid_events=None if events is None else tuple(
            XidEvent(time_unix=_typed(e, "time_unix", _NUM, f"kernel_log.xid_events[{i}]."),
                     pci_bus_id=_typed(e, "pci_bus_id", _STR, f"kernel_log.xid_events[{i}]."),
                     xid=_typed(e, "xid", _INT, f"kernel_log.xid_events[{i}].", required=True),
                     pid=_typed(e, "pid", _INT, f"kernel_log.xid_events[{i}]."),
                     text=_typed(e, "text", _STR, f"kernel_log.xid_events[{i}].") or "")
            for i, e in enumerate(events)),
    )


@dataclass(frozen=True)
class FactError:
    gpu: int | None
    field: str
    error: str
    message: str


@dataclass(frozen=True)
class Facts:
    """One node's validated facts document; `document` is the JSON as received, for --json output."""

    collected_at_unix: float
    host: HostFacts
    nvml: NvmlFacts
    gpus: tuple[GpuFacts, ...]
    errors: tuple[FactError, ...]
    document: Mapping[str, Any]
    kernel_log: KernelLog | None = None

    @classmethod
    def from_document(cls, doc: Any) -> Facts:
        if not isinstance(doc, Mapping):
            raise FactsError("facts document: not a JSON object")
        schema = doc.get("schema")
        if type(schema) is not int or schema != FACTS_SCHEMA:  # not true, not 1.0
            raise FactsError(f"facts document: schema is {schema!r}, this jueying reads schema {FACTS_SCHEMA}")
        host = _section(doc, "host", "")
        cpu = _section(host, "cpu", "host.")
        load = _section(host, "load", "host.")
        memory = _section(host, "memory", "host.")
        os_info = _section(host, "os", "host.")
        nvml = _section(doc, "nvml", "")
        gpus = doc.get("gpus")
        if not isinstance(gpus, list):
            raise FactsError("facts document: gpus must be a list")
        errors = doc.get("errors")
        if errors is None:
            errors = []
        if not isinstance(errors, list) or not all(isinstance(e, Mapping) for e in errors):
            raise FactsError("facts document: errors must be a list of objects")
        return cls(
            collected_at_unix=float(_typed(doc, "collected_at_unix", _NUM, "", required=True)),
            host=HostFacts(
                hostname=_typed(host, "hostname", _STR, "host.", required=True),
                kernel=_typed(host, "kernel", _STR, "host."),
                os_pretty_name=_typed(os_info, "pretty_name", _STR, "host.os."),
                cpu_model=_typed(cpu, "model", _STR, "host.cpu."),
                cpu_threads=_typed(cpu, "threads", _INT, "host.cpu."),
                load1=_typed(load, "load1", _NUM, "host.load."),
                memory_total_bytes=_typed(memory, "total_bytes", _INT, "host.memory."),
                memory_used_bytes=_typed(memory, "used_bytes", _INT, "host.memory."),
                uptime_s=_typed(host, "uptime_s", _NUM, "host."),
                load5=_typed(load, "load5", _NUM, "host.load."),
                load15=_typed(load, "load15", _NUM, "host.load."),
                memory_available_bytes=_typed(memory, "available_bytes", _INT, "host.memory."),
                filesystems=_filesystems(host),
                time_sync=_time_sync(host),
            ),
            nvml=NvmlFacts(
                status=_typed(nvml, "status", _STR, "nvml.", required=True),
                message=_typed(nvml, "message", _STR, "nvml."),
                driver_version=_typed(nvml, "driver_version", _STR, "nvml."),
                cuda_driver_version=_typed(nvml, "cuda_driver_version", _STR, "nvml."),
                nvml_version=_typed(nvml, "nvml_version", _STR, "nvml."),
                gpu_count=_typed(nvml, "gpu_count", _INT, "nvml."),
            ),
            gpus=tuple(GpuFacts.from_document(g, i) for i, g in enumerate(gpus)),
            errors=tuple(
                FactError(gpu=e.get("gpu") if isinstance(e.get("gpu"), int) else None,
                          field=str(e.get("field", "")), error=str(e.get("error", "")),
                          message=str(e.get("message", "")))
                for e in errors),
            document=doc,
            kernel_log=_kernel_log(doc),
        )

    def errors_for(self, gpu: int) -> tuple[FactError, ...]:
        return tuple(e for e in self.errors if e.gpu == gpu)
