"""One GPU of a facts document, as NVML reported it: `gpus[]` (keys in facts/schema.py).

None means unsupported or unreadable (Facts.errors says which and why); a lost GPU keeps what was read before
the loss and None for the rest, with the same shape as a healthy one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jueying_cli.facts import schema
from jueying_cli.facts.record import SHAPE, Counters, Record

__all__ = ["EccErrors", "GpuFacts", "GpuProcess", "NvLink", "Pcie", "RemappedRows", "RetiredPages"]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class EccErrors(Counters):
    KEYS = schema.ECC_ERRORS_KEYS
    SHARED = True
    corrected_volatile: int | None = None
    corrected_aggregate: int | None = None
    uncorrected_volatile: int | None = None
    uncorrected_aggregate: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class RetiredPages(Counters):
    """Pre-Ampere page retirement (Ampere and later remap rows instead, and report these as None)."""

    KEYS = schema.RETIRED_PAGES_KEYS
    SHARED = True
    single_bit_ecc: int | None = None
    double_bit_ecc: int | None = None
    pending: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class RemappedRows(Counters):
    KEYS = schema.REMAPPED_ROWS_KEYS
    SHARED = True
    corrected: int | None = None
    uncorrected: int | None = None
    pending: bool | None = None
    failure: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Pcie(Counters):
    KEYS = schema.PCIE_KEYS
    SHARED = True
    gen_current: int | None = None
    gen_max: int | None = None
    width_current: int | None = None
    width_max: int | None = None
    replay_counter: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NvLink(Record):
    KEYS = schema.NVLINK_KEYS
    SHARED = True  # 18 per H100, the same few values on every node
    link: int
    active: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuProcess(Record):
    KEYS = schema.PROCESS_KEYS
    pid: int
    name: str | None = None
    used_memory_bytes: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuFacts(Record):
    """One GPU; the fields are the keys of schema.GPU_KEYS."""

    KEYS = schema.GPU_KEYS
    index: int
    lost: bool = False
    name: str | None = None
    uuid: str | None = None
    serial: str | None = None
    pci_bus_id: str | None = None
    vbios_version: str | None = None
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    memory_free_bytes: int | None = None
    memory_reserved_bytes: int | None = None  # held by the driver; counted in `used` by NVML's v1 call only
    memory_info_version: int | None = None  # 2: NVML's v2 memory call (used excludes reserved), 1: v1
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
    clocks_event_reasons_mask: int | None = None  # NVML's bits; clocks_event_reasons names them
    clocks_event_reasons: tuple[str, ...] | None = None
    performance_state: int | None = None
    persistence_mode: bool | None = None
    compute_mode: str | None = None
    ecc_mode_current: bool | None = None
    ecc_mode_pending: bool | None = None
    ecc_errors: EccErrors = field(default_factory=EccErrors)
    retired_pages: RetiredPages = field(default_factory=RetiredPages)
    remapped_rows: RemappedRows = field(default_factory=RemappedRows)
    pcie: Pcie = field(default_factory=Pcie)
    nvlinks: tuple[NvLink, ...] | None = field(default=None, metadata={SHAPE: "{link, active}"})
    processes: tuple[GpuProcess, ...] | None = None
    mig_mode_current: bool | None = None
    mig_mode_pending: bool | None = None
    energy_consumed_mj: int | None = None  # millijoules since the driver was loaded (NVML total energy)

    @classmethod
    def from_document(cls, doc: object, position: int) -> GpuFacts:
        """`gpus[position]` of a facts document; FactsError names the first bad field."""
        return cls.parse(doc, f"gpus[{position}]")

    @property
    def memory_used_pct(self) -> float | None:
        if not self.memory_total_bytes or self.memory_used_bytes is None:
            return None
        return 100.0 * self.memory_used_bytes / self.memory_total_bytes

    @property
    def nvlinks_active(self) -> tuple[bool, ...] | None:
        """Whether each NVLink is active, by link; None where NVLink state was unreadable (or unsupported)."""
        return None if self.nvlinks is None else tuple(link.active for link in self.nvlinks)

