"""Node selection as clush users expect it, with ClusterShell's own `nodeset` as the oracle: repeated -w are a
union, repeated -x all leave nodes out, `nodes --expand` lists in `nodeset -e` order. And scripts always get
JSON: a usage error with --json still prints the envelope."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_jueying

NODESET = shutil.which("nodeset")
ALL = "n[01-12],gpu[1-3,10],a1"
CASES = [
    (["n0[1-4]"], ["n01", "n02", "n03"]),
    (["n0[1-4]", "gpu[1-3]"], []),
    (["n0[1-4]", "gpu[1-3]"], ["n02", "gpu2"]),
    (["n[01-12]!n0[5-9]", "a1"], []),
    (["a1", "n[01-12]!n0[5-9]"], ["n11"]),
    (["gpu[1-3,10]&gpu[2-10]"], []),
    (["n[01-12]^n[10-12]", "gpu10"], ["n01,n02"]),
    (["n1[0-2]", "n0[1-2]", "gpu10", "gpu1"], []),
]


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("select") / "inventory.yaml"
    path.write_text(f'groups:\n  all_nodes:\n    nodes: "{ALL}"\n    vars: {{local: true}}\n')
    return path


@pytest.mark.skipif(NODESET is None, reason="ClusterShell's nodeset command is not installed")
@pytest.mark.parametrize(("include", "exclude"), CASES)
def test_selection_matches_nodeset(inventory: Path, include: list[str], exclude: list[str]) -> None:
    assert NODESET is not None
    argv = [NODESET, "-e", *include]
    for x in exclude:
        argv += ["-x", x]
    expected = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    args = ["nodes", "-i", str(inventory), "--expand"]
    for w in include:
        args += ["-w", w]
    for x in exclude:
        args += ["-x", x]
    result = run_jueying(args)
    assert result.rc == 0, result.stderr
    assert result.stdout.split() == expected


def test_usage_errors_still_print_the_json_envelope(inventory: Path) -> None:
    for args, status in ((["nodes", "-i", str(inventory), "-w", "zz9", "--json"], "bad_input"),
                         (["status", "--sort", "bogus", "--json"], "usage")):
        result = run_jueying(args)
        assert result.rc == 2
        doc = json.loads(result.stdout)
        assert doc["status"] == "error" and doc["command"] == args[0] and doc["data"] is None
        assert doc["errors"][0]["status"] == status and doc["errors"][0]["message"]
        assert "Traceback" not in result.stderr


def test_help_names_its_values() -> None:
    shown = run_jueying(["status", "--help"]).stdout
    assert "-w, --nodes NODESET" in shown and "--connect-timeout SECONDS" in shown and "FILE" in shown
    assert "<str>" not in shown and "<float" not in shown and "<int" not in shown


def test_shell_completion_offers_inventory_names_and_groups(inventory: Path) -> None:
    env = {"_JUEYING_COMPLETE": "complete_bash", "COMP_WORDS": f"jueying run -i {inventory} -w gpu", "COMP_CWORD": "5"}
    shown = run_jueying([], env=env).stdout.split()
    assert shown == ["gpu1", "gpu2", "gpu3", "gpu10"]
    env["COMP_WORDS"] = f"jueying status -i {inventory} -x @al"
    assert run_jueying([], env=env).stdout.split() == ["@all_nodes", "@all"]
    assert "--install-completion" in run_jueying(["--help"]).stdout
