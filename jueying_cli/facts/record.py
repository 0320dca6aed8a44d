"""Records: frozen, slotted dataclasses whose fields are the keys of one kind of object in the facts document.

A record class sets KEYS to a tuple from facts/schema.py and declares one field per key, in that order (checked:
`Record.check()` raises TypeError when they differ, so the model cannot drift from the schema). The annotation
of a field says what its key may hold:

    str, int, bool         exactly that JSON type (a bool is never taken for a number)
    float                  a JSON number, int or float
    int | str              either (an InfiniBand port number, or its name)
    SomeRecord             a JSON object, read as that record; null or missing reads as an object of nulls
    tuple[SomeRecord, ...] a JSON list of objects
    tuple[str, ...]        a JSON list of strings
    ... | None             null allowed, and kept as None

A field without `| None` and without a default is required: missing or null is refused. A field with a default
takes it when its key is missing or null. Keys the record does not have are ignored.

`parse()` refuses anything else with FactsError naming the key (`facts document: gpus[3].pcie.gen_max has type
str, expected int`); `to_document()` writes the same JSON back: every key, in schema order. A document the
probe wrote therefore comes back equal from `parse(doc).to_document()` (tests/unit/test_facts_contract.py).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import ClassVar, Self

from jueying_cli.errors import FactsError

# Field metadata: the text of "must be a list of ..." for a list field, said of anything wrong inside it (by
# default: "objects" or "strings", and a bad item of a list of objects is named by its path).
SHAPE = "jueying.shape"
# Field metadata: a list whose item that is not an object is named by its index (`gpus[4] must be an object`).
NAME_ITEMS = "jueying.name_items"

# Distinct values kept per shared record class (Record.SHARED); past it, new values are read into new records.
_SHARED_LIMIT = 4096


class Record:
    """Base of every facts record (see the module docstring). Subclasses are frozen, slotted, kw_only dataclasses."""

    __slots__ = ()
    KEYS: ClassVar[tuple[str, ...]] = ()
    # True for small records of scalars that many GPUs and nodes hold with equal values (an NVLink's state, a
    # GPU's ECC counters, the driver versions): JSON objects with the same values (and types) are read into one
    # shared instance, once, so a thousand nodes neither keep nor validate a hundred thousand copies.
    SHARED: ClassVar[bool] = False

    @classmethod
    def parse(cls, value: object, path: str) -> Self:
        """`value`, the JSON object at `path` (`gpus[3].pcie`, "" for the document), as this record."""
        if type(value) is not dict and not isinstance(value, Mapping):
            raise FactsError(f"facts document: {path} must be an object")
        key = None
        if cls.SHARED:
            shared = _SHARED.setdefault(cls, {})
            hit, key = _find_shared(shared, cls.KEYS, value)
            if hit is not None:
                return typing.cast(Self, hit)
        prefix = f"{path}." if path else ""
        make: Callable[..., Self] = cls
        record = make(**{f.key: f.read(value, prefix) for f in _spec(cls)})
        if key is not None and len(shared) < _SHARED_LIMIT:
            shared[key] = record
        return record

    def to_document(self) -> dict[str, object]:
        """This record as the JSON object the probe writes: every key, in schema order."""
        return {f.key: f.write(getattr(self, f.key)) for f in _spec(type(self))}

    @classmethod
    def check(cls) -> None:
        """Raise TypeError unless this record's fields, and those of every record it holds, are its KEYS."""
        _spec(cls)


class Counters(Record, Mapping[str, int | None]):
    """A record of counts and flags that also reads as a mapping of its keys (`gpu.pcie.get("gen_max")`,
    `dict(gpu.ecc_errors)`), and compares equal to one."""

    __slots__ = ()

    def __getitem__(self, key: str) -> int | None:
        if key not in self.KEYS:
            raise KeyError(key)
        value: int | None = getattr(self, key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.KEYS)

    def __len__(self) -> int:
        return len(self.KEYS)


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    key: str
    read: Callable[[Mapping[str, object], str], object]  # (the object holding the key, its path prefix) -> value
    write: Callable[[object], object]  # value -> JSON
    scalar: bool = False


_MISSING = object()

# Per record class: how to read and write each field (built once, on first use), and the shared instances.
_SPECS: dict[type[Record], tuple[_Field, ...]] = {}
_SHARED: dict[type[Record], dict[tuple[object, ...], Record]] = {}


def _find_shared(shared: dict[tuple[object, ...], Record], keys: tuple[str, ...],
                 doc: object) -> tuple[Record | None, tuple[object, ...] | None]:
    """(the shared record read from a JSON object with the same values, or None; the key to share a new one
    under, or None when a value cannot be a key: a list where a number belongs, which parse() refuses).
    The key holds the values and their types: True is not 1, and 1 is not 1.0."""
    try:
        raw = tuple(map(typing.cast(Mapping[str, object], doc).get, keys))
        key = (raw, tuple(map(type, raw)))
        return shared.get(key), key
    except (AttributeError, TypeError):
        return None, None


def _spec(cls: type[Record]) -> tuple[_Field, ...]:
    spec = _SPECS.get(cls)
    if spec is None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} is not a dataclass")
        fields = dataclasses.fields(cls)
        names = tuple(f.name for f in fields)
        if names != cls.KEYS:
            raise TypeError(f"{cls.__name__} fields {names} are not its schema keys {cls.KEYS}")
        hints = typing.get_type_hints(cls)
        spec = tuple(_field(f, hints[f.name]) for f in fields)
        if cls.SHARED and not all(f.scalar for f in spec):
            raise TypeError(f"{cls.__name__} is SHARED but holds more than scalars")
        _SPECS[cls] = spec
    return spec


def _split_optional(hint: object) -> tuple[bool, object]:
    """(None allowed, the type without None)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        rest = tuple(a for a in args if a is not type(None))
        if len(rest) < len(args):
            return True, rest[0] if len(rest) == 1 else typing.Union[rest]  # noqa: UP007 - a runtime union
    return False, hint


def _kinds(hint: object, name: str) -> tuple[type, ...]:
    """The JSON types a scalar field accepts."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kinds: list[type] = []
    for arg in args:
        if arg is float:
            kinds += [int, float]
        elif arg in (str, int, bool):
            kinds.append(typing.cast(type, arg))
        else:
            raise TypeError(f"field {name}: {hint} is not a JSON scalar, record or tuple")
    return tuple(dict.fromkeys(kinds))


def _is_record(hint: object) -> bool:
    return isinstance(hint, type) and issubclass(hint, Record)


def _field(f: dataclasses.Field[object], hint: object) -> _Field:
    optional, base = _split_optional(hint)
    if f.default is not dataclasses.MISSING:
        has_default, default = True, f.default
    elif f.default_factory is not dataclasses.MISSING:
        has_default, default = True, f.default_factory()
    else:
        has_default, default = optional, None
    if _is_record(base):
        return _record_field(f.name, typing.cast(type[Record], base), optional)
    if typing.get_origin(base) is tuple:
        return _list_field(f, typing.get_args(base)[0], optional, has_default, default)
    return _scalar_field(f.name, _kinds(base, f.name), has_default, default)


def _record_field(key: str, kind: type[Record], optional: bool) -> _Field:
    kind.check()

    def read(doc: Mapping[str, object], prefix: str) -> object:
        value = doc.get(key)
        if value is None:
            return None if optional else kind.parse({}, prefix + key)
        return kind.parse(value, prefix + key)

    def write(value: object) -> object:
        return None if value is None else typing.cast(Record, value).to_document()

    return _Field(key, read, write)


def _list_field(f: dataclasses.Field[object], item: object, optional: bool, has_default: bool,
                default: object) -> _Field:
    key = f.name
    records = _is_record(item)
    shape = f.metadata.get(SHAPE)
    wrong = f"must be a list of {shape or ('objects' if records else 'strings')}"
    name_items = bool(f.metadata.get(NAME_ITEMS))
    if records:
        kind = typing.cast(type[Record], item)
        kind.check()
    else:
        kinds = _kinds(item, key)

    def read(doc: Mapping[str, object], prefix: str) -> object:
        value = doc.get(key)
        if value is None and (optional or has_default):
            return None if optional else default
        if not isinstance(value, list):
            raise FactsError(f"facts document: {prefix}{key} {wrong}")
        if not records:
            if not all(isinstance(v, kinds) and (bool in kinds or not isinstance(v, bool)) for v in value):
                raise FactsError(f"facts document: {prefix}{key} {wrong}")
            return tuple(value)
        if not name_items and not all(type(v) is dict or isinstance(v, Mapping) for v in value):
            raise FactsError(f"facts document: {prefix}{key} {wrong}")
        try:
            if kind.SHARED:  # most items were seen before (NVLinks): look them up without a call to parse()
                shared, keys, found = _SHARED.setdefault(kind, {}), kind.KEYS, []
                for i, v in enumerate(value):
                    try:
                        raw = tuple(map(v.get, keys))  # as in _find_shared(), without a call per item
                        hit = shared.get((raw, tuple(map(type, raw))))
                    except (AttributeError, TypeError):
                        hit = None
                    found.append(hit if hit is not None else kind.parse(v, f"{prefix}{key}[{i}]"))
                return tuple(found)
            return tuple(kind.parse(v, f"{prefix}{key}[{i}]") for i, v in enumerate(value))
        except FactsError:
            if shape is None:
                raise
            raise FactsError(f"facts document: {prefix}{key} {wrong}") from None

    def write(value: object) -> object:
        if value is None:
            return None
        items = typing.cast(tuple[object, ...], value)
        return [typing.cast(Record, v).to_document() for v in items] if records else list(items)

    return _Field(key, read, write)


def _scalar_field(key: str, kinds: tuple[type, ...], has_default: bool, default: object) -> _Field:
    expected = "/".join(k.__name__ for k in kinds)
    numbers_only = bool not in kinds
    # Values taken as they are, by exact type (True is a bool, not an int): the common case, checked first.
    plain = frozenset(kinds) | ({type(None)} if has_default and default is None else set())

    def read(doc: Mapping[str, object], prefix: str) -> object:
        value = doc.get(key, _MISSING)
        if type(value) in plain:
            return value
        if value is None or value is _MISSING:
            if has_default:
                return default
            raise FactsError(f"facts document: {prefix}{key} is {'null' if value is None else 'missing'}")
        if not isinstance(value, kinds) or (numbers_only and isinstance(value, bool)):
            raise FactsError(f"facts document: {prefix}{key} has type {type(value).__name__}, expected {expected}")
        return value

    def write(value: object) -> object:
        return value

    return _Field(key, read, write, scalar=True)
