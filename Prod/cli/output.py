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
from typer.core import TyperOption

from Prod.common.errors import RecoError

console = Console(stderr=False)
err_console = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print one JSON object as the last line.")

START_HINT = "start the platform with `bash start_services.sh` (only the stores: `reco infra up`)"


def _flag_display_type(original: Callable[..., str | None]) -> Callable[..., str | None]:
    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag and self.metavar is None else original(self, ctx)

    return display_type_rich


# typer 0.29 writes a `<bool>` type column beside every flag (`--json <bool>`, even `--help`),
# which reads as "takes a value"; flags show no type column, as click's plain help does.
TyperOption.display_type_rich = _flag_display_type(TyperOption.display_type_rich)


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
        table.add_row(str(key), readable(value))
    return table


def readable(value: Any, indent: str = "") -> str:
    """A nested value as text lines (``key: value``, nested keys indented), never raw JSON."""
    if isinstance(value, dict):
        if not value:
            return "-"
        return "\n".join(
            f"{indent}{key}:\n{readable(item, indent + '  ')}"
            if isinstance(item, dict) and item
            else f"{indent}{key}: {readable(item)}"
            for key, item in value.items()
        )
    if isinstance(value, list | tuple):
        return ", ".join(readable(item) for item in value) if value else "-"
    if value is None:
        return "-"
    return str(value)


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)  # one line, unwrapped
    return typer.Exit(code)


def unreachable_server(exc: BaseException) -> str | None:
    """The store a failure comes from when it is "connection refused" (checked along the
    exception's causes), else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        module = type(current).__module__
        text = str(current)
        if "Could not connect to a Chroma server" in text:
            return "Chroma"
        if module.startswith("redis") and "ConnectionError" in type(current).__name__:
            return "Redis"
        if (
            module.startswith(("sqlalchemy", "psycopg"))
            and "OperationalError" in type(current).__name__
            and "connection" in text.lower()
        ):
            return "PostgreSQL"
        current = current.__cause__ or current.__context__
    return None


def run_reporting_errors(fn: Callable[[], Any]) -> Any:
    """Run a command body; domain errors become one red line and exit code 1, and so does a
    store that does not answer (naming it and how to start it), never a traceback."""
    try:
        return fn()
    except Exception as exc:
        server = unreachable_server(exc)
        if server is not None:
            raise fail(f"{server} is not reachable: {START_HINT}") from None
        if isinstance(exc, RecoError):
            raise fail(exc.message) from None
        raise
