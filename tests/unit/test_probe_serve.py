"""The probe's serve mode (`status --watch`): one kept process answering `collect SEQ` with framed documents.

Each serve test runs the real shipped probe the way the controller does: `sh -c probe_script()` with the payload
from probe_payload() on stdin, the simulated NVML (tests/nvmlsim) on LD_LIBRARY_PATH, then request lines on the
same stdin and frames (`facts SEQ LEN\\n` + LEN bytes of zlib-compressed JSON) read back from stdout. The
simulated library reloads its state file while initialised (checked at most every 50 ms), so a test changes
the GPUs between two requests with write_state() and a short pause. Every read and wait has a deadline and
every process started here is killed in a finally block.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest

from jueying_cli.collect.payload import probe_payload, probe_script
from jueying_cli.probe import kernel
from jueying_cli.probe.kernel import KernelLogTail
from tests.nvmlsim import default_state, gpu_defaults, sim_env, write_state

pytest.importorskip("pynvml")
pytestmark = pytest.mark.timeout(120)

STARTUP_S = 30.0  # first answer: python3 start, payload import, nvmlInit (the test machine may be busy)
REQUEST_S = 15.0  # any later answer
EXIT_S = 10.0
RELOAD_PAUSE_S = 0.15  # the simulated NVML looks at its state file at most every 50 ms

XID_TEXT = "NVRM: Xid (PCI:0000:18:00): 79, pid=1234, name=python3, GPU has fallen off the bus."


class ProbeProcess:
    """A probe started from probe_script(): bounded writes to its stdin, bounded frame reads from its stdout."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen(["sh", "-c", probe_script()], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=dict(env), bufsize=0)
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, data: bytes, timeout: float = REQUEST_S) -> None:
        """Write all of `data` to stdin without ever blocking past `timeout`."""
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(f"stdin not writable for {timeout} s ({len(view)} bytes left)")
            _, ready, _ = select.select([], [self._in], [], left)
            if ready:
                # A writable pipe takes at least PIPE_BUF (4096) bytes without blocking.
                written = os.write(self._in, view[:4096])
                view = view[written:]

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def _fill(self, deadline: float, what: str) -> None:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([self._out], [], [], max(left, 0))
        if not ready:
            self._fail(f"no {what} before the deadline (have {self._buf[:120]!r})")
        chunk = os.read(self._out, 1 << 16)
        if not chunk:
            self._fail(f"stdout closed while waiting for {what} (have {self._buf[:120]!r})")
        self._buf += chunk

    def read_frame(self, timeout: float = REQUEST_S) -> tuple[str, str, bytes]:
        """(kind, seq, body) of the next `KIND SEQ LEN\\n` + LEN bytes frame."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            self._fill(deadline, "frame header")
        head, _, self._buf = self._buf.partition(b"\n")
        words = head.decode("ascii", "replace").split()
        assert len(words) == 3 and words[2].isdigit(), f"bad frame header {head[:120]!r}"
        size = int(words[2])
        while len(self._buf) < size:
            self._fill(deadline, "frame body")
        body, self._buf = self._buf[:size], self._buf[size:]
        return words[0], words[1], body

    def collect(self, seq: int, timeout: float = REQUEST_S) -> dict[str, Any]:
        """Send `collect SEQ` and return the facts document of the answer (which must carry the same SEQ)."""
        self.send(b"collect %d\n" % seq)
        return self.read_facts(seq, timeout)

    def read_facts(self, seq: int, timeout: float = REQUEST_S) -> dict[str, Any]:
        kind, got, body = self.read_frame(timeout)
        assert kind == "facts", f"{kind} frame: {body[:2000].decode('utf-8', 'replace')}"
        assert got == str(seq)
        doc: dict[str, Any] = json.loads(zlib.decompress(body))
        return doc

    def wait_exit(self, timeout: float = EXIT_S) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._fail(f"still running {timeout} s after it should have ended")

    def stop(self) -> None:
        """Kill (if still running) and reap the process, close the pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=EXIT_S)
        finally:
            for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if pipe is not None and not pipe.closed:
                    pipe.close()

    def _fail(self, message: str) -> NoReturn:
        """Kill the probe and fail the test with the tail of its stderr."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=EXIT_S)
        assert self.proc.stderr is not None
        err = b""
        fd = self.proc.stderr.fileno()
        while select.select([fd], [], [], 1.0)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            err += chunk
        pytest.fail(f"probe {message}; rc={self.proc.returncode}; stderr:\n{err[-3000:].decode('utf-8', 'replace')}")


def probe_env(nvml_lib: Path, state_path: Path, kernel_log: Path) -> dict[str, str]:
    """This environment without JUEYING_* settings, plus the simulated NVML and a kernel log file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    env.update(sim_env(nvml_lib, state_path))
    env["JUEYING_PROBE_KERNEL_LOG"] = str(kernel_log)
    return env


@contextmanager
def started(env: Mapping[str, str], payload: bytes, then: bytes = b"") -> Iterator[ProbeProcess]:
    """A probe fed `payload` (and `then` in the same write); always killed and reaped on the way out."""
    probe = ProbeProcess(env)
    try:
        probe.send(payload + then, timeout=STARTUP_S)
        yield probe
    finally:
        probe.stop()


@pytest.fixture
def node(nvml_lib: Path, tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    """(probe environment, state file with the default 8-GPU profile, empty kernel log file)."""
    state_path = tmp_path / "gpu.state"
    write_state(state_path, default_state())
    kernel_log = tmp_path / "kern.log"
    kernel_log.write_text("[    0.000000] Linux version 6.8.0 (simulated)\n", encoding="utf-8")
    return probe_env(nvml_lib, state_path, kernel_log), state_path, kernel_log


def change_gpus(state_path: Path, **changes: object) -> None:
    """Replace the state file with the default profile plus `changes` (keys with `.` spelled `__`)."""
    state: dict[str, object] = dict(default_state())
    state.update((key.replace("__", "."), value) for key, value in changes.items())
    write_state(state_path, state)
    time.sleep(RELOAD_PAUSE_S)


def iso_line(message: str, when: float | None = None) -> str:
    """A `dmesg --time-format iso` line logged at `when` (now by default)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() if when is None else when))
    return f"{stamp},123456+00:00 {message}\n"


def gpu_errors(doc: dict[str, Any], index: int) -> list[dict[str, Any]]:
    return [e for e in doc["errors"] if e.get("gpu") == index]


def assert_all_fine(doc: dict[str, Any]) -> None:
    assert doc["schema"] == 1
    assert doc["nvml"]["status"] == "ok"
    assert doc["nvml"]["gpu_count"] == 8
    assert [g["index"] for g in doc["gpus"]] == list(range(8))
    assert [g["lost"] for g in doc["gpus"]] == [False] * 8
    assert doc["errors"] == []
    defaults = default_state()
    for gpu in doc["gpus"]:
        assert gpu["serial"] == defaults[f"gpu.{gpu['index']}.serial"]
        assert gpu["memory_total_bytes"] == int(defaults[f"gpu.{gpu['index']}.memory_total_bytes"])


def test_serve_answers_several_requests_from_one_process(node: tuple[dict[str, str], Path, Path]) -> None:
    """Each `collect N` gets a `facts N` frame holding a complete document, all from the same process."""
    env, _, _ = node
    with started(env, probe_payload(True, 30.0)) as probe:
        docs = [probe.collect(1, STARTUP_S)] + [probe.collect(seq) for seq in (2, 3, 10, 11)]
        for doc in docs:
            assert_all_fine(doc)
            assert doc["host"]["hostname"]
            assert doc["kernel_log"]["status"] == "ok"
            assert doc["kernel_log"]["xid_events"] == []
        assert {doc["probe"]["pid"] for doc in docs} == {probe.pid}  # sh exec's python3: same pid
        stamps = [doc["collected_at_unix"] for doc in docs]
        assert stamps == sorted(stamps)
        probe.send(b"quit\n")
        assert probe.wait_exit() == 0


def test_requests_sent_with_the_payload_are_answered(node: tuple[dict[str, str], Path, Path]) -> None:
    """Requests written in the same write as the payload (left over after it) are not lost."""
    env, _, _ = node
    with started(env, probe_payload(True, 30.0), then=b"collect 5\ncollect 6\nquit\n") as probe:
        assert_all_fine(probe.read_facts(5, STARTUP_S))
        assert_all_fine(probe.read_facts(6))
        assert probe.wait_exit() == 0


def test_lost_gpu_shows_in_the_next_answer_and_recovers(node: tuple[dict[str, str], Path, Path]) -> None:
    """GPU 3 falls off the bus between two requests, then comes back (reset): the kept process follows."""
    env, state_path, _ = node
    with started(env, probe_payload(True, 30.0)) as probe:
        assert_all_fine(probe.collect(1, STARTUP_S))

        change_gpus(state_path, gpu__3__lost=1)
        lost = probe.collect(2)
        assert lost["nvml"]["gpu_count"] == 8
        assert [g["lost"] for g in lost["gpus"]] == [False, False, False, True, False, False, False, False]
        assert lost["gpus"][3]["serial"] is None and lost["gpus"][3]["temperature_c"] is None
        assert lost["gpus"][4]["serial"] == default_state()["gpu.4.serial"]
        assert {e["error"] for e in gpu_errors(lost, 3)} == {"GPU_IS_LOST"}
        assert all(e["gpu"] == 3 for e in lost["errors"])
        assert probe.collect(3)["gpus"][3]["lost"] is True  # still lost: still reported, not a stale cache

        change_gpus(state_path)
        for seq in (4, 5):
            doc = probe.collect(seq)
            assert_all_fine(doc)
            assert doc["probe"]["pid"] == probe.pid


def test_gpu_replaced_while_lost_shows_its_new_identity(node: tuple[dict[str, str], Path, Path]) -> None:
    """Static facts are forgotten after a lost GPU: the board that comes back is read afresh."""
    env, state_path, _ = node
    with started(env, probe_payload(True, 30.0)) as probe:
        assert_all_fine(probe.collect(1, STARTUP_S))
        change_gpus(state_path, gpu__3__lost=1)
        assert probe.collect(2)["gpus"][3]["lost"] is True
        change_gpus(state_path, gpu__3__serial="1999999999999", gpu__3__uuid="GPU-new-board")
        doc = probe.collect(3)
        assert doc["gpus"][3]["lost"] is False
        assert doc["gpus"][3]["serial"] == "1999999999999"
        assert doc["gpus"][3]["uuid"] == "GPU-new-board"


def test_readings_are_live_and_gpu_count_change_is_followed(node: tuple[dict[str, str], Path, Path]) -> None:
    """A kept NVML session still reports the current temperature, and a GPU that disappears from the count."""
    env, state_path, _ = node
    with started(env, probe_payload(True, 30.0)) as probe:
        assert probe.collect(1, STARTUP_S)["gpus"][2]["temperature_c"] == 32
        change_gpus(state_path, gpu__2__temperature_c=71, gpu__2__utilization_gpu_pct=99)
        hot = probe.collect(2)
        assert hot["gpus"][2]["temperature_c"] == 71
        assert hot["gpus"][2]["utilization_gpu_pct"] == 99
        assert hot["errors"] == []

        seven = dict(default_state(7))
        write_state(state_path, seven)
        time.sleep(RELOAD_PAUSE_S)
        for seq in (3, 4):
            doc = probe.collect(seq)
            assert doc["nvml"]["gpu_count"] == 7
            assert [g["index"] for g in doc["gpus"]] == list(range(7))
            assert not any(g["lost"] for g in doc["gpus"])
            assert doc["errors"] == []


def test_gpu_vanishing_from_the_bus_keeps_every_gpu_identity(node: tuple[dict[str, str], Path, Path]) -> None:
    """GPU 3 disappears from enumeration (8 -> 7 GPUs, 4..7 become 3..6): the first answer already names them right."""
    env, state_path, _ = node
    with started(env, probe_payload(True, 30.0)) as probe:
        assert_all_fine(probe.collect(1, STARTUP_S))
        state = {k: v for k, v in default_state(7).items() if not k.startswith("gpu.")}
        for new, old in enumerate((0, 1, 2, 4, 5, 6, 7)):
            state.update((f"gpu.{new}.{field}", value) for field, value in gpu_defaults(old).items())
        write_state(state_path, state)
        time.sleep(RELOAD_PAUSE_S)
        doc = probe.collect(2)
        assert doc["nvml"]["gpu_count"] == 7
        # Live readings and identity must describe the same board: GPU 4's temperature (34) with GPU 4's serial.
        seen = [(g["temperature_c"], g["serial"], g["pci_bus_id"]) for g in doc["gpus"]]
        expected = [(int(gpu_defaults(old)["temperature_c"]), gpu_defaults(old)["serial"],
                     gpu_defaults(old)["pci_bus_id"]) for old in (0, 1, 2, 4, 5, 6, 7)]
        assert seen == expected


def test_static_field_errors_are_repeated_in_every_answer(node: tuple[dict[str, str], Path, Path]) -> None:
    """A serial number that cannot be read is null, with its error, in the first answer and every later one."""
    env, state_path, _ = node
    change_gpus(state_path, gpu__0__fail__nvmlDeviceGetSerial="NOT_SUPPORTED")
    with started(env, probe_payload(True, 30.0)) as probe:
        first = probe.collect(1, STARTUP_S)
        second = probe.collect(2)
        for doc in (first, second):
            assert doc["gpus"][0]["serial"] is None
            assert doc["gpus"][0]["uuid"] == default_state()["gpu.0.uuid"]  # the other static fields are fine
            assert doc["gpus"][0]["lost"] is False
            assert doc["gpus"][1]["serial"] == default_state()["gpu.1.serial"]
            serial = [e for e in doc["errors"] if e["field"] == "serial"]
            assert [(e["gpu"], e["error"]) for e in serial] == [(0, "NOT_SUPPORTED")]
            assert len(doc["errors"]) == 1
        assert first["errors"] == second["errors"]


def test_quit_ends_the_probe_with_exit_0(node: tuple[dict[str, str], Path, Path]) -> None:
    env, _, _ = node
    with started(env, probe_payload(True, 30.0)) as probe:
        assert_all_fine(probe.collect(1, STARTUP_S))
        probe.send(b"quit\n")
        assert probe.wait_exit() == 0


def test_end_of_input_ends_the_probe_with_exit_0(node: tuple[dict[str, str], Path, Path]) -> None:
    env, _, _ = node
    with started(env, probe_payload(True, 30.0)) as probe:
        assert_all_fine(probe.collect(1, STARTUP_S))
        probe.close_stdin()
        assert probe.wait_exit() == 0


def test_idle_probe_exits_by_itself(node: tuple[dict[str, str], Path, Path]) -> None:
    """A controller that vanished without closing: after idle_s without a request the probe leaves (rc 0).
    The limit (2 s) is over 10x the gap between the requests that must keep it up (~0.1 s)."""
    env, _, _ = node
    idle_s = 2.0
    with started(env, probe_payload(True, idle_s)) as probe:
        assert_all_fine(probe.collect(1, STARTUP_S))
        for seq in (2, 3, 4):  # requests inside the limit keep it up
            time.sleep(0.05)
            assert probe.collect(seq)["probe"]["pid"] == probe.pid
        asked_at = time.monotonic()  # the idle clock starts after the answer, so after this
        assert probe.collect(5)["schema"] == 1
        assert probe.wait_exit(timeout=EXIT_S + idle_s) == 0
        waited = time.monotonic() - asked_at
        assert waited >= idle_s, f"left {waited:.2f} s after the last request, before its idle limit"


def test_unknown_request_gets_an_error_frame_and_serving_goes_on(node: tuple[dict[str, str], Path, Path]) -> None:
    env, _, _ = node
    with started(env, probe_payload(True, 30.0)) as probe:
        probe.send(b"status please\n")
        kind, seq, body = probe.read_frame(STARTUP_S)
        assert (kind, seq) == ("error", "0")
        assert body.decode("utf-8").startswith("unknown request:")
        assert "status please" in body.decode("utf-8")

        probe.send(b"collect x1\n\n")  # a malformed collect is unknown too; an empty line is ignored
        kind, seq, _ = probe.read_frame()
        assert (kind, seq) == ("error", "0")

        assert_all_fine(probe.collect(7))
        assert probe.proc.poll() is None
        probe.send(b"quit\n")
        assert probe.wait_exit() == 0


def test_xid_logged_between_requests_shows_in_the_next_answer(node: tuple[dict[str, str], Path, Path]) -> None:
    env, _, kernel_log = node
    with started(env, probe_payload(True, 30.0)) as probe:
        assert probe.collect(1, STARTUP_S)["kernel_log"]["xid_events"] == []
        with kernel_log.open("a", encoding="utf-8") as fh:
            fh.write(iso_line(XID_TEXT))
        for seq in (2, 3):
            events = probe.collect(seq)["kernel_log"]["xid_events"]
            assert [(e["xid"], e["pci_bus_id"], e["pid"]) for e in events] == [(79, "0000:18:00", 1234)]


def test_one_shot_probe_prints_one_plain_document(node: tuple[dict[str, str], Path, Path]) -> None:
    """Without serve in the header the bootstrap runs the one-shot probe: one unframed JSON document."""
    env, _, _ = node
    probe = ProbeProcess(env)
    try:
        try:
            out, err = probe.proc.communicate(probe_payload(True), timeout=STARTUP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"one-shot probe still running after {STARTUP_S} s")
        assert probe.proc.returncode == 0, err.decode("utf-8", "replace")
        text = out.decode("utf-8")
        assert text.lstrip().startswith("{")
        doc = json.loads(text)
        assert_all_fine(doc)
        assert doc["probe"]["pid"] == probe.pid
    finally:
        probe.stop()


def test_kernel_log_tail_rereads_the_file_only_when_it_changed(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "kern.log"
    log.write_text(iso_line("NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.127.05"), encoding="utf-8")
    monkeypatch.setenv("JUEYING_PROBE_KERNEL_LOG", str(log))
    reads: list[str] = []
    real_read_source = kernel._read_source

    def counted_read_source() -> Any:
        reads.append(os.environ["JUEYING_PROBE_KERNEL_LOG"])
        return real_read_source()

    monkeypatch.setattr(kernel, "_read_source", counted_read_source)
    tail = KernelLogTail()
    try:
        first = tail.collect()
        assert len(reads) == 1
        assert first["status"] == "ok"
        assert first["source"] == str(log)
        assert first["xid_events"] == []

        # One XID in dmesg's plain format (seconds since boot, a few seconds ago), one in ISO format.
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"[{max(uptime - 5, 0):12.6f}] {XID_TEXT}\n")
            fh.write(iso_line("NVRM: Xid (PCI:0000:2a:00): 48, pid='<unknown>', name=<unknown>, "
                              "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer"))
        second = tail.collect()
        assert len(reads) == 2  # the file changed: read again
        assert second["status"] == "ok"
        events = second["xid_events"]
        assert [(e["xid"], e["pci_bus_id"], e["pid"]) for e in events] == [(79, "0000:18:00", 1234),
                                                                            (48, "0000:2a:00", None)]
        assert events[0]["text"] == "name=python3, GPU has fallen off the bus."
        assert all(abs(e["time_unix"] - time.time()) < 120 for e in events)

        third = tail.collect()
        fourth = tail.collect()
        assert len(reads) == 2, "the unchanged file was read again"
        assert third["xid_events"] == fourth["xid_events"] == events
        assert third["status"] == "ok"
    finally:
        tail.close()


def test_a_transient_error_on_a_static_field_is_not_remembered(node: tuple[dict[str, str], Path, Path]) -> None:
    env, state_path, _ = node
    change_gpus(state_path, gpu__0__fail__nvmlDeviceGetUUID="TIMEOUT")
    with started(env, probe_payload(True, 30.0)) as probe:
        first = probe.collect(1)
        assert first["gpus"][0]["uuid"] is None
        change_gpus(state_path)
        second = probe.collect(2)
    assert second["gpus"][0]["uuid"] == default_state()["gpu.0.uuid"]
    assert not [e for e in second["errors"] if e["field"] == "uuid"]
