"""Candidate retrieval from the Chroma ``products`` collection, and catalogue look-ups."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from Prod.chat_reco_engine.filters import Vocabulary


@dataclass
class Candidate:
    """One retrieved product and the scores the ranking stages give it."""

    item_id: str
    document: str
    metadata: dict[str, Any]
    similarity: float  # bi-encoder cosine similarity with the query
    relevance: float = 0.0  # cross-encoder score (or the similarity when falling back)
    affinity: float | None = None  # ALS affinity, min-max scaled over candidates
    score: float = 0.0  # final blended score


def retrieve(
    collection, query_vector: np.ndarray, where: dict[str, Any] | None, n_results: int
) -> list[Candidate]:
    """The ``n_results`` products nearest to ``query_vector`` (dim,) that satisfy ``where``."""
    result = collection.query(
        query_embeddings=[np.asarray(query_vector, dtype=np.float32).tolist()],
        n_results=n_results,
        where=where,
        include=["documents", "metadatas", "distances"],
    )
    ids = result["ids"][0] if result["ids"] else []
    documents = result["documents"][0] if result.get("documents") else [""] * len(ids)
    metadatas = result["metadatas"][0] if result.get("metadatas") else [{}] * len(ids)
    distances = result["distances"][0] if result.get("distances") else [1.0] * len(ids)
    return [
        Candidate(item_id=i, document=d or "", metadata=dict(m or {}), similarity=1.0 - float(dist))
        for i, d, m, dist in zip(ids, documents, metadatas, distances, strict=True)
    ]


def fetch_metadatas(collection, item_ids: list[str]) -> list[dict[str, Any]]:
    """Catalogue metadata of the given products (unknown ids are skipped)."""
    if not item_ids:
        return []
    page = collection.get(ids=list(item_ids), include=["metadatas"])
    return [dict(m or {}) for m in page["metadatas"]]


def load_vocabulary(collection, page_size: int = 5000) -> Vocabulary:
    """Every brand and category in the collection's metadata."""
    metadatas: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = collection.get(include=["metadatas"], limit=page_size, offset=offset)
        if not page["ids"]:
            break
        metadatas.extend(m or {} for m in page["metadatas"])
        offset += len(page["ids"])
    return Vocabulary.from_metadatas(metadatas)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9]+")
_FACT_SENTENCE = re.compile(r"^(?:Brand|Category|Price|Rated)\b")
_STOP = frozenset(
    "a an the and or for with of to in on is are it this that by from at as be me i my "
    "show find want need some any under over below above than".split()
)


def best_sentence(document: str, query: str, max_chars: int = 200) -> str:
    """The sentence of ``document`` sharing most words with ``query`` (ties: the earlier one).

    Used as the product's short, grounded reason: it is copied from the catalogue text.
    """
    sentences = [s.strip() for s in _SENTENCE_END.split(document) if s.strip()]
    if not sentences:
        return ""
    # prefer the free-text description over the title and the "Brand: / Price:" fact sentences
    described = [s for s in sentences[1:] if not _FACT_SENTENCE.match(s)]
    sentences = described or sentences
    wanted = {w for w in _WORD.findall(query.lower()) if w not in _STOP}
    stems = {w.rstrip("s") for w in wanted}

    def overlap(sentence: str) -> int:
        words = set(_WORD.findall(sentence.lower()))
        return len(words & wanted) + len({w.rstrip("s") for w in words} & stems)

    best = max(sentences, key=overlap)  # max keeps the first of equal scores
    return best if len(best) <= max_chars else best[: max_chars - 1].rstrip() + "…"
