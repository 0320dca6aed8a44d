"""The drill playbook: every shipped drill is valid for jueying and for the published JSON Schema (checked with
the jsonschema library, as an editor would), and broken ones are refused whole with file:line: field."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import pytest

from jueying_cli.drills.playbook import Expect, PlaybookError, Schedule, load_playbook, parse_duration
from jueying_cli.yamlfile import load_yaml_text
from tests.conftest import REPO, run_jueying

SCHEMA = json.loads((REPO / "jueying_cli" / "drills" / "drill.schema.json").read_text())
SHIPPED = sorted((REPO / "playbooks" / "drills").glob("*.yaml"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def as_json(text: str) -> object:
    """The document as an editor's YAML 1.2 language server sees it (`on:` is a key, not the boolean true)."""
    return json.loads(json.dumps(load_yaml_text(text, "playbook.yaml")))

GOOD = """apiVersion: jueying/v1
kind: Drill
metadata: {name: t}
targets:
  victim: {nodes: "n[1-4]", pick: {mode: count, value: 1}}
method:
  - action: lose
    do: gpu_fault
    on: victim
    with: {fault: lost, gpu: 0}
    mark: a
  - wait_for: {name: w, probe: node_state, on: victim, expect: {in: [drained]}, timeout: 1m}
    mark: b
report:
  timings: {t: [a, b]}
  objectives: {t: 5m}
"""

# (what to change in GOOD, the line and field jueying must name, whether the JSON Schema can see it too)
BROKEN = [
    ("apiVersion: jueying/v1", "apiVersion: jueying/v2", "1: apiVersion", True),
    ("metadata: {name: t}", "metadata: {name: 'two words'}", "3: metadata.name", True),
    ("pick: {mode: count, value: 1}", "pick: {mode: count, value: 0}", "5: targets.victim.pick.value", True),
    ("pick: {mode: count, value: 1}", "pick: {mode: count, value: 1, seed: 4}", "5: targets.victim.pick.seed",
     True),
    ("    do: gpu_fault\n", "    do: melt_gpu\n", "8: method[0].do", True),
    ("with: {fault: lost, gpu: 0}", "with: {fault: lost, gpu: 0, colour: red}", "10: method[0].with.colour",
     True),
    ("    on: victim\n    with", "    on: victm\n    with", "9: method[0].on", False),
    ("expect: {in: [drained]}, timeout: 1m}", "expect: {in: [drained]}}", "12: method[1].wait_for.timeout", True),
    ("expect: {in: [drained]}", "expect: {in: [drained], equals: idle}", "12: method[1].wait_for.expect", True),
    ("timings: {t: [a, b]}", "timings: {t: [a, c]}", "15: report.timings.t", False),
    ("objectives: {t: 5m}", "objectives: {t: five minutes}", "16: report.objectives.t", True),
    ("    mark: a\n", "    mark: a\n    ttl: -3\n", "12: method[0].ttl", True),
    ('nodes: "n[1-4]"', 'nodes: "n[4-1"', "5: targets.victim.nodes", False),
]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_drill_is_valid_for_jueying_and_for_the_schema(path: Path) -> None:
    book = load_playbook(path)
    assert book.name == path.stem
    VALIDATOR.validate(as_json(path.read_text()))


def test_the_schema_accepts_the_test_playbook(tmp_path: Path) -> None:
    VALIDATOR.validate(as_json(GOOD))
    (tmp_path / "good.yaml").write_text(GOOD)
    assert load_playbook(tmp_path / "good.yaml").objectives == {"t": 300.0}


@pytest.mark.parametrize(("old", "new", "where", "schema_sees_it"), BROKEN, ids=[b[2] for b in BROKEN])
def test_a_broken_playbook_is_refused_with_file_line_and_field(tmp_path: Path, old: str, new: str, where: str,
                                                                schema_sees_it: bool) -> None:
    assert old in GOOD
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(PlaybookError) as refused:
        load_playbook(path)
    assert any(p.startswith(f"{path}:{where}:") for p in refused.value.problems), refused.value.problems
    if schema_sees_it:
        assert list(VALIDATOR.iter_errors(as_json(path.read_text()))), "the schema accepted it"


def test_every_problem_is_listed_at_once_and_the_cli_exits_2_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("jueying/v1", "v0").replace("on: victim\n    with", "on: nobody\n    with"))
    result = run_jueying(["drill", "validate", str(path)])
    assert result.rc == 2
    assert f"{path}:1: apiVersion: must be jueying/v1" in result.stderr
    assert f"{path}:9: method[0].on: names no target" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_variable_is_refused_before_anything_runs(tmp_path: Path) -> None:
    path = tmp_path / "vars.yaml"
    path.write_text(GOOD.replace("with: {fault: lost, gpu: 0}", "with: {fault: lost, gpu: 0}\n    ttl: 1m")
                    + "steady_state:\n  probes:\n    - {name: p, probe: command, with: {run: 'test ${nope}'}, "
                    "expect: {equals: 0}}\n")
    with pytest.raises(PlaybookError) as refused:
        load_playbook(path)
    assert any(":20: steady_state.probes[0].with.run: ${nope} names no target" in p for p in refused.value.problems)
    result = run_jueying(["drill", "validate", str(path), "--var", "nope=1"])
    assert result.rc == 2 and "--var nope: the playbook declares no variable 'nope'" in result.stderr


def test_vars_fill_expectations_and_objectives_as_numbers(tmp_path: Path) -> None:
    path = tmp_path / "v.yaml"
    path.write_text(GOOD.replace("objectives: {t: 5m}", "objectives: {t: '${limit}'}")
                    + "vars: {limit: 90}\n")
    assert load_playbook(path).objectives == {"t": 90.0}
    assert load_playbook(path, {"limit": "2"}).objectives == {"t": 2.0}


def test_expectations_and_durations() -> None:
    assert Expect("range", (60, None)).holds(64) and not Expect("range", (60, None)).holds(59)
    assert not Expect("range", (0, 1)).holds("1") and not Expect("range", (0, 1)).holds(True)
    assert Expect("in", ["drained", "draining"]).holds("draining")
    assert Expect("regex", "^jueying: auto:").holds("jueying: auto: xid") and not Expect("regex", "x").holds(None)
    assert Expect("equals", 0).holds(0) and not Expect("equals", 0).holds(False)
    assert [parse_duration(v) for v in (90, "90s", "5m", "2h", "250ms", "0", -1, True, "5 minutes")] == [
        90.0, 90.0, 300.0, 7200.0, 0.25, None, None, None, None]


def test_a_schedule_window_in_its_time_zone() -> None:
    # 2026-12-01 (a Tuesday) 03:30 UTC is 11:30 in Shanghai
    at = time.mktime(time.strptime("2026-12-01 03:30", "%Y-%m-%d %H:%M")) - time.timezone
    assert Schedule(9 * 60, 15 * 60, "Asia/Shanghai").allows(at)
    assert not Schedule(9 * 60, 15 * 60, "UTC").allows(at)
    assert Schedule(22 * 60, 4 * 60, "UTC").allows(at)  # across midnight
    assert not Schedule(9 * 60, 15 * 60, "Asia/Shanghai", ("mon",)).allows(at)


def test_show_and_recover_of_an_unknown_run_exit_2() -> None:
    for command in ("show", "recover"):
        result = run_jueying(["drill", command, "20990101T000000Z-000000"])
        assert result.rc == 2 and "no drill run '20990101T000000Z-000000'" in result.stderr
    listed = run_jueying(["drill", "list", "--json"])
    assert listed.rc == 0 and listed.json()["data"] == {"runs": []}


def test_a_huge_playbook_is_refused_not_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    step = "  - {action: a%d, do: command, with: {run: 'true'}}\n"
    path.write_text(GOOD.split("method:")[0] + "method:\n" + "".join(step % i for i in range(201)))
    with pytest.raises(PlaybookError) as refused:
        load_playbook(path)
    assert any("method: at most 200 steps" in p for p in refused.value.problems)


def test_scheduled_runs_only_inside_the_window(tmp_path: Path) -> None:
    now = time.gmtime()
    start, end = (now.tm_hour + 2) % 24, (now.tm_hour + 3) % 24  # a window that is not now
    path = tmp_path / "s.yaml"
    path.write_text(GOOD + f'schedule:\n  window: {{start: "{start:02d}:00", end: "{end:02d}:00", tz: UTC}}\n')
    outside = run_jueying(["drill", "run", str(path), "--scheduled"])
    assert outside.rc == 0 and "outside its schedule.window: nothing done" in outside.stdout
    assert run_jueying(["drill", "list", "--json"]).json()["data"] == {"runs": []}
    (tmp_path / "n.yaml").write_text(GOOD)
    unscheduled = run_jueying(["drill", "run", str(tmp_path / "n.yaml"), "--scheduled"])
    assert unscheduled.rc == 2 and "schedule: --scheduled needs schedule.window" in unscheduled.stderr
    bad = tmp_path / "b.yaml"
    bad.write_text(GOOD + 'schedule:\n  window: {start: "25:00", end: "10:00", tz: Mars/Olympus}\n')
    refused = run_jueying(["drill", "validate", str(bad)])
    assert refused.rc == 2 and ":18: schedule.window.start: must be HH:MM" in refused.stderr
    assert ":18: schedule.window.tz: unknown time zone 'Mars/Olympus'" in refused.stderr
