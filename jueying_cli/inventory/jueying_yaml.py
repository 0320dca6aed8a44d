"""jueying's own inventory format (YAML: vars, groups with nodes/vars/children, nodes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jueying_cli.errors import BadInputError
from jueying_cli.inventory.build import InventoryBuilder, check_name, check_vars, expand_nodeset
from jueying_cli.inventory.model import Inventory
from jueying_cli.yamlfile import LocatedDict, LocatedList

_TOP_KEYS = {"vars", "groups", "nodes"}
_GROUP_KEYS = {"nodes", "vars", "children"}


def load_jueying_yaml(path: Path, doc: LocatedDict) -> Inventory:
    for key in doc:
        if key not in _TOP_KEYS:
            raise BadInputError(f"unknown top-level key {key!r} (expected vars, groups, nodes)",
                                path=str(path), line=doc.line_of(key), field=key)
    b = InventoryBuilder(path)
    b.global_vars = check_vars(doc.get("vars"), path, "vars", doc.line_of("vars"), strict=True)
    for section in doc:  # in file order, so that nodes keep the order in which the file first names them
        if section == "nodes" and doc["nodes"] is not None:
            nodes = doc["nodes"]
            if not isinstance(nodes, LocatedDict):
                raise BadInputError("must be a mapping of node name (or pattern) to variables",
                                    path=str(path), line=doc.line_of("nodes"), field="nodes")
            for pattern, node_vars in nodes.items():
                line = nodes.line_of(pattern)
                names = expand_nodeset(pattern, path, line, "nodes", b.budget)
                checked = check_vars(node_vars, path, f"nodes.{pattern}", line, strict=True)
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


def _load_group(b: InventoryBuilder, path: Path, group: str, spec: Any, line: int | None) -> None:
    check_name(group, path, line, "group name", "groups")
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
            b.add_nodes(expand_nodeset(pattern, path, item_line, item_field, b.budget), group)
    b.group_vars[group] = check_vars(spec.get("vars"), path, f"{where}.vars", spec.line_of("vars"), strict=True)
    children = spec.get("children")
    if children is not None:
        if not isinstance(children, list) or not all(isinstance(c, str) for c in children):
            raise BadInputError("must be a list of group names", path=str(path), line=spec.line_of("children"),
                                field=f"{where}.children")
        lines = children.item_lines if isinstance(children, LocatedList) else [spec.line_of("children")] * len(children)
        b.children[group] = list(zip(children, lines, strict=True))


# ---------------------------------------------------------------- Ansible YAML

