"""Shared fixtures: the simulated NVML library and a way to run the real `jueying` CLI against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.machine import sim_checks_yaml
from tests.nvmlsim import build_library, default_state, sim_env, write_state

REPO = Path(__file__).resolve().parent.parent
# Under pytest-xdist (scripts/test runs two workers) each worker's simulated clusters live on their own
# 127.x blocks: the tests use x = 61..96 (+ JUEYING_SIM_OCTET_SHIFT), worker N adds 36 x N.
SIM_OCTET_BLOCK = 36
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw") and _WORKER[2:].isdigit():
    _base = int(os.environ.get("JUEYING_SIM_OCTET_SHIFT", "0") or 0)
    os.environ["JUEYING_SIM_OCTET_SHIFT"] = str(_base + SIM_OCTET_BLOCK * int(_WORKER[2:]))
# Commands under test keep their history here, never in the user's ~/.local/state.
_STATE_DIR = tempfile.mkdtemp(prefix="jueying-test-state-")
_QUIET_KERNEL_LOG = os.path.join(_STATE_DIR, "kernel.log")
open(_QUIET_KERNEL_LOG, "a").close()  # an empty file


_state_db = os.path.join(_STATE_DIR, "state.db")  # replaced for each test by the autouse fixture below


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C as a terminal sends it, whatever started the suite: a shell without job control starts background
    jobs (`bash .ci/run &`) with SIGINT ignored, every process started from them inherits that, and the tests
    that press Ctrl-C on jueying (exit 130, rollback, partial output) would then test nothing. A handler, unlike
    an ignored signal, is reset to the default in every process the tests start."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _own_state_db(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test keeps its history in its own state DB: none sees what an earlier test recorded. run_jueying and
    start_watch pass it as JUEYING_STATE_DB; a process a test starts by hand without one falls back to
    $XDG_STATE_HOME/jueying/state.db, also this test's own (never the user's ~/.local/state)."""
    global _state_db
    state_dir = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state_dir))
    db = state_dir / "state.db"
    _state_db = str(db)
    try:
        yield db
    finally:
        _state_db = os.path.join(_STATE_DIR, "state.db")


@pytest.fixture(scope="session")
def nvml_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """libnvidia-ml.so.1 built once per session from tests/nvmlsim/nvmlsim.c."""
    return build_library(tmp_path_factory.mktemp("nvmlsim"))


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_jueying(args: list[str], env: Mapping[str, str] | None = None, timeout: float = 120,
                module: str = "jueying_cli", stdin: str | None = None) -> Result:
    """Run the real CLI in a fresh process (pynvml caches its library per process)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    full_env["JUEYING_STATE_DB"] = _state_db
    # This machine's real kernel log may hold XID lines other tests wrote into /dev/kmsg (they cannot be
    # removed): a probe of this machine reads an empty log unless a test asks for the real one ("").
    full_env["JUEYING_PROBE_KERNEL_LOG"] = _QUIET_KERNEL_LOG
    full_env.update(env or {})
    full_env.setdefault("PYTHONPATH", str(REPO))
    proc = subprocess.run([sys.executable, "-m", module, *args], env=full_env, capture_output=True, text=True,
                          timeout=timeout, input=stdin, cwd=full_env.get("JUEYING_TEST_CWD", str(REPO)),
                          check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


class GpuNode:
    """This machine with a simulated GPU state: edit `state`, call `write()`, run commands."""

    def __init__(self, lib_dir: Path, state_path: Path, gpu_count: int = 8) -> None:
        self.lib_dir = lib_dir
        self.state_path = state_path
        self.state: dict[str, object] = dict(default_state(gpu_count))
        self.checks_path = state_path.with_name("checks.yaml")
        self.checks_path.write_text(sim_checks_yaml())
        self.write()

    def write(self) -> None:
        write_state(self.state_path, self.state)

    def set(self, **fields: object) -> None:
        self.state.update(fields)
        self.write()

    @property
    def env(self) -> dict[str, str]:
        """The simulated GPUs, no inventory, no colour, and the check set of simulated nodes (sim_checks_yaml:
        without `load`, which measures the test machine)."""
        return {**sim_env(self.lib_dir, self.state_path), "JUEYING_INVENTORY": "", "NO_COLOR": "1",
                "JUEYING_CHECKS": str(self.checks_path)}

    def jueying(self, *args: str, env: Mapping[str, str] | None = None) -> Result:
        return run_jueying(list(args), {**self.env, **(env or {})})

    def probe(self) -> dict[str, Any]:
        result = run_jueying([], self.env, module="jueying_cli.probe")
        assert result.rc == 0, result.stderr
        doc: dict[str, Any] = result.json()
        return doc


def start_watch(env: Mapping[str, str], *args: str) -> subprocess.Popen[str]:
    """`jueying status --json ARGS` (with --watch among them) left running, its envelopes on stdout as
    they are printed; stop it with stop_watch()."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("JUEYING_")}
    full_env["JUEYING_STATE_DB"] = _state_db
    full_env["JUEYING_PROBE_KERNEL_LOG"] = _QUIET_KERNEL_LOG  # as run_jueying: not this machine's real XIDs
    full_env.update(env, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "jueying_cli", "status", "--json", *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def next_envelope(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The watch's next JSON envelope (it ends with a `}` line at column 0)."""
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or lines[-1] != "}\n":
        line = proc.stdout.readline()
        assert line, "watch ended early"
        lines.append(line)
    envelope: dict[str, Any] = json.loads("".join(lines))
    return envelope


def stop_watch(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C, as a user ends a watch; killed if it does not end within 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.fixture
def gpu_node(nvml_lib: Path, tmp_path: Path) -> GpuNode:
    return GpuNode(nvml_lib, tmp_path / "gpu.state")


# ---------------------------------------------------------------- the harness's own tests, reported apart

_OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line for jueying's own tests and one for the harness's self-tests (marked `harness`: the sim
    cluster, the Slurm harness, the NVML simulator), so a broken harness is not read as a broken jueying."""
    counts: dict[bool, dict[str, int]] = {True: {}, False: {}}
    for outcome in _OUTCOMES:
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") != "call" and outcome not in ("error", "skipped"):
                continue
            harness = "harness" in getattr(report, "keywords", {})
            counts[harness][outcome] = counts[harness].get(outcome, 0) + 1
    for harness, label in ((False, "jueying tests"), (True, "harness self-tests")):
        said = ", ".join(f"{n} {outcome}" for outcome, n in counts[harness].items()) or "none run"
        terminalreporter.write_line(f"{label}: {said}")
