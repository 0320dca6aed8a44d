"""Ansible host patterns: `host:port`, `[v6]:port`, ranges with steps and letters (expand_hostname_range),
counted before they are expanded; names checked as jueying checks node names (IPv6 allowed)."""

from __future__ import annotations

import ipaddress
import re
import string
from pathlib import Path

from jueying_cli.errors import BadInputError
from jueying_cli.inventory import nodeset
from jueying_cli.inventory.build import check_budget, check_name

_NUMERIC_RANGE = r"\[(?:[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_HEX_RANGE = r"\[(?:[0-9a-f]+:[0-9a-f]+)(?::[0-9]+)?\]"
_ALNUM_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_V6_PART = rf"(?:[0-9a-f]{{1,4}}|{_HEX_RANGE})"
_V4_PART = rf"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{_NUMERIC_RANGE})"
_LABEL = rf"(?:[\w]|{_ALNUM_RANGE})(?:[\w_-]|{_ALNUM_RANGE})*(?<![_-])"
_BRACKETED_HOSTPORT = re.compile(r"^\[(.+)\]:([0-9]+)$")
_HOSTPORT = re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$")
_IPV4 = re.compile(rf"^(?:{_V4_PART}\.){{3}}{_V4_PART}$", re.I)
_H = _V6_PART
_IPV6 = re.compile(  # every way to write 0..ffff parts, from :: to 1:2:3:4:5:6:7:8, and IPv4 inside IPv6
    rf"^((?:{_H}:){{7}}{_H}|(?:{_H}:){{1,6}}:|(?:{_H}:)(?::{_H}){{1,6}}|(?:{_H}:){{2}}(?::{_H}){{1,5}}|"
    rf"(?:{_H}:){{3}}(?::{_H}){{1,4}}|(?:{_H}:){{4}}(?::{_H}){{1,3}}|(?:{_H}:){{5}}(?::{_H}){{1,2}}|"
    rf"(?:{_H}:){{6}}(?::{_H})|:(?::{_H}){{1,6}}|{_H}?::|(?:0:){{6}}(?:{_H}\.){{3}}{_H}|"
    rf"::(?:ffff:)?(?:{_H}\.){{3}}{_H}|(?:0:){{5}}ffff:(?:{_H}\.){{3}}{_H})$", re.I)
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.I)


def _parse_address(pattern: str) -> tuple[str, int | None] | None:
    """`parse_address(pattern, allow_ranges=True)`: (host, port), or None where Ansible raises (the caller
    then keeps the whole pattern, with no port, as `_expand_hostpattern` does)."""
    address, port = pattern, None
    for matcher in (_BRACKETED_HOSTPORT, _HOSTPORT):  # both are tried, in turn, as in ansible-core
        m = matcher.match(address)
        if m:
            address, port = m.group(1), int(m.group(2))
    if _IPV4.match(address) or _IPV6.match(address) or _HOSTNAME.match(address):
        return address, port
    return None


def parse_host_pattern(pattern: str, path: Path, line: int | None, field: str | None,
                       *, ini: bool = False, budget: int = nodeset.MAX_NODES) -> tuple[list[str], int | None]:
    """A host entry: its names (ranges expanded) and the port written after them (`gpu[1:4]:2222`,
    `[fe80::1]:2200`), as `_expand_hostpattern` reads it (INI's own checks added with `ini`)."""
    parsed = _parse_address(pattern)
    host, port = parsed if parsed is not None else (pattern, None)
    if ini and pattern.strip().endswith(":") and port is None:
        raise BadInputError(f"invalid host pattern {pattern!r}: a ':' at the end is reserved for a port",
                            path=str(path), line=line, field=field)
    names = expand_ansible_pattern(host, path, line, field, budget)
    if ini and any(name.strip() == "---" for name in names):
        raise BadInputError("invalid host pattern '---' (a sign that this is a YAML file)", path=str(path),
                            line=line, field=field)
    return names, port


_RANGE_BOUNDS = re.compile(r"\[([^\]\[]*)\]")


def ansible_count(pattern: str) -> int:
    """How many names an Ansible host pattern expands to (ranges multiply), without expanding it; a range that
    is not valid counts 1 (expanding it reports the error)."""
    size = 1
    for match in _RANGE_BOUNDS.finditer(pattern):
        bounds = match.group(1).split(":")
        if len(bounds) not in (2, 3):
            continue
        begin, end = bounds[0] or "0", bounds[1]
        step = int(bounds[2]) if len(bounds) == 3 and bounds[2].isdigit() and int(bounds[2]) > 0 else 1
        if begin.isdigit() and end.isdigit():
            span = int(end) - int(begin)
        elif len(begin) == 1 and len(end) == 1 and begin in string.ascii_letters and end in string.ascii_letters:
            span = string.ascii_letters.index(end) - string.ascii_letters.index(begin)
        else:
            continue
        size *= span // step + 1 if span >= 0 else 1
    return size


def expand_ansible_pattern(pattern: str, path: Path, line: int | None, field: str | None = None,
                           budget: int = nodeset.MAX_NODES) -> list[str]:
    """Host ranges expanded as below, refused before expanding when the names would not fit in `budget`."""
    check_budget(ansible_count(pattern), budget, f"host pattern {pattern[:80]!r}", path, line, field)
    return _expand_ansible(pattern, path, line, field)


def _expand_ansible(pattern: str, path: Path, line: int | None, field: str | None = None) -> list[str]:
    """Ansible host ranges, as `expand_hostname_range`: www[01:50], db-[a:f], x[0:10:2], r[1:2]n[01:03]
    (end inclusive; a zero-padded begin pads every number, and its end must have the same width). jueying
    refuses what Ansible reads oddly or into nothing: a range that expands to no host, a step below 1,
    letter bounds longer than one letter, signed numbers."""
    if "[" not in pattern:
        return [check_node_name(pattern, path, line, field)]
    parts = pattern.replace("[", "|", 1).replace("]", "|", 1).split("|")
    if len(parts) != 3:
        raise BadInputError(f"bad host pattern {pattern!r}: unbalanced [ ]", path=str(path), line=line, field=field)
    head, inner, tail = parts
    spec = f"[{inner}]"

    def bad(why: str) -> BadInputError:
        return BadInputError(f"bad host range {spec!r}: {why}", path=str(path), line=line, field=field)

    bounds = inner.split(":")
    if len(bounds) not in (2, 3):
        raise bad("must be begin:end or begin:end:step")
    begin, end = bounds[0] or "0", bounds[1]
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise bad("no end")
    if not step_text.isdigit() or int(step_text) < 1:
        raise bad("the step must be a whole number of at least 1")
    step = int(step_text)
    values: list[str]
    if begin.isdigit() and end.isdigit():
        width = len(begin) if begin[0] == "0" and len(begin) > 1 else 0
        if width and len(end) != width:
            raise bad("a zero-padded begin needs an end of the same width")
        values = [str(i).zfill(width) for i in range(int(begin), int(end) + 1, step)]
    elif len(begin) == 1 and len(end) == 1 and begin in string.ascii_letters and end in string.ascii_letters:
        first, last = string.ascii_letters.index(begin), string.ascii_letters.index(end)
        if first > last:  # Ansible's letter order: a..z then A..Z
            raise bad("begin must not come after end (letters run a..z, then A..Z)")
        values = list(string.ascii_letters[first:last + 1:step])
    else:
        raise bad("bounds must both be numbers or both single letters")
    if not values:
        raise bad("expands to no host (begin after end)")
    names: list[str] = []
    for value in values:
        names.extend(_expand_ansible(head + value + tail, path, line, field))
    return names


def check_node_name(name: str, path: Path, line: int | None, field: str | None) -> str:
    """jueying's node-name rule, plus what Ansible also takes as a host: an IPv6 address."""
    if ":" in name:
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            pass
        else:
            return name
    return check_name(name, path, line, field=field)


# ---------------------------------------------------------------- variables
