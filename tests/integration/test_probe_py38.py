"""The probe runs on nodes with Python 3.8 and nothing but the standard library."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jueying_cli.collect.payload import _BOOTSTRAP, probe_payload
from tests.conftest import REPO
from tests.nvmlsim import default_state, sim_env, write_state


def test_probe_code_needs_nothing_newer_than_python_38(tmp_path: Path) -> None:
    bootstrap = tmp_path / "bootstrap.py"
    bootstrap.write_text(_BOOTSTRAP)
    shipped_facts = [str(REPO / "jueying_cli" / "facts" / name) for name in ("__init__.py", "schema.py")]
    files = [*sorted(str(p) for p in (REPO / "jueying_cli" / "probe").glob("*.py")), *shipped_facts, str(bootstrap)]
    # vermin beside the Python running the tests (a virtual environment need not be on PATH), else on PATH.
    beside = Path(sys.executable).with_name("vermin")
    vermin = str(beside) if beside.exists() else shutil.which("vermin") or "vermin"
    result = subprocess.run([vermin, "-t=3.8-", "--no-tips", "--violations", *files],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _python38() -> str | None:
    candidates = [shutil.which("python3.8") or ""]
    candidates += glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8"))
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 8)"],
                                        capture_output=True, check=False).returncode == 0:
            return candidate
    return None


def test_shipped_probe_runs_under_a_bare_python_38(tmp_path: Path, nvml_lib: Path) -> None:
    python38 = _python38()
    if python38 is None:
        pytest.skip("no Python 3.8 interpreter on this machine (the vermin check above still applies)")
    state = tmp_path / "gpu.state"
    write_state(state, {**default_state(), "gpu.1.lost": 1})
    env = {"PATH": os.environ["PATH"], **sim_env(nvml_lib, state)}
    result = subprocess.run([python38, "-I", "-c", _BOOTSTRAP], input=probe_payload(), env=env,
                            capture_output=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    doc = json.loads(result.stdout)
    assert doc["probe"]["python_version"].startswith("3.8")
    assert doc["nvml"]["status"] == "ok" and len(doc["gpus"]) == 8 and doc["gpus"][1]["lost"] is True
    assert doc["host"]["memory"]["total_bytes"] > 0 and doc["host"]["cpu"]["threads"] >= 1
