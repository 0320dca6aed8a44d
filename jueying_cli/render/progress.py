"""A transient progress bar on stderr while a fan-out runs (rich is imported only when one is shown)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class NodeProgress:
    def __init__(self, total: int) -> None:
        self._progress = Progress(TextColumn("nodes"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  console=Console(file=sys.stderr), transient=True)
        self._task = self._progress.add_task("nodes", total=total)

    def __enter__(self) -> NodeProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def advance(self) -> None:
        self._progress.advance(self._task)
