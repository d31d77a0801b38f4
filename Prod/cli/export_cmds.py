"""``reco export recommendations``: top-k for many users to a file, through the serving code
path (:func:`Prod.batch.export.export_recommendations`)."""

from __future__ import annotations

from pathlib import Path

import typer

from Prod.cli.output import JsonOption, console, dict_table, emit, err_console, run_reporting_errors


def _render(result: dict) -> None:
    console.print(dict_table(result, title="exported recommendations"))


def _export(options: dict, show_progress: bool) -> dict:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from config import get_settings
    from Prod.als_reco_engine.index import ItemFilters
    from Prod.batch.export import check_options, export_recommendations

    filters = options.pop("filters")
    if filters["min_price"] is not None and filters["max_price"] is not None:
        if filters["min_price"] > filters["max_price"]:
            from Prod.common.errors import InvalidInput

            raise InvalidInput("--min-price is above --max-price: no product can match")
    check_options(**{key: options[key] for key in ("users", "k", "fmt", "out")})
    if not show_progress:
        return export_recommendations(
            get_settings(), filters=ItemFilters(**filters), **options
        ).as_dict()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("users", total=None)
        return export_recommendations(
            get_settings(),
            filters=ItemFilters(**filters),
            on_total=lambda total: bar.update(task, total=total),
            progress=lambda n: bar.advance(task, n),
            **options,
        ).as_dict()


def register(app: typer.Typer, bench_app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add ``reco export ...`` to ``reco``."""
    export_app = typer.Typer(help="Batch exports for campaigns.", no_args_is_help=True)
    app.add_typer(export_app, name="export")

    @export_app.command("recommendations")
    def recommendations(
        users: str = typer.Option(
            ..., "--users", help="`all` (every user in Postgres) or a file: one user id a line."
        ),
        out: Path = typer.Option(..., "--out", help="The file to write (replaced at the end)."),
        k: int = typer.Option(20, "--k", help="Items per user (1-100)."),
        fmt: str = typer.Option("csv", "--format", help="csv | parquet | jsonl."),
        category: list[str] = typer.Option([], "--category", help="Any of (repeatable)."),
        brand: list[str] = typer.Option([], "--brand", help="Any of (repeatable)."),
        min_price: float | None = typer.Option(None, "--min-price", min=0, help="Price at least."),
        max_price: float | None = typer.Option(None, "--max-price", min=0, help="Price at most."),
        min_rating: float | None = typer.Option(
            None, "--min-rating", min=0, max=5, help="Average rating at least."
        ),
        keep_seen: bool = typer.Option(
            False, "--keep-seen", help="Keep items the user interacted with."
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Top-k for every listed user, as GET /api/v1/recommend answers them (same strategies,
        filters, seen items, suppressions, deleted items, A/B arms), streamed to --out: csv and
        parquet one row per item (user_id, rank, item_id, score, strategy, model_version),
        jsonl one /recommend body per user. Not logged to the served history. A progress bar
        shows on a terminal."""
        options = {
            "users": users,
            "out": out,
            "k": k,
            "fmt": fmt,
            "exclude_seen": not keep_seen,
            "filters": {
                "categories": tuple(category),
                "brands": tuple(brand),
                "min_price": min_price,
                "max_price": max_price,
                "min_rating": min_rating,
            },
        }
        show_progress = err_console.is_terminal
        emit(run_reporting_errors(lambda: _export(options, show_progress)), as_json, _render)
