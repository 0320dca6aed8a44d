"""The audit's pure parts from recorded facts: attributes, majorities, identity, baselines, reports, the datasheet
table and the capacity arithmetic."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from jueying_cli.audit.attributes import read_attributes
from jueying_cli.audit.baseline import baseline_from, load_baseline, save_baseline
from jueying_cli.audit.capacity import energy_kwh, healthy_per_day, sparkline
from jueying_cli.audit.datasheets import DATASHEETS, datasheet_for, peak_tflops
from jueying_cli.audit.drift import audit_nodes, find_drift, find_identity
from jueying_cli.audit.history import parse_duration
from jueying_cli.audit.report import AuditReport, html_page, markdown
from jueying_cli.errors import BadInputError
from jueying_cli.facts.model import Facts
from jueying_cli.inventory.model import Node
from jueying_cli.store import HistoryRow

DATA = Path(__file__).resolve().parents[1] / "data" / "facts"
HEALTHY: dict[str, Any] = json.loads((DATA / "h100-healthy.json").read_text())


def facts(name: str, **changes: Any) -> Facts:
    doc = copy.deepcopy(HEALTHY)
    doc["host"]["hostname"] = name
    doc["host"]["machine_id"] = f"id-{name}"
    for g in doc["gpus"]:
        g["uuid"] = f"GPU-{name}-{g['index']}"
        g["serial"] = f"{name}{g['index']}"
    for path, value in changes.items():
        target = doc
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
    return Facts.from_document(doc)


def nodes(*specs: tuple[str, Facts]) -> tuple[list[tuple[Node, Facts]], dict[str, Node]]:
    pairs = [(Node(name), f) for name, f in specs]
    return pairs, {n.name: n for n, _ in pairs}


def test_datasheet_sums_for_a_known_mix() -> None:
    mix = {"NVIDIA H100 80GB HBM3": 16, "NVIDIA A100-SXM4-80GB": 8, "Tesla V100-SXM2-32GB": 4, "NVIDIA Mystery": 2}
    total, unknown = peak_tflops(mix)
    assert unknown == ["NVIDIA Mystery"]
    assert total["bf16"] == pytest.approx(16 * 989.5 + 8 * 312)  # V100 has no BF16: adds nothing
    assert total["fp16"] == pytest.approx(16 * 989.5 + 8 * 312 + 4 * 125)
    assert total["fp8"] == pytest.approx(16 * 1979)  # only Hopper has FP8 here
    assert total["fp64"] == pytest.approx(16 * 34 + 8 * 9.7 + 4 * 7.8)
    assert total["tf32"] == pytest.approx(16 * 494.5 + 8 * 156)
    assert peak_tflops({}) == ({}, [])


def test_every_datasheet_row_cites_its_source_and_nvml_names_match() -> None:
    assert all(d.source.startswith("https://") for d in DATASHEETS)
    expected = {"NVIDIA H100 80GB HBM3": "H100 SXM", "NVIDIA H100 PCIe": "H100 PCIe", "NVIDIA H100 NVL": "H100 NVL",
                "NVIDIA H200": "H200 SXM", "NVIDIA H200 NVL": "H200 NVL", "NVIDIA B200": "B200 (HGX)",
                "NVIDIA A100-SXM4-40GB": "A100 SXM4",
                "NVIDIA A100 80GB PCIe": "A100 PCIe", "NVIDIA L40S": "L40S", "Tesla V100-SXM2-16GB": "V100 SXM2",
                "Tesla V100-PCIE-32GB": "V100 PCIe", "Tesla V100S-PCIE-32GB": "V100S PCIe"}
    for name, model in expected.items():
        sheet = datasheet_for(name)
        assert sheet is not None and sheet.model == model, name
    assert datasheet_for("NVIDIA H100") is None  # not guessed from another row


def test_halved_figures_are_the_sparse_tensor_precisions_only() -> None:
    """Only Tensor Core precisions a datasheet prints with sparsity are halved; FP64 and FP32 never are, and a
    halved figure is half of what the datasheet prints (H100 SXM: BF16 1,979* -> 989.5)."""
    for d in DATASHEETS:
        assert d.halved <= {"tf32", "bf16", "fp16", "fp8"}, d.model
        assert all(d.tflops[p] is not None for p in d.halved), d.model
    by_model = {d.model: d for d in DATASHEETS}
    assert by_model["H100 SXM"].tflops["bf16"] * 2 == 1979 and by_model["H100 SXM"].halved
    assert not by_model["A100 SXM4"].halved and not by_model["L40S"].halved and not by_model["V100 SXM2"].halved


def test_majority_and_no_majority() -> None:
    pairs, by = nodes(("a", facts("a")), ("b", facts("b")), ("c", facts("c", **{"nvml.driver_version": "535.1"})))
    found = find_drift(audit_nodes(pairs), by)
    assert [(f.node, f.attribute, f.value, f.expected, f.detail) for f in found] == [
        ("c", "driver_version", "535.1", HEALTHY["nvml"]["driver_version"], "2 of 3 nodes with NVIDIA H100 80GB HBM3")]
    pairs, by = nodes(("a", facts("a")), ("c", facts("c", **{"nvml.driver_version": "999.1"})))
    found = find_drift(audit_nodes(pairs), by)
    assert len(found) == 1 and found[0].node == "c" and found[0].detail.startswith("no majority among 2 nodes")


def test_a_value_a_node_cannot_read_is_not_drift() -> None:
    pairs, by = nodes(("a", facts("a")), ("b", facts("b")), ("c", facts("c", **{"nvml.driver_version": None})))
    assert find_drift(audit_nodes(pairs), by) == []


def test_identity_from_recorded_facts() -> None:
    a, b = facts("a"), facts("b", **{"host.machine_id": "id-a", "host.hostname": "b.example.org"})
    pairs, _ = nodes(("a", a), ("b", b), ("c", facts("c", **{"host.hostname": "a"})))
    found = find_identity(audit_nodes(pairs), {})
    assert {(f.node, f.attribute) for f in found} == {("a", "machine_id"), ("b", "machine_id"), ("c", "hostname")}
    before = {x.node: x.identity for x in audit_nodes([(Node("a"), a)])}
    swapped = facts("a", **{"gpus.3.serial": "NEW"})
    found = find_identity(audit_nodes([(Node("a"), swapped)]), before)
    assert [(f.attribute, f.value) for f in found] == [("gpu_serial", f"{a.gpus[3].pci_bus_id}: NEW")]


def test_attributes_fold_per_gpu_values() -> None:
    f = facts("a", **{"gpus.2.vbios_version": "X", "gpus.5.persistence_mode": False})
    attrs = read_attributes(f)
    assert attrs["vbios_version"] == f"{HEALTHY['gpus'][0]['vbios_version']}, X"
    assert attrs["persistence_mode"] == "off, on" and attrs["gpu_count"] == "8"


def test_baseline_round_trip_and_errors(tmp_path: Path) -> None:
    pairs, _ = nodes(("a", facts("a")), ("b", facts("b")), ("c", facts("c")))
    models, warnings = baseline_from(audit_nodes(pairs))
    assert warnings == []
    path = tmp_path / "base.json"
    save_baseline(path, models)
    loaded = load_baseline(path)
    assert loaded.models == models and loaded.source == str(path)
    path.write_text('{"kind": "jueying-audit-baseline", "version": 2, "models": {}}')
    with pytest.raises(BadInputError, match=r"base.json:1: version: version must be 1"):
        load_baseline(path)
    path.write_text('kind: jueying-audit-baseline\nversion: 1\nmodels:\n  X:\n    driver_version: [1]\n')
    with pytest.raises(BadInputError, match=r"base.json:5: models.X.driver_version: must be a text or a number"):
        load_baseline(path)


def test_reports_escape_hostile_node_names_and_values() -> None:
    hostile = 'n<script>alert("x")</script>\x1b[2J'
    f = facts("a", **{"nvml.driver_version": '<img src="http://127.0.0.1:9/x">'})
    pairs = [(Node(hostile), facts("b")), (Node("b2"), facts("b2")), (Node("a"), f)]
    audits = audit_nodes(pairs)
    found = find_drift(audits, {n.name: n for n, _ in pairs}) + find_identity(audits, {})
    report = AuditReport(audits, found, [], "the majority of each GPU model")
    page = html_page(report)
    assert "<script" not in page and "<img" not in page and "\x1b" not in page
    assert "n&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;\\x1b[2J" in page
    text = markdown(report)
    assert "<script" not in text and "\x1b" not in text and "&lt;img src=" in text


def test_durations() -> None:
    assert parse_duration("7d") == 7 * 86400 and parse_duration("90s") == 90 and parse_duration("1.5h") == 5400
    for bad in ("7", "d", "-1d", "0s", "7 days", "99999w"):
        with pytest.raises(BadInputError, match="--since"):
            parse_duration(bad)


def row(at: float, energy: float | None, status: str = "ok", gpus: int = 8) -> HistoryRow:
    return HistoryRow("n", at, status, None, gpus, 0, 0, 0, 0, 0, 0, None, None, None, energy, None, None)


def test_energy_counts_increases_and_restarts_after_a_reset() -> None:
    assert energy_kwh([row(0, 3.6e6)]) is None
    assert energy_kwh([row(0, 3.6e6), row(60, 7.2e6)]) == pytest.approx(1.0)
    # the driver reloaded between the 2nd and 3rd reading: the 3rd value is the energy since
    assert energy_kwh([row(0, 3.6e6), row(60, 7.2e6), row(120, 1.8e6), row(180, 3.6e6)]) == pytest.approx(2.0)
    assert energy_kwh([row(0, None), row(60, 3.6e6)]) is None


def test_healthy_gpus_per_day_and_sparkline() -> None:
    day = 86400.0
    history = {"a": [row(0, None), row(day + 10, None, gpus=7), row(day + 20, None, status="unreachable")],
               "b": [row(5, None), row(day + 5, None)]}
    assert healthy_per_day(history) == [("1970-01-01", 16), ("1970-01-02", 8)]
    assert sparkline([1, 5, 9]) == "▁▅█" and sparkline([3, 3]) == "▁▁" and sparkline([]) == ""
