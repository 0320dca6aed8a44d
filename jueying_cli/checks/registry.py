"""The registry: every built-in check with its scope, function, parameters, description and action.

Order matters: results, `jueying check -v` and the README table list checks in this order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from jueying_cli.checks import fleet, gpu, gpu_errors, host
from jueying_cli.checks.model import CheckResult, CheckSpec, Param, Scope
from jueying_cli.vocab import Action

# Checks whose findings flap with load or airflow wait for two consecutive runs by default.
NOISY_CONFIRM_RUNS = 2


def _common(enabled: bool = True, confirm_runs: int = 1) -> dict[str, Param]:
    return {
        "enabled": Param(enabled, "bool", "run this check"),
        "confirm_runs": Param(confirm_runs, "int", "consecutive non-OK runs before a finding counts as new",
                              minimum=1),
    }


def _level(default: str) -> dict[str, Param]:
    return {"level": Param(default, "level", "level of its findings: warning or critical")}


def _busy() -> dict[str, Param]:
    return {"busy_util_pct": Param(10, "float", "GPU utilization (%) from which a GPU counts as busy",
                                   minimum=0, maximum=100)}


def _spec(name: str, function: Callable[..., list[CheckResult]], description: str, action: Action, reads: str,
          params: Mapping[str, Param], *, scope: Scope = "node") -> CheckSpec:
    return CheckSpec(name=name, scope=scope, function=function, params=MappingProxyType(dict(params)),
                     description=description, action=action, reads=reads)


_SPECS = (
    _spec("nvml", gpu.check_nvml, "NVML answers and no GPU is lost (fell off the bus)", Action.REBOOT,
          "nvml.status, gpus[].lost, inventory expected_gpus", _common()),
    _spec("gpu_count", gpu.check_gpu_count, "GPUs that answer against the inventory's expected_gpus",
          Action.DRAIN, "gpus[].lost, inventory expected_gpus", _common()),
    _spec("xid", gpu_errors.check_xid, "XID events in the kernel log within the window, per GPU and XID",
          Action.REBOOT, "kernel_log.xid_events, gpus[].pci_bus_id", {
              **_common(),
              "window_hours": Param(2, "float", "only XIDs this recent (hours; the probe keeps 24)",
                                    minimum=0.01, maximum=24),
              "ignore": Param((), "int_list", "XIDs never reported"),
              "as_warning": Param((), "int_list", "XIDs reported as WARNING whatever the catalog says"),
              "as_critical": Param((), "int_list",
                                   "XIDs reported as CRITICAL whatever the catalog says (wins over as_warning)"),
          }),
    _spec("ecc_uncorrected", gpu_errors.check_ecc_uncorrected, "uncorrected (double-bit) ECC errors since the driver "
          "loaded", Action.RESET_GPU, "gpus[].ecc_errors.uncorrected_volatile, ecc_mode_current", _common()),
    _spec("ecc_corrected", gpu_errors.check_ecc_corrected, "corrected ECC errors since the driver loaded", Action.DRAIN,
          "gpus[].ecc_errors.corrected_volatile, ecc_mode_current", {
              **_common(),
              "warning": Param(20_000_000, "int", "WARNING above this many corrected errors (null: off)",
                               nullable=True, minimum=0),
              "critical": Param(None, "int", "CRITICAL above this many corrected errors (null: off)",
                                nullable=True, minimum=0),
          }),
    _spec("retired_pages", gpu_errors.check_retired_pages, "pre-Ampere page retirement: pending and total",
          Action.RMA, "gpus[].retired_pages, remapped_rows", {
              **_common(),
              "limit": Param(60, "int", "CRITICAL (RMA) at this many retired pages, single- plus double-bit",
                             minimum=1),
              "pending_level": Param("warning", "level", "level of a pending retirement"),
          }),
    _spec("remapped_rows", gpu_errors.check_remapped_rows, "Ampere+ row remapping: failure, pending, uncorrectable "
          "count", Action.RMA, "gpus[].remapped_rows", {
              **_common(),
              "uncorrectable_warning": Param(512, "int", "WARNING at this many rows remapped for uncorrectable "
                                                         "errors (null: off)", nullable=True, minimum=1),
              "pending_level": Param("warning", "level", "level of a pending remap"),
          }),
    _spec("temperature", gpu.check_temperature, "GPU temperature against its own slowdown threshold",
          Action.DRAIN, "gpus[].temperature_c, temperature_slowdown_c", {
              **_common(confirm_runs=NOISY_CONFIRM_RUNS),
              "margin_c": Param(5, "float", "WARNING this many °C below the slowdown threshold", minimum=0),
              "fallback_warning_c": Param(83, "float", "WARNING at this °C when the slowdown threshold is "
                                                       "unreadable"),
              "fallback_critical_c": Param(90, "float", "CRITICAL at this °C when the slowdown threshold is "
                                                        "unreadable"),
          }),
    _spec("clocks_events", gpu.check_clocks_events, "hardware / thermal clock slowdown on a busy GPU",
          Action.DRAIN, "gpus[].clocks_event_reasons, utilization_gpu_pct", {
              **_common(confirm_runs=NOISY_CONFIRM_RUNS), **_busy(), **_level("warning"),
          }),
    _spec("pcie_link", gpu.check_pcie_link, "PCIe link downtrained while busy; replay counter",
          Action.DRAIN, "gpus[].pcie, utilization_gpu_pct", {
              **_common(confirm_runs=NOISY_CONFIRM_RUNS), **_busy(),
              "replay_warning": Param(100, "int", "WARNING above this many PCIe replays since boot (null: off)",
                                      nullable=True, minimum=0),
              **_level("warning"),
          }),
    _spec("nvlink", gpu.check_nvlink, "every NVLink the GPU has is active", Action.RESET_GPU,
          "gpus[].nvlinks", {**_common(), **_level("critical")}),
    _spec("persistence_mode", gpu.check_persistence_mode, "persistence mode is on", Action.NONE,
          "gpus[].persistence_mode", {**_common(), **_level("warning")}),
    _spec("stray_processes", gpu.check_stray_processes, "no compute processes on a node that should be idle",
          Action.NONE, "gpus[].processes", {
              **_common(enabled=False),
              "ignore_names": Param((), "str_list", "process names that are allowed"),
              "min_memory_mib": Param(0, "float", "only processes holding at least this much GPU memory (MiB)",
                                      minimum=0),
              **_level("warning"),
          }),
    _spec("filesystem", host.check_filesystem, "used space per local filesystem", Action.NONE,
          "host.filesystems", {
              **_common(),
              "warning_pct": Param(90, "float", "WARNING at this % used", minimum=0, maximum=100),
              "critical_pct": Param(95, "float", "CRITICAL at this % used (null: off)", nullable=True, minimum=0,
                                    maximum=100),
              "mountpoints": Param((), "str_list", "mount points to check (empty: every one collected)"),
          }),
    _spec("memory", host.check_memory, "host memory in use (total - available)", Action.NONE, "host.memory", {
        **_common(),
        "warning_pct": Param(95, "float", "WARNING at this % in use", minimum=0, maximum=100),
        "critical_pct": Param(None, "float", "CRITICAL at this % in use (null: off)", nullable=True, minimum=0,
                              maximum=100),
    }),
    _spec("load", host.check_load, "5-minute load average per CPU thread", Action.NONE,
          "host.load.load5, host.cpu.threads", {
              **_common(),
              "warning_per_thread": Param(2.0, "float", "WARNING at this load per CPU thread", minimum=0),
              "critical_per_thread": Param(None, "float", "CRITICAL at this load per CPU thread (null: off)",
                                           nullable=True, minimum=0),
          }),
    _spec("clock", host.check_clock, "clock offset from its time source, and sync state", Action.NONE,
          "host.time_sync", {
              **_common(),
              "warning_s": Param(0.5, "float", "WARNING at this |offset| (s)", minimum=0),
              "critical_s": Param(5, "float", "CRITICAL at this |offset| (s) (null: off)", nullable=True,
                                  minimum=0),
          }),
    _spec("driver_consistency", fleet.check_driver_consistency, "driver, CUDA and per-model VBIOS versions "
          "agree across the selection", Action.NONE, "nvml.driver_version, cuda_driver_version, "
          "gpus[].vbios_version", {**_common(), **_level("warning")}, scope="fleet"),
)

CHECKS: Mapping[str, CheckSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
