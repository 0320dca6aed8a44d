"""Node selection with ClusterShell NodeSet syntax: ranges, @group, and the operators , ! & ^."""

from __future__ import annotations

from collections.abc import Iterable

from jueying_cli.errors import BadInputError
from jueying_cli.inventory.model import Inventory, Node


def _resolver(inventory: Inventory) -> object:
    from ClusterShell.NodeUtils import GroupResolver, GroupSource

    groups = {name: ",".join(members) for name, members in inventory.groups.items()}
    groups["all"] = ",".join(inventory.nodes)
    return GroupResolver(GroupSource("inventory", groups))


def parse_nodeset(pattern: str, inventory: Inventory, what: str = "-w") -> list[str]:
    """Expand a NodeSet expression against the inventory's groups; BadInputError if it does not parse."""
    from ClusterShell.NodeSet import NodeSet, NodeSetException

    if not pattern.strip():
        raise BadInputError("empty node set", field=what)
    try:
        return list(NodeSet(pattern, resolver=_resolver(inventory)))
    except NodeSetException as exc:
        raise BadInputError(f"bad node set {pattern!r}: {exc}", field=what) from exc


def select_nodes(inventory: Inventory, include: str | None = None, exclude: str | None = None) -> list[Node]:
    """Nodes matching -w (default: all) minus -x, in inventory order. Unknown names are an error, since
    a typo in -w must never silently shrink a drain or a check."""
    if include:
        wanted = parse_nodeset(include, inventory, "-w")
        unknown = [name for name in wanted if name not in inventory.nodes]
        if unknown:
            raise BadInputError(f"not in the inventory: {fold(unknown)}", field="-w")
        chosen = set(wanted)
    else:
        chosen = set(inventory.nodes)
    if exclude:
        chosen -= set(parse_nodeset(exclude, inventory, "-x"))
    return [node for name, node in inventory.nodes.items() if name in chosen]


def fold(names: Iterable[str]) -> str:
    """gpu001,gpu002,gpu003 -> gpu[001-003]."""
    from ClusterShell.NodeSet import NodeSet

    return str(NodeSet.fromlist(list(names)))
