"""Facts.from_document: the gate between what a node printed and everything jueying shows.

A real probe document and hand-built 8-GPU documents go through; anything malformed is refused with a
message that names the bad field, so the operator knows which node sent what.
"""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jueying_cli.errors import FactsError, JueyingError
from jueying_cli.facts.model import Facts
from jueying_cli.facts.schema import ECC_ERRORS_KEYS, GPU_KEYS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def probe_doc() -> dict[str, Any]:
    """This machine's facts, as `python3 -m jueying_cli.probe` prints them."""
    proc = subprocess.run([sys.executable, "-m", "jueying_cli.probe", "--compact"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def h100(index: int) -> dict[str, Any]:
    """One healthy GPU, every key the probe writes (GPU_KEYS) filled in as NVML would."""
    gpu: dict[str, Any] = {
        "index": index, "lost": False,
        "name": "NVIDIA H100 80GB HBM3", "uuid": f"GPU-00000000-0000-0000-0000-00000000000{index}",
        "serial": f"165012345678{index}", "pci_bus_id": f"00000000:{0x18 + index:02X}:00.0",
        "vbios_version": "96.00.74.00.01",
        "memory_total_bytes": 85520809984, "memory_used_bytes": 1024 ** 3 * index, "memory_free_bytes": 80000000000,
        "memory_reserved_bytes": 583008256, "memory_info_version": 2,
        "utilization_gpu_pct": 10 * index, "utilization_memory_pct": 5 * index,
        "temperature_c": 30 + index, "temperature_slowdown_c": 87, "temperature_shutdown_c": 92,
        "power_watts": 70.25 + index, "power_limit_watts": 700,
        "clock_sm_mhz": 1980, "clock_sm_max_mhz": 1980, "clock_mem_mhz": 2619, "clock_mem_max_mhz": 2619,
        "clocks_event_reasons_mask": 1, "clocks_event_reasons": ["gpu_idle"],
        "performance_state": 0, "persistence_mode": True, "compute_mode": "default",
        "ecc_mode_current": True, "ecc_mode_pending": True,
        "ecc_errors": {"corrected_volatile": 0, "corrected_aggregate": 3, "uncorrected_volatile": 0,
                       "uncorrected_aggregate": 0},
        "retired_pages": {"single_bit_ecc": 0, "double_bit_ecc": 0, "pending": False},
        "remapped_rows": {"corrected": 0, "uncorrected": 0, "pending": False, "failure": False},
        "pcie": {"gen_current": 5, "gen_max": 5, "width_current": 16, "width_max": 16, "replay_counter": 0},
        "nvlinks": [{"link": link, "active": link != 3} for link in range(18)],
        "processes": [{"pid": 4242 + index, "name": "python3", "used_memory_bytes": 1024 ** 3}],
        "mig_mode_current": False, "mig_mode_pending": False, "energy_consumed_mj": 3_600_000_000,
    }
    assert set(gpu) == set(GPU_KEYS)
    return gpu


def lost(index: int) -> dict[str, Any]:
    """A GPU that answered GPU_IS_LOST, every other field null (the probe writes its sub-objects as objects of
    nulls; null ones are read the same way)."""
    return {**dict.fromkeys(GPU_KEYS), "index": index, "lost": True}


def eight_gpu_doc(probe: dict[str, Any], lost_index: int | None = None) -> dict[str, Any]:
    doc = copy.deepcopy(probe)
    doc["nvml"] = {"status": "ok", "message": None, "driver_version": "550.54.15", "cuda_driver_version": "12.4",
                   "nvml_version": "12.550.54.15", "gpu_count": 8}
    doc["gpus"] = [lost(i) if i == lost_index else h100(i) for i in range(8)]
    doc["errors"] = [] if lost_index is None else [
        {"gpu": lost_index, "field": "name", "error": "GPU_IS_LOST", "message": "GPU is lost"}]
    return doc


# ---------------------------------------------------------------- accepted

def test_real_probe_document(probe_doc: dict[str, Any]) -> None:
    facts = Facts.from_document(probe_doc)
    assert facts.host.hostname == socket.gethostname() == probe_doc["host"]["hostname"]
    assert facts.host.cpu_threads == probe_doc["host"]["cpu"]["threads"] >= 1
    assert facts.host.memory_total_bytes == probe_doc["host"]["memory"]["total_bytes"] > 0
    assert facts.host.kernel == probe_doc["host"]["kernel"]
    assert facts.nvml.status == probe_doc["nvml"]["status"]
    assert len(facts.gpus) == len(probe_doc["gpus"])
    assert facts.collected_at_unix == pytest.approx(probe_doc["collected_at_unix"])
    assert facts.to_document() == probe_doc  # every field modelled: --json prints the document as received


def test_eight_healthy_gpus(probe_doc: dict[str, Any]) -> None:
    facts = Facts.from_document(eight_gpu_doc(probe_doc))
    assert facts.nvml.status == "ok"
    assert facts.nvml.cuda_driver_version == "12.4"
    assert facts.nvml.gpu_count == 8
    assert [gpu.index for gpu in facts.gpus] == list(range(8))
    assert not any(gpu.lost for gpu in facts.gpus)
    gpu = facts.gpus[3]
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.temperature_c == 33
    assert gpu.power_watts == pytest.approx(73.25)
    assert gpu.power_limit_watts == 700  # an int is fine where watts may be fractional
    assert gpu.memory_used_pct == pytest.approx(100 * 3 * 1024 ** 3 / 85520809984)
    assert gpu.clocks_event_reasons == ("gpu_idle",)
    assert gpu.ecc_errors["corrected_aggregate"] == 3
    assert gpu.remapped_rows["pending"] is False
    assert gpu.pcie["width_current"] == 16
    assert gpu.nvlinks_active is not None and len(gpu.nvlinks_active) == 18
    assert gpu.nvlinks_active.count(False) == 1
    assert gpu.processes is not None and gpu.processes[0].pid == 4245 and gpu.processes[0].name == "python3"
    assert facts.errors == ()


def test_a_lost_gpu_does_not_fail_the_document(probe_doc: dict[str, Any]) -> None:
    facts = Facts.from_document(eight_gpu_doc(probe_doc, lost_index=5))
    assert [gpu.lost for gpu in facts.gpus] == [False] * 5 + [True] + [False] * 2
    gone = facts.gpus[5]
    assert gone.index == 5
    assert gone.name is None and gone.temperature_c is None and gone.power_watts is None
    assert gone.memory_used_pct is None
    assert gone.nvlinks_active is None and gone.processes is None
    assert facts.gpus[6].name == "NVIDIA H100 80GB HBM3"
    assert [(e.gpu, e.field, e.error) for e in facts.errors_for(5)] == [(5, "name", "GPU_IS_LOST")]
    assert facts.errors_for(4) == ()


def test_unsupported_values_are_null(probe_doc: dict[str, Any]) -> None:
    doc = eight_gpu_doc(probe_doc)
    doc["gpus"][2].update(power_watts=None, ecc_errors={"corrected_volatile": None}, nvlinks=None, processes=None,
                          remapped_rows={"corrected": None, "uncorrected": None, "pending": None, "failure": None},
                          clocks_event_reasons=None)
    doc["errors"] = [{"gpu": 2, "field": "power_watts", "error": "NOT_SUPPORTED", "message": "Not Supported"},
                     {"gpu": None, "field": "nvml_version", "error": "FUNCTION_NOT_FOUND", "message": "old driver"}]
    facts = Facts.from_document(doc)
    gpu = facts.gpus[2]
    assert gpu.power_watts is None and gpu.nvlinks_active is None and gpu.processes is None
    assert gpu.ecc_errors == dict.fromkeys(ECC_ERRORS_KEYS)  # the counters not sent are null too
    assert [e.error for e in facts.errors_for(2)] == ["NOT_SUPPORTED"]
    assert [e.field for e in facts.errors if e.gpu is None] == ["nvml_version"]


def test_fields_this_jueying_does_not_know_are_ignored_not_refused(probe_doc: dict[str, Any]) -> None:
    doc = eight_gpu_doc(probe_doc)
    expected = copy.deepcopy(doc)
    doc["gpus"][0]["fan_speed_pct"] = 40
    doc["host"]["future"] = {"anything": [1]}
    facts = Facts.from_document(doc)
    assert facts.to_document() == expected  # the probe ships with this jueying: it never sends them


def test_errors_may_be_null(probe_doc: dict[str, Any]) -> None:
    doc = eight_gpu_doc(probe_doc)
    doc["errors"] = None
    assert Facts.from_document(doc).errors == ()


# ---------------------------------------------------------------- refused, naming the field

Mutation = Callable[[dict[str, Any]], Any]


def _set(*path_and_value: Any) -> Mutation:
    """_set("gpus", 2, "temperature_c", "45"): doc["gpus"][2]["temperature_c"] = "45"."""
    *path, value = path_and_value

    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _drop(*path: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


BAD = [
    pytest.param(_set("schema", 2), "schema is 2, this jueying reads schema 1", id="schema-2"),
    pytest.param(_set("schema", "1"), "schema is '1'", id="schema-string"),
    pytest.param(_set("schema", True), "schema is True", id="schema-bool"),
    pytest.param(_set("schema", 1.0), "schema is 1.0", id="schema-float"),
    pytest.param(_drop("schema"), "schema is None", id="schema-missing"),
    pytest.param(_drop("collected_at_unix"), "collected_at_unix is missing", id="collected-missing"),
    pytest.param(_set("collected_at_unix", "now"), "collected_at_unix has type str, expected int/float",
                 id="collected-string"),
    pytest.param(_set("collected_at_unix", True), "collected_at_unix has type bool", id="collected-bool"),
    pytest.param(_set("host", "vm"), "host must be an object", id="host-string"),
    pytest.param(_drop("host"), "host.hostname is missing", id="host-missing"),
    pytest.param(_set("host", "hostname", None), "host.hostname is null", id="hostname-null"),
    pytest.param(_set("host", "hostname", 7), "host.hostname has type int, expected str", id="hostname-int"),
    pytest.param(_set("host", "cpu", "threads", True), "host.cpu.threads has type bool, expected int",
                 id="threads-bool"),
    pytest.param(_set("host", "cpu", "threads", 2.0), "host.cpu.threads has type float", id="threads-float"),
    pytest.param(_set("host", "cpu", []), "host.cpu must be an object", id="cpu-list"),
    pytest.param(_set("host", "load", "load1", "0.5"), "host.load.load1 has type str, expected int/float",
                 id="load-string"),
    pytest.param(_set("host", "memory", [1, 2]), "host.memory must be an object", id="memory-list"),
    pytest.param(_set("host", "memory", "total_bytes", "24G"), "host.memory.total_bytes has type str",
                 id="memory-string"),
    pytest.param(_set("host", "os", "pretty_name", 12), "host.os.pretty_name has type int", id="os-int"),
    pytest.param(_set("host", "uptime_s", False), "host.uptime_s has type bool", id="uptime-bool"),
    pytest.param(_drop("nvml"), "nvml.status is missing", id="nvml-missing"),
    pytest.param(_set("nvml", "ok"), "nvml must be an object", id="nvml-string"),
    pytest.param(_set("nvml", "status", None), "nvml.status is null", id="nvml-status-null"),
    pytest.param(_set("nvml", "gpu_count", "8"), "nvml.gpu_count has type str, expected int", id="gpu-count-str"),
    pytest.param(_set("nvml", "gpu_count", True), "nvml.gpu_count has type bool", id="gpu-count-bool"),
    pytest.param(_set("nvml", "driver_version", 550.54), "nvml.driver_version has type float", id="driver-float"),
    pytest.param(_drop("gpus"), "gpus must be a list", id="gpus-missing"),
    pytest.param(_set("gpus", None), "gpus must be a list", id="gpus-null"),
    pytest.param(_set("gpus", {"0": {}}), "gpus must be a list", id="gpus-object"),
    pytest.param(_set("gpus", 4, "GPU 4"), "gpus[4] must be an object", id="gpu-string"),
    pytest.param(_set("gpus", 2, "temperature_c", "45"), "gpus[2].temperature_c has type str, expected int",
                 id="temperature-string"),
    pytest.param(_set("gpus", 2, "temperature_c", True), "gpus[2].temperature_c has type bool, expected int",
                 id="temperature-bool"),
    pytest.param(_set("gpus", 2, "temperature_c", 45.5), "gpus[2].temperature_c has type float", id="temp-float"),
    pytest.param(_drop("gpus", 3, "index"), "gpus[3].index is missing", id="index-missing"),
    pytest.param(_set("gpus", 3, "index", None), "gpus[3].index is null", id="index-null"),
    pytest.param(_set("gpus", 3, "index", False), "gpus[3].index has type bool", id="index-bool"),
    pytest.param(_set("gpus", 1, "lost", "yes"), "gpus[1].lost has type str, expected bool", id="lost-string"),
    pytest.param(_set("gpus", 1, "lost", 1), "gpus[1].lost has type int, expected bool", id="lost-int"),
    pytest.param(_set("gpus", 0, "power_watts", "300W"), "gpus[0].power_watts has type str, expected int/float",
                 id="power-string"),
    pytest.param(_set("gpus", 0, "power_limit_watts", False), "gpus[0].power_limit_watts has type bool",
                 id="power-bool"),
    pytest.param(_set("gpus", 0, "memory_used_bytes", 1e9), "gpus[0].memory_used_bytes has type float",
                 id="memory-float"),
    pytest.param(_set("gpus", 7, "name", ["H100"]), "gpus[7].name has type list, expected str", id="name-list"),
    pytest.param(_set("gpus", 7, "persistence_mode", 1), "gpus[7].persistence_mode has type int, expected bool",
                 id="persistence-int"),
    pytest.param(_set("gpus", 7, "performance_state", "P0"), "gpus[7].performance_state has type str",
                 id="pstate-string"),
    pytest.param(_set("gpus", 6, "ecc_errors", [0, 0]), "gpus[6].ecc_errors must be an object", id="ecc-list"),
    pytest.param(_set("gpus", 6, "ecc_errors", "uncorrected_volatile", True),
                 "gpus[6].ecc_errors.uncorrected_volatile has type bool, expected int", id="ecc-bool"),
    pytest.param(_set("gpus", 6, "retired_pages", "pending", "yes"), "gpus[6].retired_pages.pending has type str",
                 id="retired-string"),
    pytest.param(_set("gpus", 6, "remapped_rows", "failure", "no"), "gpus[6].remapped_rows.failure has type str",
                 id="remapped-string"),
    pytest.param(_set("gpus", 5, "pcie", "width_current", 16.0), "gpus[5].pcie.width_current has type float",
                 id="pcie-float"),
    pytest.param(_set("gpus", 5, "pcie", 5), "gpus[5].pcie must be an object", id="pcie-int"),
    pytest.param(_set("gpus", 4, "nvlinks", {"0": True}), "gpus[4].nvlinks must be a list of {link, active}",
                 id="nvlinks-object"),
    pytest.param(_set("gpus", 4, "nvlinks", 2, "active", None), "gpus[4].nvlinks must be a list",
                 id="nvlink-active-null"),
    pytest.param(_set("gpus", 4, "nvlinks", 2, "active", 1), "gpus[4].nvlinks", id="nvlink-active-int"),
    pytest.param(_set("gpus", 4, "processes", [4242]), "gpus[4].processes must be a list of objects",
                 id="processes-ints"),
    pytest.param(_set("gpus", 4, "processes", "python3"), "gpus[4].processes must be a list", id="processes-str"),
    pytest.param(lambda doc: doc["gpus"][4]["processes"].append({"name": "x"}),
                 "gpus[4].processes[1].pid is missing", id="process-pid-missing"),
    pytest.param(_set("gpus", 4, "processes", 0, "pid", "4246"), "gpus[4].processes[0].pid has type str",
                 id="process-pid-string"),
    pytest.param(_set("gpus", 4, "processes", 0, "used_memory_bytes", "1G"),
                 "gpus[4].processes[0].used_memory_bytes has type str", id="process-memory-string"),
    pytest.param(_set("gpus", 3, "clocks_event_reasons", "gpu_idle"),
                 "gpus[3].clocks_event_reasons must be a list of strings", id="reasons-string"),
    pytest.param(_set("gpus", 3, "clocks_event_reasons", [1]), "gpus[3].clocks_event_reasons must be a list",
                 id="reasons-ints"),
    pytest.param(_set("errors", "none"), "errors must be a list of objects", id="errors-string"),
    pytest.param(_set("errors", 0), "errors must be a list of objects", id="errors-zero"),
    pytest.param(_set("errors", {}), "errors must be a list of objects", id="errors-empty-object"),
    pytest.param(_set("errors", ["GPU_IS_LOST"]), "errors must be a list of objects", id="errors-strings"),
]


@pytest.mark.parametrize(("mutate", "message"), BAD)
def test_malformed_documents_are_refused_naming_the_field(probe_doc: dict[str, Any], mutate: Mutation,
                                                          message: str) -> None:
    doc = eight_gpu_doc(probe_doc)
    mutate(doc)
    with pytest.raises(FactsError) as info:
        Facts.from_document(doc)
    assert str(info.value).startswith("facts document: ")
    assert message in str(info.value), str(info.value)
    assert isinstance(info.value, JueyingError)  # reported as that node failing, never a crash


def test_one_null_remapped_row_field_is_read_as_unknown_the_others_kept(probe_doc: dict[str, Any]) -> None:
    """A null inside remapped_rows (the driver could not say) is accepted and read as null, the other fields of
    that GPU and the other GPUs as sent."""
    doc = eight_gpu_doc(probe_doc)
    doc["gpus"][6]["remapped_rows"].update(failure=None, pending=True, corrected=3)
    facts = Facts.from_document(doc)
    assert facts.gpus[6].remapped_rows == {"corrected": 3, "uncorrected": 0, "pending": True, "failure": None}
    assert facts.gpus[5].remapped_rows == {"corrected": 0, "uncorrected": 0, "pending": False, "failure": False}


@pytest.mark.parametrize("doc", [None, [], "{}", 1, True, [{"schema": 1}]])
def test_not_an_object(doc: Any) -> None:
    with pytest.raises(FactsError, match=r"^facts document: not a JSON object$"):
        Facts.from_document(doc)


def test_empty_object_names_the_schema(probe_doc: dict[str, Any]) -> None:
    with pytest.raises(FactsError, match=r"schema is None"):
        Facts.from_document({})


def test_the_first_bad_gpu_is_named_not_a_later_one(probe_doc: dict[str, Any]) -> None:
    doc = eight_gpu_doc(probe_doc)
    doc["gpus"][2]["temperature_c"] = "hot"
    doc["gpus"][6]["temperature_c"] = "hot"
    with pytest.raises(FactsError) as info:
        Facts.from_document(doc)
    assert "gpus[2].temperature_c" in str(info.value)
    assert "gpus[6]" not in str(info.value)


def test_refusing_a_document_leaves_it_unchanged(probe_doc: dict[str, Any]) -> None:
    doc = eight_gpu_doc(probe_doc)
    doc["gpus"][1]["lost"] = "maybe"
    before = copy.deepcopy(doc)
    with pytest.raises(FactsError):
        Facts.from_document(doc)
    assert doc == before
