"""Building an inventory from any format: node names, NodeSet ranges, variables checked against what jueying
knows, groups and their members, merged with a fixed precedence."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from jueying_cli.errors import BadInputError
from jueying_cli.inventory import nodeset
from jueying_cli.inventory.model import KNOWN_VARS, Inventory, Node
from jueying_cli.vocab import Backend
from jueying_cli.yamlfile import line_of

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

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def check_name(name: str, path: Path, line: int | None, what: str = "node name",
                field: str | None = None) -> str:
    """Node names become SSH host names and table keys: plain DNS-ish characters only."""
    if not _NAME_RE.match(name) or len(name) > 253:
        raise BadInputError(f"invalid {what} {name!r} (letters, digits, '.', '-', '_' only)",
                            path=str(path), line=line, field=field)
    return name


MAX_GROUP_DEPTH = 100  # children of children...: deeper is a mistake (or an attack), not an inventory
MAX_MEMBERSHIPS = 10 * nodeset.MAX_NODES  # node-in-group entries resolved through children, in all


def expand_nodeset(pattern: str, path: Path, line: int | None, field: str | None = None,
                   budget: int = nodeset.MAX_NODES) -> list[str]:
    """gpu[001-128,200] -> names, with ClusterShell's NodeSet (no @groups inside an inventory). A pattern that
    would expand past `budget` names is refused before it is expanded."""
    from ClusterShell.NodeSet import NodeSet, NodeSetException

    if not pattern.strip():
        raise BadInputError("empty node pattern", path=str(path), line=line, field=field)
    if "@" in pattern:
        raise BadInputError(f"node pattern {pattern!r}: @groups are not allowed here, use children",
                            path=str(path), line=line, field=field)
    check_budget(nodeset.count(pattern), budget, f"node pattern {pattern[:80]!r}", path, line, field)
    fast = nodeset.expand(pattern)
    if fast is not None:  # one template: its first and last names stand for all (only digits differ)
        for name in {fast[0], fast[-1]} if fast else ():
            check_name(name, path, line, field=field)
        return fast
    try:
        names = list(NodeSet(pattern))
    except NodeSetException as exc:
        raise BadInputError(f"bad node pattern {pattern!r}: {exc}", path=str(path), line=line, field=field) from exc
    for name in names:
        check_name(name, path, line, field=field)
    return names


def check_budget(size: int, budget: int, what: str, path: Path, line: int | None, field: str | None) -> None:
    """BadInputError (file:line) when `size` names do not fit in what is left of the inventory's MAX_NODES."""
    if size > budget:
        message = nodeset.too_many(size, what) if budget == nodeset.MAX_NODES else (
            f"{what} adds {size:,} node names, past the limit of {nodeset.MAX_NODES:,} for the whole inventory")
        raise BadInputError(message, path=str(path), line=line, field=field)


def check_vars(raw: Any, path: Path, where: str, line: int | None, *, strict: bool) -> dict[str, Any]:
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
        problem = _out_of_range(name, value)
        if problem:
            raise BadInputError(problem, path=str(path), line=key_line, field=f"{where}.{key}")
        result[name] = value
    return result


# Connection variables in an Ansible inventory, settled per host once every layer is merged: the last name
# of each row that the host has (with a value other than null) wins, as in ansible-core's ssh connection
# plugin, whose options read `ansible_host` then `ansible_ssh_host` (config/manager.py `_loop_entries`: the
# last one set wins), so `ansible_ssh_port` from `[all:vars]` beats a host's `ansible_port`. jueying's own
# name, if an Ansible inventory uses it, counts least. `ansible_connection` has become a bool (True: local).
ANSIBLE_ALIASES: Mapping[str, tuple[str, ...]] = {
    "address": ("address", "ansible_host", "ansible_ssh_host"),
    "ssh_user": ("ssh_user", "ansible_user", "ansible_ssh_user"),
    "ssh_port": ("ssh_port", "ansible_port", "ansible_ssh_port"),
    "ssh_identity_file": ("ssh_identity_file", "ansible_private_key_file", "ansible_ssh_private_key_file"),
    "local": ("local", "ansible_connection"),
}
IMPLICIT_GROUPS = ("all", "ungrouped")


def _out_of_range(name: str, value: Any) -> str | None:
    """Why a value of the right type is still unusable (found at load, not when a drain needs it), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    if name in ("expected_gpus", "max_unavailable") and isinstance(value, int) and value < 0:
        return f"must not be negative, got {value}"
    if name == "max_unavailable_pct" and isinstance(value, (int, float)) and not (
            math.isfinite(value) and 0 <= value <= 100):
        return f"must be a percentage from 0 to 100, got {value!r}"
    if name == "scheduler" and value not in tuple(Backend):
        return f"unknown scheduler {value!r} (slurm or builtin)"
    return None


class InventoryBuilder:
    """Accumulates nodes (in first-seen order), group memberships and variable layers.

    jueying's format: global vars, then its groups' vars, shallowest group first (definition order at equal
    depth), so a group's own vars override those of the groups that contain it, then the node's own vars.

    Ansible (`ansible=True`), as ansible-core's VariableManager.get_vars with the default precedence
    (`all_inventory, groups_inventory, all_plugins_inventory, groups_plugins_inventory`, then host vars):
    `all` vars; the host's groups' vars ordered as inventory/helpers.py `sort_groups` orders them: depth
    (longest path from `all`), then `ansible_group_priority`, then name; group_vars/all files; group_vars/GROUP
    files in that same group order; the host's own vars; host_vars/HOST files. Every node without a group is
    in `ungrouped` (inventory/data.py `reconcile_inventory`)."""

    def __init__(self, path: Path, children_field: str = "groups.{}.children", *, ansible: bool = False) -> None:
        self.path = path
        self.children_field = children_field  # how errors name a group's children in this format
        self.ansible = ansible
        self.order: dict[str, None] = {}
        self.groups: dict[str, dict[str, None]] = {}
        self.children: dict[str, list[tuple[str, int | None]]] = {}
        self.global_vars: dict[str, Any] = {}
        self.group_vars: dict[str, dict[str, Any]] = {}
        self.node_vars: dict[str, dict[str, Any]] = {}
        # Ansible only: `ansible_group_priority` (default 1), and the vars plugin's layer (group_vars/ and
        # host_vars/ beside the inventory), which sits above the inventory's own at each level.
        self.group_priority: dict[str, int] = {}
        self.file_global_vars: dict[str, Any] = {}
        self.file_group_vars: dict[str, dict[str, Any]] = {}
        self.file_node_vars: dict[str, dict[str, Any]] = {}
        self.expanded = 0  # names expanded from patterns so far, against MAX_NODES
        self._resolved: dict[str, list[str]] = {}
        self._work = 0  # memberships copied from child groups so far, against MAX_MEMBERSHIPS
        if ansible:
            for group in IMPLICIT_GROUPS:  # always there in Ansible: `[all:vars]` needs no `[all]`
                self.groups[group] = {}

    @property
    def budget(self) -> int:
        """How many more names patterns may expand to (every expansion counts, repeated names too)."""
        return nodeset.MAX_NODES - self.expanded

    def add_nodes(self, names: Iterable[str], group: str | None = None) -> None:
        names = list(names)
        self.expanded += len(names)
        self.order.update(dict.fromkeys(names))
        if group is not None:
            self.groups.setdefault(group, {}).update(dict.fromkeys(names))

    def declare_group(self, group: str) -> None:
        self.groups.setdefault(group, {})

    def has_group(self, group: str) -> bool:
        return group in self.groups or group in self.children

    def add_child(self, parent: str, child: str, line: int | None) -> None:
        """`child` is a group inside `parent` (once, however often it is said)."""
        children = self.children.setdefault(parent, [])
        if all(name != child for name, _ in children):
            children.append((child, line))

    def build(self) -> Inventory:
        members = {g: list(names) for g, names in self.groups.items()}
        for group in self.children:
            members[group] = self._resolve(group, [], None)
        memberships: dict[str, list[str]] = {name: [] for name in self.order}
        for group, names in members.items():
            for name in names:
                self.order.setdefault(name, None)
                if group not in IMPLICIT_GROUPS:
                    memberships.setdefault(name, []).append(group)
        ungrouped = [name for name in self.order if not memberships.get(name)]
        for name in ungrouped:
            memberships[name] = ["ungrouped"]
        nodes = {}
        if self.ansible:
            sort_key = self._ansible_sort_key()
            for name in self.order:
                nodes[name] = Node(name=name, vars=self._ansible_vars(name, sorted(memberships[name], key=sort_key)),
                                   groups=tuple(memberships[name]))
        else:
            # Nodes in the same groups share one groups tuple and one variables mapping (a million nodes of one
            # group cost a million Node objects, not a million dicts); a node's own variables get a copy.
            depths = self._depths()
            group_order = sorted(self.group_vars, key=lambda g: depths.get(g, 0))
            shared: dict[tuple[str, ...], tuple[tuple[str, ...], dict[str, Any]]] = {}
            for name in self.order:
                key = tuple(memberships.get(name, ()))
                if key not in shared:
                    merged = dict(self.global_vars)
                    for group in group_order:
                        if group in key:
                            merged.update(self.group_vars[group])
                    shared[key] = (key, merged)
                groups_of, common = shared[key]
                own = self.node_vars.get(name)
                nodes[name] = Node(name=name, vars={**common, **own} if own else common, groups=groups_of)
        groups = {g: tuple(dict.fromkeys(names)) for g, names in members.items() if g not in IMPLICIT_GROUPS}
        groups["ungrouped"] = tuple(ungrouped)
        groups["all"] = tuple(nodes)
        return Inventory(nodes=nodes, groups=groups, source=str(self.path))

    def _ansible_vars(self, name: str, groups: list[str]) -> dict[str, Any]:
        merged = dict(self.global_vars)
        for group in groups:
            merged.update(self.group_vars.get(group, {}))
        merged.update(self.file_global_vars)
        for group in groups:
            merged.update(self.file_group_vars.get(group, {}))
        merged.update(self.node_vars.get(name, {}))
        merged.update(self.file_node_vars.get(name, {}))
        for target, names in ANSIBLE_ALIASES.items():
            values = [merged.pop(n) for n in names if n in merged]
            given = [v for v in values if v is not None]  # ansible-core's config reads skip None
            if given:
                merged[target] = given[-1]
        return merged

    def _ansible_sort_key(self) -> Callable[[str], tuple[int, int, str]]:
        """inventory/helpers.py sort_groups: (depth, priority, name); depth as inventory/group.py keeps it, the
        longest path from `all` (a group with no parent hangs from `all`: depth 1)."""
        parents: dict[str, list[str]] = {}
        for group, children in self.children.items():
            for child, _ in children:
                parents.setdefault(child, []).append(group)
        depths: dict[str, int] = {"all": 0}

        def depth(group: str) -> int:
            if group not in depths:
                depths[group] = 1 + max((depth(p) for p in parents.get(group, ())), default=0)
            return depths[group]

        return lambda group: (depth(group), self.group_priority.get(group, 1), group)

    def _resolve(self, group: str, stack: list[str], line: int | None) -> list[str]:
        """All nodes of group and its descendants; `line` is where stack[-1] lists group as a child. Each group
        is resolved once; nesting and the total work are bounded (MAX_GROUP_DEPTH, MAX_MEMBERSHIPS)."""
        done = self._resolved.get(group)
        if done is not None:
            return done
        where = self.children_field.format(stack[-1]) if stack else None
        if group in stack:
            raise BadInputError(f"group {group!r} contains itself through {' -> '.join([*stack, group])}",
                                path=str(self.path), line=line, field=where)
        if len(stack) >= MAX_GROUP_DEPTH:
            raise BadInputError(f"groups nested more than {MAX_GROUP_DEPTH} deep ({' -> '.join(stack[:3])} -> ...)",
                                path=str(self.path), line=line, field=where)
        names = dict.fromkeys(self.groups.get(group, {}))
        for child, child_line in self.children.get(group, []):
            if child not in self.groups and child not in self.children:
                raise BadInputError(f"unknown child group {child!r}", path=str(self.path), line=child_line,
                                    field=self.children_field.format(group))
            members = self._resolve(child, [*stack, group], child_line)
            self._work += len(members)
            if self._work > MAX_MEMBERSHIPS:
                raise BadInputError(f"group memberships through children add up to more than {MAX_MEMBERSHIPS:,}",
                                    path=str(self.path), line=child_line, field=self.children_field.format(group))
            names.update(dict.fromkeys(members))
        self._resolved[group] = result = list(names)
        return result

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

