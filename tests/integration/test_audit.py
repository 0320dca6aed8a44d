"""`jueying audit` on the simulated cluster: real sshd nodes, the probe shipped over SSH, real pynvml on the
simulated NVML. Every kind of drift and identity problem is injected one at a time and all together; a
uniform cluster has no finding."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.browser import CANARY, assert_detector_works, open_in_chromium, page_requests
from tests.cluster import SimCluster
from tests.conftest import Result, run_jueying
from tests.nvmlsim import default_state

NODES = 6
MODEL = "NVIDIA H100 80GB HBM3"
IB_PORT = {"state": "4: ACTIVE", "phys_state": "5: LinkUp", "rate": "400 Gb/sec (4X NDR)", "link_layer": "InfiniBand"}


def node_state(index: int, **changes: object) -> dict[str, object]:
    """The default 8x H100 node, with GPU UUIDs and serials of its own (real boards never share them)."""
    state: dict[str, object] = dict(default_state(8))
    for gpu in range(8):
        state[f"gpu.{gpu}.uuid"] = f"GPU-{index:08x}-5c3e-4a10-9b7d-{gpu:012x}"
        state[f"gpu.{gpu}.serial"] = str(1650000000000 + index * 100 + gpu)
    state.update(changes)
    return state


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("audit-cluster"), NODES, prefix="aud", first_octets=(127, 91),
                    gpu_lib_dir=nvml_lib) as sim:
        yield sim


@pytest.fixture
def uniform(cluster: SimCluster) -> Iterator[SimCluster]:
    """Every node alike (own UUIDs, serials, machine id; two active 400G InfiniBand ports); restored after."""
    def reset() -> None:
        for i, node in enumerate(cluster.nodes, start=1):
            node.write_gpu_state(node_state(i))
            node.set_machine_id(f"{i:032x}")
            node.set_infiniband({("mlx5_0", 1): IB_PORT, ("mlx5_1", 1): IB_PORT})

    reset()
    yield cluster
    reset()


def inventory(cluster: SimCluster, path: Path, extra_nodes: str = "", **node_vars: Mapping[str, object]) -> Path:
    """The cluster's inventory without expected_gpus/gpu_model (majority only), plus per-node variables."""
    lines = ["vars:", "  ssh_user: root", "nodes:"]
    for node in cluster.nodes:
        more = "".join(f", {k}: {json.dumps(v)}" for k, v in node_vars.get(node.name, {}).items())
        lines.append(f"  {node.name}: {{address: {node.address}{more}}}")
    path.write_text("\n".join(lines) + "\n" + extra_nodes)
    return path


def audit(cluster: SimCluster, inv: Path, *args: str, env: Mapping[str, str] | None = None) -> Result:
    return run_jueying(["audit", "--connect-timeout", "5", *args],
                       {**cluster.client_env(), "JUEYING_INVENTORY": str(inv), **(env or {})})


def findings(result: Result) -> list[dict[str, Any]]:
    doc = result.json()
    assert doc["command"] == "audit"
    found: list[dict[str, Any]] = doc["data"]["findings"]
    return found


def brief(found: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(f["node"], f["attribute"]) for f in found}


def test_a_uniform_cluster_has_no_finding(uniform: SimCluster, tmp_path: Path) -> None:
    inv = inventory(uniform, tmp_path / "inv.yaml")
    table = audit(uniform, inv)
    assert table.rc == 0, table.stderr
    assert "6 of 6 node(s) audited against the majority of each GPU model: 0 drift and 0 identity" in table.stdout
    doc = audit(uniform, inv, "--json")
    assert doc.rc == 0, doc.stderr
    assert findings(doc) == []
    data = doc.json()["data"]
    node = next(n for n in data["nodes"] if n["node"] == "aud01")
    assert node["attributes"] == {
        "gpu_model": MODEL, "gpu_count": "8", "driver_version": "550.127.05", "cuda_driver_version": "12.4",
        "nvml_version": "12.550.127.05", "vbios_version": "96.00.99.00.01", "nvlinks_active": "18",
        "ecc_mode": "on", "mig_mode": "off", "persistence_mode": "on", "pcie_gen_max": "5",
        "pcie_width_max": "16", "infiniband": "2x 400 Gb/sec (4X NDR)",
        **{k: node["attributes"][k] for k in ("kernel", "os", "cpu_model", "cpu_threads", "memory_gib")}}
    assert node["identity"]["machine_id"] == f"{1:032x}" and node["identity"]["hostname"] == "aud01"


# (name, nvmlsim changes on aud04, attribute, value, expected)
Drift = tuple[str, dict[str, object], str, str, str]
DRIFTS: list[Drift] = [
    ("driver", {"driver_version": "535.183.01"}, "driver_version", "535.183.01", "550.127.05"),
    ("cuda", {"cuda_driver_version": "12020"}, "cuda_driver_version", "12.2", "12.4"),
    ("nvml", {"nvml_version": "12.535.183.01"}, "nvml_version", "12.535.183.01", "12.550.127.05"),
    ("vbios", {"gpu.3.vbios_version": "96.00.74.00.11"}, "vbios_version", "96.00.74.00.11, 96.00.99.00.01",
     "96.00.99.00.01"),
    ("fewer GPUs", {"gpu_count": 7}, "gpu_count", "7", "8"),
    ("nvlink down", {"gpu.5.nvlink_down": [0, 1]}, "nvlinks_active", "16, 18", "18"),
    ("ecc off", {"gpu.0.ecc_mode_current": 0, "gpu.0.ecc_mode_pending": 0}, "ecc_mode", "off, on", "on"),
    ("mig on", {**{f"gpu.{g}.mig_mode_current": 1 for g in range(8)}}, "mig_mode", "on", "off"),
    ("persistence off", {"gpu.7.persistence_mode": 0}, "persistence_mode", "off, on", "on"),
    ("pcie gen", {"gpu.2.pcie_gen_max": 4}, "pcie_gen_max", "4, 5", "5"),
    ("pcie width", {"gpu.2.pcie_width_max": 8}, "pcie_width_max", "16, 8", "16"),
]


@pytest.mark.parametrize("case", DRIFTS, ids=[d[0] for d in DRIFTS])
def test_each_kind_of_drift_alone_is_found_against_the_majority(uniform: SimCluster, tmp_path: Path,
                                                               case: Drift) -> None:
    _, changes, attribute, value, expected = case
    uniform.node("aud04").write_gpu_state(node_state(4, **changes))
    result = audit(uniform, inventory(uniform, tmp_path / "inv.yaml"), "--json")
    assert result.rc == 1, result.stderr
    found = findings(result)
    assert [(f["node"], f["kind"], f["attribute"], f["value"], f["expected"], f["source"]) for f in found] == [
        ("aud04", "drift", attribute, value, expected, "majority")], found
    assert found[0]["detail"] == f"5 of 6 nodes with {MODEL}"


def test_infiniband_port_down_and_other_rate_is_found(uniform: SimCluster, tmp_path: Path) -> None:
    uniform.node("aud02").set_infiniband({("mlx5_0", 1): IB_PORT,
                                          ("mlx5_1", 1): {**IB_PORT, "state": "1: DOWN", "phys_state": "3: Disabled"}})
    uniform.node("aud05").set_infiniband({("mlx5_0", 1): {**IB_PORT, "rate": "200 Gb/sec (4X HDR)"},
                                          ("mlx5_1", 1): IB_PORT})
    found = findings(audit(uniform, inventory(uniform, tmp_path / "inv.yaml"), "--json"))
    assert {(f["node"], f["value"]) for f in found} == {
        ("aud02", "1x 400 Gb/sec (4X NDR), 1x 400 Gb/sec (4X NDR) DOWN"),
        ("aud05", "1x 200 Gb/sec (4X HDR), 1x 400 Gb/sec (4X NDR)")}
    assert {f["attribute"] for f in found} == {"infiniband"}


def test_inventory_expectations_and_pins_win_over_the_majority(uniform: SimCluster, tmp_path: Path) -> None:
    """expected_gpus and gpu_model from the inventory, and an `audit:` pin (here the kernel every node runs, and
    a driver no node runs yet): each finding names the inventory as its source."""
    other = "NVIDIA A100-SXM4-80GB"
    uniform.node("aud03").write_gpu_state(node_state(3, **{f"gpu.{g}.name": other for g in range(8)}))
    uniform.node("aud06").write_gpu_state(node_state(6, gpu_count=6))
    inv = inventory(uniform, tmp_path / "inv.yaml",
                    aud03={"gpu_model": MODEL}, aud06={"expected_gpus": 8},
                    aud01={"audit": {"kernel": "5.15.0-pinned", "driver_version": "560.35.03"}})
    found = findings(audit(uniform, inv, "--json"))
    by = {(f["node"], f["attribute"]): f for f in found}
    assert by[("aud03", "gpu_model")]["expected"] == MODEL and by[("aud03", "gpu_model")]["value"] == other
    assert by[("aud03", "gpu_model")]["source"] == "inventory"
    assert by[("aud06", "gpu_count")]["value"] == "6" and by[("aud06", "gpu_count")]["detail"] == \
        "inventory variable expected_gpus"
    assert by[("aud01", "kernel")]["source"] == "inventory audit pin"
    assert by[("aud01", "kernel")]["expected"] == "5.15.0-pinned"
    assert by[("aud01", "driver_version")]["expected"] == "560.35.03"
    # the A100 node is compared with its pinned model's peers, not on its own
    assert ("aud03", "gpu_model") in by


def test_a_bad_pin_or_baseline_is_exit_2_naming_the_file(uniform: SimCluster, tmp_path: Path) -> None:
    inv = inventory(uniform, tmp_path / "inv.yaml", aud01={"audit": {"drivr_version": "1"}})
    result = audit(uniform, inv)
    assert result.rc == 2 and "aud01.audit.drivr_version: unknown attribute" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    bad = tmp_path / "base.json"
    bad.write_text('{"kind": "jueying-audit-baseline", "version": 1,\n "models": {"X": {"driver_versio": "1"}}}\n')
    result = audit(uniform, inventory(uniform, tmp_path / "inv2.yaml"), "--baseline", str(bad))
    assert result.rc == 2 and f"{bad}:2: models.X.driver_versio: unknown attribute" in result.stderr, result.stderr
    result = audit(uniform, inventory(uniform, tmp_path / "inv2.yaml"), "--since", "7x")
    assert result.rc == 2 and "--since" in result.stderr


def test_baseline_saved_from_a_good_fleet_finds_drift_on_every_node(uniform: SimCluster, tmp_path: Path) -> None:
    inv = inventory(uniform, tmp_path / "inv.yaml")
    base = tmp_path / "baseline.json"
    saved = audit(uniform, inv, "--save-baseline", str(base))
    assert saved.rc == 0, saved.stderr
    doc = json.loads(base.read_text())
    assert doc["models"][MODEL]["driver_version"] == "550.127.05"
    # the whole fleet moves to a new driver: the majority agrees with itself, the baseline does not
    for i, node in enumerate(uniform.nodes, start=1):
        node.write_gpu_state(node_state(i, driver_version="560.35.03"))
    assert audit(uniform, inv, "--json").rc == 0
    result = audit(uniform, inv, "--json", "--baseline", str(base))
    assert result.rc == 1
    found = findings(result)
    assert brief(found) == {(n.name, "driver_version") for n in uniform.nodes}
    assert {f["source"] for f in found} == {"baseline"} and {f["expected"] for f in found} == {"550.127.05"}


def test_identity_problems_one_at_a_time(uniform: SimCluster, tmp_path: Path) -> None:
    inv = inventory(uniform, tmp_path / "inv.yaml")
    # a cloned machine id
    uniform.node("aud05").set_machine_id(f"{4:032x}")
    found = findings(audit(uniform, inv, "--json", "--no-history"))
    assert brief(found) == {("aud04", "machine_id"), ("aud05", "machine_id")}
    assert {f["detail"] for f in found} == {"also reported by aud05", "also reported by aud04"}
    uniform.node("aud05").set_machine_id(f"{5:032x}")
    # the same GPU UUIDs on two nodes
    uniform.node("aud06").write_gpu_state(node_state(2))
    uniform.node("aud06").set_machine_id(f"{6:032x}")
    found = findings(audit(uniform, inv, "--json", "--no-history"))
    assert brief(found) == {("aud02", "gpu_uuids"), ("aud06", "gpu_uuids")}
    assert found[0]["value"] == "8 of 8 GPU UUIDs"


def test_a_node_answering_under_another_name(uniform: SimCluster, tmp_path: Path) -> None:
    """Inventory node `ghost` reaches aud03's sshd: another hostname, and aud03's GPUs and machine id twice."""
    aud03 = uniform.node("aud03")
    config = tmp_path / "ssh_config"
    config.write_text(uniform.ssh_config_path.read_text() +
                      f"\nHost ghost\n  HostName {aud03.address}\n  User root\n"
                      f"  IdentityFile {uniform.client_key_path}\n  IdentitiesOnly yes\n"
                      f"  UserKnownHostsFile {uniform.known_hosts_path}\n  HostKeyAlias aud03\n  BatchMode yes\n")
    inv = inventory(uniform, tmp_path / "inv.yaml", extra_nodes="  ghost: {}\n")
    result = audit(uniform, inv, "--json", "--no-history", env={"JUEYING_SSH_CONFIG": str(config)})
    assert result.rc == 1, result.stderr
    found = findings(result)
    assert brief(found) == {("ghost", "hostname"), ("ghost", "machine_id"), ("ghost", "gpu_uuids"),
                            ("aud03", "machine_id"), ("aud03", "gpu_uuids")}
    host = next(f for f in found if f["attribute"] == "hostname")
    assert (host["value"], host["expected"], host["source"]) == ("aud03", "ghost", "inventory")


def test_a_swapped_gpu_board_is_found_against_the_last_collection_and_in_since(uniform: SimCluster,
                                                                               tmp_path: Path) -> None:
    inv = inventory(uniform, tmp_path / "inv.yaml")
    first = audit(uniform, inv, "--json")
    assert first.rc == 0, first.stderr
    node = uniform.node("aud02")
    node.write_gpu_state(node_state(2, **{"gpu.4.serial": "1659999999999", "gpu.4.uuid": "GPU-ffffffff-rma"},
                                    driver_version="535.183.01"))
    second = audit(uniform, inv, "--json", "--since", "1h")
    assert second.rc == 1
    found = findings(second)
    bus = "00000000:9A:00.0"
    swaps = {f["attribute"]: f for f in found if f["kind"] == "identity"}
    assert set(swaps) == {"gpu_serial", "gpu_uuid"}
    assert swaps["gpu_serial"]["value"] == f"{bus}: 1659999999999"
    assert swaps["gpu_serial"]["expected"] == f"{bus}: {1650000000000 + 204}"
    assert swaps["gpu_serial"]["source"] == "history"
    changes = second.json()["data"]["changes"]
    # --since: nothing changed yet in the store (the new collection is recorded after the report)
    assert changes == []
    # the swap is now the last collection (recorded by that audit, and a status run since): a later
    # audit --since still reports it, from the history
    assert run_jueying(["status", "--json", "--connect-timeout", "5"],
                       {**uniform.client_env(), "JUEYING_INVENTORY": str(inv)}).rc == 0
    third = audit(uniform, inv, "--json", "--since", "1h")
    third_found = findings(third)
    assert {(f["node"], f["attribute"], f["source"]) for f in third_found if f["kind"] == "identity"} == {
        ("aud02", "gpu_serial", "history"), ("aud02", "gpu_uuid", "history")}
    changed = {(c["node"], c["attribute"]) for c in third.json()["data"]["changes"]}
    assert changed == {("aud02", "driver_version"), ("aud02", "gpu_serial"), ("aud02", "gpu_uuid")}


def test_everything_at_once(uniform: SimCluster, tmp_path: Path) -> None:
    uniform.node("aud01").write_gpu_state(node_state(1, driver_version="535.183.01", gpu_count=7))
    uniform.node("aud02").write_gpu_state(node_state(2, **{"gpu.1.vbios_version": "96.00.74.00.11",
                                                           "gpu.1.nvlink_down": [3]}))
    uniform.node("aud03").write_gpu_state(node_state(3, **{"gpu.0.mig_mode_current": 1}))
    uniform.node("aud05").set_machine_id(f"{6:032x}")
    found = findings(audit(uniform, inventory(uniform, tmp_path / "inv.yaml"), "--json", "--no-history"))
    assert brief(found) == {("aud01", "driver_version"), ("aud01", "gpu_count"),
                            ("aud02", "vbios_version"), ("aud02", "nvlinks_active"), ("aud03", "mig_mode"),
                            ("aud05", "machine_id"), ("aud06", "machine_id")}


# ------------------------------------------------------------------ the HTML report in a real browser

# NVML's buffers are short (driver version 80 bytes, GPU name 96): each hostile value fits its own.
HOSTILE_DRIVER = '<script>document.title="pwned"</script>"\'\x1b[2J'
HOSTILE_GPU = f'H100 "<img src={CANARY}>\''


def test_the_html_report_opens_in_chromium_loads_nothing_and_escapes_hostile_values(uniform: SimCluster,
                                                                                    tmp_path: Path) -> None:
    assert_detector_works(tmp_path)

    uniform.node("aud04").write_gpu_state(node_state(4, driver_version=HOSTILE_DRIVER))
    uniform.node("aud05").write_gpu_state(node_state(5, **{f"gpu.{g}.name": HOSTILE_GPU for g in range(8)}))
    inv = inventory(uniform, tmp_path / "inv.yaml", aud01={"audit": {"kernel": "</td><script>alert(1)</script>"}})
    report = tmp_path / "report.html"
    result = audit(uniform, inv, "--format", "html", "-o", str(report))
    assert result.rc == 1, result.stderr
    assert result.stdout == ""
    dom, urls = open_in_chromium(report, tmp_path, "--dump-dom")
    assert page_requests(urls) == set(), urls  # (a file: page itself is not a network request)
    # the browser built no element from node or user data: no script, image, link, style from outside
    for tag in ("<script", "<img", "<link", "<iframe", "href="):
        assert tag not in dom.lower(), tag
    assert "<title>jueying audit " in dom  # not "pwned": no script ran
    # the hostile texts are shown as text, control characters made visible
    assert "<td>&lt;script&gt;document.title=\"pwned\"&lt;/script&gt;\"'\\x1b[2J</td>" in dom
    assert "&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert f"<h3>H100 \"&lt;img src={CANARY}&gt;'</h3>" in dom
    # the content: summary, findings grouped by attribute, the version matrix per model
    assert 'id="summary"' in dom and 'id="findings"' in dom and 'id="versions"' in dom
    assert "<h3>driver (1)</h3>" in dom and "<h3>kernel (1)</h3>" in dom
    assert "<td>nodes audited</td><td>6</td>" in dom
    assert "<h3>NVIDIA H100 80GB HBM3</h3>" in dom
    shot = tmp_path / "report.png"
    open_in_chromium(report, tmp_path, f"--screenshot={shot}", "--window-size=1200,1400")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_report_escapes_and_groups(uniform: SimCluster, tmp_path: Path) -> None:
    uniform.node("aud04").write_gpu_state(node_state(4, driver_version="535|<b>*x*</b>"))
    result = audit(uniform, inventory(uniform, tmp_path / "inv.yaml"), "--format", "markdown")
    assert result.rc == 1
    text = result.stdout
    assert "## driver (1)" in text
    assert "| aud04 | 535\\|&lt;b&gt;\\*x\\*&lt;/b&gt; | 550.127.05 | majority | 5 of 6 nodes with" in text
    assert "## Versions: NVIDIA H100 80GB HBM3" in text


def test_a_node_that_gives_no_facts_is_listed_and_exit_1(uniform: SimCluster, tmp_path: Path) -> None:
    node = uniform.node("aud06")
    node.stop()
    try:
        result = audit(uniform, inventory(uniform, tmp_path / "inv.yaml"), "--json", "--connect-timeout", "3")
        table = audit(uniform, inventory(uniform, tmp_path / "inv.yaml"), "--connect-timeout", "3")
    finally:
        node.start()
    assert result.rc == 1 and table.rc == 1
    doc = result.json()
    assert doc["status"] == "partial" and findings(result) == []
    assert [(u["node"], u["status"]) for u in doc["data"]["unanswered"]] == [("aud06", "unreachable")]
    assert "5 of 6 node(s) audited" in table.stdout and "1 node(s) gave no facts" in table.stdout
