"""Find and load an inventory: jueying YAML, or an Ansible inventory (INI or YAML) unchanged.

Lookup order: -i/--inventory, $JUEYING_INVENTORY, ./inventory.yaml, $XDG_CONFIG_HOME/jueying/inventory.yaml
(~/.config/...), /etc/jueying/inventory.yaml. None found: the embedded default, this machine only.
Every error names the file, the line and the field, and the CLI exits 2.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jueying_cli.errors import BadInputError
from jueying_cli.inventory.model import KNOWN_VARS, Inventory, Node
from jueying_cli.yamlfile import LocatedDict, LocatedList, line_of, load_yaml, read_text

# Ansible's connection variables, mapped onto jueying's.
ANSIBLE_VARS = {
    "ansible_host": "address",
    "ansible_ssh_host": "address",
    "ansible_user": "ssh_user",
    "ansible_ssh_user": "ssh_user",
    "ansible_port": "ssh_port",
    "ansible_ssh_port": "ssh_port",
    "ansible_ssh_private_key_file": "ssh_identity_file",
    "ansible_private_key_file": "ssh_identity_file",
}


def default_locations() -> list[Path]:
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [Path("inventory.yaml"), config_home / "jueying" / "inventory.yaml", Path("/etc/jueying/inventory.yaml")]


def find_inventory(explicit: str | None) -> Path | None:
    """The inventory file to use, or None for the embedded local default. An explicit path must exist."""
    for given, origin in ((explicit, "-i/--inventory"), (os.environ.get("JUEYING_INVENTORY"), "JUEYING_INVENTORY")):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise BadInputError(f"inventory file not found (from {origin})", path=str(path))
            return path
    for path in default_locations():
        if path.is_file():
            return path
    return None


def local_inventory() -> Inventory:
    """The embedded default: this machine, collected without SSH."""
    name = socket.gethostname()
    return Inventory(nodes={name: Node(name=name, vars={"local": True}, groups=("local",))},
                     groups={"local": (name,)}, source=None)


def load_inventory(explicit: str | None = None) -> Inventory:
    path = find_inventory(explicit)
    if path is None:
        return local_inventory()
    return load_inventory_file(path)


def load_inventory_file(path: Path) -> Inventory:
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        text = read_text(path)
        if suffix in (".ini", ".cfg") or not _looks_like_yaml(text):
            return _load_ansible_ini(path, text)
    doc = load_yaml(path)
    if doc is None:
        raise BadInputError("inventory is empty", path=str(path), line=1)
    if not isinstance(doc, LocatedDict):
        raise BadInputError("inventory must be a mapping at the top level", path=str(path), line=line_of(doc))
    if "all" in doc and not ({"nodes", "groups"} & set(doc)):
        return _load_ansible_yaml(path, doc)
    return _load_jueying_yaml(path, doc)


_YAML_START = re.compile(r"""^(---|%|\{|["']?[\w.\-]+["']?\s*:(\s|$))""")


def _looks_like_yaml(text: str) -> bool:
    """For a file without a telling suffix: YAML if it starts like a mapping (`all:`, `nodes:`, `{`, `---`);
    an Ansible INI file starts with a [section] or, with no section at all, a host line (`gpu01 a=b`)."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        return bool(_YAML_START.match(stripped))
    return True


# ---------------------------------------------------------------- names and patterns

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def _check_name(name: str, path: Path, line: int | None, what: str = "node name",
                field: str | None = None) -> str:
    """Node names become SSH host names and table keys: plain DNS-ish characters only."""
    if not _NAME_RE.match(name) or len(name) > 253:
        raise BadInputError(f"invalid {what} {name!r} (letters, digits, '.', '-', '_' only)",
                            path=str(path), line=line, field=field)
    return name


def expand_nodeset(pattern: str, path: Path, line: int | None, field: str | None = None) -> list[str]:
    """gpu[001-128,200] -> names, with ClusterShell's NodeSet (no @groups inside an inventory)."""
    from ClusterShell.NodeSet import NodeSet, NodeSetParseError, RangeSetParseError

    if not pattern.strip():
        raise BadInputError("empty node pattern", path=str(path), line=line, field=field)
    if "@" in pattern:
        raise BadInputError(f"node pattern {pattern!r}: @groups are not allowed here, use children",
                            path=str(path), line=line, field=field)
    try:
        names = list(NodeSet(pattern))
    except (NodeSetParseError, RangeSetParseError) as exc:
        raise BadInputError(f"bad node pattern {pattern!r}: {exc}", path=str(path), line=line, field=field) from exc
    for name in names:
        _check_name(name, path, line, field=field)
    return names


_ANSIBLE_RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::([0-9]+))?\]")


def expand_ansible_pattern(pattern: str, path: Path, line: int | None, field: str | None = None) -> list[str]:
    """Ansible host ranges: www[01:50], db-[a:f], x[0:10:2] (end inclusive, zero padding kept)."""
    match = _ANSIBLE_RANGE.search(pattern)
    if not match:
        return [_check_name(pattern, path, line, field=field)]
    start, end, step_text = match.group(1), match.group(2), match.group(3)
    step = int(step_text) if step_text else 1
    head, tail = pattern[: match.start()], pattern[match.end():]
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") and len(start) > 1 else 0
        if int(end) < int(start) or step < 1:
            raise BadInputError(f"bad host range {match.group(0)!r}", path=str(path), line=line, field=field)
        values = [str(i).zfill(width) for i in range(int(start), int(end) + 1, step)]
    elif len(start) == 1 and len(end) == 1 and start.isalpha() and end.isalpha() and start <= end:
        values = [chr(c) for c in range(ord(start), ord(end) + 1, step)]
    else:
        raise BadInputError(f"bad host range {match.group(0)!r}", path=str(path), line=line, field=field)
    names: list[str] = []
    for value in values:
        names.extend(expand_ansible_pattern(head + value + tail, path, line, field))
    return names


# ---------------------------------------------------------------- variables

def _check_vars(raw: Any, path: Path, where: str, line: int | None, *, strict: bool) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise BadInputError("must be a mapping of variable: value", path=str(path), line=line, field=where)
    result: dict[str, Any] = {}
    for raw_key, raw_value in raw.items():
        value: Any = raw_value
        key = str(raw_key)
        key_line = line_of(raw, key) or line
        name: str = ANSIBLE_VARS.get(key, key)
        kinds = KNOWN_VARS.get(name)
        if kinds is None:
            if strict and not name.startswith("x_"):
                close = difflib.get_close_matches(name, list(KNOWN_VARS), n=3, cutoff=0.7) or [
                    k for k in KNOWN_VARS if k.split("_")[0] == name.split("_")[0] or k[:4] == name[:4]]
                hint = f" (did you mean {', '.join(close)}?)" if close else " (custom variables start with x_)"
                raise BadInputError(f"unknown variable {key!r}{hint}", path=str(path), line=key_line,
                                    field=f"{where}.{key}")
            result[name] = value
            continue
        if int in kinds and isinstance(value, str) and value.isdigit():
            value = int(value)  # Ansible INI values are strings
        if bool in kinds and isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            value = value.lower() in ("true", "yes")
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise BadInputError(f"must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}",
                                path=str(path), line=key_line, field=f"{where}.{key}")
        if name == "ssh_port" and isinstance(value, int) and not 0 < value < 65536:
            raise BadInputError(f"port out of range: {value}", path=str(path), line=key_line, field=f"{where}.{key}")
        if name == "expected_gpus" and isinstance(value, int) and value < 0:
            raise BadInputError("must not be negative", path=str(path), line=key_line, field=f"{where}.{key}")
        result[name] = value
    return result


class _Builder:
    """Accumulates nodes (in first-seen order), group memberships and variable layers.

    A node's variables: global vars, then its groups' vars, shallowest group first (definition order at
    equal depth), so a group's own vars override those of the groups that contain it, then its own vars."""

    def __init__(self, path: Path, children_field: str = "groups.{}.children") -> None:
        self.path = path
        self.children_field = children_field  # how errors name a group's children in this format
        self.order: dict[str, None] = {}
        self.groups: dict[str, dict[str, None]] = {}
        self.children: dict[str, list[tuple[str, int | None]]] = {}
        self.global_vars: dict[str, Any] = {}
        self.group_vars: dict[str, dict[str, Any]] = {}
        self.node_vars: dict[str, dict[str, Any]] = {}

    def add_nodes(self, names: Iterable[str], group: str | None = None) -> None:
        for name in names:
            self.order.setdefault(name, None)
            if group is not None:
                self.groups.setdefault(group, {})[name] = None

    def build(self) -> Inventory:
        members = {g: list(names) for g, names in self.groups.items()}
        for group in self.children:
            members[group] = self._resolve(group, [], None)
        memberships: dict[str, list[str]] = {name: [] for name in self.order}
        for group, names in members.items():
            for name in names:
                memberships.setdefault(name, []).append(group)
                self.order.setdefault(name, None)
        nodes = {}
        depths = self._depths()
        group_order = sorted(self.group_vars, key=lambda g: depths.get(g, 0))
        for name in self.order:
            merged = dict(self.global_vars)
            for group in group_order:
                if group in memberships.get(name, ()):
                    merged.update(self.group_vars[group])
            merged.update(self.node_vars.get(name, {}))
            nodes[name] = Node(name=name, vars=merged, groups=tuple(memberships.get(name, ())))
        groups = {g: tuple(dict.fromkeys(names)) for g, names in members.items() if g not in ("all", "ungrouped")}
        groups["all"] = tuple(nodes)
        return Inventory(nodes=nodes, groups=groups, source=str(self.path))

    def _resolve(self, group: str, stack: list[str], line: int | None) -> list[str]:
        """All nodes of group and its descendants; `line` is where stack[-1] lists group as a child."""
        if group in stack:
            raise BadInputError(f"group {group!r} contains itself through {' -> '.join([*stack, group])}",
                                path=str(self.path), line=line, field=self.children_field.format(stack[-1]))
        names = list(self.groups.get(group, {}))
        for child, child_line in self.children.get(group, []):
            if child not in self.groups and child not in self.children:
                raise BadInputError(f"unknown child group {child!r}", path=str(self.path), line=child_line,
                                    field=self.children_field.format(group))
            names.extend(self._resolve(child, [*stack, group], child_line))
        return list(dict.fromkeys(names))

    def _depths(self) -> dict[str, int]:
        """How deep each group sits below its outermost ancestor (0: contained in no group; no cycles here)."""
        parents: dict[str, list[str]] = {}
        for group, children in self.children.items():
            for child, _ in children:
                parents.setdefault(child, []).append(group)
        depths: dict[str, int] = {}

        def depth(group: str) -> int:
            if group not in depths:
                depths[group] = 1 + max((depth(parent) for parent in parents.get(group, ())), default=-1)
            return depths[group]

        for group in self.group_vars:
            depth(group)
        return depths


# ---------------------------------------------------------------- jueying YAML

_TOP_KEYS = {"vars", "groups", "nodes"}
_GROUP_KEYS = {"nodes", "vars", "children"}


def _load_jueying_yaml(path: Path, doc: LocatedDict) -> Inventory:
    for key in doc:
        if key not in _TOP_KEYS:
            raise BadInputError(f"unknown top-level key {key!r} (expected vars, groups, nodes)",
                                path=str(path), line=doc.line_of(key), field=key)
    b = _Builder(path)
    b.global_vars = _check_vars(doc.get("vars"), path, "vars", doc.line_of("vars"), strict=True)
    for section in doc:  # in file order, so that nodes keep the order in which the file first names them
        if section == "nodes" and doc["nodes"] is not None:
            nodes = doc["nodes"]
            if not isinstance(nodes, LocatedDict):
                raise BadInputError("must be a mapping of node name (or pattern) to variables",
                                    path=str(path), line=doc.line_of("nodes"), field="nodes")
            for pattern, node_vars in nodes.items():
                line = nodes.line_of(pattern)
                names = expand_nodeset(pattern, path, line, "nodes")
                checked = _check_vars(node_vars, path, f"nodes.{pattern}", line, strict=True)
                b.add_nodes(names)
                for name in names:
                    b.node_vars.setdefault(name, {}).update(checked)
        elif section == "groups" and doc["groups"] is not None:
            groups = doc["groups"]
            if not isinstance(groups, LocatedDict):
                raise BadInputError("must be a mapping of group name to {nodes, vars, children}",
                                    path=str(path), line=doc.line_of("groups"), field="groups")
            for group, spec in groups.items():
                _load_group(b, path, group, spec, groups.line_of(group))
    if not b.order:
        raise BadInputError("inventory defines no nodes", path=str(path), line=doc.line)
    return b.build()


def _load_group(b: _Builder, path: Path, group: str, spec: Any, line: int | None) -> None:
    _check_name(group, path, line, "group name", "groups")
    where = f"groups.{group}"
    b.groups.setdefault(group, {})
    if spec is None:
        return
    if not isinstance(spec, LocatedDict):
        raise BadInputError("must be a mapping with nodes, vars, children", path=str(path), line=line, field=where)
    for key in spec:
        if key not in _GROUP_KEYS:
            raise BadInputError(f"unknown key {key!r} (expected nodes, vars, children)", path=str(path),
                                line=spec.line_of(key), field=f"{where}.{key}")
    patterns = spec.get("nodes")
    pattern_line = spec.line_of("nodes")
    if isinstance(patterns, str):
        patterns = [patterns]
    if patterns is not None:
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise BadInputError("must be a node pattern or a list of them", path=str(path), line=pattern_line,
                                field=f"{where}.nodes")
        for i, pattern in enumerate(patterns):
            item_line = patterns.item_lines[i] if isinstance(patterns, LocatedList) else pattern_line
            item_field = f"{where}.nodes[{i}]" if isinstance(patterns, LocatedList) else f"{where}.nodes"
            b.add_nodes(expand_nodeset(pattern, path, item_line, item_field), group)
    b.group_vars[group] = _check_vars(spec.get("vars"), path, f"{where}.vars", spec.line_of("vars"), strict=True)
    children = spec.get("children")
    if children is not None:
        if not isinstance(children, list) or not all(isinstance(c, str) for c in children):
            raise BadInputError("must be a list of group names", path=str(path), line=spec.line_of("children"),
                                field=f"{where}.children")
        lines = children.item_lines if isinstance(children, LocatedList) else [spec.line_of("children")] * len(children)
        b.children[group] = list(zip(children, lines, strict=True))


# ---------------------------------------------------------------- Ansible YAML

def _load_ansible_yaml(path: Path, doc: LocatedDict) -> Inventory:
    b = _Builder(path, "{}.children")
    for group, spec in doc.items():
        _ansible_group(b, path, group, spec, doc.line_of(group))
    if not b.order:
        raise BadInputError("inventory defines no hosts", path=str(path), line=doc.line)
    return b.build()


def _ansible_group(b: _Builder, path: Path, group: str, spec: Any, line: int | None) -> None:
    _check_name(group, path, line, "group name")
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
            names = expand_ansible_pattern(pattern, path, host_line, f"{group}.hosts")
            checked = _check_vars(host_vars, path, f"{group}.hosts.{pattern}", host_line, strict=False)
            b.add_nodes(names, group)
            for name in names:
                b.node_vars.setdefault(name, {}).update(checked)
    group_vars = _check_vars(spec.get("vars"), path, f"{group}.vars", spec.line_of("vars"), strict=False)
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


def _load_ansible_ini(path: Path, text: str) -> Inventory:
    import shlex

    b = _Builder(path, "[{}:children]")
    section, kind = "ungrouped", "hosts"
    var_lines: list[tuple[str, dict[str, Any], int]] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        header = re.fullmatch(r"\[([^\]:]+)(?::(vars|children))?\]", line)
        if header:
            section, kind = header.group(1), header.group(2) or "hosts"
            _check_name(section, path, number, "group name", line)
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
            names = expand_ansible_pattern(tokens[0], path, number, field)
            host_vars = _check_vars(_ini_pairs(tokens[1:], path, number, f"{field} {tokens[0]}"), path,
                                    f"{field} {tokens[0]}", number, strict=False)
            b.add_nodes(names, None if section == "ungrouped" else section)
            for name in names:
                b.node_vars.setdefault(name, {}).update(host_vars)
        else:
            b.children.setdefault(section, []).append((tokens[0], number))
    for section, pairs, number in var_lines:
        checked = _check_vars(pairs, path, f"[{section}:vars]", number, strict=False)
        if section == "all":
            b.global_vars.update(checked)
        else:
            b.group_vars.setdefault(section, {}).update(checked)
    if not b.order:
        raise BadInputError("inventory defines no hosts", path=str(path), line=1)
    return b.build()
