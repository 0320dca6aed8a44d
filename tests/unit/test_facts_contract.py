"""The facts contract: the probe writes, and the model reads and writes back, one document shape.

Documents from the real probe (one-shot `collect()` and the kept `Collector().collect()`, on the simulated NVML
with a lost GPU, failing reads, processes, XIDs in the kernel log and an InfiniBand port) and the recorded
h100 document go through `Facts.from_document(doc).to_document()` and must come back byte for byte as JSON: a
key the probe writes and the model does not hold, a renamed key, a value read into another type (700.0 -> 700)
or keys in another order all fail here.
"""

from __future__ import annotations

import ast
import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jueying_cli.errors import FactsError
from jueying_cli.facts import schema
from jueying_cli.facts.gpu import GpuFacts, NvLink
from jueying_cli.facts.model import Facts
from jueying_cli.facts.record import Record
from tests.conftest import REPO
from tests.nvmlsim import default_state, sim_env, write_state

pytest.importorskip("pynvml")

H100 = REPO / "tests" / "data" / "facts" / "h100-healthy.json"

# Runs in a fresh process (pynvml loads libnvidia-ml.so.1 once per process): the one-shot document, then three
# from one kept Collector (the first reads the static fields, the later ones repeat them from its cache).
_PROBE = """
import json, sys
from jueying_cli.probe import Collector, collect
kept = Collector()
try:
    docs = {"oneshot": collect(), "kept": [kept.collect() for _ in range(3)]}
finally:
    kept.close()
json.dump(docs, sys.stdout)
"""

XID_LOG = """\
[  100.250000] NVRM: Xid (PCI:0000:18:00): 79, pid=1234, name=python3, GPU has fallen off the bus.
[  200.500000] NVRM: Xid (PCI:0000:2a:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error
[  300.000000] eth0: link up
"""


def _infiniband(root: Path) -> Path:
    port = root / "mlx5_0" / "ports" / "1"
    port.mkdir(parents=True)
    for name, text in (("state", "4: ACTIVE"), ("phys_state", "5: LinkUp"), ("rate", "400 Gb/sec (4X NDR)"),
                       ("link_layer", "InfiniBand")):
        (port / name).write_text(text + "\n")
    return root


@pytest.fixture(scope="module")
def probe_docs(nvml_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("contract")
    state = tmp / "gpu.state"
    write_state(state, {
        **default_state(),
        "gpu.3.lost": 1,  # lost before its handle: every field null
        "gpu.5.fail.nvmlDeviceGetPowerUsage": "GPU_IS_LOST",  # lost in the middle of its read
        "gpu.2.fail.nvmlDeviceGetSerial": "NO_PERMISSION",
        "gpu.6.fail.nvmlDeviceGetRemappedRows": "NOT_SUPPORTED",
        "gpu.0.nvlink_count": 0,  # a PCIe board: nvlinks null
        "gpu.1.nvlink_down": [2, 17],
        "gpu.1.processes": [(4242, 40 << 30, "python3"), (4243, 1 << 30)],
        "gpu.1.clocks_event_reasons": "0x48",
    })
    log = tmp / "kern.log"
    log.write_text(XID_LOG)
    overlays = tmp / "inject"  # a drill's injected GPU fault (probe/inject.py): 2 more uncorrected ECC errors
    overlays.mkdir()
    (overlays / "jy-test-m0.json").write_text(json.dumps({"fault": "ecc", "gpu": 4, "count": 2,
                                                          "injected_at_unix": 1e9, "expires_at_unix": 4e9}))
    env = {"PATH": "/usr/bin:/bin", **sim_env(nvml_lib, state), "PYTHONPATH": str(REPO),
           "JUEYING_PROBE_KERNEL_LOG": str(log), "JUEYING_PROBE_INFINIBAND_ROOT": str(_infiniband(tmp / "ib")),
           "JUEYING_PROBE_INJECT_DIR": str(overlays)}
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    docs: dict[str, Any] = json.loads(proc.stdout)
    return docs


def _documents(docs: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "oneshot", docs["oneshot"]
    for i, doc in enumerate(docs["kept"]):
        yield f"kept[{i}]", doc
    yield "h100-healthy.json", json.loads(H100.read_text())


def _round_trip(doc: dict[str, Any]) -> dict[str, object]:
    return Facts.from_document(copy.deepcopy(doc)).to_document()


@pytest.mark.parametrize("which", ["oneshot", "kept[0]", "kept[1]", "kept[2]", "h100-healthy.json"])
def test_a_probe_document_comes_back_unchanged(probe_docs: dict[str, Any], which: str) -> None:
    doc = dict(_documents(probe_docs))[which]
    back = _round_trip(doc)
    assert back == doc
    assert json.dumps(back) == json.dumps(doc)  # same key order, and 700.0 stays 700.0


def test_the_probe_documents_hold_every_kind_of_object_of_the_schema(probe_docs: dict[str, Any]) -> None:
    """The round trip above covers every record: each key tuple of the schema is found as an object, with
    values, in the documents it checks (so a field nobody reads is still read and written back)."""
    seen: dict[tuple[str, ...], int] = {}

    def walk(value: object) -> None:
        if isinstance(value, dict):
            if any(v is not None for v in value.values()):
                seen[tuple(value)] = seen.get(tuple(value), 0) + 1
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for _, doc in _documents(probe_docs):
        walk(doc)
    tuples = {name: keys for name, keys in vars(schema).items() if name.endswith("_KEYS") and "STATIC" not in name}
    assert not [name for name, keys in tuples.items() if keys not in seen]
    oneshot = probe_docs["oneshot"]
    assert oneshot["gpus"][3]["lost"] and oneshot["gpus"][5]["lost"] and oneshot["gpus"][0]["nvlinks"] is None
    assert oneshot["gpus"][5]["name"] and oneshot["gpus"][5]["power_watts"] is None
    assert oneshot["gpus"][3]["pcie"] == dict.fromkeys(schema.PCIE_KEYS)  # a lost GPU has the same shape
    assert len(oneshot["kernel_log"]["xid_events"]) == 2 and oneshot["host"]["infiniband"][0]["port"] == 1
    assert [(i["tag"], i["fault"], i["gpu"], i["count"]) for i in oneshot["injected"]] == [("jy-test-m0", "ecc", 4, 2)]
    assert [d["injected"] for d in probe_docs["kept"]] == [oneshot["injected"]] * 3  # overlaid on every read


def test_a_kept_probe_and_a_one_shot_probe_write_the_same_shape(probe_docs: dict[str, Any]) -> None:
    def shape(value: object) -> object:
        if isinstance(value, dict):
            return [(k, shape(v)) for k, v in value.items()]
        if isinstance(value, list):
            return [shape(v) for v in value[:1]]
        return type(value).__name__

    oneshot = Facts.from_document(probe_docs["oneshot"])
    for doc in probe_docs["kept"]:
        kept = Facts.from_document(doc)
        assert shape(kept.to_document()) == shape(oneshot.to_document())
        assert [g.to_document()["uuid"] for g in kept.gpus] == [g.to_document()["uuid"] for g in oneshot.gpus]


def test_what_the_model_does_not_hold_breaks_the_round_trip() -> None:
    """The check above can fail: a key the model lacks, or one of another type, does not come back."""
    doc = json.loads(H100.read_text())
    doc["gpus"][0]["fan_speed_pct"] = 40
    assert _round_trip(doc) != doc
    doc = json.loads(H100.read_text())
    doc["gpus"][0]["power_limit_watts"] = 700  # an int where the probe wrote 700.0: equal, but not the same JSON
    assert json.dumps(_round_trip(doc)) != json.dumps(json.loads(H100.read_text()))


def test_every_record_is_its_schema_keys() -> None:
    def records(cls: type[Record]) -> Iterator[type[Record]]:
        yield cls
        for sub in cls.__subclasses__():
            yield from records(sub)

    # (slots=True makes a new class: the one it replaced may linger among the subclasses until collected)
    found = {cls for cls in records(Record) if cls.KEYS and getattr(sys.modules[cls.__module__], cls.__name__) is cls}
    assert len(found) >= 20
    for cls in found:
        cls.check()
        assert tuple(cls.__dataclass_fields__) == cls.KEYS, cls.__name__
        assert cls.__dictoffset__ == 0, cls.__name__  # slotted: no dict per record


def test_a_record_is_not_a_raw_dict_but_reads_like_one() -> None:
    facts = Facts.from_document(json.loads(H100.read_text()))
    gpu = facts.gpus[0]
    assert gpu.pcie.get("gen_max") == gpu.pcie.gen_max == 5
    assert dict(gpu.remapped_rows) == {"corrected": 0, "uncorrected": 0, "pending": False, "failure": False}
    assert gpu.ecc_errors == dict.fromkeys(schema.ECC_ERRORS_KEYS, 0)
    with pytest.raises(KeyError):
        gpu.pcie["fan"]
    assert gpu.nvlinks_active == (True,) * 18
    assert facts.host.cpu_threads == facts.host.cpu.threads == 224 and facts.host.load5 == 2.4


def test_equal_small_records_are_shared_and_still_validated() -> None:
    a, b = (Facts.from_document(json.loads(H100.read_text())) for _ in range(2))
    assert a.gpus[0].nvlinks is not None and b.gpus[7].nvlinks is not None
    assert a.gpus[0].nvlinks[5] is b.gpus[7].nvlinks[5]  # one NvLink(link=5, active=True) for the fleet
    assert a.gpus[0].pcie is b.gpus[3].pcie and a.nvml is b.nvml
    gpu = json.loads(H100.read_text())["gpus"][0]
    gpu["nvlinks"][5]["active"] = 1  # equal to True, and hashed alike: still refused
    with pytest.raises(FactsError, match=r"gpus\[0\]\.nvlinks must be a list of \{link, active\}"):
        GpuFacts.from_document(gpu, 0)
    gpu = json.loads(H100.read_text())["gpus"][0]
    gpu["pcie"]["gen_max"] = 5.0
    with pytest.raises(FactsError, match=r"gpus\[2\]\.pcie\.gen_max has type float, expected int"):
        GpuFacts.from_document(gpu, 2)
    gpu["pcie"]["gen_max"] = [5]
    with pytest.raises(FactsError, match=r"gpus\[2\]\.pcie\.gen_max has type list"):
        GpuFacts.from_document(gpu, 2)
    assert NvLink.parse({"link": 1, "active": False}, "x") == NvLink(link=1, active=False)


def test_the_probe_imports_only_the_schema_and_the_standard_library() -> None:
    allowed = {"nvml.py": {"pynvml"}, "host.py": {"psutil"}}
    for path in sorted((REPO / "jueying_cli" / "probe").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split(".")[0]
                ok = (top in sys.stdlib_module_names or top == "__future__" or name == "jueying_cli.facts.schema"
                      or name.startswith("jueying_cli.probe") or top in allowed.get(path.name, ()))
                assert ok, f"{path.name} imports {name}"


def test_a_node_s_facts_stay_small_in_memory() -> None:
    """What a thousand-node status keeps per node: the model and what it holds, the parsed JSON dropped. The
    model before this one held fewer fields in ~29 KiB (plus the raw document, ~51 KiB more, on one-shot runs)."""
    import gc
    import tracemalloc

    text = H100.read_text()
    Facts.from_document(json.loads(text))  # the shared records of this document exist before the count
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        kept = [Facts.from_document(json.loads(text)) for _ in range(200)]
        gc.collect()
        per_node = (tracemalloc.get_traced_memory()[0] - base) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_node < 16 * 1024, f"{per_node / 1024:.1f} KiB per node"
