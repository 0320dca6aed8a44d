"""The facts model: one node's facts document, parsed, validated, immutable, and written back unchanged.

`Facts.from_document` is the gate between a node's output and the rest of jueying: anything that is not a
well-formed schema-1 facts document raises FactsError naming the bad field, so a lying node is reported as
failed and never crashes a render or a check. Every key the probe writes is a field here (facts/schema.py has
the names; facts/record.py the reading and writing), so `Facts.to_document()` is the document again, in the
probe's shape, whichever way it was collected; `--json` outputs print that shape and no other.

GPU records live in facts/gpu.py, host records in facts/host.py; they are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from jueying_cli.errors import FactsError
from jueying_cli.facts.gpu import EccErrors, GpuFacts, GpuProcess, NvLink, Pcie, RemappedRows, RetiredPages
from jueying_cli.facts.host import (
    Cpu,
    Filesystem,
    HostFacts,
    InfinibandPort,
    Load,
    Memory,
    NetworkInterface,
    OsRelease,
    Swap,
    TimeSync,
)
from jueying_cli.facts.record import NAME_ITEMS, Record
from jueying_cli.facts.schema import (
    DOCUMENT_KEYS,
    ERROR_KEYS,
    FACTS_SCHEMA,
    INJECTED_KEYS,
    KERNEL_LOG_KEYS,
    NVML_KEYS,
    PROBE_KEYS,
    XID_EVENT_KEYS,
)

__all__ = ["Cpu", "EccErrors", "FactError", "Facts", "Filesystem", "GpuFacts", "GpuProcess", "HostFacts",
           "InfinibandPort", "Injected", "KernelLog", "Load", "Memory", "NetworkInterface", "NvLink", "NvmlFacts",
           "OsRelease", "Pcie", "ProbeInfo", "RemappedRows", "RetiredPages", "Swap", "TimeSync", "XidEvent"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeInfo(Record):
    """Which interpreter ran the probe, and over which SSH connection (SSH_CLIENT: "ip port local_port")."""

    KEYS = PROBE_KEYS
    python_version: str | None = None
    pid: int | None = None
    ssh_client: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NvmlFacts(Record):
    """`status` is ok, library_not_found, driver_not_loaded, no_permission, library_mismatch,
    pynvml_missing, skipped or error; `message` says why when it is not ok."""

    KEYS = NVML_KEYS
    SHARED = True
    status: str
    message: str | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    nvml_version: str | None = None
    gpu_count: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class XidEvent(Record):
    KEYS = XID_EVENT_KEYS
    time_unix: float | None = None
    pci_bus_id: str | None = None
    xid: int
    pid: int | None = None
    text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class KernelLog(Record):
    """`status` ok or unavailable; xid_events is None when the log could not be read (never "no XIDs")."""

    KEYS = KERNEL_LOG_KEYS
    status: str
    source: str | None = None
    message: str | None = None
    xid_events: tuple[XidEvent, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Injected(Record):
    """One GPU fault a drill overlaid on the node's real facts (probe/inject.py): `fault` is lost, ecc,
    row_remap_failure or xid; `count` the ECC errors added; `xid` the XID event added; times are unix s."""

    KEYS = INJECTED_KEYS
    tag: str
    fault: str
    gpu: int
    count: int | None = None
    xid: int | None = None
    injected_at_unix: float | None = None
    expires_at_unix: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FactError(Record):
    """One read that failed: `error` is NVML's name for it (NOT_SUPPORTED, GPU_IS_LOST, ...); `gpu` is None
    for a node-wide field."""

    KEYS = ERROR_KEYS
    SHARED = True
    gpu: int | None = None
    field: str = ""
    error: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Facts(Record):
    """One node's validated facts document; the fields are the keys of schema.DOCUMENT_KEYS."""

    KEYS = DOCUMENT_KEYS
    schema: int = FACTS_SCHEMA
    collected_at: str | None = None  # ISO 8601, UTC
    collected_at_unix: float
    probe_duration_s: float | None = None
    probe: ProbeInfo = field(default_factory=ProbeInfo)
    host: HostFacts
    nvml: NvmlFacts
    gpus: tuple[GpuFacts, ...] = field(metadata={NAME_ITEMS: True})
    kernel_log: KernelLog | None = None
    injected: tuple[Injected, ...] = ()  # faults a drill overlaid on the facts above (empty on a real node)
    errors: tuple[FactError, ...] = ()

    @classmethod
    def from_document(cls, doc: object) -> Facts:
        """A facts document (parsed JSON) as Facts; FactsError names the first bad field."""
        if not isinstance(doc, Mapping):
            raise FactsError("facts document: not a JSON object")
        version = doc.get("schema")
        if type(version) is not int or version != FACTS_SCHEMA:  # not true, not 1.0
            raise FactsError(f"facts document: schema is {version!r}, this jueying reads schema {FACTS_SCHEMA}")
        return cls.parse(doc, "")

    def errors_for(self, gpu: int) -> tuple[FactError, ...]:
        return tuple(e for e in self.errors if e.gpu == gpu)


Facts.check()  # every record's fields are its schema keys, or jueying does not start
