"""One-shot job: load the canonical dataset into PostgreSQL (schema migrated first).

    python -m Prod.scripts.ingest_postgres_db [--dataset DIR] [--skip-bad-rows]
        [--clear-column NAME ...]

Safe to re-run: the same files leave the same state. Exits 1 with one message on bad input
(every bad row listed as file:line: reason) and writes nothing unless --skip-bad-rows. An
optional column left out of users.csv/items.csv keeps the stored values; --clear-column NAME
sets it to NULL instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from config import Settings
from Prod.datasets.ingest.postgres import CLEARABLE_COLUMNS, PostgresIngestReport, ingest_postgres
from Prod.scripts._job import dataset_parser, run_job


def run(
    settings: Settings,
    dataset: Path | None = None,
    *,
    skip_bad_rows: bool = False,
    clear_columns: Iterable[str] = (),
) -> PostgresIngestReport:
    """Ingest ``dataset`` (default: ``settings.dataset_dir``) into ``settings.database_url``."""
    return ingest_postgres(
        settings.database_url,
        Path(dataset or settings.dataset_dir),
        skip_bad_rows=skip_bad_rows,
        progress=lambda message: print(message, file=sys.stderr),
        clear_columns=clear_columns,
    )


def summary_lines(report: PostgresIngestReport) -> list[str]:
    lines = [
        f"{name}: {counts.inserted} inserted, {counts.updated} updated, "
        f"{counts.unchanged} unchanged"
        for name, counts in (
            ("users", report.users),
            ("items", report.items),
            ("interactions", report.interactions),
        )
    ]
    if report.duplicate_interactions:
        lines.append(
            f"duplicate interactions in the file (kept once): {report.duplicate_interactions}"
        )
    for name, columns in report.kept_columns.items():
        lines.append(
            f"{name} has no {', '.join(columns)} column: stored values kept "
            "(--clear-column NAME clears one)"
        )
    if report.cleared_columns:
        lines.append(f"cleared (set to NULL): {', '.join(report.cleared_columns)}")
    if report.skipped_rows:
        lines.append(f"skipped {report.skipped_rows} bad row(s):")
        lines += [f"  {bad}" for bad in report.bad_rows[:20]]
        if report.skipped_rows > 20:
            lines.append(f"  ... and {report.skipped_rows - 20} more")
    lines.append(f"done in {report.seconds['total']:.2f} s")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = dataset_parser(
        "Prod.scripts.ingest_postgres_db",
        __doc__.splitlines()[0],
        "load the good rows and report how many bad ones were skipped",
    )
    parser.add_argument(
        "--clear-column",
        action="append",
        default=[],
        metavar="NAME",
        dest="clear_columns",
        help=f"set an optional column absent from the file to NULL for the users/items in it "
        f"(repeat; one of {', '.join(CLEARABLE_COLUMNS)}); without it stored values are kept",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_job(
        "ingest_postgres_db",
        lambda settings: run(
            settings,
            args.dataset,
            skip_bad_rows=args.skip_bad_rows,
            clear_columns=args.clear_columns,
        ),
        summary_lines,
    )


if __name__ == "__main__":
    sys.exit(main())
