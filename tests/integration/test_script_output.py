"""`--format csv|tsv`, `-o/--fields` and `--no-header` on every table command, through the real CLI.

The oracle for the rows is the command's own `--json` output; the CSV is read back with Python's csv module,
the TSV with real `awk -F'\\t'` and `cut`. Hostile values (a drain reason and a GPU name with commas, quotes,
tabs, newlines, carriage returns, BEL and ESC; command output with the same) must come out escaped (no
terminal control character in the output) and otherwise exactly as in --json. Node names themselves cannot be
hostile: the inventory admits letters, digits, '.', '-' and '_' only (a test below holds that too).
"""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GpuNode, Result, run_jueying
from tests.integration.test_hostile_input import local_env

HOSTILE = 'a,b "quoted"\ttab\nnew line\r\x07bell \x1b[2J\x1b]0;pwned\x07 \\x1b spelled'
GPU_NAME = 'H100,"x"\tt \x1b[2J\x07 \\x1b'  # nvmlsim's state file holds one line; NVML's name is short
# Anything but \t, \n (and the \r of CSV's CRLF line ends): no control character may reach the output.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _escaped(text: str, *, keep: str) -> str:
    """What a terminal-safe cell shows: control characters as \\xNN or \\n \\r \\t, except those in `keep`."""
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    out = []
    for ch in text:
        if ch in keep or not (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F):
            out.append(ch)
        else:
            out.append(named.get(ch, f"\\x{ord(ch):02x}"))
    return "".join(out)


def _plain(value: Any) -> str:
    """A JSON value as a row shows it before escaping (written independently of render/records.py)."""
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def csv_cell(value: Any) -> str:
    return _escaped(_plain(value), keep="\n\t")


def tsv_cell(value: Any) -> str:
    return _escaped(_plain(value).replace("\\", "\\\\"), keep="")


def read_csv(result: Result) -> list[list[str]]:
    assert result.rc in (0, 1), result
    assert not CONTROL.search(result.stdout), repr(result.stdout)
    return list(csv.reader(io.StringIO(result.stdout, newline="")))


# Values that change between two runs of this machine's probe (load, memory, clocks, counters of runs).
VOLATILE = {"host_memory_used_bytes", "load1", "collected_at_unix", "duration_s", "consecutive_runs", "value",
            "message"}
NUMBER = re.compile(r"-?[0-9.e+-]*")


def assert_rows_match(rows: list[list[str]], objects: list[dict[str, Any]], fields: list[str],
                      cell: Any = csv_cell) -> None:
    """The rows hold the objects' fields in order; a volatile field (two runs were compared) only its shape."""
    assert rows[0] == fields
    assert len(rows) - 1 == len(objects), (rows, objects)
    for got, obj in zip(rows[1:], objects, strict=True):
        want = [cell(obj.get(f)) for f in fields]
        for i, f in enumerate(fields):
            if f in VOLATILE and not (isinstance(obj.get(f), str) and CONTROL.search(obj[f])):
                assert (NUMBER.fullmatch(got[i]) is not None) == (NUMBER.fullmatch(want[i]) is not None), (f, got)
                got[i] = want[i]
        assert got == want, (got, obj)


@pytest.fixture
def hostile_env(gpu_node: GpuNode, tmp_path: Path) -> dict[str, str]:
    gpu_node.set(**{"gpu.0.name": GPU_NAME})
    env = local_env(gpu_node, tmp_path)
    drained = run_jueying(["drain", "n6", "-r", HOSTILE], env)
    assert drained.rc == 0, drained
    return env


def test_status_rows_in_csv_and_tsv_are_the_json_rows_escaped(hostile_env: dict[str, str]) -> None:
    env = hostile_env
    nodes = run_jueying(["status", "--json"], env).json()["data"]["nodes"]
    # jueying stores a reason on one line (tabs and newlines become spaces); ESC, BEL, commas and quotes stay.
    assert any(all(c in (n["drain_reason"] or "") for c in ',"\x1b\x07') for n in nodes), nodes
    fields = list(nodes[0])
    assert_rows_match(read_csv(run_jueying(["status", "--format", "csv"], env)), nodes, fields)
    # Choosing and ordering columns, with the JSON names.
    chosen = ["drain_reason", "node", "gpus_present", "stale", "gpu_models"]
    assert_rows_match(read_csv(run_jueying(["status", "--format", "csv", "-o", ",".join(chosen)], env)), nodes,
                      chosen)
    # TSV: real awk sees exactly one line per node with one field per column, and cut the escaped reason.
    tsv = run_jueying(["status", "--format", "tsv", "-o", "node,drain_reason,state", "--no-header"], env)
    assert tsv.rc == 0, tsv
    assert not CONTROL.search(tsv.stdout.replace("\t", "")), repr(tsv.stdout)
    nf = subprocess.run(["awk", "-F\t", "{print NF}"], input=tsv.stdout, capture_output=True, text=True, check=True)
    assert nf.stdout.split() == ["3"] * len(nodes)
    reasons = subprocess.run(["cut", "-f2"], input=tsv.stdout, capture_output=True, text=True, check=True)
    assert reasons.stdout.splitlines() == [tsv_cell(n["drain_reason"]) for n in nodes]
    # The TSV escaping is undone exactly (backslash first), so a script gets the exact reason back.
    escaped = [line.split("\t")[1] for line in tsv.stdout.splitlines()]
    assert [_tsv_unescape(e) for e in escaped] == [_plain(n["drain_reason"]) for n in nodes]


def _tsv_unescape(cell: str) -> str:
    named = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
    return re.sub(r"\\(\\|t|n|r|x[0-9a-f]{2})",
                  lambda m: named.get(m.group(1)) or chr(int(m.group(1)[1:], 16)), cell)


def test_gpu_rows_inventory_and_history_rows_match_json(hostile_env: dict[str, str]) -> None:
    env = hostile_env
    gpus = run_jueying(["status", "--gpus", "--json"], env).json()["data"]["gpus"]
    assert gpus[0]["name"] == GPU_NAME
    assert_rows_match(read_csv(run_jueying(["status", "--gpus", "--format", "csv"], env)), gpus, list(gpus[0]))
    # inventory: dotted paths into each node's facts document.
    inv = run_jueying(["inventory", "--json"], env).json()["data"]["nodes"]
    rows = read_csv(run_jueying(["inventory", "--format", "csv", "-o", "node,facts.gpus.0.name,facts.nvml.gpu_count"],
                                env))
    assert rows[0] == ["node", "facts.gpus.0.name", "facts.nvml.gpu_count"]
    assert rows[1:] == [[n["node"], csv_cell(n["facts"]["gpus"][0]["name"]), csv_cell(n["facts"]["nvml"]["gpu_count"])]
                        for n in inv]
    default = read_csv(run_jueying(["inventory", "--format", "csv"], env))
    assert default[0][:3] == ["node", "status", "error"] and len(default) == 1 + len(inv)
    hist = run_jueying(["history", "n6", "--all", "--json"], env).json()["data"]["rows"]
    assert hist
    assert_rows_match(read_csv(run_jueying(["history", "n6", "--all", "--format", "csv"], env)), hist, list(hist[0]))


def test_log_check_nodes_and_run_rows_match_json(hostile_env: dict[str, str]) -> None:
    env = hostile_env
    entries = run_jueying(["log", "--json"], env).json()["data"]["entries"]
    assert any(e["reason"] and "\x1b[2J" in e["reason"] for e in entries)
    assert_rows_match(read_csv(run_jueying(["log", "--format", "csv"], env)), entries, list(entries[0]))
    tsv = run_jueying(["log", "--format", "tsv"], env)
    assert tsv.stdout.splitlines()[1:] == ["\t".join(tsv_cell(e[f]) for f in entries[0]) for e in entries]

    checked = run_jueying(["check", "-v", "--json"], env)
    results = checked.json()["data"]["results"]
    as_csv = run_jueying(["check", "-v", "--format", "csv"], env)
    assert as_csv.rc == checked.rc  # Nagios exit codes whatever the format
    assert_rows_match(read_csv(as_csv), results, list(results[0]))
    assert "jueying check" in as_csv.stderr and "jueying check" not in as_csv.stdout
    quiet = read_csv(run_jueying(["check", "-q", "--format", "csv", "-o", "node,check,level"], env))
    assert sorted(quiet[1:]) == sorted([r["node"], r["check"], r["level"]] for r in results
                                       if r["confirmed"] and r["level"] != "OK")

    names = run_jueying(["nodes", "--json"], env).json()["data"]["nodes"]
    assert run_jueying(["nodes", "--format", "csv", "--no-header"], env).stdout.splitlines() == names

    command = ["--", "printf", "%s", shlex.quote(HOSTILE)]
    outcomes = run_jueying(["run", "--json", *command], env).json()["data"]["nodes"]
    assert outcomes[0]["stdout"] == HOSTILE
    assert_rows_match(read_csv(run_jueying(["run", "--format", "csv", *command], env)), outcomes,
                      ["node", "status", "rc", "stdout", "stderr", "duration_s", "error", "truncated"])
    nf = subprocess.run(["awk", "-F\t", "{print NF}"], capture_output=True, text=True, check=True,
                        input=run_jueying(["run", "--format", "tsv", "-o", "node,stdout,rc", *command], env).stdout)
    assert nf.stdout.split() == ["3"] * (1 + len(outcomes))


def test_a_table_of_chosen_fields_escapes_and_drops_the_header_on_request(hostile_env: dict[str, str]) -> None:
    table = run_jueying(["status", "-o", "node,drain_reason"], hostile_env)
    assert table.rc == 0, table
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NODE", "DRAIN_REASON"]
    assert not CONTROL.search(table.stdout.replace("\t", "")), repr(table.stdout)
    assert any("\\x1b[2J" in line for line in lines)
    bare = run_jueying(["status", "-o", "node", "--no-header"], hostile_env)
    assert [line.strip() for line in bare.stdout.splitlines()] == ["n6", "n7"]


@pytest.mark.parametrize("args", [["status"], ["status", "--gpus"], ["check"], ["log"], ["history", "n6"],
                                  ["inventory"], ["nodes"], ["run", "--", "true"]])
def test_an_unknown_field_exits_2_naming_it_and_the_valid_ones(hostile_env: dict[str, str],
                                                                args: list[str]) -> None:
    where = args.index("--") if "--" in args else len(args)
    refused = run_jueying([*args[:where], "--format", "csv", "-o", "node,no_such_field", *args[where:]], hostile_env)
    assert refused.rc == 2, refused
    assert refused.stdout == ""
    assert "-o/--fields: unknown field 'no_such_field'; valid fields: " in refused.stderr
    assert "node" in refused.stderr.split("valid fields: ")[1].strip().split(", ")
    assert "Traceback" not in refused.stderr


def test_bad_combinations_and_dotted_typos_exit_2(hostile_env: dict[str, str]) -> None:
    env = hostile_env
    both = run_jueying(["status", "--json", "--format", "csv"], env)
    assert both.rc == 2 and both.json()["status"] == "error"  # --json still gets its envelope
    as_json = run_jueying(["log", "--format", "json"], env)
    assert as_json.rc == 0 and as_json.json()["command"] == "log"  # --format json is --json
    fields_json = run_jueying(["log", "--format", "json", "-o", "node"], env)
    assert fields_json.rc == 2 and fields_json.json()["status"] == "error"
    typo = run_jueying(["inventory", "--format", "csv", "-o", "facts.host.kernl"], env)
    assert typo.rc == 2 and "keys there:" in typo.stderr and "kernel" in typo.stderr, typo
    watch = run_jueying(["status", "--watch", "1", "--format", "csv"], env)
    assert watch.rc == 2, watch
    bad = run_jueying(["status", "--format", "xml"], env)
    assert bad.rc == 2 and "'xml' is not one of" in bad.stderr


@pytest.mark.parametrize("name", ["'n\"1'", '"n\\e[2J1"', '"n\\t1"', '"n\\n1"'])
def test_node_names_that_would_need_quoting_are_refused_by_the_inventory(gpu_node: GpuNode, tmp_path: Path,
                                                                         name: str) -> None:
    """A comma is NodeSet syntax (`n,1` is two nodes); quotes and control characters are refused, file:line."""
    env = local_env(gpu_node, tmp_path, f"nodes:\n  {name}: {{local: true}}\n")
    refused = run_jueying(["status", "--format", "csv"], env)
    assert refused.rc == 2 and "inventory.yaml:2: nodes: " in refused.stderr, refused
    assert not CONTROL.search(refused.stderr)
