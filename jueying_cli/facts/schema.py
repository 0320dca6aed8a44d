"""The facts document's version and key names: the one definition both ends read.

Runs on nodes inside the probe (Python 3.8, standard library only, imports nothing from jueying). The probe
builds every object of a document with `record()` from these tuples, and the controller's model
(facts/model.py) checks at import that its fields are exactly these keys, in this order: a key added,
renamed or dropped on one side and not the other fails at once, not in a --json output months later.

Each tuple lists one kind of object, in the order the probe writes its keys. Units are in the names.
"""

from __future__ import annotations

FACTS_SCHEMA = 1

# The document itself.
DOCUMENT_KEYS = ("schema", "collected_at", "collected_at_unix", "probe_duration_s", "probe", "host", "nvml",
                 "gpus", "kernel_log", "injected", "errors")
# Which interpreter ran the probe, and over which SSH connection ("ip port local_port").
PROBE_KEYS = ("python_version", "pid", "ssh_client")

# host
HOST_KEYS = ("hostname", "os", "kernel", "architecture", "uptime_s", "cpu", "load", "memory", "swap",
             "filesystems", "network_interfaces", "infiniband", "psutil", "time_sync", "machine_id")
OS_KEYS = ("id", "name", "version", "pretty_name")
CPU_KEYS = ("model", "sockets", "cores", "threads")
LOAD_KEYS = ("load1", "load5", "load15")
MEMORY_KEYS = ("total_bytes", "available_bytes", "used_bytes")
SWAP_KEYS = ("total_bytes", "used_bytes")
FILESYSTEM_KEYS = ("mountpoint", "device", "fstype", "total_bytes", "used_bytes", "free_bytes", "used_pct")
NETWORK_INTERFACE_KEYS = ("name", "mac", "addresses", "is_up", "speed_mbps", "mtu")
INFINIBAND_PORT_KEYS = ("device", "port", "state", "phys_state", "rate", "link_layer")
# machine_id: /etc/machine-id (systemd's identity of this installation), null where absent; two nodes with
# one machine_id are one installation cloned, or one node answering under two names.
# source: chrony, timedatectl or null (nothing to ask); offset_s > 0 means the clock is fast.
TIME_SYNC_KEYS = ("source", "synchronized", "offset_s")

# nvml: status is ok, library_not_found, driver_not_loaded, no_permission, library_mismatch, pynvml_missing,
# skipped or error; message says why when it is not ok.
NVML_KEYS = ("status", "message", "driver_version", "cuda_driver_version", "nvml_version", "gpu_count")

# gpus[]: energy_consumed_mj is NVML's total-energy counter (millijoules since the driver was loaded; Volta
# and later). Every GPU carries every key, down to the keys of its sub-objects; null where NVML could not say
# (the errors list says why), so a lost GPU has the same shape as a healthy one.
GPU_KEYS = (
    "index", "lost",
    "name", "uuid", "serial", "pci_bus_id", "vbios_version",
    "memory_total_bytes", "memory_used_bytes", "memory_free_bytes", "memory_reserved_bytes", "memory_info_version",
    "utilization_gpu_pct", "utilization_memory_pct",
    "temperature_c", "temperature_slowdown_c", "temperature_shutdown_c",
    "power_watts", "power_limit_watts",
    "clock_sm_mhz", "clock_sm_max_mhz", "clock_mem_mhz", "clock_mem_max_mhz",
    "clocks_event_reasons_mask", "clocks_event_reasons",
    "performance_state", "persistence_mode", "compute_mode", "ecc_mode_current", "ecc_mode_pending",
    "ecc_errors", "retired_pages", "remapped_rows", "pcie", "nvlinks", "processes",
    "mig_mode_current", "mig_mode_pending", "energy_consumed_mj",
)
ECC_ERRORS_KEYS = ("corrected_volatile", "corrected_aggregate", "uncorrected_volatile", "uncorrected_aggregate")
RETIRED_PAGES_KEYS = ("single_bit_ecc", "double_bit_ecc", "pending")
REMAPPED_ROWS_KEYS = ("corrected", "uncorrected", "pending", "failure")
PCIE_KEYS = ("gen_current", "gen_max", "width_current", "width_max", "replay_counter")
NVLINK_KEYS = ("link", "active")
PROCESS_KEYS = ("pid", "name", "used_memory_bytes")

# The GPU keys (and pcie keys) that cannot change while the driver stays loaded: identity, thresholds,
# maxima. A kept probe reads them once per GPU; two collections of one GPU agree on them.
GPU_STATIC_KEYS = ("name", "uuid", "serial", "pci_bus_id", "vbios_version", "temperature_slowdown_c",
                   "temperature_shutdown_c", "clock_sm_max_mhz", "clock_mem_max_mhz")
PCIE_STATIC_KEYS = ("gen_max", "width_max")

# kernel_log: status ok or unavailable; xid_events is null when the log could not be read (never "no XIDs").
KERNEL_LOG_KEYS = ("status", "source", "message", "xid_events")
XID_EVENT_KEYS = ("time_unix", "pci_bus_id", "xid", "pid", "text")

# injected[]: GPU faults a drill overlaid on what NVML and the kernel log said (probe/inject.py), one per
# overlay file applied: tag (the file's name), fault (lost, ecc, row_remap_failure, xid), gpu (index), count
# (ecc: added to the uncorrected counts), xid (xid: the event added), injected_at_unix, expires_at_unix.
INJECTED_KEYS = ("tag", "fault", "gpu", "count", "xid", "injected_at_unix", "expires_at_unix")

# errors[]: one entry per failed read; gpu is null for a node-wide field.
ERROR_KEYS = ("gpu", "field", "error", "message")


def record(keys: tuple[str, ...], /, **values: object) -> dict[str, object]:
    """One object of the document: `values` under `keys`, in schema order. A name that is not one of `keys`,
    or one of `keys` left out, is a bug in the probe: it raises instead of shipping a document the controller
    would read differently."""
    if len(values) != len(keys) or any(key not in values for key in keys):
        raise ValueError(f"facts schema: got keys {sorted(values)}, the schema has {list(keys)}")
    return {key: values[key] for key in keys}


def nulls(keys: tuple[str, ...]) -> dict[str, object]:
    """An object of `keys` with every value null (a GPU or section that could not be read)."""
    return dict.fromkeys(keys)
