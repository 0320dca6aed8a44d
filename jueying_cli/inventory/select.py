"""Node selection with ClusterShell NodeSet syntax: ranges, @group, and the operators , ! & ^.

A selection may name at most MAX_NODES nodes' worth of ranges (inventory.nodeset.count, checked before
anything is expanded)."""

from __future__ import annotations

from collections.abc import Iterable

from jueying_cli.errors import BadInputError
from jueying_cli.inventory import nodeset
from jueying_cli.inventory.model import Inventory, Node


def _resolver(inventory: Inventory, unknown: list[str]) -> object:
    """A group resolver over the inventory's groups that notes, in `unknown`, every @group it lacks."""
    from ClusterShell.NodeUtils import GroupResolver, GroupSource

    members: dict[str, Iterable[str]] = {name: names for name, names in inventory.groups.items()}
    members["all"] = inventory.nodes
    folded: dict[str, str] = {}

    class InventoryGroups(GroupSource):  # type: ignore[misc]  # ClusterShell has no type hints
        def resolv_map(self, group: str) -> str:
            if group not in members:
                unknown.append(group)
                return ""
            if group not in folded:  # folded, so ClusterShell parses a few ranges, not a million names
                folded[group] = fold(members[group])
            return folded[group]

        def resolv_list(self) -> list[str]:
            return list(members)

    return GroupResolver(InventoryGroups("inventory", {}))


def parse_nodeset(pattern: str, inventory: Inventory, what: str = "-w") -> list[str]:
    """Expand a NodeSet expression against the inventory's groups; BadInputError if it does not parse
    or names a group the inventory does not have (a typo must not silently select nothing)."""
    from ClusterShell.NodeSet import NodeSet, NodeSetException
    from ClusterShell.NodeUtils import GroupResolverError, GroupResolverSourceError

    if not pattern.strip():
        raise BadInputError("empty node set", field=what)
    check_size(pattern, what)
    fast = nodeset.expand(pattern)
    if fast is not None:
        return fast
    unknown: list[str] = []
    try:
        names = list(NodeSet(pattern, resolver=_resolver(inventory, unknown)))
    except GroupResolverSourceError as exc:  # @source:group with a source other than "inventory"
        raise BadInputError(f"bad node set {pattern!r}: no group source {str(exc)!r} (write @group)",
                            field=what) from exc
    except (NodeSetException, GroupResolverError) as exc:
        raise BadInputError(f"bad node set {pattern!r}: {exc}", field=what) from exc
    if unknown:
        groups = sorted({*inventory.groups, "all"})
        known = ", ".join(f"@{g}" for g in groups[:12]) + (f" and {len(groups) - 12} more" if len(groups) > 12 else "")
        raise BadInputError(f"no such group: {', '.join('@' + g for g in dict.fromkeys(unknown))} "
                            f"(the inventory has {known})", field=what)
    return names


def select_nodes(inventory: Inventory, include: str | None = None, exclude: str | None = None) -> list[Node]:
    """Nodes matching -w (default: all) minus -x, in inventory order. Unknown names are an error in both,
    since a typo must never silently shrink (-w) or widen (-x) a drain or a check."""
    if include is not None:  # -w '' is an error (parse_nodeset), never "everything"
        chosen = set(_known(parse_nodeset(include, inventory, "-w"), inventory, "-w"))
    else:
        chosen = set(inventory.nodes)
    if exclude is not None:
        chosen -= set(_known(parse_nodeset(exclude, inventory, "-x"), inventory, "-x"))
    return [node for name, node in inventory.nodes.items() if name in chosen]


def _known(names: list[str], inventory: Inventory, what: str) -> list[str]:
    unknown = [name for name in names if name not in inventory.nodes]
    if unknown:
        raise BadInputError(f"not in the inventory: {fold(unknown)}", field=what)
    return names


def check_size(pattern: str, what: str) -> None:
    """BadInputError when `pattern` names more than MAX_NODES nodes' worth of ranges (before expanding)."""
    size = nodeset.count(pattern)
    if size > nodeset.MAX_NODES:
        raise BadInputError(nodeset.too_many(size, f"node set {pattern[:80]!r}"), field=what)


def fold(names: Iterable[str]) -> str:
    """gpu001,gpu002,gpu003 -> gpu[001-003]."""
    from ClusterShell.NodeSet import NodeSet

    listed = list(names)
    fast = nodeset.fold(listed)
    return fast if fast is not None else str(NodeSet.fromlist(listed))


def expand(pattern: str, what: str = "NODES") -> list[str]:
    """A NodeSet expression without groups (`gpu[001-004],spare1`) -> names; BadInputError if it does not parse
    or would name more than MAX_NODES nodes."""
    from ClusterShell.NodeSet import NodeSet, NodeSetException

    check_size(pattern, what)
    fast = nodeset.expand(pattern)
    if fast is not None:
        return fast
    try:
        return list(NodeSet(pattern))
    except NodeSetException as exc:
        raise BadInputError(f"bad node set {pattern!r}: {exc}", field=what) from exc


def nodeset_order(names: Iterable[str]) -> list[str]:
    """Names in ClusterShell's order (as `nodeset -e` lists them), not the inventory's."""
    from ClusterShell.NodeSet import NodeSet

    return list(NodeSet.fromlist(list(names)))
