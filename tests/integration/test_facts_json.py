"""One JSON shape for a GPU and a node, whichever command prints it and however the facts were collected.

`inventory --json` prints each node's facts document, `status --gpus --json` one object per GPU, and
`status --gpus --json --watch` the same from the kept probe: on the simulated GPU node every GPU object has the
same keys, in the same order, down to its sub-objects, and the same static values (identity, thresholds,
maxima). Readings (temperature, power, ...) may change between two collections and are not compared.
"""

from __future__ import annotations

from typing import Any

from jueying_cli.facts.schema import (
    DOCUMENT_KEYS,
    GPU_KEYS,
    GPU_STATIC_KEYS,
    HOST_KEYS,
    NVLINK_KEYS,
    PCIE_KEYS,
    PCIE_STATIC_KEYS,
    PROCESS_KEYS,
)
from tests.conftest import GpuNode


def _keys(value: object) -> object:
    """The key structure of a JSON value: keys in order, recursively (the first item stands for a list)."""
    if isinstance(value, dict):
        return [(k, _keys(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_keys(v) for v in value[:1]]
    return None


def _status_gpus(result: Any, node: str) -> list[dict[str, Any]]:
    assert result.rc == 0, result.stderr
    gpus: list[dict[str, Any]] = result.json()["data"]["gpus"]
    assert all(next(iter(g)) == "node" and g["node"] == node for g in gpus)  # the node first, then the GPU
    # ... and last its health as the checks see it (README, status --json)
    assert all(list(g)[-4:] == list(STATUS_HEALTH_KEYS) for g in gpus)
    return [{k: v for k, v in g.items() if k != "node" and k not in STATUS_HEALTH_KEYS} for g in gpus]


STATUS_HEALTH_KEYS = ("health", "health_check", "problems", "pending")


def test_inventory_and_status_print_a_gpu_in_one_shape(gpu_node: GpuNode) -> None:
    gpu_node.set(**{"gpu.1.processes": "4242:1073741824:python3,4243:2048", "gpu.1.nvlink_down": "3",
                    "gpu.2.fail.nvmlDeviceGetSerial": "NO_PERMISSION", "gpu.4.clocks_event_reasons": "0x48"})
    inventory = gpu_node.jueying("inventory", "--json")
    assert inventory.rc == 0, inventory.stderr
    node = inventory.json()["data"]["nodes"][0]
    facts = node["facts"]
    assert list(facts) == list(DOCUMENT_KEYS) and list(facts["host"]) == list(HOST_KEYS)
    by_inventory = facts["gpus"]
    by_status = _status_gpus(gpu_node.jueying("status", "--gpus", "--json"), node["node"])
    by_watch = _status_gpus(gpu_node.jueying("status", "--gpus", "--json", "--watch", "1", "--count", "1"),
                            node["node"])  # the kept probe (a Collector in-process for this machine)

    assert len(by_inventory) == len(by_status) == len(by_watch) == 8
    for inv, status, watch in zip(by_inventory, by_status, by_watch, strict=True):
        assert list(inv) == list(GPU_KEYS)
        assert _keys(inv) == _keys(status) == _keys(watch)
        for key in ("index", "lost", *GPU_STATIC_KEYS):
            assert inv[key] == status[key] == watch[key], key
        for key in PCIE_STATIC_KEYS:
            assert inv["pcie"][key] == status["pcie"][key] == watch["pcie"][key], key
        assert list(inv["pcie"]) == list(PCIE_KEYS)
        assert inv["nvlinks"] == status["nvlinks"] == watch["nvlinks"]  # unchanged between the collections
        assert inv["clocks_event_reasons"] == status["clocks_event_reasons"] == watch["clocks_event_reasons"]
    gpu1 = by_status[1]
    assert [list(p) for p in gpu1["processes"]] == [list(PROCESS_KEYS)] * 2
    assert list(gpu1["nvlinks"][0]) == list(NVLINK_KEYS)
    assert [link["link"] for link in gpu1["nvlinks"] if not link["active"]] == [3]
    assert by_status[2]["serial"] is None and by_status[3]["serial"]
    assert by_status[4]["clocks_event_reasons"] == ["hw_slowdown", "hw_thermal_slowdown"]
    assert by_status[4]["clocks_event_reasons_mask"] == 0x48  # once only in the raw document, now everywhere
