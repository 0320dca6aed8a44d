"""Property tests over everything jueying reads from outside: inventories (jueying YAML, Ansible INI and
YAML), node-set expressions (-w/-x), drain reasons and facts documents. Any input ends in a result or a
clear error (BadInputError/FactsError, with file:line where a file is involved), never another exception,
within bounded time (pytest-timeout on each test, not a per-example deadline: a loaded CI machine missed a
2 s one) and memory (the node limit is checked before expanding).
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from jueying_cli.actions.plan import require_reason
from jueying_cli.errors import BadInputError, FactsError
from jueying_cli.facts.model import Facts
from jueying_cli.inventory import nodeset
from jueying_cli.inventory.loader import load_inventory_file
from jueying_cli.inventory.model import Inventory, Node
from jueying_cli.inventory.select import fold, select_nodes
from jueying_cli.render.text import is_safe, safe, safe_block
from jueying_cli.scheduler.base import bare_reason, is_auto_reason, is_jueying_reason

FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
_TMP = Path(tempfile.mkdtemp(prefix="jueying-hypothesis-"))

# Characters that YAML, INI and NodeSet syntax care about, plus hostile ones.
SYNTAX = "abn01289 \t\n:-[]{},!&^@*&#%|>'\"=/.\\?<_x\x1b\x00\u202e\xff"
yaml_text = st.text(alphabet=SYNTAX, max_size=300)
NAMES = st.sampled_from(["n1", "gpu[1-4]", "n[01-10]", "a", "b-1", "x_y", "n[1-3,7]", "n[1-99999999]",
                         "n[1-2][3-4]", "@all", "", "n\x1b", "[", "n[5-1]", "h[01:20]", "h[a:c]"])
KEYS = st.sampled_from(["vars", "groups", "nodes", "children", "hosts", "all", "ungrouped", "x_k", "address",
                        "ssh_port", "expected_gpus", "scheduler", "max_unavailable", "max_unavailable_pct",
                        "local", "ansible_host", "<<", "gpu"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=20), NAMES)
documents = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(KEYS, NAMES), inner, max_size=5)), max_leaves=25)


def _load(text: str | bytes, suffix: str) -> Inventory | None:
    path = _TMP / f"inv{suffix}"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        return load_inventory_file(path)
    except BadInputError as exc:
        assert exc.path == str(path)
        assert exc.line is None or exc.line >= 1
        assert str(exc)
        return None


@FAST
@given(yaml_text, st.sampled_from([".yaml", ".ini", ""]))
@example("vars:\n  x_a: &a [*a]\nnodes: {n1: {}}\n", ".yaml")
@example("a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
         "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
         "g: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n", ".yaml")
@example("[" * 5000 + "]" * 5000, ".yaml")
@example("groups: {g: {nodes: 'n[1-99999999]'}}\n", ".yaml")
@example("[g]\nh[1:99999999]\n", ".ini")
@example("[g]\nh[a:c:0]\n", ".ini")
@example("t: !!timestamp 2024-13-45\n", ".yaml")
def test_any_text_loads_or_is_refused_with_file_and_line(text: str, suffix: str) -> None:
    inventory = _load(text, suffix)
    if inventory is not None:
        assert 0 < len(inventory.nodes) <= nodeset.MAX_NODES


@FAST
@given(documents)
def test_any_yaml_document_loads_or_is_refused(doc: Any) -> None:
    import yaml

    inventory = _load(yaml.safe_dump(doc), ".yaml")
    if inventory is not None:
        assert all(isinstance(name, str) for name in inventory.nodes)


@FAST
@given(st.binary(max_size=200))
def test_any_bytes_load_or_are_refused(data: bytes) -> None:
    _load(data, "")


INVENTORY = Inventory(nodes={n: Node(n, groups=("gpu",) if n.startswith("gpu") else ()) for n in
                             [*(f"gpu{i:02d}" for i in range(1, 17)), "login", "spare1"]},
                      groups={"gpu": tuple(f"gpu{i:02d}" for i in range(1, 17)), "spare": ("spare1",)},
                      source="inventory.yaml")
SELECTION = st.text(alphabet="gpun0123456789[]-,!&^@:/* login spare all\x1b%", max_size=40)


@FAST
@given(SELECTION, st.one_of(st.none(), SELECTION))
@example("n[1-99999999]", None)
@example("gpu[01-16]!gpu[1-99999999]", None)
@example("@gpu&gpu[01-04]", "gpu02")
def test_any_selection_selects_or_is_refused(include: str, exclude: str | None) -> None:
    try:
        chosen = select_nodes(INVENTORY, include, exclude)
    except BadInputError as exc:
        assert exc.field in ("-w", "-x")
        return
    assert {n.name for n in chosen} <= set(INVENTORY.nodes)


RANGE = st.tuples(st.integers(0, 300), st.integers(0, 40), st.integers(1, 4), st.sampled_from([0, 2, 3]))


@FAST
@given(st.sampled_from(["n", "gpu", "a-b", "x.y", ""]), st.lists(RANGE, min_size=1, max_size=4),
       st.sampled_from(["", "-ib", ".z"]))
def test_fast_expand_and_fold_agree_with_clustershell(prefix: str, ranges: list[tuple[int, int, int, int]],
                                                      suffix: str) -> None:
    from ClusterShell.NodeSet import NodeSet, NodeSetException

    parts = []
    for start, length, step, pad in ranges:
        first, last = (f"{start:0{pad}d}", f"{start + length:0{pad}d}") if pad else (str(start), str(start + length))
        parts.append(f"{first}-{last}" + (f"/{step}" if step > 1 else ""))
    pattern = f"{prefix}[{','.join(parts)}]{suffix}"
    try:
        expected = list(NodeSet(pattern))
    except NodeSetException:
        assume(False)
        return
    assert nodeset.count(pattern) >= len(expected)
    fast = nodeset.expand(pattern)
    if fast is not None:
        assert fast == expected
    assert fold(expected) == str(NodeSet.fromlist(expected))


@FAST
@given(st.lists(st.from_regex(re.compile(r"[a-c]{0,2}[0-9]{0,3}[a-c.-]{0,2}", re.ASCII), fullmatch=True),
                min_size=1, max_size=30))
def test_fast_fold_agrees_with_clustershell_on_any_names(names: list[str]) -> None:
    from ClusterShell.NodeSet import NodeSet, NodeSetException

    names = [n for n in names if n]
    assume(names)
    try:
        expected = str(NodeSet.fromlist(names))
    except NodeSetException:
        return
    fast = nodeset.fold(names)
    assert fast is None or fast == expected


@FAST
@given(st.text(max_size=300))
@example("\x1b]0;pwned\x07\x1b[2J X")
@example("\ud800 lone surrogate")
def test_any_drain_reason_is_kept_exactly_and_printed_safely(text: str) -> None:
    try:
        reason = require_reason(text)
    except BadInputError:
        assert not bare_reason(text)  # nothing but blanks, or nothing but jueying's own tag or prefix
        return
    assert reason.startswith(bare_reason(text))  # the operator's words first, whitespace runs as one space
    assert is_jueying_reason(reason) and not is_auto_reason(reason)
    if "[" not in text and not text.strip().startswith("jueying:"):
        assert reason.startswith(" ".join(text.split()) + " [jueying:")
    shown = safe(reason)
    assert is_safe(shown)
    assert "\x1b" not in shown and "\n" not in shown
    assert json.loads(json.dumps(reason)) == reason  # --json keeps the exact text
    assert "\x1b" not in safe_block(reason)


JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
                    lambda inner: st.one_of(st.lists(inner, max_size=4),
                                            st.dictionaries(st.text(max_size=12), inner, max_size=6)),
                    max_leaves=30)


def _valid_facts() -> dict[str, Any]:
    path = Path(__file__).resolve().parents[1] / "data" / "facts" / "h100-healthy.json"
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _mutations(doc: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The valid document with a value somewhere inside replaced by arbitrary JSON."""
    paths: list[tuple[Any, ...]] = []

    def walk(value: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*path, key))
        elif isinstance(value, list):
            for index, item in enumerate(value[:2]):
                walk(item, (*path, index))

    walk(doc, ())

    def put(args: tuple[tuple[Any, ...], Any]) -> dict[str, Any]:
        path, new = args
        copy = json.loads(json.dumps(doc))
        if not path:
            return new if isinstance(new, dict) else copy
        target = copy
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = new
        return copy

    return st.tuples(st.sampled_from(paths), JSON).map(put)


@FAST
@given(st.one_of(JSON, _mutations(_valid_facts())))
def test_any_json_is_facts_or_a_facts_error(doc: Any) -> None:
    try:
        facts = Facts.from_document(doc)
    except FactsError as exc:
        assert str(exc)
        return
    assert isinstance(facts, Facts)


@pytest.mark.parametrize("value", ["\x1b[2J", "a\nb", "\r", "\u202e", "\x9b", "\udcff", "\x00", "\x7f"])
def test_safe_leaves_no_control_character(value: str) -> None:
    assert is_safe(safe(value))
    assert safe("plain text, ünïcode ✓") == "plain text, ünïcode ✓"
