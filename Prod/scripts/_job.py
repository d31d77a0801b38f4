"""What the one-shot ingest jobs share: their command line and their one-line failure report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from config import get_settings
from Prod.common.errors import RecoError
from Prod.common.logs import configure_logging

Report = TypeVar("Report")


def dataset_parser(prog: str, description: str, skip_help: str) -> argparse.ArgumentParser:
    """``--dataset DIR`` and ``--skip-bad-rows``, the options every ingest job takes."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    parser.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="canonical dataset folder (default: DATASET_DIR setting)",
    )
    parser.add_argument("--skip-bad-rows", action="store_true", help=skip_help)
    return parser


def run_job(
    service: str, work: Callable[..., Report], summary: Callable[[Report], list[str]]
) -> int:
    """Run ``work(settings)``; print its summary, or one ``error: ...`` line and return 1."""
    settings = get_settings()
    configure_logging(service, settings.log_level)
    try:
        report = work(settings)
    except RecoError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except Exception as exc:  # unreachable server and the like: one line, not a traceback
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {first_line}", file=sys.stderr)
        return 1
    print("\n".join(summary(report)))
    return 0
