"""The one JSON envelope every `--json` output uses (stable: scripts parse it)."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from jueying_cli.facts.record import Record
from jueying_cli.vocab import Level

ENVELOPE_SCHEMA_VERSION = 1


def to_jsonable(value: Any) -> Any:
    """Dataclasses, tuples and mappings to plain JSON types; facts records in the facts document's own shape;
    check levels by name (`CRITICAL`), as `jueying check --json` writes them."""
    if isinstance(value, Level):
        return value.name
    if isinstance(value, Record):
        return value.to_document()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def envelope(command: str, data: Any, *, status: str = "ok",
             errors: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """`status` is ok, partial (some nodes failed) or error."""
    return {
        "schema_version": ENVELOPE_SCHEMA_VERSION,
        "command": command,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "status": status,
        "data": to_jsonable(data),
        "errors": [to_jsonable(e) for e in errors],
    }


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=False)


def print_json(doc: Any) -> None:
    """The document on stdout. json.dumps escapes every control character and non-ASCII character, so the
    exact text of node-supplied strings is kept and nothing in it can act on a terminal."""
    sys.stdout.write(dumps(doc) + "\n")
