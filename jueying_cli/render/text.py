"""Text that jueying did not write itself, made safe to print: the one place every text printer goes through.

Node names, drain reasons (ours or set by someone else in Slurm), GPU names from NVML, error messages,
command output shown on a terminal: any of them may carry terminal control sequences (ESC [2J clears the
screen, ESC ]0; retitles the window, a carriage return or a bidi override hides what follows). `safe()`
shows every control character as an escape (`\\x1b`, `\\r`, `\\u202e`), so what reaches the terminal is
exactly the characters that were there, visible. JSON output keeps the exact text (json.dumps escapes it).

No rich here: `render.terminal` wraps safe text in rich `Text`, so markup in user data is never interpreted.
"""

from __future__ import annotations

import re
import sys
from typing import IO

# C0 controls, DEL, C1 controls; line and paragraph separators; bidi embeddings, overrides and isolates
# (Trojan Source); lone surrogates (json.loads lets "\udc80" through; writing one to stdout would raise).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u061c\u200e\u200f"
                     "\ud800-\udfff]")
# The same, but keeping line breaks and tabs (for multi-line blocks such as command output on a terminal).
_UNSAFE_BLOCK = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u061c\u200e"
                           "\u200f\ud800-\udfff]|\r(?!\n)")
# For CSV cells: as _UNSAFE, but newline and tab are kept (the csv quoting carries them).
_UNSAFE_CELL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u061c\u200e\u200f"
                          "\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(value: object) -> str:
    """One line of printable text: every control character (newlines too) shown escaped."""
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_escape, text)


def safe_block(value: str) -> str:
    """Several lines: newlines, CRLF and tabs kept, every other control character shown escaped."""
    return _UNSAFE_BLOCK.sub(_escape, value)


def safe_cell(value: str) -> str:
    """A CSV cell (RFC 4180 quoting carries commas, quotes, newlines and tabs exactly): every other control
    character, the carriage return included, shown escaped as safe() shows it, so `cat out.csv` on a
    terminal cannot act on it. A backslash is not doubled (as in the tables)."""
    return _UNSAFE_CELL.sub(_escape, value)


def safe_tsv(value: str) -> str:
    """A TSV cell: one line without tabs. The backslash is doubled first, then tab, newline and carriage
    return become \\t \\n \\r and every other control character \\xNN (as safe() shows them), so the
    escaping can be undone exactly (the text format of PostgreSQL's COPY and MySQL's batch output)."""
    return safe(value.replace("\\", "\\\\"))


def is_safe(value: str) -> bool:
    return _UNSAFE.search(value) is None


def say(line: object = "", *, err: bool = False, file: IO[str] | None = None) -> None:
    """Print one line made safe (stdout, or stderr with err=True); a newline inside it is data, shown as \\n."""
    out = file or (sys.stderr if err else sys.stdout)
    out.write(safe(line) + "\n")


def warn(message: object) -> None:
    """`jueying: warning: MESSAGE` on stderr."""
    say(f"jueying: warning: {message}", err=True)


class SafeWriter:
    """A text stream that escapes control characters (keeping newlines and tabs) before writing to `out`:
    for text produced by code that writes on its own (click's usage errors)."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def write(self, text: str) -> int:
        self._out.write(safe_block(text))
        return len(text)

    def flush(self) -> None:
        self._out.flush()

    def isatty(self) -> bool:
        return False
