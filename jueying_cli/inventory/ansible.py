"""Ansible inventories, INI or YAML, read as ansible-core reads them: host patterns (ranges, `host:port`,
`[v6]:port`), group vars, children, value types, connection variables mapped onto jueying's.

Each rule follows ansible-core (2.19) and names its source: `plugins/inventory/ini.py` (InventoryModule),
`plugins/inventory/yaml.py`, `plugins/inventory/__init__.py` (`_expand_hostpattern`, `expand_hostname_range`),
`parsing/utils/addresses.py` (`parse_address`), `inventory/group.py` (`ansible_group_priority`). Where jueying
refuses what Ansible would accept (README, "Inventory"), the message says so.

These parsers add to an InventoryBuilder in Ansible mode (several files of a directory add to the same one);
`ansible_files` finds the files, group_vars/ and host_vars/.
"""

from __future__ import annotations

import ast
import re
import shlex
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jueying_cli.errors import BadInputError
from jueying_cli.inventory.ansible_hosts import parse_host_pattern
from jueying_cli.inventory.build import ANSIBLE_VARS, InventoryBuilder, check_name, check_vars
from jueying_cli.inventory.model import KNOWN_VARS
from jueying_cli.yamlfile import LocatedDict

# ---------------------------------------------------------------- host patterns (parsing/utils/addresses.py)

LOCAL_CONNECTIONS = frozenset({"local", "ansible.builtin.local"})
SSH_CONNECTIONS = frozenset({"ssh", "smart", "paramiko", "paramiko_ssh", "ansible.builtin.ssh",
                             "ansible.builtin.paramiko_ssh", "ansible.legacy.ssh", "ansible.legacy.local"})
_CONNECTION_VARS = frozenset({*ANSIBLE_VARS, *ANSIBLE_VARS.values(), "ansible_connection"})


def check_ansible_vars(raw: Mapping[str, Any], path: Path, where: str, line: int | None,
                       lines: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Variables of an Ansible inventory checked by jueying's rules but kept under their Ansible names (which
    of ansible_host and ansible_ssh_host wins is settled per host, after precedence: InventoryBuilder).
    `ansible_connection` becomes a bool (True: local); connection variables must not be Jinja templates,
    which jueying does not evaluate; a number given for a text variable (`rack=1`) becomes text."""
    result: dict[str, Any] = {}
    for key, value in raw.items():
        key_line = (lines or {}).get(key, line)
        name = ANSIBLE_VARS.get(key, key)
        kinds = KNOWN_VARS.get(name)
        if value is None:  # `ansible_host:` with no value: as if unset, where Ansible picks connection options
            result[key] = None
            continue
        if key in _CONNECTION_VARS and isinstance(value, str) and ("{{" in value or "{%" in value):
            raise BadInputError(f"{value!r}: jueying does not evaluate Jinja templates in connection variables",
                                path=str(path), line=key_line, field=f"{where}.{key}")
        if key == "ansible_connection":
            result[key] = _connection(value, path, key_line, f"{where}.{key}")
            continue
        if kinds == (str,) and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # INI `rack=1` is an int to Ansible; to jueying, a rack name
        checked = check_vars({key: value}, path, where, key_line, strict=False)
        result[key] = checked[name]
    return result


def _connection(value: Any, path: Path, line: int | None, field: str) -> bool:
    if isinstance(value, str) and value in LOCAL_CONNECTIONS:
        return True
    if isinstance(value, str) and value in SSH_CONNECTIONS:
        return False
    raise BadInputError(f"ansible_connection {value!r}: jueying connects over SSH or runs locally "
                        "(local, ssh, smart, paramiko)", path=str(path), line=line, field=field)


def _priority(value: Any, path: Path, line: int | None, field: str) -> int:
    """`ansible_group_priority`, as Group.set_variable reads it: int(value)."""
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"must be a whole number, got {value!r}", path=str(path), line=line,
                            field=field) from exc


def _set_group_vars(b: InventoryBuilder, group: str, values: Mapping[str, Any], path: Path,
                    where: str, line: int | None, lines: Mapping[str, int] | None = None) -> None:
    """Group.set_variable, one variable after another: `ansible_group_priority` sets the group's priority
    (it is not a variable then), the rest replace the group's earlier values."""
    rest = dict(values)
    if "ansible_group_priority" in rest:
        prio_line = (lines or {}).get("ansible_group_priority", line)
        b.group_priority[group] = _priority(rest.pop("ansible_group_priority"), path, prio_line,
                                            f"{where}.ansible_group_priority")
    checked = check_ansible_vars(rest, path, where, line, lines)
    target = b.global_vars if group == "all" else b.group_vars.setdefault(group, {})
    target.update(checked)


def _add_hosts(b: InventoryBuilder, names: list[str], group: str, port: int | None,
               host_vars: Mapping[str, Any]) -> None:
    """`_populate_host_vars`: a port written with the host counts only where the host is first seen (Host's
    constructor sets ansible_port), its variables then replace the host's earlier values."""
    for name in names:
        if name not in b.order and port is not None:
            b.node_vars.setdefault(name, {})["ansible_port"] = port
        b.add_nodes([name], group)
        b.node_vars.setdefault(name, {}).update(host_vars)


def add_child(b: InventoryBuilder, parent: str, child: str, path: Path, line: int | None, field: str) -> None:
    """Group.add_child_group: refused, where it is said, if the child contains the parent (a loop)."""
    stack = [child]
    seen: set[str] = set()
    while stack:
        group = stack.pop()
        if group == parent:
            raise BadInputError(f"group {child!r} inside {parent!r} makes a loop ({child!r} contains {parent!r})",
                                path=str(path), line=line, field=field)
        if group not in seen:
            seen.add(group)
            stack.extend(name for name, _ in b.children.get(group, ()))
    b.add_child(parent, child, line)


# ---------------------------------------------------------------- Ansible YAML (plugins/inventory/yaml.py)

_YAML_GROUP_KEYS = {
    "vars": "must be a mapping of variable: value",
    "children": "must be a mapping of group name to group",
    "hosts": "must be a mapping of host to variables",
}


def parse_ansible_yaml(b: InventoryBuilder, path: Path, doc: LocatedDict) -> None:
    """Every top-level key is a group (`all:` is only one of them), read as the yaml plugin reads it."""
    if doc.get("plugin"):
        raise BadInputError(f"inventory plugin configuration (plugin: {doc['plugin']}): jueying reads only "
                            "static inventories", path=str(path), line=doc.line_of("plugin"), field="plugin")
    for group, spec in doc.items():
        _ansible_group(b, path, group, spec, doc.line_of(group))


def _ansible_group(b: InventoryBuilder, path: Path, group: str, spec: Any, line: int | None) -> None:
    check_name(group, path, line, "group name", group)
    b.declare_group(group)
    if spec is None:
        return
    if not isinstance(spec, LocatedDict):  # Ansible skips it with a warning; jueying will not guess
        raise BadInputError("must be a mapping with hosts, vars, children", path=str(path), line=line, field=group)
    for key in spec:
        if key not in _YAML_GROUP_KEYS:  # Ansible skips it with a warning: usually a typo (`host:`)
            raise BadInputError(f"unknown key {key!r} (expected hosts, vars, children)", path=str(path),
                                line=spec.line_of(key), field=f"{group}.{key}")
    for key in spec:  # in file order, as Ansible reads them
        value = spec[key]
        key_line = spec.line_of(key)
        if isinstance(value, str):  # `hosts: gpu01` is `hosts: {gpu01: null}`
            value = {value: None}
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise BadInputError(_YAML_GROUP_KEYS[key], path=str(path), line=key_line, field=f"{group}.{key}")
        lines = value.key_lines if isinstance(value, LocatedDict) else {}
        if key == "vars":
            _set_group_vars(b, group, value, path, f"{group}.vars", key_line, lines)
        elif key == "children":
            for child, child_spec in value.items():
                child_line = lines.get(child, key_line)
                _ansible_group(b, path, child, child_spec, child_line)
                add_child(b, group, child, path, child_line, f"{group}.children")
        else:
            for pattern, host_vars in value.items():
                host_line = lines.get(pattern, key_line)
                names, port = parse_host_pattern(pattern, path, host_line, f"{group}.hosts", budget=b.budget)
                if not host_vars:  # `gpu01:` (null), as `or {}` in ansible-core
                    host_vars = {}
                if not isinstance(host_vars, Mapping):
                    raise BadInputError("must be a mapping of variable: value", path=str(path), line=host_line,
                                        field=f"{group}.hosts.{pattern}")
                host_lines = host_vars.key_lines if isinstance(host_vars, LocatedDict) else {}
                checked = check_ansible_vars(host_vars, path, f"{group}.hosts.{pattern}", host_line, host_lines)
                _add_hosts(b, names, group, port, checked)


# ---------------------------------------------------------------- Ansible INI (plugins/inventory/ini.py)

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:\#.*)?$")
_GROUP_NAME = re.compile(r"^([^:\]\s]+)\s*(?:\#.*)?$")


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_DOTTED = re.compile(r"[0-9]+(?:\.[0-9]+){2,}")


def ini_value(text: str, path: Path, line: int | None, field: str) -> Any:
    """`_parse_value`: ast.literal_eval, the text itself where that fails (so `True` is a bool, `[1,2]` a
    list, `007` and `yes` strings, and `'a' # note` is 'a'), then tuples and sets become lists, complex
    numbers and `...` text, bytes are decoded."""
    if _PLAIN_NAME.fullmatch(text) and text not in ("True", "False", "None"):
        return text  # what literal_eval would refuse (a bare name), without parsing it: big inventories
    if _PLAIN_INT.fullmatch(text):
        return int(text)
    if _DOTTED.fullmatch(text):
        return text  # 10.0.0.1: not a literal either
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    except (MemoryError, RecursionError) as exc:
        raise BadInputError("value nested too deeply", path=str(path), line=line, field=field) from exc
    return _ini_coerce(value, path, line, field)


def _ini_coerce(value: Any, path: Path, line: int | None, field: str) -> Any:
    if isinstance(value, list | tuple | set | frozenset):
        return [_ini_coerce(v, path, line, field) for v in value]
    if isinstance(value, dict):
        return {k: _ini_coerce(v, path, line, field) for k, v in value.items()}
    if value is Ellipsis:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInputError("bytes value is not UTF-8", path=str(path), line=line, field=field) from exc
    return value


def parse_ansible_ini(b: InventoryBuilder, path: Path, text: str) -> None:
    """One pass over the lines, as InventoryModule._parse: hosts before any section are `ungrouped`; a
    `[g:vars]` or a `[p:children]` may name a group declared further down, never one declared nowhere."""
    pending: dict[str, dict[str, Any]] = {}  # group -> {state, line, parents}: declared only later, if at all
    group, state = "ungrouped", "hosts"
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line[0] in "#;":
            continue
        header = _SECTION.match(line)
        if header:
            group, state = header.group(1), header.group(2) or "hosts"
            title = f"[{line[1:].split(']')[0]}]"
            if state not in ("hosts", "children", "vars"):
                raise BadInputError(f"section {title} has unknown type {state!r} (vars, children)",
                                    path=str(path), line=number)
            check_name(group, path, number, "group name", title)
            if not b.has_group(group):
                if state == "vars" and group not in pending:
                    pending[group] = {"state": "vars", "line": number, "parents": []}
                b.declare_group(group)
            if group in pending and state != "vars":
                if pending[group]["state"] == "children":
                    _add_pending_children(b, path, group, pending)
                else:
                    del pending[group]
            continue
        if line.startswith("[") and (line.endswith("]") or "]" not in line):
            raise BadInputError(f"bad section header {line!r} (no spaces or other characters allowed)",
                                path=str(path), line=number)
        field = f"[{group}:{state}]" if state != "hosts" else f"[{group}]"
        if state == "vars":
            key, sep, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key or any(c.isspace() for c in key):
                raise BadInputError(f"expected key=value, got {line!r}", path=str(path), line=number, field=field)
            _set_group_vars(b, group, {key: ini_value(value, path, number, f"{field}.{key}")}, path, field, number)
        elif state == "children":
            m = _GROUP_NAME.match(line)
            if not m:
                raise BadInputError(f"expected a group name, got {line!r}", path=str(path), line=number,
                                    field=field)
            child = m.group(1)
            if b.has_group(child):
                add_child(b, group, child, path, number, field)
            elif child in pending:
                pending[child]["parents"].append((group, number))
            else:
                pending[child] = {"state": "children", "line": number, "parents": [(group, number)]}
        else:
            _ini_host_line(b, path, line, number, group, field)
    for name, decl in pending.items():  # the first one left is reported, as in ansible-core
        if decl["state"] == "vars":
            raise BadInputError(f"section [{name}:vars] is for a group declared nowhere", path=str(path),
                                line=decl["line"], field=f"[{name}:vars]")
        parent = decl["parents"][-1][0]
        raise BadInputError(f"unknown child group {name!r} (declared nowhere)", path=str(path),
                            line=decl["line"], field=f"[{parent}:children]")


def _add_pending_children(b: InventoryBuilder, path: Path, group: str, pending: dict[str, dict[str, Any]]) -> None:
    for parent, number in pending[group]["parents"]:
        add_child(b, parent, group, path, number, f"[{parent}:children]")
        if parent in pending and pending[parent]["state"] == "children":
            _add_pending_children(b, path, parent, pending)
    del pending[group]


def _ini_host_line(b: InventoryBuilder, path: Path, line: str, number: int, group: str, field: str) -> None:
    """`gpu[01:04]:2222 ansible_user=ops rack="r 1"  # comment`, split as shlex does (comments on)."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:
        raise BadInputError(f"cannot parse line: {exc}", path=str(path), line=number, field=field) from exc
    if not tokens:
        raise BadInputError(f"expected a host, got {line!r}", path=str(path), line=number, field=field)
    names, port = parse_host_pattern(tokens[0], path, number, field, ini=True, budget=b.budget)
    where = f"{field} {tokens[0]}"
    raw: dict[str, Any] = {}
    for token in tokens[1:]:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise BadInputError(f"expected key=value, got {token!r}", path=str(path), line=number, field=where)
        raw[key] = ini_value(value, path, number, f"{where}.{key}")
    _add_hosts(b, names, group, port, check_ansible_vars(raw, path, where, number))
