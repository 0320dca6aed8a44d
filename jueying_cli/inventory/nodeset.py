"""Node-set strings, bounded and fast: how many names a pattern can expand to (counted before anything is
expanded), and quick expansion and folding for the common shapes, with ClusterShell for everything else.

ClusterShell's RangeSet is a set of strings, so `n[1-99999999]` builds a hundred million of them before
anyone can say no: `count()` reads the ranges the way RangeSet parses them and adds up the sizes, so a
selection or an inventory larger than MAX_NODES is refused before it is built. `expand()` and `fold()`
do `n[1-1000000]` in a fraction of a second, where ClusterShell takes several (it sorts strings by number).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_NODES = 1_000_000  # the most node names one selection or one inventory may expand to
_OPERATORS = ",!&^"
_SIMPLE = re.compile(r"([A-Za-z_.\-]*)\[([0-9,\-/ ]+)\]([A-Za-z_.\-]*)")
_ONE_INDEX = re.compile(r"([^\d%]*)(\d+)([^\d%]*)")
_DIGITS = "0123456789"


def count(pattern: str) -> int:
    """An upper bound on the names ClusterShell builds for `pattern` (every operand of , ! & ^ counted, since
    each is expanded; @groups count 0: they are bounded by the inventory). Malformed ranges count 0 here:
    ClusterShell refuses them with its own message."""
    total = 0
    for operand in _operands(pattern):
        if operand.lstrip().startswith("@"):
            continue
        size = 1
        for ranges in re.findall(r"\[([^\[\]]*)\]", operand):
            size *= _range_count(ranges)
        total += size
    return total


def _operands(pattern: str) -> list[str]:
    """The pattern split at operators outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(pattern):
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        elif char in _OPERATORS and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    parts.append(pattern[start:])
    return parts


def _range_count(text: str) -> int:
    """How many indexes `1-5,7,10-20/2` holds, read like ClusterShell's RangeSet._parse (0 if malformed)."""
    total = 0
    for sub in text.split(","):
        parsed = _subrange(sub.strip())
        if parsed is None:
            return 0
        start, stop, step, _ = parsed
        total += (stop - start) // step + 1
    return total


def _subrange(sub: str) -> tuple[int, int, int, int] | None:
    """(start, stop, step, padding) of one `a-b/step`, or None when RangeSet would refuse it (the same tests,
    in the same order, as ClusterShell 1.9's RangeSet._parse)."""
    base, slash, step_text = sub.partition("/")
    try:
        step = int(step_text) if slash else 1
        sign_begin = sign_end = 1
        if "-" not in base:
            if step != 1:
                return None
            begin = end = base
        else:
            pieces = [p.strip() for p in base.split("-")]
            if len(pieces) == 2:
                begin, end = pieces
                if not begin:
                    begin, sign_begin, sign_end = end, -1, -1
            elif len(pieces) == 3:
                begin, end, sign_begin = pieces[1], pieces[2], -1
            elif len(pieces) == 4:
                begin, end, sign_begin, sign_end = pieces[1], pieces[3], -1, -1
            else:
                return None
        pad = 0
        if int(begin) != 0:
            if begin.lstrip("0") != begin:
                pad = len(begin)
        elif len(begin) > 1:
            pad = len(begin)
        ends = end.lstrip("0") if int(end) != 0 else end
        if (pad or ends != end) and len(begin) != len(end):
            return None
        start, stop = int(begin.lstrip("0") or "0") * sign_begin, int(ends) * sign_end
    except ValueError:
        return None
    if (pad and sign_begin < 0) or abs(stop) > 1e100 or start > stop or step < 1:
        return None
    return start, stop, step, pad


def expand(pattern: str) -> list[str] | None:
    """`prefix[ranges]suffix` (one bracket, no digits outside it, one padding) expanded in ClusterShell's
    order (by number, no duplicates), or None: ClusterShell must do it."""
    match = _SIMPLE.fullmatch(pattern.strip())
    if match is None:
        return None
    prefix, ranges, suffix = match.groups()
    parsed = [_subrange(sub.strip()) for sub in ranges.split(",")]
    if any(p is None for p in parsed):
        return None
    subs = [p for p in parsed if p is not None]
    pads = {(p[3], len(str(p[0])) if p[3] else 0) for p in subs}
    if len(pads) != 1 or any(p[0] < 0 for p in subs):
        return None
    pad = subs[0][3]
    if pad and any(len(str(p[1])) > pad for p in subs):
        return None  # 098-100 mixes widths: leave it to ClusterShell
    indexes: Iterable[range] = (range(p[0], p[1] + 1, p[2]) for p in subs)
    numbers = sorted({i for r in indexes for i in r}) if len(subs) > 1 else list(range(*_bounds(subs[0])))
    if pad:
        return [f"{prefix}{i:0{pad}d}{suffix}" for i in numbers]
    return [f"{prefix}{i}{suffix}" for i in numbers]


def _bounds(sub: tuple[int, int, int, int]) -> tuple[int, int, int]:
    return sub[0], sub[1] + 1, sub[2]


def fold(names: Iterable[str]) -> str | None:
    """Names with at most one number each, folded as ClusterShell does (`gpu[001-128],login`), or None when
    a name needs ClusterShell (two numbers, mixed zero padding, '%')."""
    groups: dict[tuple[str, str], list[str]] = {}
    plain: set[str] = set()
    clean_heads: dict[str, bool] = {}  # a name's part before its trailing number: no digit, no '%'
    for name in names:
        head = name.rstrip(_DIGITS)
        if len(head) < len(name):  # the usual shape, `gpu017`: no regular expression needed
            clean = clean_heads.get(head)
            if clean is None:
                clean = clean_heads[head] = _ONE_INDEX.fullmatch(head + "0") is not None
            if clean:
                groups.setdefault((head, ""), []).append(name[len(head):])
                continue
        match = _ONE_INDEX.fullmatch(name)
        if match is not None:
            groups.setdefault((match.group(1), match.group(3)), []).append(match.group(2))
        elif "%" in name or any(c in _DIGITS for c in name):
            return None
        else:
            plain.add(name)
    parts = [(name, name) for name in plain]
    for (prefix, suffix), digits in groups.items():
        folded = _fold_digits(digits)
        if folded is None:
            return None
        parts.append((f"{prefix}%s{suffix}", prefix + folded + suffix))
    return ",".join(text for _, text in sorted(parts))


def _fold_digits(digits: list[str]) -> str | None:
    padded = any(len(d) > 1 and d.startswith("0") for d in digits)
    width = len(digits[0])
    if padded and any(len(d) != width for d in digits):
        return None
    numbers = sorted({int(d) for d in digits})
    text = (lambda i: f"{i:0{width}d}") if padded else str
    runs, first, last = [], numbers[0], numbers[0]
    for i in numbers[1:]:
        if i == last + 1:
            last = i
            continue
        runs.append(text(first) if first == last else f"{text(first)}-{text(last)}")
        first = last = i
    runs.append(text(first) if first == last else f"{text(first)}-{text(last)}")
    return runs[0] if len(numbers) == 1 else f"[{','.join(runs)}]"


def too_many(size: int, what: str) -> str:
    """The message for a pattern or file that would expand past MAX_NODES."""
    return (f"{what} expands to {size:,} node names, more than the limit of {MAX_NODES:,} (checked before "
            "expanding)")
