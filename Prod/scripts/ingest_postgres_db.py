"""One-shot job: load the canonical dataset into PostgreSQL (schema migrated first).

    python -m Prod.scripts.ingest_postgres_db [--dataset DIR] [--skip-bad-rows]

Safe to re-run: the same files leave the same state. Exits 1 with one message on bad input
(every bad row listed as file:line: reason) and writes nothing unless --skip-bad-rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from config import Settings, get_settings
from Prod.common.errors import RecoError
from Prod.common.ingest.postgres import PostgresIngestReport, ingest_postgres
from Prod.common.logs import configure_logging


def run(
    settings: Settings, dataset: Path | None = None, *, skip_bad_rows: bool = False
) -> PostgresIngestReport:
    """Ingest ``dataset`` (default: ``settings.dataset_dir``) into ``settings.database_url``."""
    return ingest_postgres(
        settings.database_url,
        Path(dataset or settings.dataset_dir),
        skip_bad_rows=skip_bad_rows,
        progress=lambda message: print(message, file=sys.stderr),
    )


def summary_lines(report: PostgresIngestReport) -> list[str]:
    lines = [
        f"{name}: {counts.inserted} inserted, {counts.updated} updated, "
        f"{counts.unchanged} unchanged"
        for name, counts in (
            ("users", report.users), ("items", report.items), ("interactions", report.interactions)
        )
    ]  # fmt: skip
    if report.duplicate_interactions:
        lines.append(f"duplicate interactions in the file (kept once): "
                     f"{report.duplicate_interactions}")  # fmt: skip
    if report.skipped_rows:
        lines.append(f"skipped {report.skipped_rows} bad row(s):")
        lines += [f"  {bad}" for bad in report.bad_rows[:20]]
        if report.skipped_rows > 20:
            lines.append(f"  ... and {report.skipped_rows - 20} more")
    lines.append(f"done in {report.seconds['total']:.2f} s")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m Prod.scripts.ingest_postgres_db", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="canonical dataset folder (default: DATASET_DIR setting)",
    )
    parser.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="load the good rows and report how many bad ones were skipped",
    )
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_logging("ingest_postgres_db", settings.log_level)
    try:
        report = run(settings, args.dataset, skip_bad_rows=args.skip_bad_rows)
    except RecoError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except Exception as exc:  # unreachable server and the like: one line, not a traceback
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {first_line}", file=sys.stderr)
        return 1
    print("\n".join(summary_lines(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
