"""A lying Prometheus: `status`, `check` and `capacity --source prometheus=URL` against a server (a compromised
exporter's series are as good as this) that answers with terminal escape sequences in every label, values
that are not numbers, infinities, wrong shapes and an endless body. Nothing reaches the terminal unescaped,
nothing ends in a traceback, nothing unbounded is read, and no node is ever shown healthy on such data
unless the series say so.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_jueying

ESC = "\x1b"
EVIL = f"{ESC}]0;pwned{chr(7)}{ESC}[2J{ESC}[31mred"


def _series(name: str, value: object, **labels: str) -> dict[str, object]:
    return {"metric": {"__name__": name, **labels}, "value": [1796190000.0, value]}


VECTOR = [
    _series("jueying_node_state", "1", node="hn1", state="ok"),
    _series("jueying_node_state", "1", node="hn2", state=EVIL),  # not a state: hn2 has no data
    _series("jueying_node_state_reason", "1", node="hn1", reason=EVIL),
    _series("jueying_node_gpus", "+Inf", node="hn1"),
    _series("jueying_node_gpus_lost", "NaN", node="hn1"),
    _series("jueying_node_gpu_models", "8", node="hn1", model=EVIL),
    _series("jueying_node_gpu_temperature_max_celsius", "1e308", node="hn1", gpu=EVIL),
    _series("jueying_node_drain_info", "1", node="hn1", backend=EVIL, reason=EVIL),
    _series("jueying_node_scheduler_state", "1", node="hn1", state="drained"),
    _series("jueying_check_level", "1", node="hn1", check=EVIL, gpu="0", level="CRITICAL"),
    _series("jueying_check_level", "1", node="hn1", check="xid", gpu=EVIL, level=EVIL),
    _series("jueying_check_action", "1", node="hn1", check=EVIL, gpu="0", action=EVIL),
    _series("DCGM_FI_DEV_POWER_USAGE", "-1e308", Hostname="hn1", gpu="0", modelName=EVIL),
    _series("DCGM_FI_DEV_POWER_MGMT_LIMIT", "abc", Hostname="hn1", gpu="1", modelName="H100"),
    {"metric": "not a mapping", "value": [0, "1"]},
    {"metric": {"__name__": "jueying_node_gpus", "node": "hn1"}, "value": "not a pair"},
    {"no": "keys"},
]


class Liar(http.server.BaseHTTPRequestHandler):
    endless = False

    def do_GET(self) -> None:
        if "endless" in self.path or Liar.endless:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            try:
                self.wfile.write(b'{"status": "success", "data": {"resultType": "vector", "result": [')
                for _ in range(4096):  # bounded: 4096 x 256 KiB = 1 GiB offered, far past what jueying reads
                    self.wfile.write(b" " * 262144)
            except OSError:
                pass  # the client stopped reading: what the test wants
            return
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": VECTOR}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def liar() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Liar)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        Liar.endless = False
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    inventory = tmp_path / "inventory.yaml"
    # nodes nobody listens for (port 9 on loopback refuses at once): the scheduler read costs nothing
    inventory.write_text("vars: {ssh_user: root, ssh_port: 9, expected_gpus: 8, rack: r1}\nnodes:\n"
                         "  hn1: {address: 127.0.0.1}\n  hn2: {address: 127.0.0.1}\n")
    return {"JUEYING_INVENTORY": str(inventory), "JUEYING_STATE_DB": str(tmp_path / "state.db"), "NO_COLOR": "1"}


COMMANDS = [
    ["status"], ["status", "--json"], ["status", "--format", "csv"], ["status", "--no-fold", "--format", "tsv"],
    ["check"], ["check", "-v"], ["check", "--json"], ["check", "--nagios"],
    ["capacity"], ["capacity", "--json"], ["capacity", "--format", "markdown"], ["capacity", "--by", "rack"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_a_lying_prometheus_is_shown_escaped_and_never_healthy(liar: str, env: dict[str, str],
                                                               command: list[str]) -> None:
    result = run_jueying([*command, "--source", f"prometheus={liar}"], env, timeout=60)
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out
    assert ESC not in out and chr(7) not in out, repr(out[:2000])
    assert "pwned" in out or command[0] != "status" or "--json" in command  # the labels were shown, escaped
    assert not re.search(r"[0-9,]{40}", out), out  # -1e308 W, 1e308 degrees: no reading, not a 300-digit one
    # hn2 has no usable data: never all-clear (status, capacity 1; check: UNKNOWN 3 or the CRITICAL read, 2)
    assert result.rc in ((2, 3) if command[0] == "check" else (1,)), (result.rc, out)
    if "--json" in command:
        doc = json.loads(result.stdout)
        assert doc["status"] != "ok"


def test_html_capacity_from_a_lying_prometheus_escapes_every_label(liar: str, env: dict[str, str],
                                                                   tmp_path: Path) -> None:
    page = tmp_path / "capacity.html"
    result = run_jueying(["capacity", "--format", "html", "-o", str(page), "--source", f"prometheus={liar}"], env)
    assert result.rc == 1 and "Traceback" not in result.stderr, result.stderr
    text = page.read_text()
    assert ESC not in text and "<script" not in text.lower()


def test_an_endless_answer_is_cut_off_not_read_forever(liar: str, env: dict[str, str]) -> None:
    Liar.endless = True
    for command in (["status"], ["check"], ["capacity"]):
        result = run_jueying([*command, "--source", f"prometheus={liar}"], env, timeout=120)
        assert result.rc in (1, 3) and "Traceback" not in result.stderr, (command, result.rc, result.stderr)
        assert "Prometheus" in result.stdout + result.stderr, result.stdout + result.stderr
