"""``reco ingest postgres|chroma``: thin wrappers over the one-shot jobs in Prod/scripts."""

from __future__ import annotations

from pathlib import Path

import typer

from Prod.cli.output import JsonOption, console, dict_table, emit, run_reporting_errors

DatasetOption = typer.Option(None, "--dataset", help="Canonical dataset folder (default: setting).")
SkipOption = typer.Option(False, "--skip-bad-rows", help="Load good rows, report skipped ones.")


def _render_postgres(result: dict) -> None:
    from rich.table import Table

    table = Table(title=f"postgres ingest of {result['dataset']}")
    for column in ("table", "inserted", "updated", "unchanged"):
        table.add_column(column)
    for name in ("users", "items", "interactions"):
        counts = result[name]
        table.add_row(name, *(str(counts[k]) for k in ("inserted", "updated", "unchanged")))
    console.print(table)
    for name, columns in result["kept_columns"].items():
        console.print(
            f"{name} has no {', '.join(columns)} column: stored values kept "
            "(--clear-column NAME clears one)"
        )
    if result["cleared_columns"]:
        console.print(f"cleared (set to NULL): {', '.join(result['cleared_columns'])}")
    if result["skipped_rows"]:
        console.print(f"[yellow]skipped {result['skipped_rows']} bad row(s):[/]")
        for line in result["bad_rows"][:20]:
            console.print(f"  {line}")
    console.print(f"done in {result['seconds']['total']} s")


def _render_chroma(result: dict) -> None:
    shown = {
        k: result[k]
        for k in (
            "collection",
            "added",
            "updated",
            "unchanged",
            "deleted",
            "kept_skipped",
            "embedded",
            "products_per_s",
            "skipped_rows",
        )
    }
    if result["deleted_ids"]:
        more = " ..." if result["deleted"] > len(result["deleted_ids"]) else ""
        shown["deleted_ids"] = ", ".join(result["deleted_ids"]) + more
    if result["deletes_held_back"]:
        shown["deletes_held_back"] = "a bad entry has no item_id: nothing deleted"
    shown["seconds"] = result["seconds"]["total"]
    console.print(dict_table(shown, title=f"chroma ingest of {result['dataset']}"))


def register(app: typer.Typer, bench_app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add ``reco ingest postgres|chroma``."""
    ingest_app = typer.Typer(
        help="One-shot ingest jobs (same code as Prod/scripts).", no_args_is_help=True
    )
    app.add_typer(ingest_app, name="ingest")

    @ingest_app.command("postgres")
    def ingest_postgres_cmd(
        dataset: Path = DatasetOption,
        skip_bad_rows: bool = SkipOption,
        clear_columns: list[str] = typer.Option(
            [],
            "--clear-column",
            metavar="NAME",
            help="Set an optional column absent from users.csv/items.csv to NULL (repeat); "
            "without it an absent column keeps the stored values.",
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Load users, items, interactions into PostgreSQL (one transaction, idempotent)."""
        from config import get_settings
        from Prod.scripts.ingest_postgres_db import run

        report = run_reporting_errors(
            lambda: run(
                get_settings(), dataset, skip_bad_rows=skip_bad_rows, clear_columns=clear_columns
            )
        )
        emit(report.to_dict(), as_json, _render_postgres)

    @ingest_app.command("chroma")
    def ingest_chroma_cmd(
        dataset: Path = DatasetOption,
        skip_bad_rows: bool = SkipOption,
        batch_size: int = typer.Option(None, "--batch-size", help="Texts embedded per batch."),
        max_delete_share: float = typer.Option(
            None,
            "--max-delete-share",
            min=0.0,
            max=1.0,
            help="Largest share of the stored catalogue a run may delete (default: setting, 0.2).",
        ),
        allow_mass_delete: bool = typer.Option(
            False, "--allow-mass-delete", help="Delete every stored product missing from the file."
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Embed new/changed products into Chroma, delete removed ones (refuses to delete more
        than a share of the catalogue unless --allow-mass-delete)."""
        from config import get_settings
        from Prod.scripts.ingest_chroma_db import run

        report = run_reporting_errors(
            lambda: run(
                get_settings(),
                dataset,
                skip_bad_rows=skip_bad_rows,
                batch_size=batch_size,
                max_delete_share=max_delete_share,
                allow_mass_delete=allow_mass_delete,
            )
        )
        emit(report.to_dict(), as_json, _render_chroma)
