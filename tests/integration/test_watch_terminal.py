"""`jueying status --watch` on a real terminal: the screen (tmux's rendering of it), not the byte stream.

The view must redraw one frame in place (one table header and one summary line on screen, however many
refreshes), show each refresh's values where the last ones were, mark a node that stops answering as stale,
and end with exit code 0 on Ctrl-C.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster import SimCluster

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("tmux") is None or not Path("/usr/sbin/sshd").exists(),
    reason="needs root, tmux and /usr/sbin/sshd",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("watch-tty"), 3, prefix="tw", digits=1, first_octets=(127, 69),
                    gpu_lib_dir=nvml_lib) as sim:
        sim.up()
        yield sim


class Terminal:
    """A detached tmux session running one command in a 200x50 terminal."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.name = f"jy-{uuid.uuid4().hex[:8]}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "200", "-y", "50",
                        "env", *(f"{k}={v}" for k, v in env.items()), "sh", "-c", command], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True,
                              check=False).stdout

    def wait_for(self, what: Callable[[str], bool], timeout_s: float = 60.0) -> str:
        """Poll the screen until `what` holds (bounded); every screen seen must be one frame."""
        ends = time.monotonic() + timeout_s
        while True:
            shown = self.screen()
            assert_one_frame(shown)
            if what(shown):
                return shown
            assert time.monotonic() < ends, f"screen never matched; last screen:\n{shown}"
            time.sleep(0.2)

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=False)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True, check=False)


def assert_one_frame(shown: str) -> None:
    headers = [line for line in shown.splitlines() if line.lstrip().startswith("NODE") and "STATE" in line]
    summaries = [line for line in shown.splitlines() if "nodes up" in line]
    assert len(headers) <= 1 and len(summaries) <= 1, f"frames stacked on screen:\n{shown}"


def row(shown: str, node: str) -> str:
    return next((line for line in shown.splitlines() if line.lstrip().startswith(node + " ")), "")


def set_util(sim: SimCluster, node: str, pct: int) -> None:
    sim.node(node).set_gpus(**{f"gpu.{i}.utilization_gpu_pct": pct for i in range(8)})


def test_watch_redraws_in_place_marks_stale_and_exits_0_on_ctrl_c(cluster: SimCluster, tmp_path: Path) -> None:
    rc_file = tmp_path / "rc"
    env = {**cluster.client_env(), "PYTHONPATH": str(REPO), "TERM": "xterm-256color",
           "JUEYING_STATE_DB": str(tmp_path / "state.db"), "PATH": os.environ.get("PATH", "")}
    # The shell traps SIGINT (not ignores it: jueying must receive it) so that it lives to record the exit code.
    command = (f"trap : INT; {shlex.quote(sys.executable)} -m jueying_cli status --watch 1 --no-fold --deadline 3 "
               "-t 4; "
               f"echo $? > {shlex.quote(str(rc_file))}; sleep 600")
    term = Terminal(command, env)
    try:
        term.wait_for(lambda s: all(row(s, n) for n in ("tw1", "tw2", "tw3")))
        for pct in (11, 22, 33):  # three refreshes, each drawn where the last one was
            set_util(cluster, "tw1", pct)
            shown = term.wait_for(lambda s, pct=pct: f"{pct}%/{pct}%" in row(s, "tw1"))
            assert [n for n in ("tw1", "tw2", "tw3") if row(shown, n)] == ["tw1", "tw2", "tw3"]
        cluster.node("tw2").blackhole()
        try:
            shown = term.wait_for(lambda s: "stale" in row(s, "tw2"))
            assert "stale" not in row(shown, "tw1") and "stale" not in row(shown, "tw3")
        finally:
            cluster.node("tw2").unblackhole()
        term.keys("C-c")
        ends = time.monotonic() + 60
        while not rc_file.exists() and time.monotonic() < ends:
            time.sleep(0.2)
        assert rc_file.read_text().strip() == "0"
    finally:
        term.close()
        set_util(cluster, "tw1", 0)
