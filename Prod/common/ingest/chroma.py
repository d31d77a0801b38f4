"""Embed the product catalogue (ProductsRAG.json) into the Chroma ``products`` collection.

Each product's content hash (sha256 of its text and metadata) is stored in its metadata as
``content_hash``; a re-run embeds only new or changed products, leaves unchanged ones alone and
deletes products no longer in the catalogue. Writes go in batches no larger than the server's
maximum batch size.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from Prod.common.errors import IngestError
from Prod.common.ingest.validate import BadRow, Product, describe_bad_rows, read_products
from Prod.common.logs import get_logger

log = get_logger(__name__)

HASH_KEY = "content_hash"
COLLECTION_METADATA = {"hnsw:space": "cosine"}
_READ_PAGE = 5_000

# texts -> (n, dim) float32 normalised embeddings
Embed = Callable[[list[str]], np.ndarray]


@dataclass
class ChromaIngestReport:
    dataset: str
    collection: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    embedded: int = 0
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
            "embedded": self.embedded,
            "products_per_s": round(self.products_per_s, 1),
            "skipped_rows": len(self.bad_rows),
            "bad_rows": [str(bad) for bad in self.bad_rows[:max_bad_rows]],
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def content_hash(product: Product) -> str:
    """sha256 over the text and the (key-sorted) metadata: any change means re-embedding."""
    canonical = json.dumps(
        {"text": product.text, "metadata": product.metadata}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def product_metadata(product: Product, digest: str) -> dict:
    """What Chroma stores beside the vector (no nulls: Chroma metadata cannot hold them)."""
    return {**product.metadata, HASH_KEY: digest}


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
) -> dict[str, int]:
    """Make ``collection`` hold exactly ``products``; embeds only new or changed ones.

    Returns counts: added, updated, unchanged, deleted, embedded. ``progress(done, total)``
    follows the products to embed (called once with done=0 before the first batch).
    """
    stored = stored_hashes(collection)
    digests = {p.item_id: content_hash(p) for p in products}
    todo = [p for p in products if stored.get(p.item_id) != digests[p.item_id]]
    gone = sorted(set(stored) - set(digests))
    if progress is not None:
        progress(0, len(todo))
    # write in chunks that respect both the embedding batch and the server's limit
    chunk = max(1, min(max_batch_size, max(embed_batch_size, 1) * 4))
    done = 0
    for batch in _batches(todo, chunk):
        vectors = embed([p.text for p in batch])
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
) -> ChromaIngestReport:
    """Validate ProductsRAG.json of ``dataset_dir`` and sync it into ``collection_name``.

    Bad entries raise :class:`IngestError` (nothing written) unless ``skip_bad_rows``.
    ``progress(done, total)`` follows the products being embedded.
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
    collection = client.get_or_create_collection(collection_name, metadata=COLLECTION_METADATA)
    prepared = time.perf_counter()
    counts = sync_products(
        collection,
        catalogue.products,
        embed,
        max_batch_size=int(client.get_max_batch_size()),
        embed_batch_size=embed_batch_size,
        progress=progress,
    )
    finished = time.perf_counter()
    report = ChromaIngestReport(
        dataset=str(dataset_dir),
        collection=collection_name,
        bad_rows=catalogue.bad_rows,
        seconds={
            "read": prepared - started,
            "embed_and_write": finished - prepared,
            "total": finished - started,
        },
        **counts,
    )
    log.info("chroma ingest done: %s", report.to_dict(max_bad_rows=0))
    return report


def embedder_function(model, batch_size: int = 256) -> Embed:
    """Wrap a SentenceTransformer as an :data:`Embed` (normalised float32)."""
    from Prod.common.embeddings import embed_texts

    return lambda texts: embed_texts(model, texts, batch_size=batch_size)
