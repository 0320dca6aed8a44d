"""Rows for scripts: `--format csv|tsv` and `-o/--fields` on every table command.

A row is one object of the command's `--json` output (a node of `status`, a result of `check`, an entry of
`log`, ...), already made plain by `render.json.to_jsonable`; a field is one of its keys, or a dotted path
into a nested object or list (`facts.host.kernel`, `gpu_models.0.name`). CSV is written by Python's csv
module (RFC 4180: quoted where needed, CRLF line ends); TSV is one row a line with tab, newline, carriage
return and backslash escaped. Either way every control character from a node or a user reaches the output
escaped (render.text), never raw: a file of rows is also `cat` on a terminal. No rich here: `table` with
`-o` is drawn by render.terminal.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

from jueying_cli.errors import BadInputError
from jueying_cli.render.text import safe_cell, safe_tsv
from jueying_cli.vocab import OutputFormat

FIELDS_OPTION = "-o/--fields"


def parse_fields(given: Iterable[str] | None, valid: Sequence[str]) -> list[str] | None:
    """The fields named by `-o a,b -o c` (None when not given); BadInputError (exit 2) naming an unknown field
    and listing the valid ones. A dotted path is checked here by its first part, the rest against the rows."""
    if given is None:
        return None
    fields = [f.strip() for value in given for f in value.split(",")]
    if not fields or any(not f for f in fields):
        raise BadInputError("empty field name (write FIELD,FIELD,...)", field=FIELDS_OPTION)
    for name in fields:
        if name.split(".", 1)[0] not in valid:
            raise BadInputError(f"unknown field {name!r}; valid fields: {', '.join(valid)}", field=FIELDS_OPTION)
    return fields


def value_at(row: Mapping[str, Any], field: str) -> Any:
    """The value of a field or dotted path in one row; None where the path does not lead anywhere."""
    value: Any = row
    for part in field.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def check_paths(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> None:
    """A dotted path that no row leads along, and that some row shows to be wrong (an object without that
    key, or a plain value where the path goes on), is a typo: BadInputError listing the keys found where it
    stopped. A path that only runs past the end of a list (`gpus.7` on a node with 4 GPUs) or into a null (a
    node that did not answer) is an empty cell."""
    for field in fields:
        if "." not in field:
            continue
        parts = field.split(".")
        wrong: list[list[str]] = []
        for row in rows:
            leads, keys = _follow(row.get(parts[0]), parts[1:])
            if leads:
                break
            if keys is not None:
                wrong.append(keys)
        else:
            found = sorted({k for keys in wrong for k in keys})
            if found:
                raise BadInputError(f"field {field!r} is in no row; keys there: {', '.join(found)}",
                                    field=FIELDS_OPTION)
            if wrong:
                raise BadInputError(f"field {field!r} goes on past a plain value", field=FIELDS_OPTION)


def _follow(value: Any, parts: Sequence[str]) -> tuple[bool, list[str] | None]:
    """(the path leads to a value, the keys where it went wrong: None when it only ran out of a list or
    into a null)."""
    for part in parts:
        if value is None:
            return False, None
        if isinstance(value, Mapping):
            if part not in value:
                return False, [str(k) for k in value]
            value = value[part]
        elif isinstance(value, list):
            if not part.isdigit():
                return False, [f"0..{len(value) - 1}" if value else "0.."]
            if int(part) >= len(value):
                return False, None
            value = value[int(part)]
        else:
            return False, []
    return True, None


def cell_text(value: Any) -> str:
    """One value as text, before escaping: null empty, booleans true/false (as in JSON), numbers as JSON
    writes them, objects and lists as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return str(value)  # a StrEnum as its value
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def write_rows(rows: Sequence[Mapping[str, Any]], fields: Sequence[str], fmt: OutputFormat, out: IO[str], *,
               header: bool = True) -> None:
    """Write the rows as CSV or TSV, one line per row (CSV quotes a value holding a newline)."""
    if fmt == OutputFormat.CSV:
        writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180; csv's default quoting (minimal)
        if header:
            writer.writerow(fields)
        for row in rows:
            writer.writerow([safe_cell(cell_text(value_at(row, f))) for f in fields])
    elif fmt == OutputFormat.TSV:
        if header:
            out.write("\t".join(safe_tsv(f) for f in fields) + "\n")
        for row in rows:
            out.write("\t".join(safe_tsv(cell_text(value_at(row, f))) for f in fields) + "\n")
    else:
        raise ValueError(f"not a row format: {fmt}")
    out.flush()
