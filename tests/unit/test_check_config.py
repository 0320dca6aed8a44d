"""Check-set files: the shipped default set is the built-in one, and every mistake an operator can make
is reported as `file:line: field: message` (exit code 2) before any node is touched.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from jueying_cli.checks import CHECKS, builtin_config, load_check_config
from jueying_cli.errors import BadInputError, ExitCode
from jueying_cli.inventory.model import Inventory, Node

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "playbooks" / "health" / "default.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "checks.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error(tmp_path: Path, text: str) -> BadInputError:
    path = write(tmp_path, text)
    with pytest.raises(BadInputError) as info:
        load_check_config(path)
    err = info.value
    assert err.path == str(path)
    assert err.exit_code == ExitCode.BAD_INPUT
    assert str(err).startswith(f"{path}:{err.line}: {err.field}: ")
    return err


# ---------------------------------------------------------------- the shipped set


def test_default_yaml_is_exactly_the_builtin_defaults() -> None:
    config = load_check_config(DEFAULT)
    builtin = builtin_config()
    assert config.checks == builtin.checks
    assert config.overrides == ()
    assert config.source == str(DEFAULT)
    # It spells out every check with every parameter, so it documents them all.
    raw = yaml.safe_load(DEFAULT.read_text())
    assert list(raw["checks"]) == list(CHECKS)
    for name, spec in CHECKS.items():
        assert list(raw["checks"][name]) == list(spec.params), name
        assert {k: type(v) for k, v in raw["checks"][name].items() if v is not None and not isinstance(v, list)} \
            == {k: type(v) for k, v in spec.defaults.items() if v is not None and not isinstance(v, tuple)}, name


def test_builtin_defaults_documented_in_the_brief() -> None:
    checks = builtin_config().checks
    assert checks["xid"]["window_hours"] == 2 and checks["xid"]["ignore"] == ()
    assert checks["temperature"]["margin_c"] == 5
    assert checks["retired_pages"]["limit"] == 60
    assert checks["remapped_rows"]["uncorrectable_warning"] == 512
    assert (checks["filesystem"]["warning_pct"], checks["filesystem"]["critical_pct"]) == (90, 95)
    assert (checks["clock"]["warning_s"], checks["clock"]["critical_s"]) == (0.5, 5)
    assert checks["stray_processes"]["enabled"] is False
    assert all(checks[name]["enabled"] for name in CHECKS if name != "stray_processes")


def test_partial_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    config = load_check_config(write(tmp_path, """\
        # only what differs
        checks:
          temperature: {margin_c: 8}
          xid:
          stray_processes: {enabled: true, ignore_names: [dcgm-agent]}
        """))
    builtin = builtin_config().checks
    assert config.checks["temperature"] == {**builtin["temperature"], "margin_c": 8}
    assert config.checks["xid"] == builtin["xid"]
    assert config.checks["stray_processes"]["ignore_names"] == ("dcgm-agent",)
    assert config.checks["nvlink"] == builtin["nvlink"]


def test_overrides_in_order_and_unknown_names_are_fine(tmp_path: Path) -> None:
    config = load_check_config(write(tmp_path, """\
        checks: {}
        overrides:
          - nodes: "@dgx"
            checks: {temperature: {margin_c: 8}, persistence_mode: {enabled: false}}
          - nodes: "gpu[001-002],not-in-inventory"
            checks: {temperature: {margin_c: 3}}
          - nodes: "@dgx!gpu002"
            checks: {clocks_events: {level: CRITICAL}}
        """))
    nodes = {name: Node(name, {}, ("dgx",)) for name in ("gpu001", "gpu002", "gpu003")}
    inventory = Inventory(nodes, {"dgx": tuple(nodes)})
    params = {name: config.params_for(node, inventory) for name, node in nodes.items()}
    assert [params[n]["temperature"]["margin_c"] for n in nodes] == [3, 3, 8]
    assert not any(params[n]["persistence_mode"]["enabled"] for n in nodes)
    assert [params[n]["clocks_events"]["level"] for n in nodes] == ["critical", "warning", "critical"]
    assert config.overrides[1].line == 5


# ---------------------------------------------------------------- mistakes, each with file, line and field


def test_unknown_check_suggests_the_right_name(tmp_path: Path) -> None:
    err = error(tmp_path, """\
        checks:
          xid: {window_hours: 2}
          temprature: {margin_c: 5}
        """)
    assert (err.line, err.field) == (3, "checks.temprature")
    assert "unknown check 'temprature' (did you mean 'temperature'?)" in str(err)


def test_unknown_param_suggests_the_right_name(tmp_path: Path) -> None:
    err = error(tmp_path, """\
        checks:
          temperature:
            enabled: true
            margin: 8
        """)
    assert (err.line, err.field) == (4, "checks.temperature.margin")
    assert "unknown parameter of temperature 'margin' (did you mean 'margin_c'?)" in str(err)


@pytest.mark.parametrize(("line", "field", "says"), [
    ("xid: {window_hours: 2h}", "checks.xid.window_hours", "'2h' is not a number"),
    ("retired_pages: {limit: true}", "checks.retired_pages.limit", "True is not a whole number"),
    ("retired_pages: {limit: 6.5}", "checks.retired_pages.limit", "6.5 is not a whole number"),
    ("nvlink: {enabled: yes please}", "checks.nvlink.enabled", "is not true or false"),
    ("xid: {ignore: 13}", "checks.xid.ignore", "13 is not a list of whole numbers"),
    ("xid: {ignore: [13, '31']}", "checks.xid.ignore", "is not a list of whole numbers"),
    ("xid: {window_hours: 48}", "checks.xid.window_hours", "48 is not at most 24"),
    ("filesystem: {warning_pct: 120}", "checks.filesystem.warning_pct", "120 is not at most 100"),
    ("temperature: {margin_c: null}", "checks.temperature.margin_c", "None is not a number"),
    ("nvlink: {level: fatal}", "checks.nvlink.level", "'fatal' is not warning or critical"),
    ("temperature: {confirm_runs: 0}", "checks.temperature.confirm_runs", "0 is not at least 1"),
    ("xid: [window_hours]", "checks.xid", "must be a mapping of parameters"),
])
def test_wrong_values(tmp_path: Path, line: str, field: str, says: str) -> None:
    err = error(tmp_path, f"checks:\n  nvml: {{}}\n  {line}\n")
    assert (err.line, err.field) == (3, field)
    assert says in str(err)


def test_confirm_runs_zero_in_an_override(tmp_path: Path) -> None:
    err = error(tmp_path, """\
        overrides:
          - nodes: gpu001
            checks:
              xid:
                confirm_runs: 0
        """)
    assert (err.line, err.field) == (5, "overrides[0].checks.xid.confirm_runs")
    assert "at least 1" in str(err) and "consecutive non-OK runs" in str(err)


@pytest.mark.parametrize(("nodes", "says"), [
    ('"gpu[001-"', "bad node set 'gpu[001-'"),
    ('"gpu[005-001]"', "bad node set"),
    ('"@site:dgx"', "no group source"),
    ('""', "nodes: must be a node set"),
    ("[gpu001]", "nodes: must be a node set"),
])
def test_bad_nodeset(tmp_path: Path, nodes: str, says: str) -> None:
    err = error(tmp_path, f"""\
        checks: {{}}
        overrides:
          - checks: {{nvlink: {{enabled: false}}}}
            nodes: {nodes}
        """)
    assert (err.line, err.field) == (4, "overrides[0].nodes")
    assert says in str(err)


def test_unknown_check_in_an_override(tmp_path: Path) -> None:
    err = error(tmp_path, """\
        overrides:
          - nodes: "@dgx"
            checks:
              nvlinks: {enabled: false}
        """)
    assert (err.line, err.field) == (4, "overrides[0].checks.nvlinks")
    assert "did you mean 'nvlink'?" in str(err)


def test_override_structure(tmp_path: Path) -> None:
    err = error(tmp_path, "overrides:\n  - nodes: gpu001\n    check: {}\n")
    assert (err.line, err.field) == (3, "overrides[0].check") and "did you mean 'checks'?" in str(err)
    err = error(tmp_path, "overrides:\n  - nodes: gpu001\n")
    assert (err.line, err.field) == (2, "overrides[0].checks") and "checks: is missing" in str(err)
    err = error(tmp_path, "overrides: {nodes: gpu001}\n")
    assert (err.line, err.field) == (1, "overrides")
    err = error(tmp_path, "overrides:\n  - gpu001\n")
    assert (err.line, err.field) == (2, "overrides[0]")


def test_top_level_mistakes(tmp_path: Path) -> None:
    err = error(tmp_path, "checks: {}\noverride: []\n")
    assert (err.line, err.field) == (2, "override") and "did you mean 'overrides'?" in str(err)
    err = error(tmp_path, "checks:\n  - xid\n")
    assert (err.line, err.field) == (1, "checks") and "must be a mapping of check name" in str(err)
    path = write(tmp_path, "- just a list\n")
    with pytest.raises(BadInputError) as info:
        load_check_config(path)
    assert info.value.line == 1 and "must be a mapping" in str(info.value)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "checks:\n  xid: {window_hours: 2\n  nvml: {}\n")
    with pytest.raises(BadInputError) as info:
        load_check_config(path)
    assert info.value.path == str(path) and info.value.line is not None
    assert "invalid YAML" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError) as info:
        load_check_config(tmp_path / "nope.yaml")
    assert "cannot read" in str(info.value)
