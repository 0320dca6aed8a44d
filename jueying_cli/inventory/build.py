"""Building an inventory from any format: node names, NodeSet ranges, variables checked against what jueying
knows, groups and their members, merged with a fixed precedence."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
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
MAX_GROUP_DEPTH = 100  # children of children...: deeper is a mistake (or an attack), not an inventory
MAX_MEMBERSHIPS = 10 * nodeset.MAX_NODES  # node-in-group entries resolved through children, in all


def check_name(name: str, path: Path, line: int | None, what: str = "node name",
                field: str | None = None) -> str:
    """Node names become SSH host names and table keys: plain DNS-ish characters only."""
    if not _NAME_RE.match(name) or len(name) > 253:
        raise BadInputError(f"invalid {what} {name!r} (letters, digits, '.', '-', '_' only)",
                            path=str(path), line=line, field=field)
    return name


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
    names = nodeset.expand(pattern)
    if names is not None:  # one template: its first and last names stand for all (only digits differ)
        for name in {names[0], names[-1]} if names else ():
            check_name(name, path, line, field=field)
        return names
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


def _out_of_range(name: str, value: Any) -> str | None:
    """Why a value of the right type is still unusable (found at load, not when a drain needs it), or None."""
    if name in ("expected_gpus", "max_unavailable") and value < 0:
        return f"must not be negative, got {value}"
    if name == "max_unavailable_pct" and not (math.isfinite(value) and 0 <= value <= 100):
        return f"must be a percentage from 0 to 100, got {value!r}"
    if name == "scheduler" and value not in tuple(Backend):
        return f"unknown scheduler {value!r} (slurm or builtin)"
    return None


class InventoryBuilder:
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
        self.expanded = 0  # names expanded from patterns so far, against MAX_NODES
        self._resolved: dict[str, list[str]] = {}
        self._work = 0  # memberships copied from child groups so far, against MAX_MEMBERSHIPS

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

    def build(self) -> Inventory:
        members = {g: list(names) for g, names in self.groups.items()}
        for group in self.children:
            members[group] = self._resolve(group, [], None)
        # Each node's groups as an index into `combos`: nodes in the same groups share one groups tuple and
        # one variables mapping (a million nodes of one group cost a million Node objects, not a million
        # lists and dicts); a node's own variables get their own copy.
        combo_of: dict[str, int | None] = self.order  # type: ignore[assignment]  # reused: None = combo 0
        combos: list[tuple[str, ...]] = [()]
        for group, names in members.items():
            joined: dict[int, int] = {}  # combo before -> combo with this group
            for name in names:
                before = combo_of.get(name) or 0
                after = joined.get(before)
                if after is None:
                    combos.append((*combos[before], group))
                    after = joined[before] = len(combos) - 1
                combo_of[name] = after
        depths = self._depths()
        group_order = sorted(self.group_vars, key=lambda g: depths.get(g, 0))
        shared: list[dict[str, Any]] = []
        for groups_of in combos:
            merged = dict(self.global_vars)
            for group in group_order:
                if group in groups_of:
                    merged.update(self.group_vars[group])
            shared.append(merged)
        nodes = {}
        for name, index in combo_of.items():
            combo = index or 0
            own = self.node_vars.get(name)
            nodes[name] = Node(name=name, vars={**shared[combo], **own} if own else shared[combo],
                               groups=combos[combo])
        groups = {g: tuple(names) for g, names in members.items() if g not in ("all", "ungrouped")}
        groups["all"] = tuple(nodes)
        return Inventory(nodes=nodes, groups=groups, source=str(self.path))

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

