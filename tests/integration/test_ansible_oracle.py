"""Ansible inventories read as Ansible reads them, with ansible-core's own `ansible-inventory -i F --list` as
the oracle, on the corpus in tests/data/ansible/.

For every inventory both must agree on membership (every group, flattened through its children, and `all` and
`ungrouped`) and on every host's variables, compared in Ansible's terms: jueying's `address`, `ssh_user`,
`ssh_port`, `ssh_identity_file` and `local` are spelled `ansible_host`, `ansible_user`, `ansible_port`,
`ansible_ssh_private_key_file` and `ansible_connection=local`; on Ansible's side each of those is the value its
ssh connection plugin would use (the `ansible_ssh_*` spelling read last, so winning), and jueying's known
variables are typed as jueying types them (`rack=1` is the rack "1", `expected_gpus: "8"` the number 8).

REJECTED: inventories both refuse (ansible-core fails with INVENTORY_ANY_UNPARSED_IS_FAILED; jueying names
file and line, never a traceback). DIFFERENCES: where jueying deliberately differs (README, "Inventory"):
each one is checked to really differ, so the list stays true.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from jueying_cli.errors import BadInputError
from jueying_cli.inventory.loader import load_inventory_file
from jueying_cli.inventory.model import KNOWN_VARS, Inventory
from tests.conftest import run_jueying

CORPUS = Path(__file__).resolve().parents[1] / "data" / "ansible"

# (source, what it covers) -- the first line of each file says it at more length
ACCEPTED: list[tuple[str, str]] = [
    ("01-ini-basics/hosts.ini", "ungrouped hosts, comments, [g:vars], [all:vars], host vars win"),
    ("02-ini-ranges/hosts", "numeric/padded/stepped/letter/upper-case/a..Z ranges, several per name, IPv4"),
    ("03-ini-children/hosts.ini", "children declared later, [g:vars] first, two parents, depth order"),
    ("04-ini-values/hosts.ini", "literal_eval types: bools, None, 007, 1_000, lists, dicts, sets, quotes, #"),
    ("05-ini-ports/hosts.ini", "host:port, range:port, [v6]:port, [name]:port, IPv6, first port counts"),
    ("06-ini-local/hosts.ini", "ansible_connection local/ssh/smart, host over group, name order"),
    ("07-ini-priority/hosts.ini", "ansible_group_priority beats name, never depth"),
    ("08-ini-name-order/hosts.ini", "same depth: name order, not file order"),
    ("09-ini-aliases/hosts.ini", "ansible_ssh_host/_user/_port/_private_key_file beat the short names"),
    ("10-ini-group-vars/hosts.ini", "group_vars/ (yml, no ext), host_vars/ files and directory, precedence"),
    ("11-yaml-basics/hosts.yml", "all: hosts, vars, children; nested groups; host in several groups"),
    ("12-yaml-no-all/inventory.yaml", "top-level groups without all:"),
    ("13-yaml-forms/hosts.yaml", "string hosts/children, empty groups, host:port keys, YAML types"),
    ("14-yaml-priority/hosts.yml", "priorities (string, negative), group_vars priority is only a variable"),
    ("15-yaml-group-vars-dir/hosts.yml", "group_vars/GROUP/ directory, skipped files, host_vars JSON"),
    ("16-dir-mixed/inventory", "inventory directory: INI, YAML, no-ext, subdirectory, ignored files"),
    ("17-dir-order/inventory", "directory files in order: later values win, cross-file children, ports"),
    ("18-json/hosts.json", "a JSON inventory"),
    ("19-ini-all-ungrouped/hosts", "[all], [ungrouped], [ungrouped:vars], [all:children]"),
    ("20-yaml-vars-everywhere/hosts.yml", "vars at all/parent/child/grandchild/host, sibling tie by name"),
    ("21-ini-host-repeat/hosts.ini", "a host on several lines: vars merge, later line wins"),
    ("22-yaml-dict-replace/hosts.yml", "dict values replaced, not merged"),
    ("23-ini-jueying-vars/hosts.ini", "jueying's own variables typed as jueying wants them"),
    ("24-yaml-no-ext/hosts", "YAML without extension"),
    ("25-ini-no-ext/inventory", "INI without extension, starting with host:port"),
]

# (source, line jueying names, a fragment of its message)
REJECTED: list[tuple[str, int, str]] = [
    ("rejected/step-zero.ini", 2, "bad host range '[a:f:0]'"),
    ("rejected/vars-for-no-group.ini", 3, "section [ghost:vars] is for a group declared nowhere"),
    ("rejected/child-declared-nowhere.ini", 5, "unknown child group 'ghost'"),
    ("rejected/trailing-colon.ini", 2, "a ':' at the end is reserved for a port"),
    ("rejected/loop.ini", 6, "makes a loop"),
    ("rejected/section-type.ini", 3, "unknown type 'hostz'"),
    ("rejected/section-space.ini", 1, "bad section header"),
    ("rejected/pad-width.ini", 2, "zero-padded begin needs an end of the same width"),
    ("rejected/mixed-bounds.ini", 2, "both be numbers or both single letters"),
    ("rejected/no-equals.ini", 2, "expected key=value, got 'rack'"),
    ("rejected/letters-backwards.ini", 2, "begin must not come after end"),
    ("rejected/open-quote.ini", 2, "cannot parse line"),
    ("rejected/three-dashes.ini", 1, "'---'"),
    ("rejected/plugin.yml", 1, "inventory plugin configuration"),
    ("rejected/hosts-list.yml", 2, "must be a mapping of host to variables"),
    ("rejected/priority-not-a-number.ini", 4, "must be a whole number, got 'high'"),
    ("rejected/vars-file-not-mapping/hosts.ini", 1, "must be a mapping of variable: value"),
]

# (source, who accepts it, why jueying differs). "ansible": ansible-core (default settings) lists it, jueying
# refuses it naming file and line; "jueying": the reverse.
DIFFERENCES: list[tuple[str, str, str]] = [
    ("differences/empty-range.ini", "ansible", "a range that expands to no host (gpu[5:1]) is a mistake"),
    ("differences/negative-step.ini", "ansible", "steps below 1"),
    ("differences/multi-letter.ini", "ansible", "letter bounds of more than one letter ([ab:d])"),
    ("differences/yaml-unknown-key.yml", "ansible", "a YAML group key other than hosts/vars/children (a typo)"),
    ("differences/yaml-group-not-mapping.yml", "ansible", "a YAML group that is not a mapping"),
    ("differences/bad-host-name.ini", "ansible", "host names beyond letters, digits, . - _ (and IPv6)"),
    ("differences/bad-group-name.ini", "ansible", "group names beyond letters, digits, . - _"),
    ("differences/connection-winrm.ini", "ansible", "ansible_connection other than local/ssh/smart/paramiko"),
    ("differences/jinja-address.yml", "ansible", "Jinja templates in connection variables (not evaluated)"),
    ("differences/bad-type.ini", "ansible", "jueying's variables have types (expected_gpus=eight)"),
    ("differences/duplicate-key.yml", "ansible", "a duplicate YAML key (Ansible: last wins, with a warning)"),
    ("differences/no-hosts.ini", "ansible", "an inventory without hosts"),
    ("differences/var-name-space.ini", "ansible", "a variable name with spaces"),
    ("differences/hosts.toml", "ansible", "TOML inventories"),
    ("differences/unparsable-file", "ansible", "a file Ansible cannot parse in a directory (Ansible skips it)"),
    ("differences/script", "ansible", "inventory scripts are not run"),
    ("differences/yaml-in-conf.conf", "jueying", "YAML in a file with another suffix"),
    ("differences/int-host-key.yml", "jueying", "a YAML host key that is a number"),
]


# ---------------------------------------------------------------- running ansible-inventory

def _ansible_argv() -> list[str] | None:
    script = Path(sys.executable).with_name("ansible-inventory")
    if script.exists():
        return [str(script)]
    try:
        import ansible.cli.inventory  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "ansible.cli.inventory"]


ANSIBLE = _ansible_argv()
pytestmark = pytest.mark.skipif(ANSIBLE is None, reason="ansible-core is not installed (pip install -e '.[test]')")


class Oracle:
    """Runs ansible-inventory once per (source, strict), two at a time, from an empty directory with an empty
    configuration, so that nothing but the inventory counts."""

    def __init__(self, home: Path) -> None:
        self.home = home
        (home / "ansible.cfg").write_text("")
        self.results: dict[tuple[str, bool], subprocess.CompletedProcess[str]] = {}

    def env(self, strict: bool) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home), "LANG": "C.UTF-8",
               "ANSIBLE_CONFIG": str(self.home / "ansible.cfg"), "ANSIBLE_HOME": str(self.home / ".ansible"),
               "ANSIBLE_LOCAL_TEMP": str(self.home / "tmp"), "ANSIBLE_NOCOLOR": "1"}
        if strict:
            env["ANSIBLE_INVENTORY_UNPARSED_FAILED"] = "1"
            env["ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED"] = "1"
        return env

    def run_all(self, jobs: list[tuple[str, bool]]) -> None:
        def one(job: tuple[str, bool]) -> subprocess.CompletedProcess[str]:
            assert ANSIBLE is not None
            source, strict = job
            return subprocess.run([*ANSIBLE, "-i", str(CORPUS / source), "--list"], env=self.env(strict),
                                  cwd=self.home, capture_output=True, text=True, timeout=120, check=False)

        with ThreadPoolExecutor(max_workers=2) as pool:
            for job, result in zip(jobs, pool.map(one, jobs), strict=True):
                self.results[job] = result

    def get(self, source: str, strict: bool = True) -> subprocess.CompletedProcess[str]:
        return self.results[(source, strict)]


@pytest.fixture(scope="module")
def oracle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    """ansible-inventory's answers for the inventories of the tests selected in this run (-k works)."""
    wanted = {item.callspec.params["source"] for item in request.session.items
              if getattr(item, "module", None) is request.module and hasattr(item, "callspec")
              and "source" in item.callspec.params}
    o = Oracle(tmp_path_factory.mktemp("ansible-home"))
    jobs = [(s, True) for s, _ in ACCEPTED] + [(s, True) for s, _, _ in REJECTED]
    jobs += [(s, who == "jueying") for s, who, _ in DIFFERENCES]
    o.run_all([job for job in jobs if job[0] in wanted])
    return o


# ---------------------------------------------------------------- both sides in Ansible's terms

# For each connection setting: the names Ansible's ssh connection plugin reads, the last one set winning
# (jueying's own name, in an Ansible inventory, counts least), and the name jueying gives it.
CONNECTION = {
    "ansible_host": (("address", "ansible_host", "ansible_ssh_host"), "address"),
    "ansible_user": (("ssh_user", "ansible_user", "ansible_ssh_user"), "ssh_user"),
    "ansible_port": (("ssh_port", "ansible_port", "ansible_ssh_port"), "ssh_port"),
    "ansible_ssh_private_key_file": (("ssh_identity_file", "ansible_private_key_file",
                                      "ansible_ssh_private_key_file"), "ssh_identity_file"),
}


def _typed(name: str, value: Any) -> Any:
    """A value as jueying types its known variables: numbers for int variables, text for text ones."""
    kinds = KNOWN_VARS.get(name)
    if kinds is None or value is None:
        return value
    if int in kinds and isinstance(value, str) and value.isdigit():
        return int(value)
    if bool in kinds and isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
        return value.lower() in ("true", "yes")
    if kinds == (str,) and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _unwrap(value: Any) -> Any:
    """The listing's `{"__ansible_unsafe": text}` (how its legacy profile writes text Ansible marks unsafe,
    such as a decoded b'...' literal) is that text."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def ansible_host_vars(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Ansible's hostvars as its connection would use them, spelled the canonical Ansible way."""
    out = {k: _typed(k, _unwrap(v)) for k, v in raw.items()}
    for canonical, (names, jueying_name) in CONNECTION.items():
        values = [out.pop(n) for n in names if n in out]
        given = [v for v in values if v is not None]
        if given:
            out[canonical] = _typed(jueying_name, given[-1])
    connection = out.pop("ansible_connection", None)
    if connection in ("local", "ansible.builtin.local"):
        out["ansible_connection"] = "local"
    return json.loads(json.dumps(out, default=str))


def jueying_host_vars(raw: Mapping[str, Any]) -> dict[str, Any]:
    """jueying's variables spelled as Ansible spells them."""
    names = {jueying_name: canonical for canonical, (_, jueying_name) in CONNECTION.items()}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "local":
            if value:
                out["ansible_connection"] = "local"
        else:
            out[names.get(key, key)] = value
    return json.loads(json.dumps(out, default=str))


def ansible_view(listing: Mapping[str, Any]) -> tuple[dict[str, set[str]], dict[str, dict[str, Any]]]:
    groups = {name: body for name, body in listing.items() if name != "_meta"}

    def hosts_of(group: str, seen: frozenset[str] = frozenset()) -> set[str]:
        body = groups.get(group, {})
        hosts = set(body.get("hosts", []))
        for child in body.get("children", []):
            if child not in seen:
                hosts |= hosts_of(child, seen | {group})
        return hosts

    names = set(groups) | {c for body in groups.values() for c in body.get("children", [])}
    members = {g: hosts_of(g) for g in names}
    hostvars = listing.get("_meta", {}).get("hostvars", {})
    return ({g: m for g, m in members.items() if m},
            {h: ansible_host_vars(hostvars.get(h, {})) for h in members.get("all", set())})


def jueying_view(inv: Inventory) -> tuple[dict[str, set[str]], dict[str, dict[str, Any]]]:
    return ({g: set(m) for g, m in inv.groups.items() if m},
            {name: jueying_host_vars(node.vars) for name, node in inv.nodes.items()})


# ---------------------------------------------------------------- the tests

def test_the_corpus_is_what_the_lists_say() -> None:
    assert len(ACCEPTED) >= 20
    listed = {s.split("/")[0] for s, _ in ACCEPTED} | {"rejected", "differences"}
    assert {p.name for p in CORPUS.iterdir()} == listed
    for table in (ACCEPTED, REJECTED, DIFFERENCES):
        for row in table:
            assert (CORPUS / row[0]).exists(), row[0]


@pytest.mark.parametrize(("source", "covers"), ACCEPTED, ids=[s.split("/")[0] for s, _ in ACCEPTED])
def test_jueying_reads_the_inventory_as_ansible_does(oracle: Oracle, source: str, covers: str) -> None:
    result = oracle.get(source)
    assert result.returncode == 0, f"ansible-inventory refused {source}:\n{result.stderr}"
    groups, hostvars = ansible_view(json.loads(result.stdout))
    assert groups.get("all"), f"ansible-inventory lists no host for {source}"
    inv = load_inventory_file(CORPUS / source)
    our_groups, our_vars = jueying_view(inv)
    assert our_groups == groups
    for host in sorted(hostvars):
        assert our_vars[host] == hostvars[host], f"{source}: variables of {host}"


@pytest.mark.parametrize(("source", "line", "fragment"), REJECTED, ids=[s.split("/")[1] for s, _, _ in REJECTED])
def test_both_refuse(oracle: Oracle, source: str, line: int, fragment: str) -> None:
    result = oracle.get(source)
    assert result.returncode != 0, f"ansible-inventory accepted {source}:\n{result.stdout}"
    path = CORPUS / source
    with pytest.raises(BadInputError) as info:
        load_inventory_file(path)
    message = str(info.value)
    reported = Path(info.value.path or "")
    assert reported == path or path.parent in reported.parents, message
    assert info.value.line == line, message
    assert fragment in message, message


@pytest.mark.parametrize(("source", "who", "why"), DIFFERENCES, ids=[s.split("/")[1] for s, _, _ in DIFFERENCES])
def test_deliberate_differences(oracle: Oracle, source: str, who: str, why: str) -> None:
    result = oracle.get(source, strict=who == "jueying")
    path = CORPUS / source
    if who == "ansible":
        assert result.returncode == 0, result.stderr
        groups, _ = ansible_view(json.loads(result.stdout))
        assert groups.get("all") or source.endswith("no-hosts.ini"), f"ansible-inventory lists no host: {source}"
        with pytest.raises(BadInputError) as info:
            load_inventory_file(path)
        assert info.value.path and Path(info.value.path).is_relative_to(path), str(info.value)
        assert info.value.line, str(info.value)
    else:
        assert result.returncode != 0, f"ansible-inventory accepted {source}:\n{result.stdout}"
        assert load_inventory_file(path).nodes


def test_a_bad_range_is_exit_2_with_file_and_line_never_a_traceback() -> None:
    path = CORPUS / "rejected/step-zero.ini"
    result = run_jueying(["nodes", "-i", str(path)])
    assert result.rc == 2, result.stderr
    assert f"{path}:2: [db]: bad host range '[a:f:0]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_ungrouped_and_a_directory_from_the_command_line() -> None:
    source = CORPUS / "19-ini-all-ungrouped/hosts"
    result = run_jueying(["nodes", "-i", str(source), "-w", "@ungrouped", "--expand"])
    assert result.rc == 0, result.stderr
    assert result.stdout.split() == ["top1", "top2", "viaall"]
    result = run_jueying(["nodes", "-i", str(CORPUS / "16-dir-mixed/inventory"), "-w", "@gpu", "--expand"])
    assert result.rc == 0, result.stderr
    assert result.stdout.split() == ["gpu01", "gpu02", "gpu03"]
