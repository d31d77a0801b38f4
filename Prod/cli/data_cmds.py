"""``reco generate`` and ``reco import amazon|movielens``: datasets in the canonical format."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from Prod.cli.output import JsonOption, console, emit, fail, run_reporting_errors


def _refuse_to_overwrite(folder: Path, force: bool) -> None:
    """An existing non-empty folder (the shipped default dataset included) is only written over
    with ``--force``."""
    from config import get_settings

    if force or not folder.exists() or not any(folder.iterdir()):
        return
    shipped = folder.resolve() == Path(get_settings().dataset_dir).resolve()
    what = "the configured default dataset" if shipped else "a non-empty folder"
    raise fail(f"{folder} is {what}: choose a new --out folder, or add --force to overwrite it")


# import-report counts shown in the table (the cleaning counts: Prod/common/item_cleaning.py)
_REPORT_PREFIXES = (
    "rows_",
    "duplicate",
    "meta_",
    "items_without",
    "ratings_clipped",
    "titles_rebuilt",
    "fields_cleaned",
    "brands_merged",
    "values_emptied",
)


def _render_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"dataset written to {summary['folder']}", show_header=False)
    table.add_column(style="bold cyan")
    table.add_column(justify="right")
    for key in ("format", "users", "items", "interactions"):
        if key in summary:
            value = summary[key]
            table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    for event, count in summary.get("events", {}).items():
        table.add_row(f"  {event}", f"{count:,}")
    for key, value in summary.items():
        if key.startswith(_REPORT_PREFIXES) or key.endswith("_cleaned"):
            table.add_row(key.replace("_", " "), f"{value:,}")
    for name, size in summary.get("bytes", {}).items():
        table.add_row(name, f"{size / 1e6:.2f} MB")
    table.add_row("seconds", f"{summary['seconds']:.2f}")
    console.print(table)


def _import_and_write(importer, source: Path, out: Path, **options: Any) -> dict[str, Any]:
    from Prod.datasets.canonical import write_dataset

    started = time.perf_counter()
    dataset = importer(source, **options)
    summary = dataset.summary()
    written = write_dataset(out, dataset.users, dataset.items, dataset.interactions, progress=True)
    summary.update(folder=written["folder"], bytes=written["bytes"])
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


def register(app: typer.Typer, bench_app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add this area's commands to ``reco``."""

    @app.command("generate")
    def generate(
        out: Path = typer.Option(
            ...,
            "--out",
            help="Output folder (new or empty; the shipped dataset is "
            "Prod/data_ingest, written over only with --force).",
        ),
        force: bool = typer.Option(
            False, "--force", help="Write into an existing non-empty folder (replacing its files)."
        ),
        users: int | None = typer.Option(None, "--users", min=1, help="Users (default 3000)."),
        items: int | None = typer.Option(None, "--items", min=1, help="Items (default 2000)."),
        interactions: int | None = typer.Option(
            None, "--interactions", min=1, help="Interaction events (default 100,000)."
        ),
        scale: float = typer.Option(
            1.0, "--scale", min=0.0001, help="Multiplies the default sizes (10 -> 1M events)."
        ),
        seed: int = typer.Option(42, "--seed", help="Random seed; same seed, same files."),
        as_json: bool = JsonOption,
    ) -> None:
        """Generate the seeded demo-store dataset (users with tastes, long-tailed items)."""
        from Prod.datasets.generate import generate_dataset

        _refuse_to_overwrite(out, force)
        folder = out
        started = time.perf_counter()
        summary = run_reporting_errors(
            lambda: generate_dataset(
                folder,
                n_users=users,
                n_items=items,
                n_interactions=interactions,
                seed=seed,
                scale=scale,
                progress=not as_json,
            )
        )
        summary["seconds"] = round(time.perf_counter() - started, 2)
        emit(summary, as_json, _render_summary)

    import_app = typer.Typer(
        help="Import public datasets into the canonical format.", no_args_is_help=True
    )
    app.add_typer(import_app, name="import")

    @import_app.command("amazon")
    def import_amazon_cmd(
        source: Path = typer.Argument(..., help="Folder with Amazon 2018 or 2023 review files."),
        out: Path = typer.Option(..., "--out", help="Output folder for the canonical files."),
        reviewed_only: bool = typer.Option(
            False, "--reviewed-only", help="Keep only items with at least one review."
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Amazon Reviews 2018 (*_5.json + meta_*.json) or 2023 (*.jsonl + meta_*.jsonl).

        A 2023 reviews CSV (user_id, parent_asin/asin, rating, timestamp, ...) can stand in for the
        *.jsonl: quoted line breaks are fine, timestamps in epoch ms or as datetime strings (UTC).
        """
        from Prod.datasets.importers import import_amazon

        summary = run_reporting_errors(
            lambda: _import_and_write(import_amazon, source, out, reviewed_only=reviewed_only)
        )
        emit(summary, as_json, _render_summary)

    @import_app.command("movielens")
    def import_movielens_cmd(
        source: Path = typer.Argument(
            ...,
            help="Folder with ml-100k (u.data + u.item), ml-1m (ratings.dat + movies.dat) or "
            "ml-latest / 20m / 25m (ratings.csv + movies.csv) files.",
        ),
        out: Path = typer.Option(..., "--out", help="Output folder for the canonical files."),
        as_json: bool = JsonOption,
    ) -> None:
        """MovieLens ml-100k, ml-1m or ml-latest / 20m / 25m (the layout is detected)."""
        from Prod.datasets.importers import import_movielens

        summary = run_reporting_errors(lambda: _import_and_write(import_movielens, source, out))
        emit(summary, as_json, _render_summary)
