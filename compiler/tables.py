"""The one place terminal tables are made: every ``Console`` and ``Table`` in pimc comes from here.

rich cuts cells with "…" when a table is wider than the console, and a console that is not a terminal
(a pipe, a file, CI) is 80 columns wide: "111691…". So a non-terminal console is at least
``MIN_PIPE_WIDTH`` wide, and every column folds its text onto more lines instead of cutting it.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

MIN_PIPE_WIDTH = 200


def console(**kwargs: Any) -> Console:
    """A rich Console; when output is not a terminal, at least ``MIN_PIPE_WIDTH`` columns wide."""
    probe = Console(**kwargs)
    if probe.is_terminal or "width" in kwargs:
        return probe
    return Console(width=max(probe.width, MIN_PIPE_WIDTH), **kwargs)


class Table(RichTable):
    """A rich Table whose columns fold long cells onto more lines instead of cutting them."""

    def add_column(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("overflow", "fold")
        super().add_column(*args, **kwargs)


def metric_table(title: str) -> Table:
    """A two-column "metric | value" table, the form every command's summary takes."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    return table
