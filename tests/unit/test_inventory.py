"""Inventories as operators write them: jueying YAML, Ansible INI and Ansible YAML, where jueying finds
them, and how -w/-x select nodes from them.

Every bad file must be reported as `file:line: field: message` (exit code 2), so the operator can go
straight to the line; these tests check the text the user reads.
"""

from __future__ import annotations

import random
import socket
import string
import textwrap
from collections.abc import Iterable
from pathlib import Path

import pytest
from ClusterShell.NodeSet import NodeSet

from jueying_cli.errors import BadInputError, ExitCode
from jueying_cli.inventory.loader import load_inventory, load_inventory_file
from jueying_cli.inventory.model import Inventory, Node
from jueying_cli.inventory.select import fold, select_nodes


def write(directory: Path, name: str, text: str | bytes) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, name: str = "inventory.yaml") -> Inventory:
    return load_inventory_file(write(tmp_path, name, text))


def load_error(tmp_path: Path, text: str | bytes, name: str = "inventory.yaml") -> tuple[Path, str]:
    """Load a bad inventory: (its path, the error text the user sees); always exit code 2."""
    path = write(tmp_path, name, text)
    with pytest.raises(BadInputError) as info:
        load_inventory_file(path)
    assert info.value.exit_code == 2
    assert info.value.exit_code is ExitCode.BAD_INPUT
    return path, str(info.value)


def assert_reported(message: str, path: Path, line: int, field: str | None, *fragments: str) -> None:
    prefix = f"{path}:{line}: " + (f"{field}: " if field else "")
    assert message.startswith(prefix), f"expected {prefix!r}..., got {message!r}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def names(nodes: Iterable[Node]) -> list[str]:
    return [node.name for node in nodes]


# ================================================================ jueying YAML

CLUSTER = """
vars:
  ssh_user: ops
  expected_gpus: 8
  site: bj1
groups:
  gpu:
    nodes: gpu[001-004]
    vars:
      ssh_user: gpuadmin
      gpu_model: H100
  dgx:
    nodes:
      - dgx[08-10]
      - dgx-spare
    vars:
      ssh_port: 2222
  training:
    children: [gpu, dgx]
    vars:
      role: training
  everything:
    nodes: login01
    children: [training]
nodes:
  gpu003:
    expected_gpus: 7
    address: 10.0.0.3
    ssh_user: root
  dgx[09-10]:
    rack: r2
  login01:
    x_owner: alice
"""


def test_jueying_yaml_nodes_groups_and_variables(tmp_path: Path) -> None:
    inv = load(tmp_path, CLUSTER)

    assert inv.source == str(tmp_path / "inventory.yaml")
    # nodes in the order the file first names them
    assert list(inv.nodes) == ["gpu001", "gpu002", "gpu003", "gpu004", "dgx08", "dgx09", "dgx10", "dgx-spare",
                               "login01"]
    assert inv.groups["gpu"] == ("gpu001", "gpu002", "gpu003", "gpu004")
    assert inv.groups["dgx"] == ("dgx08", "dgx09", "dgx10", "dgx-spare")
    assert inv.groups["training"] == inv.groups["gpu"] + inv.groups["dgx"]
    assert set(inv.groups["everything"]) == {*inv.groups["training"], "login01"}
    assert inv.groups["all"] == tuple(inv.nodes)

    # global < group < node
    assert dict(inv.node("gpu001").vars) == {"ssh_user": "gpuadmin", "expected_gpus": 8, "site": "bj1",
                                             "gpu_model": "H100", "role": "training"}
    gpu003 = inv.node("gpu003")
    assert gpu003.vars["ssh_user"] == "root"
    assert gpu003.expected_gpus == 7
    assert gpu003.address == "10.0.0.3"
    assert inv.node("gpu001").address is None
    assert dict(inv.node("dgx09").vars) == {"ssh_user": "ops", "expected_gpus": 8, "site": "bj1", "ssh_port": 2222,
                                            "role": "training", "rack": "r2"}
    assert "rack" not in inv.node("dgx08").vars
    assert dict(inv.node("login01").vars) == {"ssh_user": "ops", "expected_gpus": 8, "site": "bj1",
                                              "x_owner": "alice"}
    # a node belongs to its groups and, through children, to their parents
    assert set(inv.node("gpu002").groups) == {"gpu", "training", "everything"}
    assert set(inv.node("login01").groups) == {"everything"}
    assert not inv.node("gpu001").is_local


def test_node_order_follows_the_file_whichever_section_comes_first(tmp_path: Path) -> None:
    inv = load(tmp_path, """
        nodes:
          gpu03: {rack: r1}
        groups:
          gpu:
            nodes: gpu[01-04]
        """)
    assert list(inv.nodes) == ["gpu03", "gpu01", "gpu02", "gpu04"]


@pytest.mark.parametrize(("pattern", "expected"), [
    ("gpu[001-128,200]", ["gpu001", "gpu002"] + [f"gpu{i:03d}" for i in range(3, 129)] + ["gpu200"]),
    ("node[8-11]", ["node8", "node9", "node10", "node11"]),
    ("gpu[08-11]", ["gpu08", "gpu09", "gpu10", "gpu11"]),
    ("r[1-2]n[01-02]", ["r1n01", "r1n02", "r2n01", "r2n02"]),
    ("gpu[01-06]!gpu[03-04]", ["gpu01", "gpu02", "gpu05", "gpu06"]),
    ("a01.dc1,b.dc1,c-[7-8].example.com", ["a01.dc1", "b.dc1", "c-7.example.com", "c-8.example.com"]),
])
def test_node_patterns_as_keys_and_in_groups(tmp_path: Path, pattern: str, expected: list[str]) -> None:
    as_key = load(tmp_path, f"nodes:\n  '{pattern}':\n    rack: r9\n")
    assert list(as_key.nodes) == expected
    assert all(node.vars == {"rack": "r9"} for node in as_key.nodes.values())
    in_group = load(tmp_path, f"groups:\n  g:\n    nodes: '{pattern}'\n", name="group.yaml")
    assert list(in_group.nodes) == expected
    assert in_group.groups["g"] == tuple(expected)


def test_padded_range_of_128_plus_one(tmp_path: Path) -> None:
    inv = load(tmp_path, "groups:\n  gpu:\n    nodes: gpu[001-128,200]\n")
    assert len(inv.nodes) == 129
    assert "gpu010" in inv.nodes and "gpu10" not in inv.nodes
    assert fold(inv.nodes) == "gpu[001-128,200]"


def test_a_later_node_entry_overrides_an_earlier_pattern(tmp_path: Path) -> None:
    inv = load(tmp_path, """
        nodes:
          gpu[01-04]:
            rack: r1
            expected_gpus: 8
          gpu02:
            rack: r9
        """)
    assert inv.node("gpu02").vars == {"rack": "r9", "expected_gpus": 8}
    assert inv.node("gpu03").vars == {"rack": "r1", "expected_gpus": 8}


def test_list_of_patterns_in_a_group(tmp_path: Path) -> None:
    inv = load(tmp_path, """
        groups:
          mixed:
            nodes:
              - gpu[1-2]
              - cpu[01-02],login
              - gpu2
        """)
    assert inv.groups["mixed"] == ("gpu1", "gpu2", "cpu01", "cpu02", "login")


def test_child_group_vars_override_parent_vars_wherever_they_are_defined(tmp_path: Path) -> None:
    # The child is written before its parents: its own variables must still win, at every depth.
    inv = load(tmp_path, """
        vars:
          role: global
        groups:
          h100:
            nodes: gpu[1-2]
            vars: {role: h100, gpu_model: H100}
          dgx:
            nodes: gpu3
            children: [h100]
            vars: {role: dgx, rack: r-dgx}
          fleet:
            nodes: login1
            children: [dgx]
            vars: {role: fleet, rack: r-fleet, site: bj1}
        """)
    assert inv.node("gpu1").vars == {"role": "h100", "gpu_model": "H100", "rack": "r-dgx", "site": "bj1"}
    assert inv.node("gpu3").vars == {"role": "dgx", "rack": "r-dgx", "site": "bj1"}
    assert inv.node("login1").vars == {"role": "fleet", "rack": "r-fleet", "site": "bj1"}
    assert inv.groups["fleet"] == ("login1", "gpu3", "gpu1", "gpu2")
    assert set(inv.node("gpu2").groups) == {"h100", "dgx", "fleet"}


def test_a_group_shared_by_two_parents_and_empty_groups(tmp_path: Path) -> None:
    inv = load(tmp_path, """
        groups:
          spares:
            nodes: spare[1-2]
          a:
            children: [spares]
          b:
            children: [spares, a]
          placeholder:
        """)
    assert inv.groups["a"] == ("spare1", "spare2")
    assert inv.groups["b"] == ("spare1", "spare2")
    assert inv.groups["placeholder"] == ()


def test_numeric_strings_and_yes_no_are_accepted_for_ints_and_bools(tmp_path: Path) -> None:
    inv = load(tmp_path, """
        nodes:
          gpu01:
            ssh_port: '2222'
            local: 'yes'
          gpu02:
            ssh_port: 65535
            expected_gpus: 0
            local: false
        """)
    assert inv.node("gpu01").vars == {"ssh_port": 2222, "local": True}
    assert inv.node("gpu01").is_local
    assert inv.node("gpu02").expected_gpus == 0
    assert not inv.node("gpu02").is_local


def test_json_inventory_and_yaml_merge_keys(tmp_path: Path) -> None:
    inv = load(tmp_path, '{"nodes": {"gpu[1-2]": {"rack": "r1"}}}', name="inventory.json")
    assert list(inv.nodes) == ["gpu1", "gpu2"]
    inv = load(tmp_path, """
        nodes:
          gpu1: &defaults
            rack: r1
            ssh_port: 2200
          gpu2:
            <<: *defaults
            rack: r2
        """, name="anchors.yaml")
    assert inv.node("gpu2").vars == {"rack": "r2", "ssh_port": 2200}


# ---------------------------------------------------------------- jueying YAML errors

@pytest.mark.parametrize(("text", "line", "field", "fragments"), [
    pytest.param("nodes:\n  gpu01:\nnode_vars:\n  rack: r1\n", 3, "node_vars",
                 ["unknown top-level key 'node_vars'", "expected vars, groups, nodes"], id="unknown-top-level-key"),
    pytest.param("groups:\n  gpu:\n    nodes: gpu[1-2]\n    vars:\n      ssh_user: a\n      expected_gpu: 8\n",
                 6, "groups.gpu.vars.expected_gpu", ["unknown variable 'expected_gpu'", "did you mean expected_gpus"],
                 id="unknown-variable-suggests"),
    pytest.param("nodes:\n  gpu01:\n    ssh_prot: 22\n", 3, "nodes.gpu01.ssh_prot",
                 ["unknown variable 'ssh_prot'", "did you mean", "ssh_port"], id="typo-ssh-port"),
    pytest.param("nodes:\n  gpu01:\n    adress: 10.0.0.1\n", 3, "nodes.gpu01.adress",
                 ["unknown variable 'adress'", "did you mean address"], id="typo-address"),
    pytest.param("vars:\n  owner: alice\nnodes:\n  gpu01:\n", 2, "vars.owner",
                 ["unknown variable 'owner'", "custom variables start with x_"], id="custom-without-x_"),
    pytest.param("nodes:\n  gpu01:\n    rack: r1\n    ssh_port: \"abc\"\n", 4, "nodes.gpu01.ssh_port",
                 ["must be int, got 'abc'"], id="port-not-a-number"),
    pytest.param("nodes:\n  gpu01:\n    ssh_port: 22.5\n", 3, "nodes.gpu01.ssh_port", ["must be int"],
                 id="port-float"),
    pytest.param("nodes:\n  gpu01:\n    expected_gpus: true\n", 3, "nodes.gpu01.expected_gpus",
                 ["must be int, got True"], id="bool-for-int"),
    pytest.param("nodes:\n  gpu01:\n    expected_gpus: -1\n", 3, "nodes.gpu01.expected_gpus",
                 ["must not be negative"], id="negative-gpus"),
    pytest.param("nodes:\n  gpu01:\n    rack: 12\n", 3, "nodes.gpu01.rack", ["must be str, got 12"],
                 id="int-for-str"),
    pytest.param("nodes:\n  gpu01:\n    local: maybe\n", 3, "nodes.gpu01.local", ["must be bool"],
                 id="not-a-bool"),
    pytest.param("nodes:\n  gpu01:\n    ssh_port: 0\n", 3, "nodes.gpu01.ssh_port", ["port out of range: 0"],
                 id="port-zero"),
    pytest.param("groups:\n  g:\n    nodes: gpu1\n    vars:\n      ssh_port: 65536\n", 5, "groups.g.vars.ssh_port",
                 ["port out of range: 65536"], id="port-too-big"),
    pytest.param("vars:\n  ssh_port: 99999\nnodes:\n  gpu01:\n", 2, "vars.ssh_port", ["port out of range"],
                 id="global-port"),
    pytest.param("nodes:\n  gpu01:\n  gpu[01-03:\n", 3, "nodes", ["bad node pattern 'gpu[01-03'"],
                 id="bad-pattern-key"),
    pytest.param("nodes:\n  gpu[3-1]:\n", 2, "nodes", ["bad node pattern 'gpu[3-1]'"], id="reversed-range"),
    pytest.param("groups:\n  g:\n    nodes:\n      - gpu[1-2]\n      - cpu[1-2\n", 5, "groups.g.nodes[1]",
                 ["bad node pattern 'cpu[1-2'"], id="bad-pattern-in-list"),
    pytest.param("groups:\n  g:\n    nodes: gpu[1-2],,gpu3\n", 3, "groups.g.nodes", ["bad node pattern"],
                 id="bad-pattern-string"),
    pytest.param("groups:\n  g:\n    nodes: ''\n", 3, "groups.g.nodes", ["empty node pattern"], id="empty-pattern"),
    pytest.param("groups:\n  dgx:\n    nodes: gpu1\n  g:\n    nodes: '@dgx'\n", 5, "groups.g.nodes",
                 ["'@dgx'", "@groups are not allowed here, use children"], id="at-group-in-pattern"),
    pytest.param("nodes:\n  gpu[1-2],@dgx:\n", 2, "nodes", ["@groups are not allowed"], id="at-group-in-key"),
    pytest.param("nodes:\n  gpu01: {}\n  gpu;rm -rf:\n", 3, "nodes", ["invalid node name 'gpu;rm -rf'"],
                 id="semicolon"),
    pytest.param("nodes:\n  $(reboot):\n", 2, "nodes", ["invalid node name '$(reboot)'"], id="command-substitution"),
    pytest.param("nodes:\n  gpu`id`:\n", 2, "nodes", ["invalid node name 'gpu`id`'"], id="backticks"),
    pytest.param("nodes:\n  gpu 01:\n", 2, "nodes", ["invalid node name 'gpu 01'"], id="space"),
    pytest.param("nodes:\n  -oProxyCommand=x:\n", 2, "nodes", ["invalid node name '-oProxyCommand=x'"],
                 id="option-injection"),
    pytest.param("groups:\n  g:\n    nodes: [gpu1, 'a|b']\n", 3, "groups.g.nodes[1]", ["invalid node name 'a|b'"],
                 id="pipe-in-list"),
    pytest.param("groups:\n  my group:\n    nodes: gpu1\n", 2, "groups", ["invalid group name 'my group'"],
                 id="group-name-space"),
    pytest.param("nodes:\n  gpu01: {}\n  gpu02: {}\n  gpu01: {rack: r1}\n", 4, "nodes.gpu01",
                 ["duplicate key 'gpu01'", "first on line 2"], id="duplicate-node"),
    pytest.param("groups:\n  g:\n    nodes: gpu1\n    vars:\n      rack: r1\n      rack: r2\n", 6,
                 "groups.g.vars.rack", ["duplicate key 'rack'"], id="duplicate-var"),
    pytest.param("nodes:\n  gpu1:\nnodes:\n  gpu2:\n", 3, "nodes", ["duplicate key 'nodes'"],
                 id="duplicate-section"),
    pytest.param("groups:\n  a:\n    nodes: gpu1\n    children:\n      - b\n      - nope\n  b:\n    nodes: gpu2\n",
                 6, "groups.a.children", ["unknown child group 'nope'"], id="unknown-child"),
    pytest.param("groups:\n  a:\n    nodes: gpu1\n    children: [b]\n  b:\n    children:\n      - c\n"
                 "  c:\n    children:\n      - a\n", 10, "groups.c.children",
                 ["group 'a' contains itself through a -> b -> c -> a"], id="cycle"),
    pytest.param("groups:\n  a:\n    nodes: gpu1\n    children: [a]\n", 4, "groups.a.children",
                 ["group 'a' contains itself through a -> a"], id="self-cycle"),
    pytest.param("groups:\n  a:\n    nodes: gpu1\n    children: b\n", 4, "groups.a.children",
                 ["must be a list of group names"], id="children-not-a-list"),
    pytest.param("groups:\n  a:\n    hosts: gpu1\n", 3, "groups.a.hosts",
                 ["unknown key 'hosts' (expected nodes, vars, children)"], id="unknown-group-key"),
    pytest.param("groups:\n  a:\n    nodes: gpu1\n    vars: [rack]\n", 4, "groups.a.vars",
                 ["must be a mapping of variable: value"], id="vars-not-a-mapping"),
    pytest.param("groups:\n  a:\n    nodes: {gpu1: 1}\n", 3, "groups.a.nodes",
                 ["must be a node pattern or a list of them"], id="group-nodes-mapping"),
    pytest.param("groups:\n  - a\n", 1, "groups", ["must be a mapping of group name"], id="groups-list"),
    pytest.param("vars:\n  rack: r1\nnodes: [gpu1]\n", 3, "nodes", ["must be a mapping of node name"],
                 id="nodes-list"),
    pytest.param("nodes:\n  gpu1: r1\n", 2, "nodes.gpu1", ["must be a mapping of variable: value"],
                 id="node-vars-scalar"),
])
def test_jueying_yaml_errors_name_file_line_and_field(tmp_path: Path, text: str, line: int, field: str,
                                                      fragments: list[str]) -> None:
    path, message = load_error(tmp_path, text)
    assert_reported(message, path, line, field, *fragments)


def test_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, """
        vars:
          ssh_user: ops
        nodes:
          gpu01:
            rack: r1
           bad: [
        """)
    assert_reported(message, path, 6, None, "invalid YAML")


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("nodes:\n  gpu01: {rack: r1\n  gpu02:\n", 3, "expected ',' or '}'"),
    ("nodes:\n  gpu01:\n\track: r1\n", 3, "found character '\\t'"),
])
def test_other_syntax_errors_name_their_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path, message = load_error(tmp_path, text)
    assert_reported(message, path, line, None, "invalid YAML", fragment)


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing here yet\n", "---\n"])
def test_empty_inventory(tmp_path: Path, text: str) -> None:
    path, message = load_error(tmp_path, text)
    assert_reported(message, path, 1, None, "inventory is empty")


def test_inventory_without_nodes(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, "vars:\n  ssh_user: ops\ngroups:\n  empty:\n")
    assert_reported(message, path, 1, None, "inventory defines no nodes")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, "- gpu01\n- gpu02\n")
    assert_reported(message, path, 1, None, "must be a mapping at the top level")


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    text = "nodes:\n  gpu01:\n    rack: r1\n  caf\xe9:\n".encode("latin-1")
    path, message = load_error(tmp_path, text)
    assert_reported(message, path, 4, None, "not UTF-8")
    ini_path, ini_message = load_error(tmp_path, b"[gpu]\ngpu01\n# \xff\xfe\n", name="hosts.ini")
    assert_reported(ini_message, ini_path, 3, None, "not UTF-8")


def test_unreadable_path_is_reported(tmp_path: Path) -> None:
    (tmp_path / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    with pytest.raises(BadInputError) as info:
        load_inventory_file(tmp_path / "gone.yaml")
    assert str(info.value).startswith(f"{tmp_path / 'gone.yaml'}: cannot read")
    assert info.value.exit_code == 2


# ================================================================ Ansible INI

ANSIBLE_INI = """
# Ansible inventory, unchanged
; semicolon comment
login01 ansible_host=192.0.2.10

[gpu]
gpu[01:04] ansible_user=ops
gpu05 ansible_host="10.0.0.5" ansible_port='2222' ansible_ssh_private_key_file="/keys/id ed25519" gpu_type=h100 # x

[edge]
edge-[a:c]

[even]
n[0:10:2]

[gpu:vars]
expected_gpus=8
ansible_become = yes
ansible_ssh_common_args = -o ProxyCommand="ssh -W %h:%p bastion"

[cluster:children]
gpu
edge

# parent vars come after the child's in this file: the child's still win
[cluster:vars]
site = bj1
expected_gpus = 4
rack="r 1"

[all:vars]
ansible_user=root
ansible_port=22
"""


def test_ansible_ini(tmp_path: Path) -> None:
    inv = load(tmp_path, ANSIBLE_INI, name="hosts.ini")
    assert list(inv.nodes) == ["login01", "gpu01", "gpu02", "gpu03", "gpu04", "gpu05", "edge-a", "edge-b", "edge-c",
                               "n0", "n2", "n4", "n6", "n8", "n10"]
    assert inv.groups["gpu"] == ("gpu01", "gpu02", "gpu03", "gpu04", "gpu05")
    assert inv.groups["edge"] == ("edge-a", "edge-b", "edge-c")
    assert inv.groups["cluster"] == inv.groups["gpu"] + inv.groups["edge"]
    assert inv.groups["all"] == tuple(inv.nodes)

    assert inv.node("login01").vars == {"address": "192.0.2.10", "ssh_user": "root", "ssh_port": 22}
    assert inv.node("login01").groups == ("ungrouped",)
    assert inv.groups["ungrouped"] == ("login01",)
    assert inv.node("gpu01").vars == {
        "ssh_user": "ops", "ssh_port": 22, "expected_gpus": 8, "ansible_become": "yes",
        "ansible_ssh_common_args": '-o ProxyCommand="ssh -W %h:%p bastion"', "site": "bj1", "rack": "r 1"}
    assert inv.node("gpu05").vars == {
        "address": "10.0.0.5", "ssh_port": 2222, "ssh_identity_file": "/keys/id ed25519", "gpu_type": "h100",
        "ssh_user": "root", "expected_gpus": 8, "ansible_become": "yes",
        "ansible_ssh_common_args": '-o ProxyCommand="ssh -W %h:%p bastion"', "site": "bj1", "rack": "r 1"}
    assert inv.node("edge-b").vars == {"ssh_user": "root", "ssh_port": 22, "site": "bj1", "expected_gpus": 4,
                                       "rack": "r 1"}
    assert set(inv.node("edge-c").groups) == {"edge", "cluster"}
    assert inv.node("n10").vars == {"ssh_user": "root", "ssh_port": 22}


@pytest.mark.parametrize(("line", "expected"), [
    ("gpu[01:50]", [f"gpu{i:02d}" for i in range(1, 51)]),
    ("gpu[1:3]", ["gpu1", "gpu2", "gpu3"]),
    ("gpu[8:11].dc1", ["gpu8.dc1", "gpu9.dc1", "gpu10.dc1", "gpu11.dc1"]),
    ("db-[a:c]", ["db-a", "db-b", "db-c"]),
    ("x[0:10:2]", ["x0", "x2", "x4", "x6", "x8", "x10"]),
    ("x[a:e:2]", ["xa", "xc", "xe"]),
    ("r[1:2]n[01:02]", ["r1n01", "r1n02", "r2n01", "r2n02"]),
    ("10.0.0.[1:3]", ["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
])
def test_ansible_ini_host_ranges(tmp_path: Path, line: str, expected: list[str]) -> None:
    inv = load(tmp_path, f"[g]\n{line}\n", name="hosts.ini")
    assert list(inv.nodes) == expected
    assert inv.groups["g"] == tuple(expected)


@pytest.mark.parametrize("name", ["hosts", "hosts.ini", "inventory.cfg", "inventory.txt"])
def test_ansible_ini_with_only_ungrouped_hosts(tmp_path: Path, name: str) -> None:
    inv = load(tmp_path, "gpu01\ngpu02 ansible_port=2222\n# done\n", name=name)
    assert list(inv.nodes) == ["gpu01", "gpu02"]
    assert inv.node("gpu02").vars == {"ssh_port": 2222}


def test_ansible_ini_without_suffix_and_with_sections(tmp_path: Path) -> None:
    inv = load(tmp_path, "# comment\n[gpu]\ngpu[1:2]\n", name="hosts")
    assert list(inv.nodes) == ["gpu1", "gpu2"]


def test_a_host_in_two_groups_gets_both_and_its_vars_merge(tmp_path: Path) -> None:
    inv = load(tmp_path, """
        [a]
        gpu1 rack=r1
        [b]
        gpu1 ansible_user=ops
        gpu2
        """, name="hosts.ini")
    assert list(inv.nodes) == ["gpu1", "gpu2"]
    assert set(inv.node("gpu1").groups) == {"a", "b"}
    assert inv.node("gpu1").vars == {"rack": "r1", "ssh_user": "ops"}


@pytest.mark.parametrize(("text", "line", "field", "fragments"), [
    pytest.param("[gpu]\ngpu01\ngpu[5:1]\n", 3, "[gpu]", ["bad host range '[5:1]'"], id="reversed-range"),
    pytest.param("[gpu]\ngpu[01:a]\n", 2, "[gpu]", ["bad host range '[01:a]'"], id="mixed-range"),
    pytest.param("[gpu]\ngpu01 ansible_port=abc\n", 2, "[gpu] gpu01.ansible_port", ["must be int, got 'abc'"],
                 id="port-not-a-number"),
    pytest.param("[gpu]\ngpu[01:03] ansible_port=99999\n", 2, "[gpu] gpu[01:03].ansible_port",
                 ["port out of range: 99999"], id="port-out-of-range"),
    pytest.param("[gpu]\ngpu01\n[gpu:vars]\nansible_port=0\n", 4, "[gpu:vars].ansible_port",
                 ["port out of range: 0"], id="group-port"),
    pytest.param("[gpu]\ngpu01 rack\n", 2, "[gpu] gpu01", ["expected key=value, got 'rack'"], id="host-var-no-value"),
    pytest.param("[gpu]\ngpu01\n[gpu:vars]\n\nrack\n", 5, "[gpu:vars]", ["expected key=value"],
                 id="group-var-no-value"),
    pytest.param("[gpu\ngpu01\n", 1, None, ["bad section header '[gpu'"], id="bad-header"),
    pytest.param("[gpu]\ngpu01 ansible_user='unterminated\n", 2, "[gpu]", ["cannot parse line"], id="open-quote"),
    pytest.param("[gpu]\ngpu01\n$(reboot)\n", 3, "[gpu]", ["invalid node name '$(reboot)'"], id="command-subst"),
    pytest.param("[gpu]\ngpu;reboot\n", 2, "[gpu]", ["invalid node name 'gpu;reboot'"], id="semicolon"),
    pytest.param("[my gpus]\ngpu01\n", 1, None, ["bad section header '[my gpus]'"], id="bad-group-name"),
    pytest.param("[gpu$]\ngpu01\n", 1, "[gpu$]", ["invalid group name 'gpu$'"], id="bad-group-char"),
    pytest.param("[gpu]\ngpu01\n[gpu:children]\ndgx\n", 4, "[gpu:children]", ["unknown child group 'dgx'"],
                 id="unknown-child"),
    pytest.param("[a]\ngpu1\n[a:children]\nb\n[b:children]\na\n", 6, "[b:children]",
                 ["group 'a' inside 'b' makes a loop"], id="cycle"),
    pytest.param("# only\n; comments\n[gpu]\n", 1, None, ["inventory defines no hosts"], id="no-hosts"),
])
def test_ansible_ini_errors(tmp_path: Path, text: str, line: int, field: str | None, fragments: list[str]) -> None:
    path, message = load_error(tmp_path, text, name="hosts.ini")
    assert_reported(message, path, line, field, *fragments)


# ================================================================ Ansible YAML

ANSIBLE_YAML = """
all:
  vars:
    ansible_user: root
    site: bj1
  hosts:
    login01:
      ansible_host: 192.0.2.10
  children:
    cluster:
      vars:
        expected_gpus: 4
        rack: r-cluster
      children:
        gpu:
          hosts:
            gpu[01:03]:
            gpu04:
              ansible_port: 2222
              ansible_ssh_private_key_file: /keys/gpu04
          vars:
            expected_gpus: 8
            ansible_user: ops
          children:
            h100:
              hosts:
                gpu01:
              vars:
                gpu_model: H100
        edge:
          hosts:
            edge-[a:b]:
    storage:
      hosts:
        gpu01:
        nas01:
          custom_thing: [1, 2]
"""


def test_ansible_yaml(tmp_path: Path) -> None:
    inv = load(tmp_path, ANSIBLE_YAML, name="hosts.yml")
    assert list(inv.nodes) == ["login01", "gpu01", "gpu02", "gpu03", "gpu04", "edge-a", "edge-b", "nas01"]
    assert inv.groups["gpu"] == ("gpu01", "gpu02", "gpu03", "gpu04")
    assert inv.groups["cluster"] == ("gpu01", "gpu02", "gpu03", "gpu04", "edge-a", "edge-b")
    assert inv.groups["storage"] == ("gpu01", "nas01")
    assert inv.groups["h100"] == ("gpu01",)
    assert inv.groups["all"] == tuple(inv.nodes)

    assert inv.node("login01").vars == {"ssh_user": "root", "site": "bj1", "address": "192.0.2.10"}
    assert inv.node("gpu01").vars == {"ssh_user": "ops", "site": "bj1", "expected_gpus": 8, "rack": "r-cluster",
                                      "gpu_model": "H100"}
    assert inv.node("gpu04").vars == {"ssh_user": "ops", "site": "bj1", "expected_gpus": 8, "rack": "r-cluster",
                                      "ssh_port": 2222, "ssh_identity_file": "/keys/gpu04"}
    assert inv.node("edge-a").vars == {"ssh_user": "root", "site": "bj1", "expected_gpus": 4, "rack": "r-cluster"}
    assert inv.node("nas01").vars == {"ssh_user": "root", "site": "bj1", "custom_thing": [1, 2]}
    assert {"gpu", "cluster", "storage", "h100"} <= set(inv.node("gpu01").groups)


def test_ansible_yaml_without_suffix(tmp_path: Path) -> None:
    inv = load(tmp_path, "all:\n  hosts:\n    gpu[1:2]:\n", name="hosts")
    assert list(inv.nodes) == ["gpu1", "gpu2"]


@pytest.mark.parametrize(("text", "line", "field", "fragments"), [
    pytest.param("all:\n  hosts:\n    gpu[01:02]:\n      ansible_port: x\n", 4, "all.hosts.gpu[01:02].ansible_port",
                 ["must be int, got 'x'"], id="bad-port"),
    pytest.param("all:\n  children:\n    gpu:\n      hosts:\n        gpu01:\n        'gpu;reboot':\n", 6, "gpu.hosts",
                 ["invalid node name 'gpu;reboot'"], id="bad-host-name"),
    pytest.param("all:\n  hosts:\n    gpu[3:1]:\n", 3, "all.hosts", ["bad host range '[3:1]'"], id="bad-range"),
    pytest.param("all:\n  hosts: [gpu01]\n", 2, "all.hosts", ["must be a mapping of host to variables"],
                 id="hosts-list"),
    pytest.param("all:\n  hosts:\n    gpu01:\n  children: [gpu]\n", 4, "all.children",
                 ["must be a mapping of group name to group"], id="children-list"),
    pytest.param("all:\n  vars:\n    expected_gpus: yes\n  hosts:\n    gpu01:\n", 3, "all.vars.expected_gpus",
                 ["must be int, got True"], id="bool-for-int"),
    pytest.param("all:\n  children:\n    gpu:\n", 1, None, ["inventory defines no hosts"], id="no-hosts"),
])
def test_ansible_yaml_errors(tmp_path: Path, text: str, line: int, field: str | None, fragments: list[str]) -> None:
    path, message = load_error(tmp_path, text, name="hosts.yaml")
    assert_reported(message, path, line, field, *fragments)


# ================================================================ Ansible's own rules
# (tests/integration/test_ansible_oracle.py checks them against ansible-inventory itself)

@pytest.mark.parametrize(("line", "expected"), [
    ("wrap[y:B]", ["wrapy", "wrapz", "wrapA", "wrapB"]),
    ("pad[001:010:3]", ["pad001", "pad004", "pad007", "pad010"]),
    ("gpu[1:2]:2222", ["gpu1", "gpu2"]),
    ("[fe80::1]:2022", ["fe80::1"]),
    ("2001:db8::[1:2]", ["2001:db8::1", "2001:db8::2"]),
])
def test_ansible_host_patterns(tmp_path: Path, line: str, expected: list[str]) -> None:
    inv = load(tmp_path, f"[g]\n{line}\n", name="hosts.ini")
    assert list(inv.nodes) == expected
    assert all(inv.node(n).vars.get("ssh_port") == (int(line.rsplit(":", 1)[1]) if "]:" in line else None)
               for n in expected)


@pytest.mark.parametrize(("line", "fragment"), [
    ("db-[a:f:0]", "bad host range '[a:f:0]': the step must be a whole number of at least 1"),
    ("db-[a:f:-1]", "bad host range '[a:f:-1]'"),
    ("db-[ab:d]", "both be numbers or both single letters"),
    ("gpu[01:100]", "zero-padded begin needs an end of the same width"),
    ("gpu[1:2", "bad host pattern 'gpu[1:2': unbalanced [ ]"),
    ("gpu01:", "a ':' at the end is reserved for a port"),
])
def test_ansible_bad_host_patterns_name_the_line(tmp_path: Path, line: str, fragment: str) -> None:
    path, message = load_error(tmp_path, f"[g]\nok1\n{line}\n", name="hosts.ini")
    assert message.startswith(f"{path}:3: "), message
    assert fragment in message


def test_ansible_ini_values_are_typed_as_ansible_types_them(tmp_path: Path) -> None:
    inv = load(tmp_path, """
        [g]
        h1 a=True b=007 c=[1,2] d="'x y'" e=1,2 f=x#cut g=never
        [g:vars]
        v1 = foo # stays
        v2 = 'bar' # goes
        v3 = 1_000
        """, name="hosts.ini")
    assert inv.node("h1").vars == {"a": True, "b": "007", "c": [1, 2], "d": "x y", "e": [1, 2], "f": "x",
                                   "v1": "foo # stays", "v2": "bar", "v3": 1000}


def test_ansible_precedence_depth_priority_name_and_group_vars_files(tmp_path: Path) -> None:
    write(tmp_path, "group_vars/all.yml", "site: file-all\n")
    write(tmp_path, "group_vars/zulu/10.yml", "from_dir: 1\n")
    write(tmp_path, "host_vars/n2", "ansible_host: 10.0.0.2\n")
    inv = load(tmp_path, """
        [zulu]
        n1
        n2 ansible_host=10.9.9.9
        [alpha]
        n1
        n2
        [zulu:vars]
        color=zulu
        site=zulu
        [alpha:vars]
        color=alpha
        [prio]
        n2
        [prio:vars]
        color=prio
        ansible_group_priority=50
        """, name="hosts.ini")
    assert inv.node("n1").vars == {"color": "zulu", "site": "file-all", "from_dir": 1}
    assert inv.node("n2").vars == {"color": "prio", "site": "file-all", "from_dir": 1, "address": "10.0.0.2"}


def test_ansible_connection_local_and_the_ssh_spellings(tmp_path: Path) -> None:
    inv = load(tmp_path, """
        [ctl]
        ctl1 ansible_connection=local
        ctl2 ansible_host=10.0.0.2
        [ctl:vars]
        ansible_ssh_host=10.1.1.1
        ansible_connection=ssh
        """, name="hosts.ini")
    assert inv.node("ctl1").is_local
    assert inv.node("ctl1").vars == {"address": "10.1.1.1", "local": True}
    assert inv.node("ctl2").vars == {"address": "10.1.1.1", "local": False}


def test_ansible_directory_ungrouped_and_selection(tmp_path: Path) -> None:
    write(tmp_path, "inv/b.yml", "gpu:\n  hosts:\n    gpu02:\n")
    write(tmp_path, "inv/a.ini", "lonely\n[gpu]\ngpu01\n[fe80::1]:22\n")
    write(tmp_path, "inv/notes.txt", "not read\n")
    write(tmp_path, "inv/group_vars/gpu.yml", "expected_gpus: 8\n")
    inv = load_inventory_file(tmp_path / "inv")
    assert list(inv.nodes) == ["lonely", "gpu01", "fe80::1", "gpu02"]
    assert inv.groups["ungrouped"] == ("lonely",)
    assert names(select_nodes(inv, "@ungrouped")) == ["lonely"]
    assert names(select_nodes(inv, "@gpu", "fe80::1")) == ["gpu01", "gpu02"]
    assert inv.node("gpu02").vars == {"expected_gpus": 8}


@pytest.mark.parametrize(("files", "where", "fragment"), [
    ({"hosts.ini": "[g]\nw1 ansible_connection=winrm\n"}, "hosts.ini:2: [g] w1.ansible_connection:",
     "jueying connects over SSH or runs locally"),
    ({"hosts.ini": "[g]\nw1 ansible_host='{{ x }}'\n"}, "hosts.ini:2: [g] w1.ansible_host:",
     "does not evaluate Jinja templates"),
    ({"hosts.ini": "[g]\nw1\n", "group_vars/g.yml": "# g\n\nansible_port: x\n"},
     "group_vars/g.yml:3: g.ansible_port:", "must be int"),
    ({"hosts.ini": "[g]\nw1\n", "group_vars/g.yml": "$ANSIBLE_VAULT;1.1;AES256\n3633\n"},
     "group_vars/g.yml:1:", "ansible-vault"),
    ({"hosts.ini": "[g]\nw1\n[g:vars]\nansible_group_priority=high\n"},
     "hosts.ini:4: [g:vars].ansible_group_priority:", "must be a whole number"),
])
def test_ansible_refusals_name_file_and_line(tmp_path: Path, files: dict[str, str], where: str,
                                             fragment: str) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    with pytest.raises(BadInputError) as info:
        load_inventory_file(tmp_path / "hosts.ini")
    assert str(info.value).startswith(f"{tmp_path}/{where} "), str(info.value)
    assert fragment in str(info.value)


def test_yaml_groups_named_like_jueying_sections_are_ansible(tmp_path: Path) -> None:
    inv = load(tmp_path, "nodes:\n  hosts:\n    n1:\ngroups:\n  children:\n    nodes:\n")
    assert list(inv.nodes) == ["n1"]
    assert inv.groups["groups"] == ("n1",)


# ================================================================ where the inventory comes from

@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A working directory, an XDG config home and a home directory of our own; no $JUEYING_INVENTORY."""
    if Path("/etc/jueying/inventory.yaml").is_file():
        pytest.skip("this machine has /etc/jueying/inventory.yaml, which would be found last")
    dirs = {name: tmp_path / name for name in ("cwd", "xdg", "home", "elsewhere")}
    for directory in dirs.values():
        directory.mkdir()
    monkeypatch.chdir(dirs["cwd"])
    monkeypatch.setenv("XDG_CONFIG_HOME", str(dirs["xdg"]))
    monkeypatch.setenv("HOME", str(dirs["home"]))
    monkeypatch.delenv("JUEYING_INVENTORY", raising=False)
    return dirs


def only_node(inv: Inventory) -> str:
    assert len(inv.nodes) == 1, list(inv.nodes)
    return next(iter(inv.nodes))


def test_lookup_order(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write(places["elsewhere"], "explicit.yaml", "nodes:\n  from-explicit:\n")
    from_env = write(places["elsewhere"], "env.yaml", "nodes:\n  from-env:\n")
    in_cwd = write(places["cwd"], "inventory.yaml", "nodes:\n  from-cwd:\n")
    in_xdg = write(places["xdg"], "jueying/inventory.yaml", "nodes:\n  from-xdg:\n")
    monkeypatch.setenv("JUEYING_INVENTORY", str(from_env))

    assert only_node(load_inventory(str(explicit))) == "from-explicit"
    assert only_node(load_inventory(None)) == "from-env"
    monkeypatch.setenv("JUEYING_INVENTORY", "")  # set but empty: as if unset
    assert only_node(load_inventory(None)) == "from-cwd"
    assert load_inventory(None).source == "inventory.yaml"
    in_cwd.unlink()
    inv = load_inventory(None)
    assert only_node(inv) == "from-xdg"
    assert inv.source == str(in_xdg)
    in_xdg.unlink()
    assert load_inventory(None).source is None  # the embedded local default


def test_xdg_config_home_defaults_to_dot_config(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    write(places["home"], ".config/jueying/inventory.yaml", "nodes:\n  from-home-config:\n")
    assert only_node(load_inventory()) == "from-home-config"


def test_explicit_inventory_may_be_ini_and_start_with_tilde(places: dict[str, Path]) -> None:
    write(places["home"], "clusters/a.ini", "[gpu]\ngpu[1:2]\n")
    write(places["cwd"], "inventory.yaml", "nodes:\n  from-cwd:\n")
    assert list(load_inventory("~/clusters/a.ini").nodes) == ["gpu1", "gpu2"]


def test_missing_explicit_inventory_is_an_error_naming_it(places: dict[str, Path]) -> None:
    write(places["cwd"], "inventory.yaml", "nodes:\n  from-cwd:\n")  # never a silent fallback
    missing = places["elsewhere"] / "nope.yaml"
    with pytest.raises(BadInputError) as info:
        load_inventory(str(missing))
    assert str(info.value) == f"{missing}: inventory file not found (from -i/--inventory)"
    assert info.value.exit_code == 2


def test_missing_inventory_from_environment_is_an_error_naming_it(places: dict[str, Path],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    missing = places["elsewhere"] / "gone.yaml"
    monkeypatch.setenv("JUEYING_INVENTORY", str(missing))
    with pytest.raises(BadInputError) as info:
        load_inventory(None)
    assert str(info.value) == f"{missing}: inventory file not found (from JUEYING_INVENTORY)"
    assert info.value.exit_code == 2


def test_a_bad_default_inventory_is_an_error_not_a_fallback(places: dict[str, Path]) -> None:
    bad = write(places["cwd"], "inventory.yaml", "nodes:\n  gpu01:\n    sshport: 22\n")
    with pytest.raises(BadInputError) as info:
        load_inventory(None)
    assert str(info.value).startswith(f"{bad.name}:3: nodes.gpu01.sshport: unknown variable 'sshport'")


def test_no_inventory_at_all_is_this_machine(places: dict[str, Path]) -> None:
    inv = load_inventory()
    name = socket.gethostname()
    assert list(inv.nodes) == [name]
    node = inv.node(name)
    assert node.vars == {"local": True}
    assert node.is_local
    assert inv.source is None
    assert names(select_nodes(inv)) == [name]
    assert names(select_nodes(inv, "@local")) == [name]
    assert names(select_nodes(inv, name)) == [name]


# ================================================================ selection (-w / -x)

@pytest.fixture
def cluster(tmp_path: Path) -> Inventory:
    return load(tmp_path, """
        groups:
          gpu:
            nodes: gpu[001-016]
          dgx:
            nodes: gpu[009-016]
          login:
            nodes: login[1-2]
          hpc:
            children: [gpu, login]
        """)


GPUS = [f"gpu{i:03d}" for i in range(1, 17)]


@pytest.mark.parametrize(("include", "exclude", "expected"), [
    (None, None, [*GPUS, "login1", "login2"]),
    ("gpu[001-003,010]", None, ["gpu001", "gpu002", "gpu003", "gpu010"]),
    ("@dgx", None, GPUS[8:]),
    ("@all", None, [*GPUS, "login1", "login2"]),
    ("@gpu!@dgx", None, GPUS[:8]),
    ("@gpu&gpu[007-010]", None, ["gpu007", "gpu008", "gpu009", "gpu010"]),
    ("gpu[001-010]^@dgx", None, GPUS[:8] + GPUS[10:]),
    ("login2,gpu001", None, ["gpu001", "login2"]),  # always in inventory order
    ("@hpc", None, [*GPUS, "login1", "login2"]),
    (None, "@dgx,login1", [*GPUS[:8], "login2"]),
    ("@gpu", "gpu[002-016]", ["gpu001"]),
    ("@login", "@login", []),
])
def test_selection(cluster: Inventory, include: str | None, exclude: str | None, expected: list[str]) -> None:
    assert names(select_nodes(cluster, include, exclude)) == expected


def test_selected_nodes_carry_their_variables_and_fold_back(cluster: Inventory) -> None:
    selected = select_nodes(cluster, "gpu[001-003,010]")
    assert all(node.groups[0] == "gpu" for node in selected)
    assert fold(names(selected)) == "gpu[001-003,010]"
    assert fold(["login2", "gpu002", "gpu001", "gpu003"]) == "gpu[001-003],login2"


@pytest.mark.parametrize(("include", "exclude", "expected"), [
    ("gpu[015-017]", None, "-w: not in the inventory: gpu017"),
    ("gpu001,gpu17,gpu[100-102]", None, "-w: not in the inventory: gpu[17,100-102]"),
    ("gpu1", None, "-w: not in the inventory: gpu1"),
    ("@dgxx", None, "-w: no such group: @dgxx (the inventory has @all, @dgx, @gpu, @hpc, @login, @ungrouped)"),
    ("@gpu!@nope", None, "-w: no such group: @nope"),
    (None, "@logins", "-x: no such group: @logins"),
    ("", None, "-w: empty node set"),
    ("   ", None, "-w: empty node set"),
    ("@gpu", "", "-x: empty node set"),
    ("gpu[001-", None, "-w: bad node set 'gpu[001-'"),
    ("gpu001,,gpu002", None, "-w: bad node set"),
    ("@gpu&", None, "-w: bad node set"),
    ("gpu[010-001]", None, "-w: bad node set"),
    ("@slurm:gpu", None, "-w: bad node set '@slurm:gpu': no group source 'slurm'"),
])
def test_bad_selection_is_an_error(cluster: Inventory, include: str | None, exclude: str | None,
                                   expected: str) -> None:
    with pytest.raises(BadInputError) as info:
        select_nodes(cluster, include, exclude)
    assert str(info.value).startswith(expected), str(info.value)
    assert info.value.exit_code == 2


def random_hostnames(count: int, seed: int = 7) -> list[str]:
    """Names as they come from a CMDB, not from a naming scheme: nothing to fold."""
    rng = random.Random(seed)
    found: dict[str, None] = {}
    while len(found) < count:
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 10)))
        kind = rng.randrange(3)
        if kind == 0:
            found[word] = None
        elif kind == 1:
            found[f"{word}-{rng.randint(0, 99999)}"] = None
        else:
            found[f"{word}.{rng.choice(['bj', 'sh', 'sz'])}.example.com"] = None
    return list(found)


@pytest.mark.timeout(60)
def test_thousands_of_irregular_names_select_and_fold(tmp_path: Path) -> None:
    hostnames = random_hostnames(1200)
    text = "nodes:\n" + "".join(f"  {name}:\n" for name in hostnames)
    text += "groups:\n  odd:\n    nodes:\n" + "".join(f"      - {name}\n" for name in hostnames[1::2])
    inv = load(tmp_path, text)
    assert list(inv.nodes) == hostnames

    folded = fold(hostnames)
    assert set(NodeSet(folded)) == set(hostnames)
    assert names(select_nodes(inv, folded)) == hostnames

    rng = random.Random(11)
    wanted = rng.sample(hostnames, 700)
    dropped = set(rng.sample(wanted, 50))
    selected = names(select_nodes(inv, ",".join(wanted), ",".join(sorted(dropped))))
    assert selected == [name for name in hostnames if name in set(wanted) - dropped]
    assert names(select_nodes(inv, None, "@odd")) == hostnames[0::2]
    assert names(select_nodes(inv, fold(wanted), "@odd")) == [n for n in hostnames[0::2] if n in set(wanted)]

    with pytest.raises(BadInputError) as info:
        select_nodes(inv, ",".join([*wanted[:300], "zz-not-there"]))
    assert str(info.value) == "-w: not in the inventory: zz-not-there"


def test_an_unknown_name_in_exclude_is_an_error_not_a_silent_no_op(cluster: Inventory) -> None:
    with pytest.raises(BadInputError) as err:
        select_nodes(cluster, "@login", "not-a-node")
    assert "not in the inventory: not-a-node" in str(err.value) and err.value.exit_code == 2
