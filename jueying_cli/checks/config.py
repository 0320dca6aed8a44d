"""Check sets: which checks run, with which parameters, on which nodes.

A check-set file (YAML, see playbooks/health/default.yaml) sets parameters under `checks:` and lists
`overrides:` that apply to a node set (ClusterShell syntax against the inventory, @groups included), in
order, later wins. Everything is validated when the file is loaded, so a typo fails before any node is
touched: every error names the file, the line and the field, and the CLI exits 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from jueying_cli.checks.model import Param
from jueying_cli.checks.registry import CHECKS
from jueying_cli.errors import BadInputError
from jueying_cli.inventory.model import Inventory, Node
from jueying_cli.yamlfile import LocatedDict, line_of, load_yaml

Params = Mapping[str, Mapping[str, Any]]  # check name -> parameter -> value
LEVELS = ("warning", "critical")


@dataclass(frozen=True)
class Override:
    """Parameters for the nodes of one node set; `checks` holds only what it changes."""

    nodes: str
    checks: Params
    line: int | None = None


@dataclass(frozen=True)
class CheckConfig:
    """A parsed check set: every check's effective base parameters, then overrides in order.

    `source` is the file it came from (None: the built-in defaults).
    """

    checks: Params
    overrides: tuple[Override, ...] = ()
    source: str | None = None
    # node names per (override index, inventory): expanding a node set once per run, not once per node
    _members: dict[tuple[int, int], tuple[Inventory, frozenset[str]]] = field(
        default_factory=dict, init=False, compare=False, repr=False)

    def params_for(self, node: Node, inventory: Inventory) -> Params:
        """Every check's parameters for this node: the base set, then each matching override in order."""
        merged = {name: dict(params) for name, params in self.checks.items()}
        for index, override in enumerate(self.overrides):
            if node.name in self._override_members(index, inventory):
                for name, params in override.checks.items():
                    merged[name].update(params)
        return MappingProxyType({name: MappingProxyType(params) for name, params in merged.items()})

    def confirm_runs(self, check: str, node: Node, inventory: Inventory) -> int:
        """Consecutive non-OK runs this check's finding must hold on this node before it counts as new."""
        return int(self.params_for(node, inventory)[check]["confirm_runs"])

    def enabled(self, check: str, node: Node, inventory: Inventory) -> bool:
        return bool(self.params_for(node, inventory)[check]["enabled"])

    def _override_members(self, index: int, inventory: Inventory) -> frozenset[str]:
        """Node names of override `index` against this inventory; unknown @groups are a BadInputError."""
        from jueying_cli.inventory.select import parse_nodeset

        key = (index, id(inventory))
        cached = self._members.get(key)
        if cached is not None and cached[0] is inventory:
            return cached[1]
        override = self.overrides[index]
        try:
            names = frozenset(parse_nodeset(override.nodes, inventory, what=f"overrides[{index}].nodes"))
        except BadInputError as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise BadInputError(reason, path=self.source, line=override.line,
                                field=f"overrides[{index}].nodes") from exc
        self._members[key] = (inventory, names)
        return names


def builtin_config() -> CheckConfig:
    """The documented defaults of every registered check (what playbooks/health/default.yaml spells out)."""
    return CheckConfig(checks=MappingProxyType({name: MappingProxyType(spec.defaults)
                                                for name, spec in CHECKS.items()}))


# ---------------------------------------------------------------- loading


def load_check_config(path: Path) -> CheckConfig:
    """Parse and validate a check-set file; BadInputError (path, line, field) on anything wrong."""
    doc = load_yaml(path)
    if not isinstance(doc, LocatedDict):
        raise BadInputError("a check set must be a mapping with `checks:` and optionally `overrides:`",
                            path=str(path), line=line_of(doc) or 1)
    _known_keys(path, doc, ("checks", "overrides"), "", "top-level key")
    raw_checks = doc.get("checks")
    base = {name: dict(spec.defaults) for name, spec in CHECKS.items()}
    for name, params in _check_params(path, raw_checks, doc, "checks").items():
        base[name].update(params)
        raw = raw_checks.get(name) if isinstance(raw_checks, LocatedDict) else None
        _thresholds_in_order(path, base[name], raw, f"checks.{name}")
    overrides = _overrides(path, doc.get("overrides"), doc, base)
    return CheckConfig(checks=MappingProxyType({n: MappingProxyType(p) for n, p in base.items()}),
                       overrides=overrides, source=str(path))


def _suggest(word: str, known: Iterable[str]) -> str:
    names = sorted(known)
    close = difflib.get_close_matches(word, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(names)})"


def _known_keys(path: Path, mapping: LocatedDict, known: Iterable[str], where: str, what: str) -> None:
    allowed = tuple(known)
    for key in mapping:
        if key not in allowed:
            raise BadInputError(f"unknown {what} {key!r}{_suggest(key, allowed)}", path=str(path),
                                line=mapping.line_of(key), field=f"{where}{key}")


def _check_params(path: Path, raw: Any, parent: Any, where: str) -> dict[str, dict[str, Any]]:
    """{check: {param: value}} from a `checks:` mapping, each value validated against the registry."""
    if raw is None:
        return {}
    if not isinstance(raw, LocatedDict):
        raise BadInputError("must be a mapping of check name to parameters", path=str(path),
                            line=line_of(parent, where.rsplit(".", 1)[-1]), field=where)
    _known_keys(path, raw, CHECKS, f"{where}.", "check")
    result: dict[str, dict[str, Any]] = {}
    for name, params in raw.items():
        field_name = f"{where}.{name}"
        if params is None:
            result[name] = {}
            continue
        if not isinstance(params, LocatedDict):
            raise BadInputError("must be a mapping of parameters, e.g. {enabled: false}", path=str(path),
                                line=raw.line_of(name), field=field_name)
        spec_params = CHECKS[name].params
        _known_keys(path, params, spec_params, f"{field_name}.", f"parameter of {name}")
        result[name] = {key: _value(path, spec_params[key], value, params.line_of(key), f"{field_name}.{key}")
                        for key, value in params.items()}
    return result


def _value(path: Path, param: Param, value: Any, line: int, where: str) -> Any:
    """The validated value of one parameter (lists become tuples, levels lower case)."""

    def bad(expected: str) -> BadInputError:
        return BadInputError(f"{value!r} is not {expected} ({param.doc})", path=str(path), line=line, field=where)

    if value is None:
        if param.nullable:
            return None
        raise bad(_KIND_WORDS[param.kind])
    if param.kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if param.kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                param.kind == "int" and not isinstance(value, int)):
            raise bad(_KIND_WORDS[param.kind] + (" or null" if param.nullable else ""))
        number = float(value)
        if param.minimum is not None and number < param.minimum:
            raise bad(f"at least {param.minimum:g}")
        if param.maximum is not None and number > param.maximum:
            raise bad(f"at most {param.maximum:g}")
        return value
    if param.kind == "level":
        if not isinstance(value, str) or value.lower() not in LEVELS:
            raise bad("warning or critical")
        return value.lower()
    item_kind: type = int if param.kind == "int_list" else str
    if not isinstance(value, list) or any(isinstance(item, bool) or not isinstance(item, item_kind)
                                          for item in value):
        raise bad(_KIND_WORDS[param.kind])
    return tuple(value)


_KIND_WORDS = {"bool": "true or false", "int": "a whole number", "float": "a number",
               "int_list": "a list of whole numbers", "str_list": "a list of strings", "level": "warning or critical"}


def _thresholds_in_order(path: Path, params: Mapping[str, Any], raw: Any, where: str) -> None:
    """A WARNING limit above its CRITICAL one (`warning_pct: 97, critical_pct: 95`) is refused at load, at the
    line of whichever of the two this part of the file sets (the other may be a default)."""
    for key, warning in params.items():
        partner = key.replace("warning", "critical")
        critical = params.get(partner)
        if "warning" not in key or partner not in params or not _is_number(warning) or not _is_number(critical):
            continue
        if warning > critical:
            line = line_of(raw, partner if isinstance(raw, LocatedDict) and partner in raw else key)
            raise BadInputError(f"{key} ({warning:g}) is above {partner} ({critical:g}): a WARNING limit must not "
                                "be past the CRITICAL one", path=str(path), line=line, field=f"{where}.{key}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _overrides(path: Path, raw: Any, doc: LocatedDict, base: Mapping[str, Mapping[str, Any]]) -> tuple[Override, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise BadInputError("must be a list of {nodes: ..., checks: {...}}", path=str(path),
                            line=doc.line_of("overrides"), field="overrides")
    result = []
    for index, entry in enumerate(raw):
        where = f"overrides[{index}]"
        line = getattr(raw, "item_lines", [doc.line_of("overrides")] * len(raw))[index]
        if not isinstance(entry, LocatedDict):
            raise BadInputError("must be a mapping with nodes: and checks:", path=str(path), line=line, field=where)
        _known_keys(path, entry, ("nodes", "checks"), f"{where}.", "override key")
        nodes = entry.get("nodes")
        if not isinstance(nodes, str) or not nodes.strip():
            raise BadInputError("nodes: must be a node set such as 'gpu[001-016]' or '@dgx'", path=str(path),
                                line=entry.line_of("nodes"), field=f"{where}.nodes")
        problem = nodeset_syntax_error(nodes)
        if problem:
            raise BadInputError(f"bad node set {nodes!r}: {problem}", path=str(path), line=entry.line_of("nodes"),
                                field=f"{where}.nodes")
        if "checks" not in entry:
            raise BadInputError("checks: is missing (what should change on these nodes?)", path=str(path),
                                line=entry.line, field=f"{where}.checks")
        checks = _check_params(path, entry["checks"], entry, f"{where}.checks")
        for name, params in checks.items():
            _thresholds_in_order(path, {**base[name], **params}, entry["checks"][name], f"{where}.checks.{name}")
        result.append(Override(nodes=nodes, checks=MappingProxyType(
            {name: MappingProxyType(params) for name, params in checks.items()}), line=entry.line_of("nodes")))
    return tuple(result)


def nodeset_syntax_error(pattern: str) -> str | None:
    """Why `pattern` is not a ClusterShell node set (any @group is accepted here), or None."""
    from ClusterShell.NodeSet import NodeSet, NodeSetException
    from ClusterShell.NodeUtils import GroupResolver, GroupResolverError, GroupSource

    from jueying_cli.inventory import nodeset

    size = nodeset.count(pattern)
    if size > nodeset.MAX_NODES:
        return nodeset.too_many(size, "it")

    class AnyGroup(GroupSource):  # type: ignore[misc]  # ClusterShell has no type hints
        def resolv_map(self, group: str) -> str:
            return ""

    try:
        NodeSet(pattern, resolver=GroupResolver(AnyGroup("inventory", {})))
    except GroupResolverError as exc:
        return f"no group source {str(exc)!r} (write @group)" if ":" in pattern else str(exc)
    except NodeSetException as exc:
        return str(exc)
    return None
