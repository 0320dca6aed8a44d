"""YAML loading that remembers line numbers, so every error can name file, line and field.

Plain dicts and lists are built straight from PyYAML's events (which carry marks), keeping beside each
mapping the line of every key. Inventories, check sets and playbooks all load through here. Hostile files
are refused with file:line, never expanded: an alias is the anchored object itself (shared, not copied)
and only counted, a recursive alias is an error, and nesting is bounded (no recursion anywhere, so no
stack to exhaust: libyaml's own composer crashes the process on `[[[[...` 100,000 deep).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jueying_cli.errors import BadInputError

MAX_DEPTH = 100  # nesting of mappings and sequences
ALIAS_FLOOR = 1_000_000  # values aliases may stand for, at least...
ALIAS_FACTOR = 10  # ...or this many times the values written in the file


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
    """Parse one YAML document with SafeLoader semantics; BadInputError (file:line) on syntax errors, nesting
    deeper than MAX_DEPTH, a recursive alias, or aliases that would stand for more values than
    max(ALIAS_FLOOR, ALIAS_FACTOR x the values written in the file) (an alias bomb)."""
    import yaml

    text = read_text(path)
    # libyaml's parser keeps the same marks (line numbers) and is several times faster on big inventories;
    # on a syntax error the pure-Python parser reads it again, because its messages name the culprit.
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return _parse(fast, text, path)
        except _Refused:
            raise
        except BadInputError:
            pass
    return _parse(yaml.SafeLoader, text, path)


def load_yaml_text(text: str, source: str) -> Any:
    """load_yaml for text already read (a playbook kept in a drill journal); `source` names it in errors."""
    import yaml

    return _parse(yaml.SafeLoader, text, Path(source))


class _Refused(BadInputError):
    """Not a syntax error: the pure-Python parser would say the same, so it is not asked."""


def _parse(loader_class: Any, text: str, path: Path) -> Any:
    import yaml

    loader = None
    try:
        loader = loader_class(text)  # the reader checks every character here
        return _Builder(loader, path).document()
    except yaml.reader.ReaderError as exc:  # a control character YAML does not allow (NUL, ESC...)
        code = exc.character
        what = f"U+{code:04X}" if isinstance(code, int) else repr(code)
        raise BadInputError(f"invalid YAML: character {what} is not allowed (control characters must be quoted "
                            "escapes)", path=str(path), line=text.count("\n", 0, exc.position) + 1) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise BadInputError(f"invalid YAML: {exc.problem or exc}", path=str(path), line=line) from exc
    except yaml.YAMLError as exc:
        raise BadInputError(f"invalid YAML: {exc}", path=str(path)) from exc
    finally:
        if loader is not None:
            loader.dispose()


class _Frame:
    """A mapping or sequence being built: its value, its virtual size (aliases counted as often as they are
    used), and for a mapping the key waiting for its value and the merge (<<) sources seen."""

    def __init__(self, value: LocatedDict | LocatedList, where: str, anchor: str | None) -> None:
        self.value = value
        self.where = where
        self.anchor = anchor
        self.size = 1
        self.key: str | None = None
        self.key_line = 0
        self.merging = False
        self.merges: list[tuple[Any, int]] = []

    def field(self) -> str:
        """The dotted field path of the value now expected, for errors."""
        if isinstance(self.value, LocatedList):
            return f"{self.where}[{len(self.value)}]"
        key = "<<" if self.merging else self.key
        return f"{self.where}.{key}" if self.where else str(key)


class _Builder:
    """Plain dicts and lists straight from the parser's events, without recursion (so no nesting depth can
    exhaust the stack). An alias is the anchored object itself, never a copy: nothing is expanded, aliases
    are only counted, and a document that would stand for too many values is refused."""

    def __init__(self, loader: Any, path: Path) -> None:
        self.loader = loader
        self.path = path
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, int]] = {}  # anchor -> (value, virtual size)
        self.open: set[str] = set()  # anchors of collections still being built
        self.values = 0  # values written in the file
        self.aliased = 0  # values aliases stand for
        self.alias_lines: list[tuple[int, int]] = []  # (aliased so far, line) at each alias
        self.root: Any = None

    def fail(self, message: str, line: int, field: str | None = None) -> _Refused:
        return _Refused(message, path=str(self.path), line=line, field=field or None)

    def document(self) -> Any:
        import yaml

        loader = self.loader
        loader.get_event()  # stream start
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # document start
        while not loader.check_event(yaml.DocumentEndEvent):
            self.step(loader.get_event())
        loader.get_event()
        if not loader.check_event(yaml.StreamEndEvent):
            line = loader.peek_event().start_mark.line + 1
            raise BadInputError("invalid YAML: expected a single document, found another", path=str(self.path),
                                line=line)
        allowed = max(ALIAS_FLOOR, ALIAS_FACTOR * self.values)
        if self.aliased > allowed:
            line = next(line for total, line in self.alias_lines if total > allowed)
            raise self.fail(f"YAML aliases stand for more than {allowed:,} values ({self.aliased:,}): "
                            "an alias bomb? Write the values out, or use groups and vars", line)
        return self.root

    def step(self, event: Any) -> None:
        import yaml

        line = event.start_mark.line + 1
        parent = self.stack[-1] if self.stack else None
        wants_key = parent is not None and isinstance(parent.value, LocatedDict) and parent.key is None \
            and not parent.merging
        if isinstance(event, yaml.CollectionStartEvent):
            if wants_key:
                raise BadInputError("mapping keys must be plain strings", path=str(self.path), line=line,
                                    field=parent.where or None if parent else None)
            if len(self.stack) >= MAX_DEPTH:
                raise self.fail(f"nested more than {MAX_DEPTH} levels deep", line, parent.field() if parent else None)
            container: LocatedDict | LocatedList
            if isinstance(event, yaml.MappingStartEvent):
                container = LocatedDict()
                container.key_lines = {}
            else:
                container = LocatedList()
                container.item_lines = []
            container.line = line
            self.values += 1
            if event.anchor:
                self.anchors.pop(event.anchor, None)
                self.open.add(event.anchor)
            self.stack.append(_Frame(container, parent.field() if parent else "", event.anchor))
        elif isinstance(event, yaml.CollectionEndEvent):
            frame = self.stack.pop()
            value = self.finish(frame) if isinstance(frame.value, LocatedDict) else frame.value
            if frame.anchor:
                self.open.discard(frame.anchor)
                self.anchors[frame.anchor] = (value, frame.size)
            self.deliver(value, frame.size, frame.value.line)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in self.open:
                raise self.fail(f"recursive alias *{event.anchor} (it refers to a collection that contains it)",
                                line, parent.field() if parent else None)
            if event.anchor not in self.anchors:
                raise self.fail(f"unknown alias *{event.anchor}", line, parent.field() if parent else None)
            value, size = self.anchors[event.anchor]
            if wants_key:
                raise BadInputError("mapping keys must be plain strings", path=str(self.path), line=line,
                                    field=parent.where or None if parent else None)
            self.aliased += size
            self.alias_lines.append((self.aliased, line))
            self.deliver(value, size, line)
        elif isinstance(event, yaml.ScalarEvent):
            self.values += 1
            if wants_key and parent is not None:
                self.key(parent, event, line)
                return
            value = self.scalar(event, line, parent)
            if event.anchor:
                self.anchors[event.anchor] = (value, 1)
            self.deliver(value, 1, line)

    def key(self, frame: _Frame, event: Any, line: int) -> None:
        from yaml import ScalarNode

        if event.anchor:
            self.anchors[event.anchor] = (event.value, 1)
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(ScalarNode, event.value, event.implicit)
        if tag == "tag:yaml.org,2002:merge":
            frame.merging = True
            return
        # The key as written: YAML 1.1 would turn `on:`, `yes:` or `no:` into booleans.
        key = str(event.value)
        mapping = frame.value
        assert isinstance(mapping, LocatedDict)
        if key in mapping:
            field = f"{frame.where}.{key}" if frame.where else key
            raise BadInputError(f"duplicate key {key!r} (first on line {mapping.key_lines[key]})",
                                path=str(self.path), line=line, field=field)
        frame.key, frame.key_line = key, line

    def scalar(self, event: Any, line: int, parent: _Frame | None) -> Any:
        from yaml import ScalarNode

        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(ScalarNode, event.value, event.implicit)
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. !!timestamp 2024-13-45
            raise BadInputError(f"invalid YAML value {event.value[:80]!r}: {exc}", path=str(self.path), line=line,
                                field=parent.field() if parent else None) from exc
        finally:
            self.loader.constructed_objects.pop(node, None)

    def deliver(self, value: Any, size: int, line: int) -> None:
        if not self.stack:
            self.root = value
            return
        frame = self.stack[-1]
        frame.size += size
        container = frame.value
        if isinstance(container, LocatedList):
            container.append(value)
            container.item_lines.append(line)
        elif frame.merging:
            frame.merges.append((value, line))
            frame.merging = False
        elif frame.key is not None:
            container[frame.key] = value
            container.key_lines[frame.key] = frame.key_line
            frame.key = None

    def finish(self, frame: _Frame) -> LocatedDict:
        """Apply the merge keys (<<) as PyYAML does: the mapping's own keys win, then later << over earlier
        ones, and within `<<: [a, b]` a over b; merged keys come first, in that order."""
        own = frame.value
        assert isinstance(own, LocatedDict)
        if not frame.merges:
            return own
        merged = LocatedDict()
        merged.line, merged.key_lines = own.line, {}
        for source, line in frame.merges:
            layers = list(reversed(source)) if isinstance(source, LocatedList) else [source]
            for layer in layers:
                if not isinstance(layer, LocatedDict):
                    raise BadInputError("a merge key (<<) needs a mapping or a list of mappings", path=str(self.path),
                                        line=line, field=f"{frame.where}.<<" if frame.where else "<<")
                merged.update(layer)
                merged.key_lines.update(layer.key_lines)
        merged.update(own)
        merged.key_lines.update(own.key_lines)
        return merged


def line_of(container: Any, key: str | None = None) -> int | None:
    """Best line for an error about container[key] (or the container itself)."""
    if isinstance(container, LocatedDict):
        return container.line_of(key) if key is not None else container.line
    if isinstance(container, LocatedList):
        return container.line
    return None
