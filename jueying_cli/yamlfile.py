"""YAML loading that remembers line numbers, so every error can name file, line and field.

PyYAML's composed node tree carries marks; we build plain dicts and lists from it and keep, beside
each mapping, the line of every key. Inventories and playbooks both load through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jueying_cli.errors import BadInputError


class LocatedDict(dict[str, Any]):
    """A dict that knows the line of itself and of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class LocatedList(list[Any]):
    line: int = 0
    item_lines: list[int]


def read_text(path: Path) -> str:
    """The file as UTF-8 text; BadInputError naming the line of the first byte that is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"cannot read: {exc.strerror}", path=str(path)) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise BadInputError(f"not UTF-8 text (byte 0x{data[exc.start]:02x})", path=str(path), line=line) from exc


def load_yaml(path: Path) -> Any:
    """Parse one YAML document with SafeLoader semantics; BadInputError on syntax errors."""
    import yaml

    text = read_text(path)
    # libyaml's loader keeps the same marks (line numbers) and is several times faster on big inventories;
    # on a syntax error the pure-Python loader parses again, because its messages name the culprit.
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return _parse(fast, text, path)
        except BadInputError:
            pass
    return _parse(yaml.SafeLoader, text, path)


def _parse(loader_class: Any, text: str, path: Path) -> Any:
    import yaml

    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return _build(loader, node, path, "")
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise BadInputError(f"invalid YAML: {exc.problem or exc}", path=str(path), line=line) from exc
    except yaml.YAMLError as exc:
        raise BadInputError(f"invalid YAML: {exc}", path=str(path)) from exc
    finally:
        loader.dispose()


def _build(loader: Any, node: Any, path: Path, where: str) -> Any:
    """Plain dicts and lists from the composed node; `where` is the dotted field path, for errors."""
    import yaml

    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        own = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
        loader.flatten_mapping(node)  # resolve YAML merge keys (<<): merged pairs first, then the node's own
        merged = len(node.value) - own
        result = LocatedDict()
        result.line = line
        result.key_lines = {}
        written: set[str] = set()  # keys written in this mapping itself (merged ones may be overridden)
        for position, (key_node, value_node) in enumerate(node.value):
            if not isinstance(key_node, yaml.ScalarNode):
                raise BadInputError("mapping keys must be plain strings", path=str(path),
                                    line=key_node.start_mark.line + 1, field=where or None)
            # The key as written: YAML 1.1 would turn `on:`, `yes:` or `no:` into booleans.
            key = str(key_node.value)
            field = f"{where}.{key}" if where else key
            if key in written:
                raise BadInputError(f"duplicate key {key!r} (first on line {result.key_lines[key]})",
                                    path=str(path), line=key_node.start_mark.line + 1, field=field)
            if position >= merged:
                written.add(key)
            result[key] = _build(loader, value_node, path, field)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        items = LocatedList()
        items.line = line
        items.item_lines = []
        for i, item in enumerate(node.value):
            items.append(_build(loader, item, path, f"{where}[{i}]"))
            items.item_lines.append(item.start_mark.line + 1)
        return items
    return loader.construct_object(node, deep=True)


def line_of(container: Any, key: str | None = None) -> int | None:
    """Best line for an error about container[key] (or the container itself)."""
    if isinstance(container, LocatedDict):
        return container.line_of(key) if key is not None else container.line
    if isinstance(container, LocatedList):
        return container.line
    return None
