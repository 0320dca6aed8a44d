"""The local node through the real pynvml on the simulated libnvidia-ml.so.1: probe, status, inventory."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, GpuNode, next_envelope, start_watch, stop_watch
from tests.nvmlsim import build_library, sim_env

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _int(state: dict[str, object], key: str) -> int:
    return int(str(state[key]), 0)


def test_probe_reads_every_field_of_the_default_8_gpu_profile(gpu_node: GpuNode) -> None:
    doc = gpu_node.probe()
    s = gpu_node.state
    assert doc["schema"] == 1
    assert doc["errors"] == []
    nvml = doc["nvml"]
    assert nvml["status"] == "ok"
    assert nvml["driver_version"] == s["driver_version"]
    cuda = _int(s, "cuda_driver_version")
    assert nvml["cuda_driver_version"] == f"{cuda // 1000}.{cuda % 1000 // 10}"
    assert nvml["nvml_version"] == s["nvml_version"]
    assert nvml["gpu_count"] == 8
    assert len(doc["gpus"]) == 8
    for gpu in doc["gpus"]:
        i = gpu["index"]

        def v(key: str, i: int = i) -> str:
            return str(s[f"gpu.{i}.{key}"])

        def n(key: str, i: int = i) -> int:
            return _int(s, f"gpu.{i}.{key}")

        assert gpu["lost"] is False
        assert gpu["name"] == v("name") == "NVIDIA H100 80GB HBM3"
        assert gpu["uuid"] == v("uuid")
        assert gpu["serial"] == v("serial")
        assert gpu["pci_bus_id"] == v("pci_bus_id")
        assert gpu["vbios_version"] == v("vbios_version")
        assert gpu["memory_total_bytes"] == n("memory_total_bytes")
        # NVML's v2 memory call, as nvidia-smi reads it: the driver's reserved memory is not "used"
        assert gpu["memory_info_version"] == 2
        assert gpu["memory_reserved_bytes"] == n("memory_reserved_bytes")
        assert gpu["memory_used_bytes"] == n("memory_used_bytes") - n("memory_reserved_bytes")
        assert gpu["memory_free_bytes"] == n("memory_total_bytes") - n("memory_used_bytes")
        assert gpu["utilization_gpu_pct"] == n("utilization_gpu_pct")
        assert gpu["utilization_memory_pct"] == n("utilization_memory_pct")
        assert gpu["temperature_c"] == n("temperature_c")
        assert gpu["temperature_slowdown_c"] == n("temperature_slowdown_c")
        assert gpu["temperature_shutdown_c"] == n("temperature_shutdown_c")
        assert gpu["power_watts"] == n("power_mw") / 1000
        assert gpu["power_limit_watts"] == n("power_limit_mw") / 1000
        assert gpu["clock_sm_mhz"] == n("clock_sm_mhz")
        assert gpu["clock_sm_max_mhz"] == n("clock_sm_max_mhz")
        assert gpu["clock_mem_mhz"] == n("clock_mem_mhz")
        assert gpu["clock_mem_max_mhz"] == n("clock_mem_max_mhz")
        assert gpu["clocks_event_reasons_mask"] == n("clocks_event_reasons") == 1
        assert gpu["clocks_event_reasons"] == ["gpu_idle"]
        assert gpu["performance_state"] == n("pstate")
        assert gpu["persistence_mode"] is bool(n("persistence_mode"))
        assert gpu["compute_mode"] == "default"
        assert gpu["ecc_mode_current"] is bool(n("ecc_mode_current"))
        assert gpu["ecc_mode_pending"] is bool(n("ecc_mode_pending"))
        assert gpu["ecc_errors"] == {
            "corrected_volatile": n("ecc_corrected_volatile"),
            "corrected_aggregate": n("ecc_corrected_aggregate"),
            "uncorrected_volatile": n("ecc_uncorrected_volatile"),
            "uncorrected_aggregate": n("ecc_uncorrected_aggregate"),
        }
        assert gpu["retired_pages"] == {"single_bit_ecc": n("retired_pages_sbe"),
                                        "double_bit_ecc": n("retired_pages_dbe"),
                                        "pending": bool(n("retired_pages_pending"))}
        assert gpu["remapped_rows"] == {"corrected": n("remapped_rows_corrected"),
                                        "uncorrected": n("remapped_rows_uncorrected"),
                                        "pending": bool(n("remapped_rows_pending")),
                                        "failure": bool(n("remapped_rows_failure"))}
        assert gpu["pcie"] == {"gen_current": n("pcie_gen_current"), "gen_max": n("pcie_gen_max"),
                               "width_current": n("pcie_width_current"), "width_max": n("pcie_width_max"),
                               "replay_counter": n("pcie_replay_counter")}
        assert len(gpu["nvlinks"]) == n("nvlink_count") == 18
        assert all(link["active"] for link in gpu["nvlinks"])
        assert gpu["processes"] == []
        assert gpu["mig_mode_current"] is False and gpu["mig_mode_pending"] is False


def test_probe_follows_the_state_file_for_busy_faulty_gpus(gpu_node: GpuNode) -> None:
    pid = os.getpid()
    gpu_node.set(**{
        "gpu.1.utilization_gpu_pct": 97, "gpu.1.temperature_c": 84, "gpu.1.power_mw": 612345,
        "gpu.1.clocks_event_reasons": "0x48", "gpu.1.pstate": 2,
        "gpu.1.ecc_uncorrected_volatile": 3, "gpu.1.remapped_rows_pending": 1,
        "gpu.1.pcie_gen_current": 3, "gpu.1.pcie_width_current": 8, "gpu.1.pcie_replay_counter": 42,
        "gpu.1.nvlink_down": "2,17", "gpu.1.processes": f"{pid}:1073741824,999999:2048:python3",
        "gpu.1.persistence_mode": 0, "gpu.1.compute_mode": 3, "gpu.1.mig_mode_current": 1,
    })
    gpu = gpu_node.probe()["gpus"][1]
    assert gpu["utilization_gpu_pct"] == 97
    assert gpu["temperature_c"] == 84
    assert gpu["power_watts"] == 612.345
    assert gpu["clocks_event_reasons"] == ["hw_slowdown", "hw_thermal_slowdown"]
    assert gpu["performance_state"] == 2
    assert gpu["ecc_errors"]["uncorrected_volatile"] == 3
    assert gpu["remapped_rows"]["pending"] is True
    assert gpu["pcie"]["gen_current"] == 3 and gpu["pcie"]["width_current"] == 8
    assert gpu["pcie"]["replay_counter"] == 42
    assert [link["link"] for link in gpu["nvlinks"] if not link["active"]] == [2, 17]
    assert gpu["persistence_mode"] is False
    assert gpu["compute_mode"] == "exclusive_process"
    assert gpu["mig_mode_current"] is True
    procs = {p["pid"]: p for p in gpu["processes"]}
    assert procs[pid]["used_memory_bytes"] == 1073741824
    assert procs[pid]["name"] == "python" or procs[pid]["name"].startswith("python")  # /proc/<pid>/comm
    assert procs[999999]["used_memory_bytes"] == 2048


def test_a_lost_gpu_is_reported_while_the_others_are_read(gpu_node: GpuNode) -> None:
    gpu_node.set(**{"gpu.3.lost": 1})
    doc = gpu_node.probe()
    lost = doc["gpus"][3]
    assert lost["lost"] is True and lost["index"] == 3
    assert lost["name"] is None and lost["temperature_c"] is None
    assert {"gpu": 3, "field": "handle", "error": "GPU_IS_LOST"}.items() <= doc["errors"][0].items()
    others = [g for g in doc["gpus"] if g["index"] != 3]
    assert all(not g["lost"] and g["uuid"] for g in others)

    status = gpu_node.jueying("status")
    assert status.rc == 0, status.stderr
    assert "degraded (GPU 3 lost)" in status.stdout
    assert "7 (1 lost)" in status.stdout
    assert "GPUs healthy 7/8" in status.stdout

    gpus = gpu_node.jueying("status", "--gpus")
    lines = [line for line in gpus.stdout.splitlines() if re.match(r"^\S+\s+3\s", line)]
    assert len(lines) == 1 and "LOST" in lines[0]
    assert sum("LOST" in line for line in gpus.stdout.splitlines()) == 1

    data = gpu_node.jueying("status", "--json").json()["data"]
    assert data["nodes"][0]["state"] == "degraded"
    assert data["nodes"][0]["gpus_lost"] == 1 and data["nodes"][0]["gpus_present"] == 7


def test_a_gpu_lost_in_the_middle_of_its_read_is_marked_lost(gpu_node: GpuNode) -> None:
    gpu_node.set(**{"gpu.5.fail.nvmlDeviceGetPowerUsage": "GPU_IS_LOST"})
    doc = gpu_node.probe()
    gpu = doc["gpus"][5]
    assert gpu["lost"] is True
    assert gpu["name"] == "NVIDIA H100 80GB HBM3"  # read before the loss
    assert gpu["power_watts"] is None and gpu["clock_sm_mhz"] is None
    assert doc["gpus"][6]["lost"] is False and doc["gpus"][6]["power_watts"] is not None


def test_not_supported_fields_are_null_with_an_error_entry_and_never_fail_the_node(gpu_node: GpuNode) -> None:
    gpu_node.set(**{"gpu.2.fail.nvmlDeviceGetPowerUsage": "NOT_SUPPORTED",
                    "fail.nvmlDeviceGetRemappedRows": "NOT_SUPPORTED",
                    "gpu.4.fail.nvmlDeviceGetSerial": "NO_PERMISSION",
                    "gpu.0.nvlink_count": 0})
    doc = gpu_node.probe()
    assert doc["gpus"][2]["power_watts"] is None
    assert doc["gpus"][1]["power_watts"] is not None
    assert all(g["remapped_rows"]["pending"] is None for g in doc["gpus"])
    assert doc["gpus"][4]["serial"] is None
    assert doc["gpus"][0]["nvlinks"] is None  # a PCIe board: NVLink unsupported
    errors = {(e["gpu"], e["field"], e["error"]) for e in doc["errors"]}
    assert (2, "power_watts", "NOT_SUPPORTED") in errors
    assert (4, "serial", "NO_PERMISSION") in errors
    assert (0, "nvlinks", "NOT_SUPPORTED") in errors
    assert {(g, "remapped_rows", "NOT_SUPPORTED") for g in range(8)} <= errors
    assert not any(g["lost"] for g in doc["gpus"])

    status = gpu_node.jueying("status", "--json").json()["data"]["nodes"][0]
    assert status["state"] == "ok"
    assert status["gpus_present"] == 8


@pytest.fixture(scope="module")
def old_driver_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_library(tmp_path_factory.mktemp("nvml-old"), omit=[
        "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetComputeRunningProcesses_v3",
        "nvmlDeviceGetRemappedRows", "nvmlSystemGetCudaDriverVersion_v2", "nvmlDeviceGetMemoryInfo_v2"])


def test_functions_missing_from_an_old_driver_fall_back_or_become_null(gpu_node: GpuNode, old_driver_lib: Path,
                                                                     tmp_path: Path) -> None:
    gpu_node.set(**{"gpu.0.clocks_event_reasons": "0x4", "gpu.0.processes": "4242:1048576"})
    old = GpuNode(old_driver_lib, gpu_node.state_path)
    old.state = gpu_node.state
    old.write()
    doc = old.probe()
    gpu = doc["gpus"][0]
    assert gpu["clocks_event_reasons"] == ["sw_power_cap"]  # through the older "throttle reasons" name
    assert gpu["processes"][0]["pid"] == 4242  # through _v2
    assert gpu["remapped_rows"]["pending"] is None
    assert doc["nvml"]["cuda_driver_version"] is None
    errors = {(e["gpu"], e["field"], e["error"]) for e in doc["errors"]}
    assert (0, "remapped_rows", "FUNCTION_NOT_FOUND") in errors
    assert (None, "cuda_driver_version", "FUNCTION_NOT_FOUND") in errors
    assert gpu["temperature_c"] is not None
    # no v2 memory call: v1, which counts the driver's reserved memory as used, and says so
    assert gpu["memory_info_version"] == 1 and gpu["memory_reserved_bytes"] is None
    assert gpu["memory_used_bytes"] == int(str(old.state["gpu.0.memory_used_bytes"]))
    assert not [e for e in doc["errors"] if e["field"] == "memory"]
    status = old.jueying("status")
    assert status.rc == 0 and "GPUs healthy 8/8" in status.stdout


def test_driver_not_loaded_gives_no_gpus_and_says_so(gpu_node: GpuNode) -> None:
    gpu_node.set(init="DRIVER_NOT_LOADED")
    doc = gpu_node.probe()
    assert doc["gpus"] == []
    assert doc["nvml"]["status"] == "driver_not_loaded"
    assert "DRIVER_NOT_LOADED" in doc["nvml"]["message"]
    assert doc["host"]["hostname"]  # the host part is still there

    status = gpu_node.jueying("status")
    assert status.rc == 0
    assert "no_driver" in status.stdout and "DRIVER_NOT_LOADED" in status.stdout
    gpus = gpu_node.jueying("status", "--gpus")
    assert "driver_not_loaded" in gpus.stdout


def test_no_nvml_library_at_all(gpu_node: GpuNode, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"LD_LIBRARY_PATH": str(empty)}
    probe = gpu_node.jueying("inventory", "--json", env=env)
    assert probe.rc == 0
    facts = probe.json()["data"]["nodes"][0]["facts"]
    assert facts["gpus"] == []
    assert facts["nvml"]["status"] == "library_not_found"
    assert "libnvidia-ml.so.1 not found" in facts["nvml"]["message"]
    status = gpu_node.jueying("status", "--json", env=env).json()
    assert status["data"]["nodes"][0]["state"] == "no_driver"


def test_status_table_shows_the_node_at_a_glance(gpu_node: GpuNode) -> None:
    gpu_node.set(**{"gpu.6.temperature_c": 79, "gpu.2.utilization_gpu_pct": 80, "gpu.0.utilization_gpu_pct": 40})
    result = gpu_node.jueying("status")
    assert result.rc == 0
    assert not ANSI.search(result.stdout)  # not a TTY: plain text
    header, row = result.stdout.splitlines()[:2]
    for column in ("NODE", "STATE", "GPUS", "UTIL", "GPU MEM", "HOTTEST", "POWER", "LOAD", "HOST MEM", "AGE"):
        assert column in header
    assert row.split()[1] == "ok"
    assert "79°C gpu6" in row
    assert "15%/80%" in row  # average of 40+80 over 8 GPUs, and the maximum
    assert "0.0/637.2" in row  # 8 x 4 MiB used (560 MiB less 556 reserved, as nvidia-smi shows) of 8 x 79.6 GiB
    assert "560/5600" in row  # 8 x 70 W of 8 x 700 W
    assert "nodes up 1/1, GPUs healthy 8/8 (8x NVIDIA H100 80GB HBM3 on 1 node(s))" in result.stdout


def test_status_gpus_lists_one_row_per_gpu(gpu_node: GpuNode) -> None:
    gpu_node.set(**{"gpu.7.temperature_c": 66, "gpu.7.processes": "4242:1048576,4243:1048576"})
    result = gpu_node.jueying("status", "--gpus")
    rows = result.stdout.splitlines()[1:9]
    assert [row.split()[1] for row in rows] == [str(i) for i in range(8)]
    assert "66°C" in rows[7]
    assert rows[7].split()[-2] == "2"  # processes
    assert all(row.split()[-1] == "ok" for row in rows)


def test_status_json_envelope(gpu_node: GpuNode) -> None:
    doc = gpu_node.jueying("status", "--json", "--gpus").json()
    assert set(doc) == {"schema_version", "command", "generated_at", "status", "data", "errors"}
    assert doc["schema_version"] == 1 and doc["command"] == "status" and doc["status"] == "ok"
    node = doc["data"]["nodes"][0]
    assert node["gpus_present"] == 8 and node["gpu_models"] == [{"model": "NVIDIA H100 80GB HBM3", "gpus": 8}]
    assert node["power_watts"] == pytest.approx(8 * 70.0, rel=0.2)
    assert doc["data"]["summary"]["gpus_total"] == 8
    assert [g["index"] for g in doc["data"]["gpus"]] == list(range(8))

    def keys(value: object) -> list[str]:
        if isinstance(value, dict):
            return [k for k in value] + [k for v in value.values() for k in keys(v)]
        if isinstance(value, list):
            return [k for v in value for k in keys(v)]
        return []

    assert not [k for k in keys(doc) if "." in k or k != k.lower()]  # snake_case, no dotted keys


def test_inventory_json_prints_the_full_facts_document(gpu_node: GpuNode) -> None:
    doc = gpu_node.jueying("inventory", "--json").json()
    facts = doc["data"]["nodes"][0]["facts"]
    assert facts["schema"] == 1 and len(facts["gpus"]) == 8
    assert facts["host"]["cpu"]["threads"] >= 1
    assert facts["host"]["memory"]["total_bytes"] > 0
    table = gpu_node.jueying("inventory")
    assert "8x NVIDIA H100 80GB HBM3" in table.stdout
    assert "550.127.05" in table.stdout


def _run_in_pty(args: list[str], env: dict[str, str]) -> str:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "jueying_cli", *args], stdout=slave, stderr=slave,
                            env=env, cwd=REPO)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


def test_colours_on_a_terminal_and_none_with_no_color(gpu_node: GpuNode) -> None:
    gpu_node.set(**{"gpu.0.temperature_c": 86})  # within 5 °C of the 87 °C slowdown: bold red
    env = {**os.environ, **sim_env(gpu_node.lib_dir, gpu_node.state_path), "PYTHONPATH": str(REPO),
           "TERM": "xterm-256color", "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    env.pop("JUEYING_INVENTORY", None)
    coloured = _run_in_pty(["status", "--gpus"], env)
    assert ANSI.search(coloured)
    assert "\x1b[1;31m86°C" in coloured
    plain = _run_in_pty(["status", "--gpus"], {**env, "NO_COLOR": "1"})
    assert not ANSI.search(plain) and "86°C" in plain


def test_a_narrow_terminal_hides_columns_instead_of_cutting_numbers(gpu_node: GpuNode) -> None:
    env = {**os.environ, **sim_env(gpu_node.lib_dir, gpu_node.state_path), "PYTHONPATH": str(REPO),
           "TERM": "xterm-256color", "NO_COLOR": "1"}
    env.pop("JUEYING_INVENTORY", None)
    wide = _run_in_pty(["status"], {**env, "COLUMNS": "200"})
    assert "HOST MEM GiB" in wide and "not shown" not in wide
    narrow = _run_in_pty(["status"], {**env, "COLUMNS": "90"})
    header = next(line for line in narrow.splitlines() if line.startswith("NODE"))
    assert "GPUS" in header and "UTIL avg/max" in header and "HOST MEM GiB" not in header
    assert "(not shown for lack of width: " in narrow and "HOST MEM GiB" in narrow
    assert "…" not in header  # what is shown is shown whole
    assert all(len(line) <= 90 for line in narrow.splitlines())


def test_watch_on_this_machine_sees_a_fault_between_refreshes(gpu_node: GpuNode, tmp_path: Path) -> None:
    proc = start_watch({**gpu_node.env, "JUEYING_STATE_DB": str(tmp_path / "state.db")}, "--watch", "0.5",
                       "--count", "8")

    def next_row() -> dict[str, Any]:
        rows: list[dict[str, Any]] = next_envelope(proc)["data"]["nodes"]
        assert len(rows) == 1
        return rows[0]

    try:
        assert next_row()["gpus_present"] == 8
        gpu_node.set(**{"gpu.6.lost": 1})
        rows = [next_row() for _ in range(3)]
        assert any(r["state"] == "degraded" and r["reason"] == "GPU 6 lost" for r in rows), rows
        gpu_node.set(**{"gpu.6.lost": 0})
        rows = [next_row() for _ in range(3)]
        assert rows[-1]["state"] == "ok" and rows[-1]["gpus_present"] == 8, rows[-1]
        proc.communicate(timeout=60)
    finally:
        stop_watch(proc)
    assert proc.returncode == 0
