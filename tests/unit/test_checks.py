"""Health checks on recorded facts: a healthy 8x H100 node, then one injected fault per test.

tests/data/facts/h100-healthy.json is what `python3 -m jueying_cli.probe` printed against the simulated
NVML (tests/nvmlsim, default state: an idle HGX H100 board) with an empty kernel log, after which the
host section (hostname, CPUs, memory, load, filesystems, NICs, time sync: the test machine's own) was
replaced by a typical DGX H100's so the host checks see a healthy node too. Each test mutates a copy.

Every assertion is about what an operator reads: level, the message's key words and numbers, the action
and the stable code.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from jueying_cli.checks import (
    CHECKS,
    XID_CATALOG,
    Action,
    CheckConfig,
    CheckResult,
    Level,
    builtin_config,
    load_check_config,
    run_checks,
    strongest_action,
    worst,
)
from jueying_cli.checks import run as run_module
from jueying_cli.checks.gpu_errors import pci_key
from jueying_cli.errors import BadInputError
from jueying_cli.facts.model import Facts
from jueying_cli.facts.schema import GPU_KEYS
from jueying_cli.inventory.model import Inventory, Node

DATA = Path(__file__).resolve().parents[1] / "data" / "facts"
HEALTHY: dict[str, Any] = json.loads((DATA / "h100-healthy.json").read_text())
NOW = HEALTHY["collected_at_unix"] + 60.0

NODE = Node("gpu001", {"expected_gpus": 8}, ("dgx",))
INVENTORY = Inventory(nodes={"gpu001": NODE}, groups={"dgx": ("gpu001",)})


def healthy() -> dict[str, Any]:
    return copy.deepcopy(HEALTHY)


def run(doc: dict[str, Any], check: str | None = None, *, node: Node = NODE, config: CheckConfig | None = None,
        inventory: Inventory = INVENTORY, now: float = NOW) -> list[CheckResult]:
    results = run_checks([(node, Facts.from_document(doc))], config or builtin_config(), inventory, now=now)
    return [r for r in results if check is None or r.check == check]


def only(results: list[CheckResult]) -> CheckResult:
    assert len(results) == 1, results
    return results[0]


def not_ok(results: Iterable[CheckResult]) -> list[CheckResult]:
    return [r for r in results if r.level is not Level.OK]


def config_file(tmp_path: Path, text: str) -> CheckConfig:
    path = tmp_path / "checks.yaml"
    path.write_text(text)
    return load_check_config(path)


def xid_event(xid: int, age_s: float, pci: str | None = "0000:18:00", text: str = "") -> dict[str, Any]:
    return {"time_unix": None if age_s is None else NOW - age_s, "pci_bus_id": pci, "xid": xid, "pid": 4242,
            "text": text}


def with_xids(*events: dict[str, Any]) -> dict[str, Any]:
    doc = healthy()
    doc["kernel_log"]["xid_events"] = list(events)
    return doc


def lost_gpu(index: int) -> dict[str, Any]:
    return {**dict.fromkeys(GPU_KEYS), "index": index, "lost": True}


# ---------------------------------------------------------------- the healthy node


def test_healthy_h100_node_is_ok_with_one_result_per_enabled_check() -> None:
    results = run(healthy())
    assert not_ok(results) == []
    enabled = [name for name, spec in CHECKS.items() if spec.defaults["enabled"]]
    assert [r.check for r in results] == enabled  # one OK each, in registry order
    assert "stray_processes" not in enabled
    assert all(r.node == "gpu001" and r.message for r in results)
    by_check = {r.check: r for r in results}
    assert by_check["temperature"].message == "hottest GPU 7 at 37 °C (slowdown 87 °C)"
    assert "144 links" in by_check["nvlink"].message
    assert "driver 550.127.05, CUDA 12.4, 8 GPUs" in by_check["nvml"].message


def test_worst_ranks_unknown_between_ok_and_warning() -> None:
    assert worst([]) is Level.OK
    assert worst([Level.OK, Level.UNKNOWN]) is Level.UNKNOWN
    assert worst([Level.UNKNOWN, Level.WARNING, Level.OK]) is Level.WARNING
    assert worst([Level.WARNING, Level.CRITICAL, Level.UNKNOWN]) is Level.CRITICAL
    assert worst(iter([Level.UNKNOWN])) is Level.UNKNOWN
    assert [int(level) for level in Level] == [0, 1, 2, 3]  # Nagios exit codes


def test_strongest_action() -> None:
    assert strongest_action([]) is Action.NONE
    assert strongest_action([Action.DRAIN, Action.RMA, Action.RESET_GPU]) is Action.RMA
    assert strongest_action([Action.RESET_GPU, Action.REBOOT, Action.NONE]) is Action.REBOOT
    assert [str(a) for a in Action] == ["none", "drain", "reset_gpu", "reboot", "rma"]


def test_registry_describes_every_check() -> None:
    for name, spec in CHECKS.items():
        assert spec.name == name and spec.description and spec.reads
        assert spec.scope in ("node", "fleet")
        assert {"enabled", "confirm_runs"} <= set(spec.params)
        assert spec.defaults["confirm_runs"] == (2 if name in ("temperature", "clocks_events", "pcie_link") else 1)
    assert [n for n, s in CHECKS.items() if s.scope == "fleet"] == ["driver_consistency"]


# ---------------------------------------------------------------- nvml and gpu_count


def test_driver_not_loaded_is_critical_drain() -> None:
    doc = healthy()
    doc["nvml"] = {"status": "driver_not_loaded", "message": "nvmlInit failed: Driver Not Loaded",
                   "driver_version": None, "cuda_driver_version": None, "nvml_version": None, "gpu_count": None}
    doc["gpus"] = []
    results = run(doc)
    nvml = only([r for r in results if r.check == "nvml"])
    assert (nvml.level, nvml.action, nvml.code) == (Level.CRITICAL, Action.DRAIN, "NVML_DRIVER_NOT_LOADED")
    assert "kernel module is not loaded" in nvml.message and "Driver Not Loaded" in nvml.message
    count = only([r for r in results if r.check == "gpu_count"])
    assert count.level is Level.UNKNOWN and "driver_not_loaded" in count.message
    # The GPU checks cannot see anything: UNKNOWN, never a second CRITICAL for the same cause.
    assert {r.level for r in results if r.check not in ("nvml", "gpu_count")} <= {Level.OK, Level.UNKNOWN}
    assert worst(r.level for r in results) is Level.CRITICAL


@pytest.mark.parametrize(("expected", "level"), [(8, Level.CRITICAL), (None, Level.UNKNOWN), (0, Level.OK)])
def test_no_driver_installed_depends_on_expected_gpus(expected: int | None, level: Level) -> None:
    doc = healthy()
    doc["nvml"] = {"status": "library_not_found", "message": "NVML library libnvidia-ml.so.1 not found",
                   "driver_version": None, "cuda_driver_version": None, "nvml_version": None, "gpu_count": None}
    doc["gpus"] = []
    node = Node("cpu01", {} if expected is None else {"expected_gpus": expected})
    results = run(doc, node=node, inventory=Inventory({"cpu01": node}, {}))
    nvml = only([r for r in results if r.check == "nvml"])
    assert nvml.level is level
    if level is Level.UNKNOWN:
        assert "expected_gpus: 0" in nvml.message  # tells the operator how to mark a CPU node
    if expected == 0:
        assert not_ok(results) == []  # a CPU node is simply healthy
    assert not [r for r in results if r.level is Level.CRITICAL and r.check != "nvml"]


def test_no_permission_is_unknown_not_critical() -> None:
    doc = healthy()
    doc["nvml"]["status"] = "no_permission"
    doc["gpus"] = []
    nvml = only(run(doc, "nvml"))
    assert nvml.level is Level.UNKNOWN and nvml.action is Action.NONE and "as root" in nvml.message


def test_lost_gpu_is_critical_reboot_and_a_missing_gpu() -> None:
    doc = healthy()
    doc["gpus"][3] = lost_gpu(3)
    doc["errors"] = [{"gpu": 3, "field": "name", "error": "GPU_IS_LOST", "message": "GPU is lost"}]
    results = run(doc)
    nvml = only([r for r in results if r.check == "nvml"])
    assert (nvml.level, nvml.action, nvml.code, nvml.gpu) == (Level.CRITICAL, Action.REBOOT, "GPU_LOST", 3)
    assert "GPU 3 is lost" in nvml.message and "XID 79" in nvml.message
    count = only([r for r in results if r.check == "gpu_count"])
    assert (count.level, count.action, count.code) == (Level.CRITICAL, Action.DRAIN, "GPU_MISSING")
    assert "7 of 8 expected GPUs present (GPU 3 lost)" in count.message and "RMA" in count.message
    assert (count.value, count.threshold) == (7, 8)
    # The per-GPU checks read the 7 others and do not report GPU 3's nulls as faults.
    others = [r for r in results if r.check not in ("nvml", "gpu_count")]
    assert not_ok(others) == []
    assert "GPU 3 lost, see nvml" in only([r for r in others if r.check == "temperature"]).message


def test_gpu_count_extra_and_no_expectation() -> None:
    extra = only(run(healthy(), "gpu_count", node=Node("gpu001", {"expected_gpus": 4})))
    assert (extra.level, extra.code) == (Level.WARNING, "GPU_EXTRA")
    assert "8 GPUs present, the inventory expects 4" in extra.message
    unset = only(run(healthy(), "gpu_count", node=Node("gpu001", {})))
    assert (unset.level, unset.code) == (Level.OK, "NO_EXPECTATION")


# ---------------------------------------------------------------- xid


def test_xid_79_dedupes_per_gpu_with_count_and_last_time() -> None:
    doc = with_xids(xid_event(79, 3000), xid_event(79, 1200), xid_event(79, 300),
                    xid_event(79, 100, pci="0000:5d:00"))
    results = run(doc, "xid")
    assert [(r.gpu, r.code) for r in results] == [(0, "XID_79"), (3, "XID_79")]
    gpu0 = results[0]
    assert (gpu0.level, gpu0.action, gpu0.value) == (Level.CRITICAL, Action.REBOOT, 3)
    assert gpu0.message.startswith("XID 79 (GPU has fallen off the bus) on GPU 0: 3x in the last 2 h, last 5 min ago")
    assert "reboot the node" in gpu0.message
    assert "once" in results[1].message


def test_kernel_and_nvml_pci_addresses_match() -> None:
    assert pci_key("0000:18:00") == pci_key("00000000:18:00.0") == (0, 0x18, 0)
    assert pci_key("0000:5d:00") == pci_key("00000000:5D:00.0")
    assert pci_key("0001:18:00") != pci_key("00000000:18:00.0")
    assert pci_key("garbage") is None and pci_key(None) is None


def test_xids_older_than_the_window_are_not_reported() -> None:
    doc = with_xids(xid_event(48, 3 * 3600), xid_event(13, 2.5 * 3600))
    ok = only(run(doc, "xid"))
    assert ok.level is Level.OK and "no XID in the last 2 h (2 older)" in ok.message
    wider = config_from_builtin(xid={"window_hours": 4})
    assert [r.code for r in run(doc, "xid", config=wider)] == ["XID_13", "XID_48"]


def config_from_builtin(**changes: dict[str, Any]) -> CheckConfig:
    base = builtin_config()
    checks = {name: {**params, **changes.get(name, {})} for name, params in base.checks.items()}
    return dataclasses.replace(base, checks=checks)


def test_xid_48_with_63_means_drain_and_reset_and_63_alone_is_a_warning() -> None:
    results = run(with_xids(xid_event(48, 600), xid_event(63, 590)), "xid")
    dbe, remap = results
    assert (dbe.code, dbe.level, dbe.action) == ("XID_48", Level.CRITICAL, Action.RESET_GPU)
    assert "double-bit ECC" in dbe.message and "drain and reset the GPU; seen with XID 63/64" in dbe.message
    assert (remap.code, remap.level, remap.action) == ("XID_63", Level.WARNING, Action.NONE)


def test_xid_ignore_and_level_overrides() -> None:
    doc = with_xids(xid_event(13, 60), xid_event(63, 60), xid_event(74, 60))
    config = config_from_builtin(xid={"ignore": (13,), "as_critical": (63,), "as_warning": (74,)})
    results = run(doc, "xid", config=config)
    assert [(r.code, r.level) for r in results] == [("XID_63", Level.CRITICAL), ("XID_74", Level.WARNING)]
    ok = only(run(with_xids(xid_event(13, 60)), "xid", config=config))
    assert ok.level is Level.OK and "(1 ignored)" in ok.message


def test_unknown_xid_is_a_warning_and_unmatched_pci_keeps_its_address() -> None:
    result = only(run(with_xids(xid_event(999, 60, pci="0000:99:00")), "xid"))
    assert (result.level, result.action, result.gpu) == (Level.WARNING, Action.NONE, None)
    assert result.code == "XID_999@0000:99:00"
    assert "not in jueying's XID catalog" in result.message and "PCI 0000:99:00" in result.message


def test_xid_154_carries_the_recovery_action_from_its_text() -> None:
    text = "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)"
    result = only(run(with_xids(xid_event(154, 60, text=text)), "xid"))
    assert (result.level, result.action) == (Level.CRITICAL, Action.REBOOT)
    assert "XID 154 (GPU recovery action changed to: node reboot required) on GPU 0" in result.message
    assert result.message.endswith("; reboot the node")
    reset = only(run(with_xids(xid_event(154, 60, text=text.replace("0x2 (Node", "0x1 (GPU"))), "xid"))
    assert reset.action is Action.RESET_GPU


def test_xid_without_a_time_is_never_a_drain() -> None:
    event = xid_event(79, 0)
    event["time_unix"] = None
    result = only(run(with_xids(event), "xid"))
    assert result.level is Level.WARNING and "time unknown" in result.message


@pytest.mark.parametrize("log", [
    {"status": "unavailable", "source": None, "message": "cannot read the kernel log: Permission denied",
     "xid_events": None},
    None,
])
def test_kernel_log_unavailable_is_unknown_never_ok(log: dict[str, Any] | None) -> None:
    doc = healthy()
    if log is None:
        del doc["kernel_log"]
    else:
        doc["kernel_log"] = log
    result = only(run(doc, "xid"))
    assert (result.level, result.code) == (Level.UNKNOWN, "KERNEL_LOG_UNAVAILABLE")
    assert "XIDs not checked" in result.message


def test_xid_catalog_levels_and_actions() -> None:
    required = (13, 31, 43, 45, 48, 56, 57, 58, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95, 109, 110, 119, 120,
                136, 140, 143, 154, 155)
    assert set(required) <= set(XID_CATALOG)
    expect = {79: (Level.CRITICAL, Action.REBOOT), 48: (Level.CRITICAL, Action.RESET_GPU),
              63: (Level.WARNING, Action.NONE), 64: (Level.CRITICAL, Action.RESET_GPU),
              74: (Level.CRITICAL, Action.RESET_GPU), 92: (Level.WARNING, Action.NONE),
              94: (Level.WARNING, Action.NONE), 95: (Level.CRITICAL, Action.RESET_GPU),
              119: (Level.CRITICAL, Action.RESET_GPU), 120: (Level.CRITICAL, Action.RESET_GPU),
              140: (Level.CRITICAL, Action.RESET_GPU), 13: (Level.WARNING, Action.NONE),
              31: (Level.WARNING, Action.NONE), 43: (Level.WARNING, Action.NONE), 45: (Level.WARNING, Action.NONE)}
    for xid, (level, action) in expect.items():
        assert (XID_CATALOG[xid].level, XID_CATALOG[xid].action) == (level, action), xid


# ---------------------------------------------------------------- memory errors


def test_uncorrected_ecc_is_critical_reset() -> None:
    doc = healthy()
    doc["gpus"][5]["ecc_errors"]["uncorrected_volatile"] = 2
    result = only(run(doc, "ecc_uncorrected"))
    assert (result.level, result.action, result.code, result.gpu) == (Level.CRITICAL, Action.RESET_GPU,
                                                                      "ECC_DBE_VOLATILE", 5)
    assert result.message == "GPU 5: 2 uncorrected ECC errors since the driver loaded (limit 0): drain and reset " \
                             "the GPU"
    assert (result.value, result.threshold) == (2, 0)


def test_ecc_disabled_is_unknown() -> None:
    doc = healthy()
    doc["gpus"][1].update(ecc_mode_current=False, ecc_errors=dict.fromkeys(doc["gpus"][1]["ecc_errors"]))
    for check in ("ecc_uncorrected", "ecc_corrected"):
        result = only(run(doc, check))
        assert (result.level, result.code, result.gpu) == (Level.UNKNOWN, "ECC_DISABLED", 1)
        assert "nvidia-smi -e 1" in result.message


def test_corrected_ecc_warning_and_optional_critical() -> None:
    doc = healthy()
    doc["gpus"][2]["ecc_errors"]["corrected_volatile"] = 25_000_000
    result = only(run(doc, "ecc_corrected"))
    assert (result.level, result.code, result.value, result.threshold) == (Level.WARNING, "ECC_SBE_VOLATILE",
                                                                           25_000_000, 20_000_000)
    assert "25,000,000 corrected ECC errors" in result.message and "> 20,000,000" in result.message
    critical = only(run(doc, "ecc_corrected", config=config_from_builtin(ecc_corrected={"critical": 24_000_000})))
    assert critical.level is Level.CRITICAL and critical.action is Action.DRAIN


def pre_ampere(doc: dict[str, Any], index: int, **pages: Any) -> None:
    gpu = doc["gpus"][index]
    gpu["remapped_rows"] = dict.fromkeys(gpu["remapped_rows"])
    gpu["retired_pages"].update(pages)


def test_retired_pages_pending_and_limit_on_a_pre_ampere_gpu() -> None:
    doc = healthy()
    pre_ampere(doc, 0, pending=True)
    pre_ampere(doc, 1, single_bit_ecc=40, double_bit_ecc=25)
    pending, limit = run(doc, "retired_pages")
    assert (pending.level, pending.action, pending.code, pending.gpu) == (Level.WARNING, Action.RESET_GPU,
                                                                          "RETIRED_PAGES_PENDING", 0)
    assert (limit.level, limit.action, limit.code, limit.gpu) == (Level.CRITICAL, Action.RMA, "RETIRED_PAGES_LIMIT", 1)
    assert "65 retired pages (40 single-bit, 25 double-bit) >= 60: RMA" in limit.message
    assert "serial 1654823010118" in limit.message  # what the RMA form asks for
    # Ampere GPUs do not retire pages: their OK says so instead of pretending to have checked.
    assert "remap rows instead" in only(run(healthy(), "retired_pages")).message


def test_retired_pages_and_remapped_rows_both_unsupported_is_unknown() -> None:
    doc = healthy()
    doc["gpus"][4]["retired_pages"] = dict.fromkeys(doc["gpus"][4]["retired_pages"])
    doc["gpus"][4]["remapped_rows"] = dict.fromkeys(doc["gpus"][4]["remapped_rows"])
    for check in ("retired_pages", "remapped_rows"):
        result = only(run(doc, check))
        assert (result.level, result.gpu, result.code) == (Level.UNKNOWN, 4, "NO_DATA")


def test_remapped_rows_failure_pending_and_uncorrectable() -> None:
    doc = healthy()
    doc["gpus"][6]["remapped_rows"].update(failure=True, pending=True, uncorrected=600)
    failure, pending, many = run(doc, "remapped_rows")
    assert (failure.level, failure.action, failure.code) == (Level.CRITICAL, Action.RMA, "ROW_REMAP_FAILURE")
    assert (pending.level, pending.action, pending.code) == (Level.WARNING, Action.RESET_GPU, "ROW_REMAP_PENDING")
    assert (many.level, many.code, many.value, many.threshold) == (Level.WARNING, "ROW_REMAP_UNCORRECTABLE_HIGH",
                                                                   600, 512)
    assert "600 rows remapped for uncorrectable errors (>= 512)" in many.message
    strict = config_from_builtin(remapped_rows={"pending_level": "critical"})
    assert [r.level for r in run(doc, "remapped_rows", config=strict)][1] is Level.CRITICAL


def test_pre_ampere_gpus_skip_remapped_rows() -> None:
    doc = healthy()
    for index in range(8):
        pre_ampere(doc, index)
    result = only(run(doc, "remapped_rows"))
    assert result.level is Level.OK and "predate row remapping" in result.message


# ---------------------------------------------------------------- thermals, clocks, links


def test_temperature_against_the_gpus_own_slowdown() -> None:
    doc = healthy()
    doc["gpus"][2]["temperature_c"] = 84
    doc["gpus"][3]["temperature_c"] = 88
    warm, hot = run(doc, "temperature")
    assert (warm.level, warm.code, warm.gpu, warm.value, warm.threshold) == (Level.WARNING, "TEMP_NEAR_SLOWDOWN",
                                                                             2, 84, 82)
    assert "84 °C >= 82 °C (slowdown 87 °C, margin 5 °C)" in warm.message
    assert (hot.level, hot.action, hot.code, hot.threshold) == (Level.CRITICAL, Action.DRAIN, "TEMP_SLOWDOWN", 87)


def test_temperature_falls_back_to_absolute_limits() -> None:
    doc = healthy()
    doc["gpus"][0].update(temperature_c=85, temperature_slowdown_c=None)
    result = only(run(doc, "temperature"))
    assert (result.level, result.threshold) == (Level.WARNING, 83)
    assert "fallback limits" in result.message
    doc["gpus"][0]["temperature_c"] = None
    assert only(run(doc, "temperature")).level is Level.UNKNOWN


def test_clock_slowdown_only_matters_while_busy() -> None:
    doc = healthy()
    doc["gpus"][1].update(utilization_gpu_pct=97, clocks_event_reasons=["hw_slowdown", "hw_thermal_slowdown"])
    doc["gpus"][2].update(utilization_gpu_pct=0, clocks_event_reasons=["gpu_idle", "hw_slowdown"])
    doc["gpus"][3].update(utilization_gpu_pct=99, clocks_event_reasons=["sw_power_cap"])
    doc["gpus"][4].update(utilization_gpu_pct=80, clocks_event_reasons=["sw_thermal_slowdown"])
    thermal, software = run(doc, "clocks_events")
    assert (thermal.gpu, thermal.level, thermal.action, thermal.code) == (1, Level.WARNING, Action.DRAIN,
                                                                          "CLOCKS_HW_THERMAL")
    assert "hardware thermal slowdown while busy (97% utilization" in thermal.message
    assert (software.gpu, software.action, software.code) == (4, Action.NONE, "CLOCKS_SW_THERMAL")


def test_pcie_downtraining_only_while_busy_and_replays() -> None:
    doc = healthy()
    doc["gpus"][5].update(utilization_gpu_pct=90)
    doc["gpus"][5]["pcie"].update(gen_current=4, width_current=8)
    doc["gpus"][6]["pcie"].update(gen_current=1)  # idle: downtrained on purpose
    doc["gpus"][7]["pcie"]["replay_counter"] = 500
    down, replays = run(doc, "pcie_link")
    assert (down.gpu, down.level, down.action, down.code) == (5, Level.WARNING, Action.DRAIN, "PCIE_DOWNTRAINED")
    assert "Gen4 x8 while busy, capable of Gen5 x16" in down.message
    assert (replays.gpu, replays.code, replays.value, replays.threshold) == (7, "PCIE_REPLAYS", 500, 100)


def test_nvlink_down_is_critical_reset() -> None:
    doc = healthy()
    doc["gpus"][2]["nvlinks"][3]["active"] = False
    doc["gpus"][2]["nvlinks"][11]["active"] = False
    result = only(run(doc, "nvlink"))
    assert (result.level, result.action, result.code, result.gpu) == (Level.CRITICAL, Action.RESET_GPU,
                                                                      "NVLINK_DOWN", 2)
    assert "2 of 18 NVLinks inactive (link 3, 11)" in result.message


def test_no_nvlink_on_a_pcie_board_is_ok_but_an_unreadable_one_is_unknown() -> None:
    doc = healthy()
    for gpu in doc["gpus"]:
        gpu["nvlinks"] = None
    doc["errors"] = [{"gpu": g, "field": "nvlinks", "error": "NOT_SUPPORTED", "message": "Not Supported"}
                     for g in range(8)]
    result = only(run(doc, "nvlink"))
    assert result.level is Level.OK and result.message == "no NVLink on this node's GPUs"
    doc["errors"][0]["error"] = "UNKNOWN"
    assert [(r.level, r.gpu) for r in run(doc, "nvlink")] == [(Level.UNKNOWN, 0)]


def test_persistence_mode_off_is_a_warning_with_the_fix() -> None:
    doc = healthy()
    doc["gpus"][0]["persistence_mode"] = False
    result = only(run(doc, "persistence_mode"))
    assert (result.level, result.action, result.code) == (Level.WARNING, Action.NONE, "PERSISTENCE_OFF")
    assert "`nvidia-smi -pm 1`" in result.message


def test_stray_processes_when_enabled() -> None:
    doc = healthy()
    doc["gpus"][3]["processes"] = [{"pid": 777, "name": "python3", "used_memory_bytes": 2 * 2**30},
                                   {"pid": 778, "name": "dcgm-agent", "used_memory_bytes": 2**20}]
    assert run(doc, "stray_processes") == []  # disabled by default
    config = config_from_builtin(stray_processes={"enabled": True, "ignore_names": ("dcgm-agent",)})
    result = only(run(doc, "stray_processes", config=config))
    assert (result.level, result.gpu, result.code, result.value) == (Level.WARNING, 3, "STRAY_PROCESS", 1)
    assert "python3 (pid 777, 2,048 MiB)" in result.message


def test_every_gpu_field_unsupported_is_never_critical() -> None:
    doc = healthy()
    doc["gpus"] = [{**dict.fromkeys(GPU_KEYS), "index": i, "lost": False} for i in range(8)]
    config = config_from_builtin(stray_processes={"enabled": True})
    results = run(doc, config=config)
    assert [r for r in results if r.level is Level.CRITICAL] == []
    assert {r.check for r in results if r.level is Level.UNKNOWN} == {
        "ecc_uncorrected", "ecc_corrected", "retired_pages", "remapped_rows", "temperature", "clocks_events",
        "pcie_link", "persistence_mode", "stray_processes"}
    assert only([r for r in results if r.check == "nvlink"]).level is Level.OK  # no NVLink reported: not a fault
    assert all("unreadable" in r.message for r in results if r.level is Level.UNKNOWN)


def test_odd_gpu_entries_never_raise() -> None:
    doc = healthy()
    doc["gpus"][0].update(ecc_errors={}, pcie={}, retired_pages={}, remapped_rows={"pending": True},
                          clocks_event_reasons=["bit_0x4000", "hw_slowdown"], utilization_gpu_pct=None,
                          nvlinks=[], processes=[])
    results = run(doc)
    assert all(r.code != "CHECK_ERROR" for r in results)
    # What is readable is still judged; what is missing is UNKNOWN for GPU 0 only, never OK and never a crash.
    gpu0 = {r.check: (r.level, r.code) for r in results if r.gpu == 0}
    assert gpu0 == {"ecc_uncorrected": (Level.UNKNOWN, "NO_DATA"), "ecc_corrected": (Level.UNKNOWN, "NO_DATA"),
                    "pcie_link": (Level.UNKNOWN, "NO_DATA"),
                    "remapped_rows": (Level.WARNING, "ROW_REMAP_PENDING"),
                    "clocks_events": (Level.WARNING, "CLOCKS_HW_SLOWDOWN")}
    assert [r for r in results if r.gpu not in (0, None)] == []  # the seven healthy GPUs stay OK
    assert all(r.level is Level.OK for r in results if r.gpu is None and r.check != "nvlink")
    assert only([r for r in results if r.check == "nvlink"]).message.startswith("all NVLinks active on 7 GPUs")


def test_a_failing_check_reports_unknown_and_the_others_still_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ctx: object) -> list[CheckResult]:
        raise ZeroDivisionError("division by zero")

    patched = dict(CHECKS)
    patched["temperature"] = dataclasses.replace(CHECKS["temperature"], function=broken)
    monkeypatch.setattr(run_module, "CHECKS", patched)
    results = run(healthy())
    failed = only([r for r in results if r.check == "temperature"])
    assert (failed.level, failed.code) == (Level.UNKNOWN, "CHECK_ERROR")
    assert "ZeroDivisionError" in failed.message
    assert len(results) == len([s for s in CHECKS.values() if s.defaults["enabled"]])


def test_findings_have_unique_keys_for_flap_control() -> None:
    doc = with_xids(xid_event(79, 60), xid_event(79, 60, pci="0000:99:00"), xid_event(79, 60, pci="0000:98:00"))
    doc["gpus"][2].update(temperature_c=90, persistence_mode=False, utilization_gpu_pct=90,
                          clocks_event_reasons=["hw_thermal_slowdown", "sw_thermal_slowdown"])
    doc["gpus"][2]["pcie"].update(width_current=4, replay_counter=1000)
    doc["host"]["filesystems"][0]["used_pct"] = 99.0
    doc["host"]["filesystems"][1]["used_pct"] = 99.0
    results = run(doc)
    keys = [(r.node, r.check, r.gpu, r.code) for r in results]
    assert len(keys) == len(set(keys))
    assert all(r.code for r in results)


# ---------------------------------------------------------------- host


def test_filesystem_levels_per_mountpoint() -> None:
    doc = healthy()
    doc["host"]["filesystems"][0]["used_pct"] = 92.5
    doc["host"]["filesystems"][1]["used_pct"] = 96.0
    root, raid = run(doc, "filesystem")
    assert (root.level, root.code, root.threshold) == (Level.WARNING, "FS_FULL:/", 90)
    assert root.message == "/ is 92.5% full (>= 90%)"
    assert (raid.level, raid.code, raid.threshold) == (Level.CRITICAL, "FS_FULL:/raid", 95)
    only_scratch = config_from_builtin(filesystem={"mountpoints": ("/scratch",)})
    missing = only(run(healthy(), "filesystem", config=only_scratch))
    assert missing.level is Level.UNKNOWN and "/scratch: not reported" in missing.message


def test_memory_load_and_clock() -> None:
    doc = healthy()
    doc["host"]["memory"]["available_bytes"] = doc["host"]["memory"]["total_bytes"] // 50  # 98% in use
    doc["host"]["load"]["load5"] = 500.0
    doc["host"]["time_sync"]["offset_s"] = -0.8
    memory = only(run(doc, "memory"))
    assert (memory.level, memory.code, memory.threshold) == (Level.WARNING, "MEMORY_HIGH", 95)
    assert memory.message.startswith("98.0% of 2,016 GiB in use (>= 95%)")
    load = only(run(doc, "load"))
    assert (load.level, load.value) == (Level.WARNING, 2.23)
    assert load.message == "load5 500.00 on 224 CPU threads = 2.23 per thread (>= 2)"
    clock = only(run(doc, "clock"))
    assert (clock.level, clock.code) == (Level.WARNING, "CLOCK_OFFSET")
    assert "0.800 s slow" in clock.message
    doc["host"]["time_sync"]["offset_s"] = 7.5
    assert only(run(doc, "clock")).level is Level.CRITICAL


def test_clock_sync_states() -> None:
    doc = healthy()
    doc["host"]["time_sync"] = {"source": "timedatectl", "synchronized": False, "offset_s": None}
    assert only(run(doc, "clock")).code == "CLOCK_UNSYNCED"
    doc["host"]["time_sync"] = {"source": None, "synchronized": None, "offset_s": None}
    nothing = only(run(doc, "clock"))
    assert (nothing.level, nothing.code) == (Level.OK, "NO_TIME_SOURCE")
    del doc["host"]["time_sync"]
    assert only(run(doc, "clock")).level is Level.UNKNOWN


# ---------------------------------------------------------------- fleet


def fleet(*docs: dict[str, Any]) -> tuple[list[tuple[Node, Facts]], Inventory]:
    nodes = []
    for i, doc in enumerate(docs, 1):
        doc["host"]["hostname"] = f"gpu{i:03d}"
        nodes.append((Node(f"gpu{i:03d}", {"expected_gpus": 8}, ("dgx",)), Facts.from_document(doc)))
    return nodes, Inventory({n.name: n for n, _ in nodes}, {"dgx": tuple(n.name for n, _ in nodes)})


def test_driver_and_vbios_drift_against_the_majority() -> None:
    odd = healthy()
    odd["nvml"]["driver_version"] = "535.183.01"
    drifted = healthy()
    drifted["gpus"][4]["vbios_version"] = "96.00.74.00.01"
    nodes, inventory = fleet(healthy(), odd, drifted, healthy())
    results = [r for r in run_checks(nodes, builtin_config(), inventory, now=NOW) if r.check == "driver_consistency"]
    by_node = {r.node: r for r in results}
    assert len(results) == 4
    driver = by_node["gpu002"]
    assert (driver.level, driver.code) == (Level.WARNING, "DRIVER_DRIFT")
    assert driver.message == "driver 535.183.01 differs from the majority 550.127.05 (3 of 4 nodes)"
    vbios = by_node["gpu003"]
    assert (vbios.level, vbios.code, vbios.gpu) == (Level.WARNING, "VBIOS_DRIFT", 4)
    assert "VBIOS 96.00.74.00.01 differs from the majority 96.00.99.00.01 (31 of 32 NVIDIA H100 80GB HBM3 GPUs)" \
        in vbios.message
    assert by_node["gpu001"].level is Level.OK and "majority of 4 nodes" in by_node["gpu001"].message


def test_fleet_of_one_and_a_split_without_majority() -> None:
    nodes, inventory = fleet(healthy())
    single = only([r for r in run_checks(nodes, builtin_config(), inventory, now=NOW)
                   if r.check == "driver_consistency"])
    assert single.level is Level.OK and "no other node" in single.message
    other = healthy()
    other["nvml"]["cuda_driver_version"] = "12.2"
    nodes, inventory = fleet(healthy(), other)
    split = [r for r in run_checks(nodes, builtin_config(), inventory, now=NOW) if r.check == "driver_consistency"]
    assert [(r.node, r.code) for r in split] == [("gpu001", "CUDA_DRIFT"), ("gpu002", "CUDA_DRIFT")]
    assert "no majority across 2 nodes" in split[0].message


# ---------------------------------------------------------------- overrides


def test_overrides_by_group_and_by_node_later_wins(tmp_path: Path) -> None:
    config = config_file(tmp_path, """\
checks:
  temperature: {margin_c: 6}
overrides:
  - nodes: "@dgx"
    checks: {temperature: {margin_c: 2}, persistence_mode: {enabled: false}}
  - nodes: "gpu[002-003],gpu900"
    checks: {temperature: {margin_c: 10, confirm_runs: 5}}
""")
    doc = healthy()
    doc["gpus"][0].update(temperature_c=84, persistence_mode=False)
    nodes, inventory = fleet(copy.deepcopy(doc), copy.deepcopy(doc), copy.deepcopy(doc))
    spare = Node("spare01", {"expected_gpus": 8})
    inventory = Inventory({**inventory.nodes, "spare01": spare}, inventory.groups)
    nodes.append((spare, Facts.from_document(doc)))
    results = run_checks(nodes, config, inventory, now=NOW)
    temps = {r.node: r.level for r in results if r.check == "temperature"}
    # margin 2 on @dgx (warn at 85), 10 on gpu002 (warn at 77), 6 in the base set for spare01 (warn at 81).
    assert temps == {"gpu001": Level.OK, "gpu002": Level.WARNING, "gpu003": Level.WARNING,
                     "spare01": Level.WARNING}
    assert {r.node for r in results if r.check == "persistence_mode"} == {"spare01"}
    assert config.confirm_runs("temperature", inventory.nodes["gpu002"], inventory) == 5
    assert config.confirm_runs("temperature", inventory.nodes["gpu001"], inventory) == 2
    assert config.confirm_runs("xid", spare, inventory) == 1
    assert config.params_for(inventory.nodes["gpu001"], inventory)["temperature"]["margin_c"] == 2


def test_override_with_a_group_the_inventory_lacks_names_file_and_line(tmp_path: Path) -> None:
    config = config_file(tmp_path, """\
checks: {}
overrides:
  - nodes: "@dgz"
    checks: {nvlink: {enabled: false}}
""")
    with pytest.raises(BadInputError) as info:
        run(healthy(), config=config)
    err = info.value
    assert (err.path, err.line, err.field) == (str(tmp_path / "checks.yaml"), 3, "overrides[0].nodes")
    assert "no such group: @dgz" in str(err) and "@dgx" in str(err)


def test_level_param_changes_finding_levels() -> None:
    doc = healthy()
    doc["gpus"][0]["persistence_mode"] = False
    config = config_from_builtin(persistence_mode={"level": "critical"})
    assert only(run(doc, "persistence_mode", config=config)).level is Level.CRITICAL
    assert only(run(healthy(), "persistence_mode", config=config)).level is Level.OK


def test_downtrained_link_with_unreadable_utilization_is_unknown() -> None:
    doc = healthy()
    doc["gpus"][0].update(utilization_gpu_pct=None, clocks_event_reasons=None)
    doc["gpus"][0]["pcie"]["width_current"] = 8
    result = only(run(doc, "pcie_link"))
    assert (result.level, result.gpu) == (Level.UNKNOWN, 0) and "cannot tell" in result.message


@pytest.mark.parametrize("status", ["driver_not_loaded", "library_not_found"])
def test_without_nvml_only_the_nvml_check_speaks(status: str) -> None:
    doc = healthy()
    doc["nvml"] = {"status": status, "message": f"nvmlInit failed ({status.upper()})", "driver_version": None,
                   "cuda_driver_version": None, "nvml_version": None, "gpu_count": None}
    doc["gpus"] = []
    problems = not_ok(run(doc, node=Node("gpu001", {"expected_gpus": 8})))
    assert {p.check for p in problems} <= {"nvml", "gpu_count"}
    assert any(p.check == "nvml" and p.level == Level.CRITICAL for p in problems)
