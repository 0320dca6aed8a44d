"""Failover playbooks are validated whole, before anything runs, with file:line:field errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from jueying_cli.actions.failover.playbook import load_playbook
from jueying_cli.errors import BadInputError
from tests.conftest import REPO


@pytest.mark.parametrize("path", sorted((REPO / "playbooks" / "failover").glob("*.yaml")))
def test_shipped_playbooks_load(path: Path) -> None:
    book = load_playbook(path)
    assert book.steps and all(step.on in ("failed", "spare", "local") for step in book.steps)


@pytest.mark.parametrize(("text", "line", "field", "words"), [
    ("steps:\n  - name: a\n    on: spare\n    run: x\n    undoo: y\n", 5, "steps[0].undoo", "unknown key"),
    ("steps:\n  - name: a\n    on: elsewhere\n    run: x\n", 3, "steps[0].on", "must be one of failed, spare"),
    ("steps:\n  - name: a\n    on: spare\n", 2, "steps[0].run", "is required"),
    ("steps:\n  - name: a\n    on: spare\n    run: x\n    timeout: -1\n", 5, "steps[0].timeout", "positive"),
    ("role: compute\nsteps: []\n", 2, "steps", "non-empty list"),
    ("steps:\n  - {name: a, on: spare, run: x}\nverify:\n  - {name: v, on: spare, run: y, undo: z}\n", 4,
     "verify[0].undo", "unknown key"),
    ("stepz: []\n", 1, "stepz", "unknown key"),
])
def test_errors_name_file_line_and_field(tmp_path: Path, text: str, line: int, field: str, words: str) -> None:
    path = tmp_path / "book.yaml"
    path.write_text(text)
    with pytest.raises(BadInputError) as err:
        load_playbook(path)
    assert str(err.value).startswith(f"{path}:{line}: {field}: ") and words in str(err.value)
    assert err.value.exit_code == 2
