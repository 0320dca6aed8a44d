"""Piped tables are never cut (README, status): a 300-character drain reason reaches `grep` whole."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_jueying


def test_a_long_reason_is_never_cut_when_piped(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("nodes:\n  here: {local: true, expected_gpus: 0}\n")
    env = {"JUEYING_INVENTORY": str(inventory), "JUEYING_NODE_STATE_DIR": str(tmp_path / "markers"),
           "JUEYING_STATE_DB": str(tmp_path / "state.db")}
    words = " ".join(f"word{i:03d}" for i in range(40))  # 319 characters
    assert run_jueying(["drain", "here", "-r", words], env=env).rc == 0
    shown = run_jueying(["status"], env=env)
    assert shown.rc == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.startswith("here "))
    assert words in row and "…" not in shown.stdout
    assert run_jueying(["resume", "here"], env=env).rc == 0
