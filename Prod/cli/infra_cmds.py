"""``reco infra up|down|status``: the local PostgreSQL, Redis and Chroma servers."""

from __future__ import annotations

import typer

from Prod.cli.output import JsonOption, console, emit, run_reporting_errors


def _infra():
    from config import get_settings
    from Prod.orchestrate.local_infra import LocalInfra

    return LocalInfra.from_settings(get_settings())


def _render_status(status: dict) -> None:
    from rich.table import Table

    table = Table(title="local servers")
    for column in ("server", "port", "pid", "healthy", "data"):
        table.add_column(column)
    for name, row in status.items():
        ok = "[green]yes[/]" if row["healthy"] else "[red]no[/]"
        table.add_row(name, str(row["port"]), str(row["pid"] or "-"), ok, row["data"])
    console.print(table)


def register(app: typer.Typer, bench_app: typer.Typer, eval_app: typer.Typer) -> None:
    infra_app = typer.Typer(
        help="Local PostgreSQL, Redis and Chroma servers.", no_args_is_help=True
    )
    app.add_typer(infra_app, name="infra")

    @infra_app.command("up")
    def infra_up(as_json: bool = JsonOption) -> None:
        """Start the servers (idempotent) and wait until they are healthy."""
        infra = _infra()
        run_reporting_errors(infra.up)
        emit(infra.status(), as_json, _render_status)

    @infra_app.command("down")
    def infra_down(as_json: bool = JsonOption) -> None:
        """Stop the servers started from this data folder."""
        infra = _infra()
        run_reporting_errors(infra.down)
        emit(infra.status(), as_json, _render_status)

    @infra_app.command("status")
    def infra_status(as_json: bool = JsonOption) -> None:
        """Show each server's port, pid and health."""
        emit(_infra().status(), as_json, _render_status)
