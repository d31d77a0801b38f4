"""Index a ProductsRAG.json catalogue into a Chroma collection (the `products` contract of
docs/ARCHITECTURE.md). Used by `reco eval chat` for its temporary collection and by the tests;
the production collection is written by the ingest job."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from Prod.common.embeddings import embed_texts
from Prod.common.errors import IngestError


def read_products_rag(path: Path) -> list[dict[str, Any]]:
    """Records ``{"item_id", "text", "metadata"}`` of a ProductsRAG.json file."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise IngestError(f"cannot read {path}: {exc}") from exc
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and r.get("item_id") and isinstance(r.get("text"), str)
        for r in records
    ):
        raise IngestError(f"{path} is not a JSON array of {{item_id, text, metadata}} records")
    return records


def index_products(
    chroma_client,
    name: str,
    records: list[dict[str, Any]],
    embedder,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
):
    """(Re)create collection ``name`` (cosine space) holding ``records``; returns it."""
    try:
        chroma_client.delete_collection(name)
    except Exception:
        pass  # did not exist
    collection = chroma_client.create_collection(name, metadata={"hnsw:space": "cosine"})
    for start in range(0, len(records), batch_size):
        batch = records[start: start + batch_size]
        texts = [r["text"] for r in batch]
        metadatas = []
        for record in batch:
            meta = {k: v for k, v in (record.get("metadata") or {}).items() if v is not None}
            meta["content_hash"] = hashlib.sha256(record["text"].encode()).hexdigest()[:16]
            metadatas.append(meta)
        collection.add(
            ids=[str(r["item_id"]) for r in batch],
            documents=texts,
            embeddings=embed_texts(embedder, texts, batch_size).tolist(),
            metadatas=metadatas,
        )
        if progress is not None:
            progress(len(batch))
    return collection
