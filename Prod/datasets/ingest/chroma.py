"""Embed the product catalogue (ProductsRAG.json) into the Chroma ``products`` collection.

Each product's content hash (sha256 of its text and metadata) is stored in its metadata as
``content_hash``; a re-run embeds only new or changed products, leaves unchanged ones alone and
deletes products no longer in the catalogue: never those skipped as bad rows, and no more than
``INGEST_MAX_DELETE_SHARE`` (20%) of the stored catalogue unless ``allow_mass_delete``, so an
empty or truncated file cannot wipe the live catalogue. Writes go in batches no larger than the
server's maximum batch size.

Each product's vector is of :func:`~Prod.common.items.embedding_text`, its text without
the price and rating sentences (exact metadata filters, little use to a semantic match); the
stored document is the whole text.

The collection's metadata records what wrote its vectors (``embedder``: model, backend, sequence
length, see :mod:`Prod.common.embeddings`, and which text was embedded, :data:`EMBEDDED_TEXT`).
When that differs, every product is re-embedded: the content hash alone cannot see that vectors
came from another model or another part of the text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from config import Settings
from Prod.common.canonical_format import RAG_FILE
from Prod.common.errors import IngestError
from Prod.common.items import (
    EMBEDDER_KEY,
    HASH_KEY,
    BadRow,
    Embed,
    Product,
    collection_metadata,
    content_hash,
    embedding_text,
    product_metadata,
    vectors_id,
)
from Prod.common.logs import get_logger
from Prod.datasets.ingest.validate import describe_bad_rows, read_products

log = get_logger(__name__)

_READ_PAGE = 5_000
DEFAULT_MAX_DELETE_SHARE: float = Settings.model_fields["ingest_max_delete_share"].default
SHOWN_IDS = 20  # ids a report or refusal lists


@dataclass
class ChromaIngestReport:
    dataset: str
    collection: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    deleted_ids: list[str] = field(default_factory=list)  # the first SHOWN_IDS
    # products skipped as bad that are kept as stored, and whether deleting was held back
    # because some bad entry had no item_id (so it could be any stored product)
    kept_skipped: int = 0
    deletes_held_back: bool = False
    embedded: int = 0
    embedder: str | None = None
    reembedded_all: bool = False
    bad_rows: list[BadRow] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def products_per_s(self) -> float:
        spent = self.seconds.get("embed_and_write", 0.0)
        return self.embedded / spent if spent > 0 else 0.0

    def to_dict(self, max_bad_rows: int = 100) -> dict:
        return {
            "dataset": self.dataset,
            "collection": self.collection,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "deleted_ids": self.deleted_ids,
            "kept_skipped": self.kept_skipped,
            "deletes_held_back": self.deletes_held_back,
            "embedded": self.embedded,
            "embedder": self.embedder,
            "reembedded_all": self.reembedded_all,
            "products_per_s": round(self.products_per_s, 1),
            "skipped_rows": len(self.bad_rows),
            "bad_rows": [str(bad) for bad in self.bad_rows[:max_bad_rows]],
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def stored_hashes(collection) -> dict[str, str]:
    """item_id -> content_hash of everything in the collection (paged reads)."""
    hashes: dict[str, str] = {}
    offset = 0
    while True:
        page = collection.get(include=["metadatas"], limit=_READ_PAGE, offset=offset)
        for item_id, metadata in zip(page["ids"], page["metadatas"] or [], strict=False):
            hashes[item_id] = (metadata or {}).get(HASH_KEY, "")
        if len(page["ids"]) < _READ_PAGE:
            return hashes
        offset += _READ_PAGE


def _batches(seq: Sequence, size: int):
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def sync_products(
    collection,
    products: list[Product],
    embed: Embed,
    *,
    max_batch_size: int,
    embed_batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
    reembed_all: bool = False,
    keep: Iterable[str] = (),
    delete: bool = True,
    max_delete_share: float = DEFAULT_MAX_DELETE_SHARE,
    allow_mass_delete: bool = False,
) -> dict[str, int | list[str]]:
    """Make ``collection`` hold exactly ``products`` (plus ``keep``: ids of entries skipped as
    bad, never deleted); embeds only new or changed ones (all of them with ``reembed_all``,
    e.g. after an embedder change). ``delete=False`` deletes nothing.

    Deleting more than ``max_delete_share`` of the stored products is refused with an
    :class:`IngestError` before anything is written, unless ``allow_mass_delete``: a truncated
    or empty file must not wipe the live catalogue.

    Returns counts: added, updated, unchanged, deleted, embedded, kept_skipped (stored products
    not in ``products`` but in ``keep``) and ``deleted_ids`` (the first :data:`SHOWN_IDS`).
    ``progress(done, total)`` follows the products to embed (called once with done=0 before
    the first batch).
    """
    stored = stored_hashes(collection)
    digests = {p.item_id: content_hash(p) for p in products}
    todo = [p for p in products if reembed_all or stored.get(p.item_id) != digests[p.item_id]]
    missing = set(stored) - set(digests)
    kept = missing & set(keep)
    gone = sorted(missing - kept) if delete else []
    if len(gone) > max_delete_share * len(stored) and not allow_mass_delete:
        raise IngestError(
            f"refusing to delete {len(gone)} of the {len(stored)} stored products "
            f"({len(gone) / len(stored):.0%}, above the {max_delete_share:.0%} limit) because "
            f"they are not in {RAG_FILE}; nothing was written. First ids: "
            f"{', '.join(gone[:SHOWN_IDS])}{' ...' if len(gone) > SHOWN_IDS else ''}. "
            "Check the file; if they really are gone, re-run with --allow-mass-delete "
            "(or raise --max-delete-share).",
            would_delete=len(gone),
            would_delete_ids=gone[:SHOWN_IDS],
            stored=len(stored),
            max_delete_share=max_delete_share,
        )
    if progress is not None:
        progress(0, len(todo))
    # write in chunks that respect both the embedding batch and the server's limit
    chunk = max(1, min(max_batch_size, max(embed_batch_size, 1) * 4))
    done = 0
    for batch in _batches(todo, chunk):
        vectors = embed([embedding_text(p.text) for p in batch])
        collection.upsert(
            ids=[p.item_id for p in batch],
            embeddings=np.asarray(vectors, dtype=np.float32),
            documents=[p.text for p in batch],
            metadatas=[product_metadata(p, digests[p.item_id]) for p in batch],
        )
        done += len(batch)
        if progress is not None:
            progress(done, len(todo))
    for batch in _batches(gone, max_batch_size):
        collection.delete(ids=list(batch))
    added = sum(1 for p in todo if p.item_id not in stored)
    return {
        "added": added,
        "updated": len(todo) - added,
        "unchanged": len(products) - len(todo),
        "deleted": len(gone),
        "embedded": len(todo),
        "deleted_ids": gone[:SHOWN_IDS],
        "kept_skipped": len(kept),
    }


def ingest_chroma(
    client,
    dataset_dir: Path,
    embed: Embed,
    *,
    collection_name: str = "products",
    skip_bad_rows: bool = False,
    embed_batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
    embedder_id: str | None = None,
    max_delete_share: float = DEFAULT_MAX_DELETE_SHARE,
    allow_mass_delete: bool = False,
) -> ChromaIngestReport:
    """Validate ProductsRAG.json of ``dataset_dir`` and sync it into ``collection_name``.

    Bad entries raise :class:`IngestError` (nothing written) unless ``skip_bad_rows``.
    ``progress(done, total)`` follows the products being embedded. ``embedder_id`` (default:
    ``embed.embedder_id`` when present, as set by :func:`embedder_function`) is stored in the
    collection's metadata, as :func:`vectors_id`; a collection written by another embedder is
    re-embedded entirely.

    Products no longer in the file are deleted, within ``max_delete_share`` of the stored
    catalogue (see :func:`sync_products`). Products skipped as bad are never deleted; when a bad
    entry has no readable item_id, nothing is deleted at all (it could be any product).
    """
    started = time.perf_counter()
    dataset_dir = Path(dataset_dir)
    catalogue = read_products(dataset_dir)
    if catalogue.bad_rows and not skip_bad_rows:
        raise IngestError(
            f"{len(catalogue.bad_rows)} bad product(s) in {dataset_dir}; nothing was written "
            f"(--skip-bad-rows loads the good ones):\n{describe_bad_rows(catalogue.bad_rows)}",
            bad_rows=[str(bad) for bad in catalogue.bad_rows],
        )
    embedder_id = vectors_id(embedder_id or getattr(embed, "embedder_id", None))
    collection = client.get_or_create_collection(
        collection_name, metadata=collection_metadata(embedder_id)
    )
    recorded = (collection.metadata or {}).get(EMBEDDER_KEY)
    stale = embedder_changed(collection, embedder_id)
    if stale:
        log.info(
            "collection %s was embedded by %s, now %s: re-embedding every product",
            collection_name,
            recorded,
            embedder_id,
        )
    prepared = time.perf_counter()
    timed = _TimedEmbed(embed)
    counts = sync_products(
        collection,
        catalogue.products,
        timed,
        max_batch_size=int(client.get_max_batch_size()),
        embed_batch_size=embed_batch_size,
        progress=progress,
        reembed_all=stale,
        keep=catalogue.skipped_ids,
        delete=catalogue.unidentified_bad_rows == 0,
        max_delete_share=max_delete_share,
        allow_mass_delete=allow_mass_delete,
    )
    if embedder_id is not None and recorded != embedder_id:
        # only once every vector is the new embedder's: a failed run re-embeds again
        record_embedder(collection, embedder_id)
    finished = time.perf_counter()
    report = ChromaIngestReport(
        dataset=str(dataset_dir),
        collection=collection_name,
        bad_rows=catalogue.bad_rows,
        deletes_held_back=catalogue.unidentified_bad_rows > 0,
        embedder=embedder_id,
        reembedded_all=stale,
        seconds={
            "read": prepared - started,
            "embed_and_write": finished - prepared,
            "embed": timed.seconds,
            "total": finished - started,
        },
        **counts,
    )
    log.info("chroma ingest done: %s", report.to_dict(max_bad_rows=0))
    return report


def embedder_changed(collection, embedder_id: str | None) -> bool:
    """True when the collection holds vectors of another (or an unrecorded) embedder.

    An unknown ``embedder_id`` (a bare callable) never forces re-embedding; an empty collection
    has nothing to re-embed.
    """
    if embedder_id is None:
        return False
    recorded = (collection.metadata or {}).get(EMBEDDER_KEY)
    return recorded != embedder_id and collection.count() > 0


def record_embedder(collection, embedder_id: str | None) -> None:
    """Store ``embedder_id`` in the collection's metadata, keeping its other keys.

    Chroma refuses ``hnsw:*`` keys in ``modify`` (the distance function is fixed at creation and
    kept in the collection's configuration), so those are left out of the update.
    """
    if embedder_id is None:
        return
    kept = {k: v for k, v in (collection.metadata or {}).items() if not k.startswith("hnsw:")}
    collection.modify(metadata={**kept, EMBEDDER_KEY: embedder_id})


class _TimedEmbed:
    """An :data:`Embed` that adds up the seconds spent in ``embed`` (the rest is Chroma's)."""

    def __init__(self, embed: Embed) -> None:
        self.embed = embed
        self.seconds = 0.0

    def __call__(self, texts: list[str]) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self.embed(texts)
        finally:
            self.seconds += time.perf_counter() - started
