"""The alert rules shipped in playbooks/prometheus/, checked and unit-tested by the real promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from jueying_cli.yamlfile import load_yaml
from tests.conftest import REPO

RULES = REPO / "playbooks" / "prometheus" / "jueying-rules.yml"
TESTS = REPO / "playbooks" / "prometheus" / "jueying-rules.test.yml"

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="needs Debian's prometheus package")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_rules_are_valid() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_the_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_has_a_firing_and_a_quiet_case() -> None:
    rules = load_yaml(RULES)
    tests = load_yaml(TESTS)
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    cases = [c for t in tests["tests"] for c in t["alert_rule_test"]]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert names == firing == quiet


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests can fail: a lost-GPU rule that waits for two lost GPUs does not pass them."""
    broken = tmp_path / RULES.name
    broken.write_text(RULES.read_text().replace("jueying_node_gpus_lost > 0", "jueying_node_gpus_lost > 1"))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    result = promtool("test", "rules", str(tmp_path / TESTS.name))
    assert result.returncode != 0 and "JueyingGpuLost" in result.stdout + result.stderr
