"""How commands report: readable text for people, one JSON object (the last stdout line) for
machines."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from Prod.common.errors import RecoError

console = Console(stderr=False)
err_console = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print one JSON object as the last line.")


def emit(result: Any, as_json: bool, render: Callable[[Any], None] | None = None) -> None:
    """Print ``result`` for a person (``render``, else a table) or as one JSON line."""
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        sys.stdout.flush()
    elif render is not None:
        render(result)
    else:
        console.print(dict_table(result) if isinstance(result, dict) else result)


def dict_table(data: dict[str, Any], title: str | None = None) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold cyan")
    table.add_column()
    for key, value in data.items():
        table.add_row(str(key), json.dumps(value, default=str) if isinstance(value, dict | list)
                      else str(value))  # fmt: skip
    return table


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def run_reporting_errors(fn: Callable[[], Any]) -> Any:
    """Run a command body; domain errors become one red line and exit code 1."""
    try:
        return fn()
    except RecoError as exc:
        raise fail(exc.message) from None
