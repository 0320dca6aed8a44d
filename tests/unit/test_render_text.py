"""render.text: text jueying did not write reaches a terminal with its control characters escaped, rich
never reads user data as markup, and the CLI prints only through these helpers."""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

import pytest

from jueying_cli.outcome import Outcome
from jueying_cli.render import gather
from jueying_cli.render.terminal import make_console, print_message, print_nodes
from jueying_cli.render.text import SafeWriter, is_safe, safe, safe_block, say
from jueying_cli.status.summary import unanswered

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("raw", "shown"), [
    ("\x1b]0;pwned\x07\x1b[2J X", "\\x1b]0;pwned\\x07\\x1b[2J X"),
    ("line\nfake line", "line\\nfake line"),
    ("tab\there", "tab\\there"),
    ("over\rwrite", "over\\rwrite"),
    ("\x9b31m C1 CSI", "\\x9b31m C1 CSI"),
    ("\u202eevil", "\\u202eevil"),
    ("byte \udcff", "byte \\xff"),
    ("\x00\x7f", "\\x00\\x7f"),
    ("H100 80GB HBM3 °C ✓ ü", "H100 80GB HBM3 °C ✓ ü"),
])
def test_safe_shows_control_characters_escaped(raw: str, shown: str) -> None:
    assert safe(raw) == shown
    assert is_safe(safe(raw))


def test_safe_block_keeps_lines_and_tabs_only() -> None:
    assert safe_block("a\tb\r\nc\n\x1b[2Jd\re") == "a\tb\r\nc\n\\x1b[2Jd\\re"


def test_say_and_the_safe_writer_escape() -> None:
    out = io.StringIO()
    say("reason: \x1b[2J", file=out)
    assert out.getvalue() == "reason: \\x1b[2J\n"
    out = io.StringIO()
    SafeWriter(out).write("Error: No such option: --\x1b[2J\n")
    assert out.getvalue() == "Error: No such option: --\\x1b[2J\n"


def test_tables_escape_cells_and_never_read_markup() -> None:
    buffer = io.StringIO()
    console = make_console(buffer)
    print_nodes([unanswered("gpu001", "failed", "probe said [bold red]boom[/] \x1b[2J\n[/]")], console)
    print_message(console, "[red]not markup[/] \x1b]0;t\x07")
    text = buffer.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert "[bold red]boom[/] \\x1b[2J\\n[/]" in text
    assert "[red]not markup[/] \\x1b]0;t\\x07" in text


def _outcome(node: str, stdout: str, stderr: str = "", rc: int = 0, error: str | None = None) -> Outcome:
    return Outcome(node=node, status="ok" if rc == 0 and error is None else "failed", rc=rc, stdout=stdout,
                   stderr=stderr, error=error)


def test_gathered_output_is_raw_to_a_pipe_and_escaped_otherwise() -> None:
    outcomes = [_outcome("n1", "\x1b[2Jhi\r\n"), _outcome("n2", "\x1b[2Jhi\r\n")]
    raw, escaped = io.StringIO(), io.StringIO()
    gather.print_gathered(outcomes, raw, raw=True)
    gather.print_gathered(outcomes, escaped, raw=False)
    assert "\x1b[2Jhi\r\n" in raw.getvalue()
    assert "\\x1b[2Jhi\r\n" in escaped.getvalue() and "\x1b" not in escaped.getvalue()
    failed = {"n3": Outcome(node="n3", status="unreachable", error="no route: \x1b[2J")}
    assert all(is_safe(line) for line in gather.summary_lines(failed))


def test_the_cli_prints_only_through_render() -> None:
    """No print() and no bare stream write in cli/: every line goes through render.text.say, a rich Text,
    render.json.print_json, or a write of safe()/jsonl() text."""
    wrong = []
    for path in sorted((REPO / "jueying_cli" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            if isinstance(node.func, ast.Name) and node.func.id == "print":
                wrong.append(f"{path.name}:{node.lineno}: print()")
            if isinstance(node.func, ast.Attribute) and node.func.attr == "write":
                text = ast.unparse(node.args[0]) if node.args else ""
                if not re.search(r"\b(safe|safe_block|safe_cell|safe_tsv|jsonl)\(", text):
                    wrong.append(f"{path.name}:{node.lineno}: write({text})")
    assert wrong == []
