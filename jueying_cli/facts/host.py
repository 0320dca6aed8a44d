"""The host section of a facts document: `host` (keys in facts/schema.py). None means the probe could not read it."""

from __future__ import annotations

from dataclasses import dataclass, field

from jueying_cli.facts import schema
from jueying_cli.facts.record import Record

__all__ = ["Cpu", "Filesystem", "HostFacts", "InfinibandPort", "Load", "Memory", "NetworkInterface", "OsRelease",
           "Swap", "TimeSync"]


@dataclass(frozen=True, slots=True, kw_only=True)
class OsRelease(Record):
    """From /etc/os-release: ID, NAME, VERSION_ID, PRETTY_NAME."""

    KEYS = schema.OS_KEYS
    SHARED = True
    id: str | None = None
    name: str | None = None
    version: str | None = None
    pretty_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Cpu(Record):
    KEYS = schema.CPU_KEYS
    SHARED = True
    model: str | None = None
    sockets: int | None = None
    cores: int | None = None
    threads: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Load(Record):
    KEYS = schema.LOAD_KEYS
    load1: float | None = None
    load5: float | None = None
    load15: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Memory(Record):
    KEYS = schema.MEMORY_KEYS
    total_bytes: int | None = None
    available_bytes: int | None = None
    used_bytes: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Swap(Record):
    KEYS = schema.SWAP_KEYS
    SHARED = True
    total_bytes: int | None = None
    used_bytes: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Filesystem(Record):
    """A local filesystem (network and pseudo filesystems are never collected)."""

    KEYS = schema.FILESYSTEM_KEYS
    mountpoint: str
    device: str | None = None
    fstype: str | None = None
    total_bytes: int | None = None
    used_bytes: int | None = None
    free_bytes: int | None = None
    used_pct: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkInterface(Record):
    KEYS = schema.NETWORK_INTERFACE_KEYS
    name: str
    mac: str | None = None
    addresses: tuple[str, ...] = ()
    is_up: bool | None = None
    speed_mbps: int | None = None
    mtu: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InfinibandPort(Record):
    """An InfiniBand / RoCE port from sysfs; state and phys_state are the words (ACTIVE, LinkUp)."""

    KEYS = schema.INFINIBAND_PORT_KEYS
    device: str
    port: int | str
    state: str | None = None
    phys_state: str | None = None
    rate: str | None = None
    link_layer: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeSync(Record):
    """`source` is chrony, timedatectl or None (nothing to ask); offset_s > 0 means the clock is fast."""

    KEYS = schema.TIME_SYNC_KEYS
    source: str | None = None
    synchronized: bool | None = None
    offset_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HostFacts(Record):
    """The host section; the fields are the keys of schema.HOST_KEYS, and the properties below read the values
    jueying shows most (cpu_model, load1, memory_total_bytes, ...) without the sub-object in between."""

    KEYS = schema.HOST_KEYS
    hostname: str
    os: OsRelease = field(default_factory=OsRelease)
    kernel: str | None = None
    architecture: str | None = None
    uptime_s: float | None = None
    cpu: Cpu = field(default_factory=Cpu)
    load: Load = field(default_factory=Load)
    memory: Memory = field(default_factory=Memory)
    swap: Swap = field(default_factory=Swap)
    filesystems: tuple[Filesystem, ...] = ()
    network_interfaces: tuple[NetworkInterface, ...] = ()
    infiniband: tuple[InfinibandPort, ...] = ()
    psutil: bool | None = None  # whether the probe had psutil (else /proc and /sys)
    time_sync: TimeSync | None = None
    machine_id: str | None = None  # /etc/machine-id; None where the node has none

    @property
    def os_pretty_name(self) -> str | None:
        return self.os.pretty_name

    @property
    def cpu_model(self) -> str | None:
        return self.cpu.model

    @property
    def cpu_threads(self) -> int | None:
        return self.cpu.threads

    @property
    def load1(self) -> float | None:
        return self.load.load1

    @property
    def load5(self) -> float | None:
        return self.load.load5

    @property
    def load15(self) -> float | None:
        return self.load.load15

    @property
    def memory_total_bytes(self) -> int | None:
        return self.memory.total_bytes

    @property
    def memory_used_bytes(self) -> int | None:
        return self.memory.used_bytes

    @property
    def memory_available_bytes(self) -> int | None:
        return self.memory.available_bytes
