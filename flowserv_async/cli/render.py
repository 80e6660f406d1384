"""Output of the commands: rich tables for people, one JSON document for programs.

Text that comes from users or workflows (names, log lines, paths) is printed as
:class:`rich.text.Text`, never parsed as rich markup.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from flowserv_async.states import RunState

#: Styles of the run states.
STATE_STYLES = {
    RunState.PENDING: "yellow",
    RunState.RUNNING: "cyan",
    RunState.SUCCESS: "bold green",
    RunState.ERROR: "bold red",
    RunState.CANCELED: "bold magenta",
}


def cell(value: Any) -> str:
    """The text of a table cell: empty for None, JSON for lists and mappings."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def timestamp(value: str | None) -> str:
    """A short form of an ISO 8601 UTC timestamp for tables: ``2024-05-01 12:00:00``."""
    if not value:
        return ""
    return value[:19].replace("T", " ")


def state_text(state: str) -> Text:
    """A run state, coloured."""
    return Text(state, style=STATE_STYLES.get(RunState(state), "")) if state else Text("")


class Output:
    """Where a command writes its results (stdout)."""

    def __init__(self, json_output: bool = False) -> None:
        self.json_output = json_output
        # soft_wrap: long paths and log lines are printed whole, not broken at 80 columns
        # when stdout is not a terminal.
        self.console = Console(highlight=False, soft_wrap=True)

    def json(self, doc: Any) -> None:
        """Print one JSON document."""
        click.echo(json.dumps(doc, indent=2, default=str))

    def line(self, *parts: str | Text | tuple[str, str]) -> None:
        """Print one line assembled from plain strings, texts and ``(text, style)``."""
        self.console.print(Text.assemble(*parts))

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        title: str | None = None,
        empty: str = "(none)",
    ) -> None:
        """Print a table; cells are strings or rich texts."""
        table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        for name in columns:
            # Identifiers are 32 characters: never wrap them.
            table.add_column(name, no_wrap=name in {"id", "run", "file id"}, overflow="fold")
        count = 0
        for row in rows:
            table.add_row(*(item if isinstance(item, Text) else Text(cell(item)) for item in row))
            count += 1
        if count == 0:
            if title:
                self.line((title, "bold"))
            self.line(("  " + empty, "dim"))
            return
        self.console.print(table)

    def fields(self, pairs: Iterable[tuple[str, Any]], title: str | None = None) -> None:
        """Print ``name: value`` pairs as a two-column table (empty values left out)."""
        table = Table(
            title=title, title_justify="left", show_header=False, show_edge=False, box=None
        )
        table.add_column("field", style="bold", no_wrap=True)
        table.add_column("value", overflow="fold")
        for name, value in pairs:
            if value is None or value == "" or value == []:
                continue
            table.add_row(name, value if isinstance(value, Text) else Text(cell(value)))
        self.console.print(table)
