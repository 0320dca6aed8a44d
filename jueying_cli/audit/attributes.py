"""The attributes an audit compares, read from one node's facts: pure functions, no I/O.

Each attribute is one short text value per node (or None: the node could not say), so values compare with ==
and print as they are. Per-GPU attributes fold into one value per node: the distinct values, sorted and joined
with ", " (a node with two VBIOS versions shows both), or a count where a count is what matters (NVLinks
active). Identity attributes (hostname, machine id, GPU UUIDs and serials) are read here too but are not
compared for drift: they differ on every node by design (audit/identity.py checks them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from jueying_cli.facts.model import Facts, GpuFacts

GIB = 1024**3


@dataclass(frozen=True)
class Attribute:
    """One compared attribute: its name (JSON, baseline files, `audit:` pins) and what it reads."""

    name: str
    label: str  # for people: table headers and the HTML report
    read: Callable[[Facts], str | None]
    per_model: bool = True  # compared within nodes of the same GPU model (False: across the whole selection)


def _distinct(values: Iterable[object]) -> str | None:
    """The distinct non-None values, sorted and joined; None when there are none."""
    found = sorted({str(v) for v in values if v is not None})
    return ", ".join(found) if found else None


def _gpus(facts: Facts) -> list[GpuFacts]:
    return [g for g in facts.gpus if not g.lost]


def _flag(values: Iterable[bool | None]) -> str | None:
    return _distinct("on" if v else "off" for v in values if v is not None)


def _gpu_model(facts: Facts) -> str | None:
    return _distinct(g.name for g in _gpus(facts))


def _gpu_count(facts: Facts) -> str | None:
    if facts.nvml.status not in ("ok", "skipped"):
        return None
    return str(len(_gpus(facts)))


def _nvlinks_active(facts: Facts) -> str | None:
    """Active NVLinks per GPU, the distinct counts ("18"; "16, 18" when a GPU lost two links), so a node with
    fewer GPUs is not also reported for fewer links. GPUs whose links could not be read are left out."""
    return _distinct(sum(1 for link in g.nvlinks if link.active) for g in _gpus(facts) if g.nvlinks is not None)


def _pcie(key: str) -> Callable[[Facts], str | None]:
    def read(facts: Facts) -> str | None:
        return _distinct(g.pcie.get(key) for g in _gpus(facts))
    return read


def _infiniband(facts: Facts) -> str | None:
    """Active InfiniBand/RoCE ports by rate, e.g. "4x 400 Gb/sec (4X NDR)"; "none" without any port."""
    ports = facts.host.infiniband
    if not ports:
        return "none"
    rates: dict[str, int] = {}
    for port in ports:
        key = f"{port.rate or 'rate unknown'}" + ("" if (port.state or "").upper() == "ACTIVE" else
                                                  f" {port.state or 'state unknown'}")
        rates[key] = rates.get(key, 0) + 1
    return ", ".join(f"{count}x {rate}" for rate, count in sorted(rates.items()))


def _memory_gib(facts: Facts) -> str | None:
    """Host memory in whole GiB (the kernel keeps a few MiB that differ between boots of one machine)."""
    total = facts.host.memory_total_bytes
    return None if total is None else str(round(total / GIB))


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("gpu_model", "GPU model", _gpu_model, per_model=False),
    Attribute("gpu_count", "GPUs", _gpu_count),
    Attribute("driver_version", "driver", lambda f: f.nvml.driver_version),
    Attribute("cuda_driver_version", "CUDA", lambda f: f.nvml.cuda_driver_version),
    Attribute("nvml_version", "NVML", lambda f: f.nvml.nvml_version),
    Attribute("vbios_version", "VBIOS", lambda f: _distinct(g.vbios_version for g in _gpus(f))),
    Attribute("nvlinks_active", "NVLinks active per GPU", _nvlinks_active),
    Attribute("ecc_mode", "ECC", lambda f: _flag(g.ecc_mode_current for g in _gpus(f))),
    Attribute("mig_mode", "MIG", lambda f: _flag(g.mig_mode_current for g in _gpus(f))),
    Attribute("persistence_mode", "persistence", lambda f: _flag(g.persistence_mode for g in _gpus(f))),
    Attribute("pcie_gen_max", "PCIe gen", _pcie("gen_max")),
    Attribute("pcie_width_max", "PCIe width", _pcie("width_max")),
    Attribute("infiniband", "InfiniBand", _infiniband),
    Attribute("kernel", "kernel", lambda f: f.host.kernel),
    Attribute("os", "OS", lambda f: f.host.os_pretty_name),
    Attribute("cpu_model", "CPU", lambda f: f.host.cpu_model),
    Attribute("cpu_threads", "CPU threads", lambda f: None if f.host.cpu_threads is None else str(f.host.cpu_threads)),
    Attribute("memory_gib", "memory GiB", _memory_gib),
)
BY_NAME: Mapping[str, Attribute] = {a.name: a for a in ATTRIBUTES}
# The attributes of the per-model version matrix in reports.
VERSION_MATRIX = ("driver_version", "cuda_driver_version", "vbios_version", "kernel", "os")

NO_GPU = "(no GPU)"  # the comparison group of nodes without a GPU model


def read_attributes(facts: Facts) -> dict[str, str | None]:
    """Every audit attribute of one node."""
    return {a.name: a.read(facts) for a in ATTRIBUTES}


def model_of(facts: Facts) -> str:
    """The comparison group: the node's most common GPU model, or NO_GPU."""
    return most_common_model(g.name for g in _gpus(facts))


def most_common_model(names: Iterable[str | None]) -> str:
    """The most common of these GPU model names (ties: the first by name), or NO_GPU."""
    counts: dict[str, int] = {}
    for name in names:
        if name:
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        return NO_GPU
    return min(counts, key=lambda name: (-counts[name], name))


@dataclass(frozen=True)
class Identity:
    """What names a node and its boards: compared across nodes and over time, never for drift."""

    hostname: str
    machine_id: str | None
    gpu_uuids: tuple[str, ...]  # by GPU index; lost GPUs and unreadable UUIDs left out
    gpu_serials: dict[str, str]  # PCI bus id -> serial (a board keeps its slot; a swapped board changes serial)
    gpu_uuid_by_bus: dict[str, str]  # PCI bus id -> UUID


def read_identity(facts: Facts) -> Identity:
    gpus = _gpus(facts)
    return Identity(
        hostname=facts.host.hostname,
        machine_id=facts.host.machine_id,
        gpu_uuids=tuple(g.uuid for g in gpus if g.uuid),
        gpu_serials={g.pci_bus_id: g.serial for g in gpus if g.pci_bus_id and g.serial},
        gpu_uuid_by_bus={g.pci_bus_id: g.uuid for g in gpus if g.pci_bus_id and g.uuid},
    )
