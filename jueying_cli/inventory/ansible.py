"""Ansible inventories, INI or YAML, read unchanged: host ranges, group vars, children, connection variables
mapped onto jueying's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from jueying_cli.errors import BadInputError
from jueying_cli.inventory import nodeset
from jueying_cli.inventory.build import InventoryBuilder, check_budget, check_name, check_vars
from jueying_cli.inventory.model import Inventory
from jueying_cli.yamlfile import LocatedDict

_ANSIBLE_RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::([0-9]+))?\]")


def ansible_count(pattern: str) -> int:
    """How many names an Ansible host pattern expands to (ranges multiply), without expanding it; a range
    that is not valid counts 1 (expanding it reports the error)."""
    size = 1
    for match in _ANSIBLE_RANGE.finditer(pattern):
        start, end, step_text = match.group(1), match.group(2), match.group(3)
        step = int(step_text) if step_text else 1
        if start.isdigit() and end.isdigit():
            span = int(end) - int(start)
        elif len(start) == 1 and len(end) == 1:
            span = ord(end) - ord(start)
        else:
            continue
        size *= span // step + 1 if step >= 1 and span >= 0 else 1
    return size


def expand_ansible_pattern(pattern: str, path: Path, line: int | None, field: str | None = None,
                           budget: int = nodeset.MAX_NODES) -> list[str]:
    """Ansible host ranges: www[01:50], db-[a:f], x[0:10:2] (end inclusive, zero padding kept); refused
    before expanding when the names would not fit in `budget`."""
    check_budget(ansible_count(pattern), budget, f"host pattern {pattern[:80]!r}", path, line, field)
    return _expand_ansible(pattern, path, line, field)


def _expand_ansible(pattern: str, path: Path, line: int | None, field: str | None) -> list[str]:
    match = _ANSIBLE_RANGE.search(pattern)
    if not match:
        return [check_name(pattern, path, line, field=field)]
    start, end, step_text = match.group(1), match.group(2), match.group(3)
    step = int(step_text) if step_text else 1
    head, tail = pattern[: match.start()], pattern[match.end():]
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") and len(start) > 1 else 0
        if int(end) < int(start) or step < 1:
            raise BadInputError(f"bad host range {match.group(0)!r}", path=str(path), line=line, field=field)
        values = [str(i).zfill(width) for i in range(int(start), int(end) + 1, step)]
    elif len(start) == 1 and len(end) == 1 and start.isalpha() and end.isalpha() and start <= end and step >= 1:
        values = [chr(c) for c in range(ord(start), ord(end) + 1, step)]
    else:
        raise BadInputError(f"bad host range {match.group(0)!r}", path=str(path), line=line, field=field)
    names: list[str] = []
    for value in values:
        names.extend(_expand_ansible(head + value + tail, path, line, field))
    return names


# ---------------------------------------------------------------- variables

def load_ansible_yaml(path: Path, doc: LocatedDict) -> Inventory:
    b = InventoryBuilder(path, "{}.children")
    for group, spec in doc.items():
        _ansible_group(b, path, group, spec, doc.line_of(group))
    if not b.order:
        raise BadInputError("inventory defines no hosts", path=str(path), line=doc.line)
    return b.build()


def _ansible_group(b: InventoryBuilder, path: Path, group: str, spec: Any, line: int | None) -> None:
    check_name(group, path, line, "group name")
    b.groups.setdefault(group, {})
    if spec is None:
        return
    if not isinstance(spec, LocatedDict):
        raise BadInputError("must be a mapping with hosts, vars, children", path=str(path), line=line, field=group)
    hosts = spec.get("hosts")
    if hosts is not None:
        if not isinstance(hosts, LocatedDict):
            raise BadInputError("must be a mapping of host to variables", path=str(path),
                                line=spec.line_of("hosts"), field=f"{group}.hosts")
        for pattern, host_vars in hosts.items():
            host_line = hosts.line_of(pattern)
            names = expand_ansible_pattern(pattern, path, host_line, f"{group}.hosts", b.budget)
            checked = check_vars(host_vars, path, f"{group}.hosts.{pattern}", host_line, strict=False)
            b.add_nodes(names, group)
            for name in names:
                b.node_vars.setdefault(name, {}).update(checked)
    group_vars = check_vars(spec.get("vars"), path, f"{group}.vars", spec.line_of("vars"), strict=False)
    if group == "all":
        b.global_vars.update(group_vars)
    else:
        b.group_vars[group] = {**b.group_vars.get(group, {}), **group_vars}
    children = spec.get("children")
    if children is not None:
        if not isinstance(children, LocatedDict):
            raise BadInputError("must be a mapping of group name to group", path=str(path),
                                line=spec.line_of("children"), field=f"{group}.children")
        for child, child_spec in children.items():
            _ansible_group(b, path, child, child_spec, children.line_of(child))
            b.children.setdefault(group, []).append((child, children.line_of(child)))


# ---------------------------------------------------------------- Ansible INI

def _parse_ini_value(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    return text


def _ini_pairs(tokens: list[str], path: Path, line: int, field: str) -> dict[str, Any]:
    pairs: dict[str, Any] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise BadInputError(f"expected key=value, got {token!r}", path=str(path), line=line, field=field)
        pairs[key] = _parse_ini_value(value)
    return pairs


def _ini_var_line(line: str, path: Path, number: int, field: str) -> dict[str, Any]:
    """A [group:vars] line, as Ansible reads it: `key = value`, spaces allowed around `=`, the value being
    the rest of the line (quotes removed; an unquoted value ends at a ` #` comment)."""
    key, sep, value = line.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key or any(c.isspace() for c in key):
        raise BadInputError(f"expected key=value, got {line!r}", path=str(path), line=number, field=field)
    if value[:1] not in ("'", '"'):
        value = re.split(r"\s#", value, maxsplit=1)[0].rstrip()
    return {key: _parse_ini_value(value)}


def load_ansible_ini(path: Path, text: str) -> Inventory:
    import shlex

    b = InventoryBuilder(path, "[{}:children]")
    section, kind = "ungrouped", "hosts"
    var_lines: list[tuple[str, dict[str, Any], int]] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        header = re.fullmatch(r"\[([^\]:]+)(?::(vars|children))?\]", line)
        if header:
            section, kind = header.group(1), header.group(2) or "hosts"
            check_name(section, path, number, "group name", line)
            b.groups.setdefault(section, {})
            continue
        if line.startswith("["):
            raise BadInputError(f"bad section header {line!r}", path=str(path), line=number)
        field = f"[{section}:{kind}]" if kind != "hosts" else f"[{section}]"
        if kind == "vars":
            var_lines.append((section, _ini_var_line(line, path, number, field), number))
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            raise BadInputError(f"cannot parse line: {exc}", path=str(path), line=number, field=field) from exc
        if kind == "hosts":
            names = expand_ansible_pattern(tokens[0], path, number, field, b.budget)
            host_vars = check_vars(_ini_pairs(tokens[1:], path, number, f"{field} {tokens[0]}"), path,
                                    f"{field} {tokens[0]}", number, strict=False)
            b.add_nodes(names, None if section == "ungrouped" else section)
            for name in names:
                b.node_vars.setdefault(name, {}).update(host_vars)
        else:
            b.children.setdefault(section, []).append((tokens[0], number))
    for section, pairs, number in var_lines:
        checked = check_vars(pairs, path, f"[{section}:vars]", number, strict=False)
        if section == "all":
            b.global_vars.update(checked)
        else:
            b.group_vars.setdefault(section, {}).update(checked)
    if not b.order:
        raise BadInputError("inventory defines no hosts", path=str(path), line=1)
    return b.build()
