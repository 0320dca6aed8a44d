"""README promises of the Exit codes, drain (max_unavailable) and log sections, through the real CLI on real
sshd nodes (builtin backend: jueying's ledger plus a marker on each node).

Twenty nodes, so that the 10 % default (2 nodes) differs from the never-below-one floor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster import SimCluster
from tests.integration.promises_support import (
    audit_rows,
    inventory,
    jy,
    ledger_drained,
    markers,
    reset_node,
)

NODES = 20
Env = dict[str, str]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, nvml_lib: Path) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("promises-cli"), NODES, prefix="node", first_octets=(127, 72),
                    gpu_lib_dir=nvml_lib) as cluster:
        yield cluster


@pytest.fixture
def make_env(sim: SimCluster, tmp_path: Path) -> Iterator[Callable[..., Env]]:
    """make_env(*vars) -> the environment of a jueying process: an inventory of the 20 nodes with these top-level
    variables, and this test's own state database. The nodes are restored after the test."""
    def make(*top_vars: str, name: str = "inventory.yaml") -> Env:
        return {**sim.client_env(), "JUEYING_STATE_DB": str(tmp_path / "state.db"),
                "JUEYING_INVENTORY": str(inventory(sim, tmp_path / name, *top_vars))}

    yield make
    for node in sim.nodes:
        reset_node(node)


def db_of(env: Env) -> Path:
    return Path(env["JUEYING_STATE_DB"])


# ---- Exit codes


def test_status_exits_2_on_a_bad_option_value_before_touching_anything(make_env: Callable[..., Env]) -> None:
    env = make_env()
    for args, says in ((["--sort", "hottest"], "Invalid value for --sort: must be one of state, node, util"),
                       (["-t", "0"], "Invalid value for '-t' / '--timeout'"),
                       (["--fanout", "0"], "Invalid value for '-f' / '--fanout'"),
                       (["--watch", "0.1"], "Invalid value for '--watch'")):
        result = jy(env, "status", *args)
        assert result.rc == 2, (args, result.stderr)
        assert says in result.stderr, (args, result.stderr)
        assert result.stdout == ""
    assert not db_of(env).exists()  # no node was asked, nothing was recorded


def test_a_bad_inventory_exits_2_with_file_line_and_field(make_env: Callable[..., Env], sim: SimCluster,
                                                          tmp_path: Path) -> None:
    env = make_env()
    bad = tmp_path / "bad.yaml"
    bad.write_text("vars:\n  ssh_user: root\ngroups:\n  gpu:\n    nodes: \"node[01-04]\"\n"
                   "    vars: {expected_gpus: eight}\n")
    by_env = {**env, "JUEYING_INVENTORY": str(bad)}
    for command, via in ((["status", "-i", str(bad)], env), (["drain", "node01", "-r", "x"], by_env)):
        result = jy(via, *command)  # the option, and $JUEYING_INVENTORY
        assert result.rc == 2, (command, result.stderr)
        assert result.stderr == f"jueying: {bad}:6: groups.gpu.vars.expected_gpus: must be int, got 'eight'\n"
        assert result.stdout == ""
    assert audit_rows(db_of(env)) == [] and markers(sim) == {}


def test_drain_exits_2_for_an_unknown_node_and_changes_nothing(make_env: Callable[..., Env], sim: SimCluster) -> None:
    env = make_env()
    result = jy(env, "drain", "node01,node99", "-r", "typo test")
    assert result.rc == 2
    assert "not in the inventory: node99" in result.stderr
    assert ledger_drained(db_of(env)) == {} and markers(sim) == {} and audit_rows(db_of(env)) == []


def test_drain_exits_1_when_a_node_is_unreachable(make_env: Callable[..., Env], sim: SimCluster) -> None:
    env = make_env()
    sim.node("node02").stop()
    result = jy(env, "drain", "node[01-02]", "-r", "fan fault", "--json", "--connect-timeout", "5")
    assert result.rc == 1, result.stderr
    doc = result.json()
    rows = {r["node"]: r for r in doc["data"]["nodes"]}
    assert rows["node01"]["result"] == "drained"
    assert rows["node02"]["result"] == "failed" and "node02: unreachable" in rows["node02"]["note"]
    assert doc["status"] == "partial" and [e["node"] for e in doc["errors"]] == ["node02"]
    # what the backend shows: node01 drained (ledger and marker), node02 not
    assert ledger_drained(db_of(env)) == {"node01": "fan fault [jueying:root]"}
    assert markers(sim) == {"node01": "fan fault [jueying:root]\n"}
    assert [(e["node"], e["action"], e["result"]) for e in audit_rows(db_of(env))] == [
        ("node01", "drain", "done"), ("node02", "drain", "failed")]


# ---- max_unavailable through the CLI


def test_the_default_cap_is_10_percent_and_force_is_written_to_the_log(make_env: Callable[..., Env],
                                                                       sim: SimCluster) -> None:
    env = make_env()  # neither max_unavailable nor max_unavailable_pct: 10 % of 20 nodes = 2
    refused = jy(env, "drain", "node[01-03]", "-r", "rack work")
    assert refused.rc == 1 and refused.stdout == ""
    assert refused.stderr == (
        "jueying: draining 3 more node(s) would make 3 of 20 unavailable (0 already unavailable: 0 drained, 0 down), "
        "over max_unavailable 2 (10% of 20, the default); use --force to override (automation never does)\n")
    assert ledger_drained(db_of(env)) == {} and markers(sim) == {} and audit_rows(db_of(env)) == []

    assert jy(env, "drain", "node[01-02]", "-r", "rack work").rc == 0
    again = jy(env, "drain", "node03", "-r", "rack work")  # nodes already drained count
    assert again.rc == 1
    assert ("would make 3 of 20 unavailable (2 already unavailable: 2 drained, 0 down), over max_unavailable 2"
            in again.stderr)
    assert "node03" not in ledger_drained(db_of(env))

    forced = jy(env, "drain", "node03", "-r", "rack work", "--force")
    assert forced.rc == 0 and forced.stdout.startswith("node03: drained:")
    assert ledger_drained(db_of(env))["node03"] == "rack work [jueying:root]"
    entries = audit_rows(db_of(env))
    assert [(e["node"], e["result"], e["message"]) for e in entries] == [
        ("node01", "done", None), ("node02", "done", None), ("node03", "done", "forced past max_unavailable")]
    shown = jy(env, "log", "node03")
    assert shown.rc == 0 and shown.stdout.rstrip().endswith("; forced past max_unavailable")


def test_max_unavailable_pct_and_the_stricter_of_the_two(make_env: Callable[..., Env]) -> None:
    pct = make_env("max_unavailable_pct: 25")  # 25 % of 20 = 5
    refused = jy(pct, "drain", "node[01-06]", "-r", "x", "--dry-run")  # the cap holds for a dry run too
    assert refused.rc == 1 and "over max_unavailable 5 (25% of 20)" in refused.stderr
    fits = jy(pct, "drain", "node[01-05]", "-r", "x", "--dry-run")
    assert fits.rc == 0 and fits.stdout.count(": would drain: ") == 5
    count_stricter = make_env("max_unavailable_pct: 25", "max_unavailable: 3", name="both.yaml")
    refused = jy(count_stricter, "drain", "node[01-04]", "-r", "x", "--dry-run")
    assert refused.rc == 1 and "over max_unavailable 3 (max_unavailable)" in refused.stderr
    pct_stricter = make_env("max_unavailable_pct: 25", "max_unavailable: 8", name="both2.yaml")
    refused = jy(pct_stricter, "drain", "node[01-06]", "-r", "x", "--dry-run")
    assert refused.rc == 1 and "over max_unavailable 5 (25% of 20)" in refused.stderr


def test_the_cap_is_never_below_one_node(make_env: Callable[..., Env], sim: SimCluster) -> None:
    zero = make_env("max_unavailable: 0", name="zero.yaml")
    fits = jy(zero, "drain", "node09", "-r", "bad gpu", "--dry-run")
    assert fits.rc == 0 and fits.stdout.startswith("node09: would drain:")
    env = make_env("max_unavailable_pct: 4")  # 4 % of 20 = 0.8 nodes: still one may be drained
    one = jy(env, "drain", "node07", "-r", "bad gpu")
    assert one.rc == 0 and one.stdout.startswith("node07: drained:")
    assert markers(sim) == {"node07": "bad gpu [jueying:root]\n"}
    two = jy(env, "drain", "node08", "-r", "bad gpu")
    assert two.rc == 1 and ("would make 2 of 20 unavailable (1 already unavailable: 1 drained, 0 down), over "
                            "max_unavailable 1 (4% of 20)" in two.stderr)
    assert list(ledger_drained(db_of(env))) == ["node07"]


# ---- log NODES


def test_log_for_some_nodes_only_newest_last_and_limited(make_env: Callable[..., Env]) -> None:
    env = make_env("max_unavailable: 5")
    for args in (["drain", "node[01-03]", "-r", "one"], ["drain", "node01", "-r", "one, again", "--update-reason"],
                 ["resume", "node[01-02]"]):
        assert jy(env, *args).rc == 0, args
    assert [(e["node"], e["action"]) for e in audit_rows(db_of(env))] == [
        ("node01", "drain"), ("node02", "drain"), ("node03", "drain"), ("node01", "update_reason"),
        ("node01", "resume"), ("node02", "resume")]

    some = jy(env, "log", "node[01,03]", "--json").json()["data"]["entries"]
    assert [(e["node"], e["action"]) for e in some] == [
        ("node01", "drain"), ("node03", "drain"), ("node01", "update_reason"), ("node01", "resume")]
    assert [e["id"] for e in some] == sorted(e["id"] for e in some)  # newest last

    last_two = jy(env, "log", "node[01,03]", "-n", "2", "--json").json()["data"]["entries"]
    assert [(e["node"], e["action"]) for e in last_two] == [("node01", "update_reason"), ("node01", "resume")]

    text = jy(env, "log", "node[02-03]", "-n", "1")
    assert text.rc == 0
    lines = text.stdout.splitlines()
    assert len(lines) == 1 and " resume node02 [builtin] done: " in lines[0]
