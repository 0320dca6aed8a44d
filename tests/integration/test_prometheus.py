"""jueying in Prometheus, against the real thing: `jueying exporter` scraped by a real Prometheus server on
loopback (node mode on this machine with the simulated NVML; controller mode over the simulated cluster),
the check textfile read by a real node_exporter, and `jueying status --source prometheus=URL` agreeing with
`jueying status` over SSH node for node."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import SimCluster
from tests.conftest import GpuNode, run_jueying
from tests.integration.prometheus_support import (
    Exporter,
    assert_lint_is_dcgm_only,
    builtin_inventory,
    free_port,
    http_get,
    prometheus,
    rows_by_node,
    wait_for,
)
from tests.machine import sim_checks_yaml
from tests.nvmlsim import default_state

pytestmark = pytest.mark.skipif(not all(os.path.exists(f"/usr/bin/{tool}") for tool in ("prometheus", "promtool")),
                                reason="needs Debian's prometheus package (scripts/test installs it)")

NODES = 5


# ------------------------------------------------------------------ node mode


def test_node_mode_exporter_scraped_by_prometheus(gpu_node: GpuNode, tmp_path: Path) -> None:
    gpu_node.set(**{"gpu.2.lost": 1, "gpu.5.temperature_c": 61, "gpu.5.ecc_uncorrected_volatile": 3})
    exporter = Exporter({**gpu_node.env, "JUEYING_STATE_DB": str(tmp_path / "state.db")}, "--interval", "1")
    try:
        text = wait_for(lambda: t if "DCGM_FI_DEV_GPU_TEMP" in (t := exporter.metrics()) else None,
                        "a first collection")
        assert_lint_is_dcgm_only(text)
        host = socket.gethostname()
        with prometheus(tmp_path / "prom", {"jueying": [exporter.target]}) as server:
            temps = wait_for(lambda: server.values("DCGM_FI_DEV_GPU_TEMP", "gpu"), "GPU temperatures in Prometheus")
            assert sorted(temps) == ["0", "1", "3", "4", "5", "6", "7"]  # GPU 2 is lost: no series
            assert temps["5"] == 61
            [series] = server.query('DCGM_FI_DEV_GPU_TEMP{gpu="5"}')
            labels = series["metric"]
            assert labels["Hostname"] == host and labels["device"] == "nvidia5"
            assert labels["UUID"].startswith("GPU-") and labels["modelName"]
            assert server.values('DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{gpu="5"}', "gpu") == {"5": 3}
            assert server.values("jueying_node_gpus_lost", "node") == {host: 1}
            critical = server.query('jueying_check_level{level="CRITICAL"} == 1')
            found = {(r["metric"]["check"], r["metric"]["gpu"]) for r in critical}
            assert ("nvml", "2") in found and ("ecc_uncorrected", "5") in found
            assert server.values("jueying_node_state == 1", "state") == {"degraded": 1}
            assert server.values('jueying_node_level == 1', "level") == {"CRITICAL": 1}
    finally:
        rc = exporter.stop(signal.SIGTERM)
    assert rc == 0, exporter.proc.stderr
    assert http_get(f"http://{exporter.target}/metrics", timeout_s=2) is None  # the port is closed


def test_a_scrape_never_collects(gpu_node: GpuNode, tmp_path: Path) -> None:
    exporter = Exporter({**gpu_node.env, "JUEYING_STATE_DB": str(tmp_path / "state.db")}, "--interval", "300")
    try:
        def stamp() -> str | None:
            lines = [x for x in exporter.metrics().splitlines()
                     if x.startswith("jueying_exporter_last_collection_timestamp_seconds ")]
            return lines[0] if lines else None

        first = wait_for(stamp, "a first collection")
        assert [stamp() for _ in range(5)] == [first] * 5  # five scrapes, no new collection
    finally:
        assert exporter.stop(signal.SIGINT) == 0


def _collected(exporter: Exporter) -> str:
    """The exposition once the first collection is in it."""
    def text() -> str | None:
        body = exporter.metrics()
        return body if "jueying_node_state{" in body else None
    return str(wait_for(text, "a first collection"))


def test_no_gpu_metrics_leaves_out_every_per_gpu_series(gpu_node: GpuNode, tmp_path: Path) -> None:
    env = {**gpu_node.env, "JUEYING_STATE_DB": str(tmp_path / "state.db")}
    exporter = Exporter(env, "--interval", "300", "--no-gpu-metrics")
    try:
        text = _collected(exporter)
        names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
        assert "jueying_node_gpus" in names and "jueying_check_level" in names, names
        assert not [n for n in names if n.startswith(("DCGM_", "jueying_gpu_"))], names
    finally:
        assert exporter.stop(signal.SIGINT) == 0
    full = Exporter(env, "--interval", "300")
    try:
        assert "DCGM_FI_DEV_GPU_TEMP{" in _collected(full)
    finally:
        assert full.stop(signal.SIGINT) == 0


def test_idle_connections_are_dropped_and_scrapes_still_served(gpu_node: GpuNode, tmp_path: Path) -> None:
    """Connections that never send a request (a slow-loris) hold no thread for ever: the exporter closes
    each after its request timeout (10 s), and scrapes are served while they hang."""
    exporter = Exporter({**gpu_node.env, "JUEYING_STATE_DB": str(tmp_path / "state.db")}, "--interval", "300")
    sockets: list[socket.socket] = []
    try:
        wait_for(lambda: "jueying_exporter_last_collection_timestamp_seconds " in exporter.metrics(),
                 "a first collection")
        for _ in range(20):
            sockets.append(socket.create_connection(("127.0.0.1", exporter.port), timeout=120))
        assert "jueying_exporter_last_collection_timestamp_seconds " in exporter.metrics()
        for sock in sockets:
            assert sock.recv(1024) == b""  # closed by the exporter, well before our 120 s wait runs out
    finally:
        for sock in sockets:
            sock.close()
        assert exporter.stop(signal.SIGINT) == 0


def test_bad_listen_addresses_exit_2(gpu_node: GpuNode) -> None:
    for bad in ("nonsense", "127.0.0.1:99999", "::1:80"):
        result = gpu_node.jueying("exporter", "--listen", bad)
        assert result.rc == 2 and "--listen" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------ controller mode over the sim cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("prom-cluster"), NODES, prefix="pn", first_octets=(127, 67),
                    gpu_lib_dir=nvml_lib) as sim:
        yield sim




COMPARED = ("state", "gpus_present", "gpus_expected", "gpus_lost", "scheduler_state", "drain_reason",
            "hottest_gpu_c", "hottest_gpu_index", "cpu_threads", "gpu_memory_total_bytes", "health", "health_check",
            "health_gpu", "gpus_with_problems")


def test_status_from_prometheus_agrees_with_ssh(cluster: SimCluster, tmp_path: Path) -> None:
    checks = tmp_path / "checks.yaml"
    checks.write_text(sim_checks_yaml())
    env = {**cluster.client_env(), "JUEYING_STATE_DB": str(tmp_path / "state.db"), "JUEYING_CHECKS": str(checks),
           "JUEYING_INVENTORY": str(builtin_inventory(cluster.nodes, tmp_path / "inventory.yaml"))}
    ecc, lost, drained, down, gone = (cluster.node(n) for n in ("pn01", "pn02", "pn03", "pn04", "pn05"))
    lost.set_gpus(**{"gpu.4.lost": 1})
    ecc.set_gpus(**{"gpu.6.ecc_uncorrected_volatile": 3})  # a GPU that answers, with a confirmed CRITICAL
    down.stop()
    first = Exporter(env, "--interval", "1", "--connect-timeout", "3", "-w", "pn[01-04]")
    second = Exporter(env, "--interval", "1", "--connect-timeout", "3", "-w", "pn05")
    try:
        drain = run_jueying(["drain", "pn03", "--reason", "fan | noisy"], env)
        assert drain.rc == 0, drain.stderr
        with prometheus(tmp_path / "prom", {"controller": [first.target], "pn05": [second.target]}) as server:
            def settled() -> bool:
                states = server.values("jueying_node_state == 1", "node")
                sched = server.values('jueying_node_scheduler_state{state="drained"} == 1', "node")
                return len(states) == NODES and "pn03" in sched
            wait_for(settled, "every node and the drain in Prometheus")
            from_prom = run_jueying(["status", "--json", "--no-fold", "--source", f"prometheus={server.url}"], env)
            over_ssh = run_jueying(["status", "--json", "--no-fold", "--connect-timeout", "3"], env)
            assert from_prom.rc == over_ssh.rc == 1, from_prom.stderr + over_ssh.stderr
            prom_rows, ssh_rows = rows_by_node(from_prom.stdout), rows_by_node(over_ssh.stdout)
            assert set(prom_rows) == set(ssh_rows) == {n.name for n in cluster.nodes}
            for name in ssh_rows:
                assert {k: prom_rows[name][k] for k in COMPARED} == {k: ssh_rows[name][k] for k in COMPARED}, name
            assert prom_rows["pn02"]["state"] == "degraded" and prom_rows["pn02"]["gpus_lost"] == 1
            assert (prom_rows["pn01"]["state"], prom_rows["pn01"]["health"]) == ("degraded", "CRITICAL")
            assert (prom_rows["pn01"]["health_gpu"], prom_rows["pn01"]["gpus_with_problems"]) == (6, 1)
            prom_sum, ssh_sum = (json.loads(r.stdout)["data"]["summary"] for r in (from_prom, over_ssh))
            assert prom_sum["gpus_healthy"] == ssh_sum["gpus_healthy"]
            assert prom_sum["nodes_by_health"] == ssh_sum["nodes_by_health"]
            assert prom_rows["pn03"]["state"] == "drained" and "fan | noisy" in prom_rows["pn03"]["drain_reason"]
            assert prom_rows["pn04"]["state"] == "unreachable"
            assert prom_rows["pn01"]["collected_at_unix"] is not None
            # the table, too
            table = run_jueying(["status", "--no-fold", "--source", f"prometheus={server.url}"],
                                {**env, "NO_COLOR": "1"})
            assert "degraded (GPU 4 lost)" in table.stdout and "nodes up 4/5" in table.stdout
            # and rows for scripts: the same nodes and states as --json
            csv_rows = run_jueying(["status", "--format", "csv", "-o", "node,state", "--no-header", "--source",
                                    f"prometheus={server.url}"], env)
            assert dict(line.split(",") for line in csv_rows.stdout.split()) == {
                name: row["state"] for name, row in prom_rows.items()}
            # A stopped exporter: Prometheus marks its series stale; its node has no data, never healthy.
            assert second.stop() == 0
            wait_for(lambda: "pn05" not in server.values("jueying_node_state == 1", "node"), "pn05 gone stale")
            after = run_jueying(["status", "--json", "--no-fold", "--source", f"prometheus={server.url}"], env)
            rows = rows_by_node(after.stdout)
            assert rows["pn05"]["state"] == "no_data" and gone.is_running()
            assert after.rc == 1 and "pn05" in {e["node"] for e in json.loads(after.stdout)["errors"]}
            # the controller's own families: the drain cap and the collection failures of the down node
            assert server.values("jueying_drain_max_unavailable", "") == {"": 2}
            assert server.values("jueying_drain_unavailable_nodes", "") == {"": 1}
            assert server.values("jueying_node_collection_failures_total > 0", "node").keys() == {"pn04"}
        metrics = first.metrics()
        assert_lint_is_dcgm_only(metrics)
    finally:
        assert first.stop() == 0
        second.stop()
        run_jueying(["resume", "pn03"], env)
        lost.write_gpu_state(default_state())
        ecc.write_gpu_state(default_state())
        if not down.is_running():
            down.start()
        marker = drained.dir / "drained"
        if marker.exists():
            marker.unlink()


def test_capacity_from_prometheus_agrees_with_ssh(cluster: SimCluster, tmp_path: Path) -> None:
    """`capacity --source prometheus` counts what `capacity` over SSH counts, node for node and group for group:
    a lost GPU (down), a GPU with a confirmed uncorrectable ECC error (degraded), a drained node, an unreachable
    one, a spare; power limits, peak throughput, the floor and the loss of the largest rack."""
    checks = tmp_path / "checks.yaml"
    checks.write_text(sim_checks_yaml())
    inventory = tmp_path / "inventory.yaml"
    racks = {"pn01": "r1", "pn02": "r1", "pn03": "r2", "pn04": "r2", "pn05": "r2"}
    lines = ["vars:", "  ssh_user: root", "  scheduler: builtin", "  max_unavailable: 2", "  expected_gpus: 8",
             "nodes:"]
    lines += [f"  {n.name}: {{address: {n.address}, rack: {racks[n.name]}"
              + (", role: spare" if n.name == "pn05" else "") + "}" for n in cluster.nodes]
    inventory.write_text("\n".join(lines) + "\n")
    env = {**cluster.client_env(), "JUEYING_STATE_DB": str(tmp_path / "state.db"), "JUEYING_CHECKS": str(checks),
           "JUEYING_INVENTORY": str(inventory)}
    ecc, lost, down = (cluster.node(n) for n in ("pn01", "pn02", "pn04"))
    lost.set_gpus(**{"gpu.4.lost": 1})
    ecc.set_gpus(**{"gpu.6.ecc_uncorrected_volatile": 3})
    down.stop()
    exporter = Exporter(env, "--interval", "1", "--connect-timeout", "3")
    try:
        assert run_jueying(["drain", "pn03", "--reason", "psu"], env).rc == 0
        with prometheus(tmp_path / "prom", {"controller": [exporter.target]}) as server:
            def settled() -> bool:
                levels = server.values('jueying_check_level{check="ecc_uncorrected",level="CRITICAL"} == 1', "node")
                return len(server.values("jueying_node_state == 1", "node")) == NODES and "pn01" in levels
            wait_for(settled, "every node and pn01's ECC level in Prometheus")
            args = ["capacity", "--json", "--by", "rack", "--floor", "16", "--connect-timeout", "3"]
            from_prom = run_jueying([*args, "--since", "1h", "--source", f"prometheus={server.url}"], env)
            over_ssh = run_jueying([*args, "--no-history"], env)
            assert from_prom.rc == over_ssh.rc == 1, from_prom.stderr + over_ssh.stderr
            prom, ssh = (json.loads(r.stdout)["data"] for r in (from_prom, over_ssh))
            for key in ("groups", "total"):
                for g in (prom[key] if key == "groups" else [prom[key]]):
                    g.pop("power_watts"), g.pop("energy_kwh"), g.pop("tflops_per_kw")
                for g in (ssh[key] if key == "groups" else [ssh[key]]):
                    g.pop("power_watts"), g.pop("energy_kwh"), g.pop("tflops_per_kw")
            assert prom["groups"] == ssh["groups"] and prom["total"] == ssh["total"]
            nodes = {n["node"]: n for n in prom["nodes"]}
            assert {k: (v["state"], v["gpus"]) for k, v in nodes.items()} == {
                n["node"]: (n["state"], n["gpus"]) for n in ssh["nodes"]}
            assert nodes["pn01"]["gpus"]["degraded"] == 1 and nodes["pn01"]["gpus"]["healthy"] == 7
            assert nodes["pn02"]["gpus"]["down"] == 1 and nodes["pn03"]["state"] == "drained"
            assert nodes["pn04"]["state"] == "unreachable" and nodes["pn05"]["spare"] is True
            assert prom["floor"] == ssh["floor"] and prom["floor"]["losses"][0]["largest"] == "r1"
            assert isinstance(prom["total"]["peak_tflops_dense"], dict)
            assert [e["node"] for e in from_prom.json()["errors"]] == ["pn04"]
            # a stopped exporter: every node has no data, counted unreachable, never healthy
            assert exporter.stop() == 0
            wait_for(lambda: not server.values("jueying_node_state == 1", "node"), "the series gone stale")
            gone = run_jueying(["capacity", "--json", "--source", f"prometheus={server.url}"], env)
            assert gone.rc == 1
            assert json.loads(gone.stdout)["data"]["total"]["gpus"]["healthy"] == 0
            assert {e["status"] for e in json.loads(gone.stdout)["errors"]} == {"no_data"}
    finally:
        exporter.stop()
        run_jueying(["resume", "pn03"], env)
        for node in (ecc, lost):
            node.write_gpu_state(default_state())
        if not down.is_running():
            down.start()


def test_status_from_an_unreachable_prometheus_says_so(cluster: SimCluster, tmp_path: Path) -> None:
    env = {**cluster.client_env(), "JUEYING_STATE_DB": str(tmp_path / "state.db"),
           "JUEYING_INVENTORY": str(builtin_inventory(cluster.nodes, tmp_path / "inventory.yaml"))}
    result = run_jueying(["status", "--source", f"prometheus=http://127.0.0.1:{free_port()}"], env)
    assert result.rc == 1 and "cannot query Prometheus" in result.stderr and "Traceback" not in result.stderr
    bad = run_jueying(["status", "--source", "prometheus=ftp://x"], env)
    assert bad.rc == 2 and "--source" in bad.stderr
    capacity = run_jueying(["capacity", "--source", f"prometheus=http://127.0.0.1:{free_port()}"], env)
    assert capacity.rc == 1 and "cannot query Prometheus" in capacity.stderr and "Traceback" not in capacity.stderr
    bad_capacity = run_jueying(["capacity", "--source", "prometheus"], env)
    assert bad_capacity.rc == 2 and "--source" in bad_capacity.stderr
    check = run_jueying(["check", "--nagios", "--source", f"prometheus=http://127.0.0.1:{free_port()}"], env)
    assert check.rc == 3 and check.stdout.startswith("JUEYING CHECK UNKNOWN - cannot query Prometheus"), check.stdout
    for extra in (["--drain"], ["--prometheus", str(tmp_path / "x.prom")], ["--source", "prometheus=ftp://x"]):
        refused = run_jueying(["check", "--source", "prometheus=http://127.0.0.1:1", *extra], env)
        assert refused.rc == 2 and "--source" in refused.stderr and "Traceback" not in refused.stderr, extra


def test_the_check_textfile_through_node_exporter(cluster: SimCluster, tmp_path: Path) -> None:
    """`jueying check --prometheus` read by a real node_exporter's textfile collector, scraped by Prometheus."""
    env = {**cluster.client_env(), "JUEYING_STATE_DB": str(tmp_path / "state.db"),
           "JUEYING_INVENTORY": str(builtin_inventory(cluster.nodes, tmp_path / "inventory.yaml"))}
    checks = tmp_path / "checks.yaml"
    checks.write_text(sim_checks_yaml())  # the default set without `load` (this machine's load is not the sim's)
    env["JUEYING_CHECKS"] = str(checks)
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    cluster.node("pn02").set_gpus(**{"gpu.4.lost": 1})
    try:
        check = run_jueying(["check", "-q", "--prometheus", str(textfiles / "jueying.prom")], env)
        assert check.rc == 2, check.stdout + check.stderr
        port = free_port()
        log = (tmp_path / "node_exporter.log").open("w")
        node_exporter = subprocess.Popen(
            ["prometheus-node-exporter", "--collector.disable-defaults", "--collector.textfile",
             f"--collector.textfile.directory={textfiles}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            with prometheus(tmp_path / "prom", {"node": [f"127.0.0.1:{port}"]}) as server:
                levels = wait_for(lambda: server.values("jueying_node_level == 1", "node"), "the textfile scraped")
                assert server.query("node_textfile_scrape_error")[0]["value"][1] == "0"
                assert {n: server.values(f'jueying_node_level{{node="{n}"}} == 1', "level") for n in levels} == {
                    n.name: {"CRITICAL" if n.name == "pn02" else "OK": 1.0} for n in cluster.nodes}
                lost = server.query('jueying_check_level{check="nvml", level="CRITICAL"} == 1')
                assert [(r["metric"]["node"], r["metric"]["gpu"]) for r in lost] == [("pn02", "4")]
        finally:
            node_exporter.terminate()
            node_exporter.wait(timeout=30)
            log.close()
    finally:
        cluster.node("pn02").write_gpu_state(default_state())
