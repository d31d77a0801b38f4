"""Candidate retrieval from the Chroma ``products`` collection, and catalogue look-ups."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np


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


def retrieve_many(
    collection, query_vectors: np.ndarray, where: dict[str, Any] | None, n_results: int
) -> list[list[Candidate]]:
    """For each row of ``query_vectors`` (n, dim), the ``n_results`` products nearest to it that
    satisfy ``where``, nearest first (one Chroma request for all rows)."""
    vectors = np.asarray(query_vectors, dtype=np.float32).reshape(-1, np.shape(query_vectors)[-1])
    if len(vectors) == 0:
        return []
    result = collection.query(
        query_embeddings=vectors.tolist(),
        n_results=n_results,
        where=where,
        include=["documents", "metadatas", "distances"],
    )
    return [_candidates(result, row) for row in range(len(vectors))]


def _candidates(result: dict[str, Any], row: int) -> list[Candidate]:
    ids = result["ids"][row] if result["ids"] else []
    documents = result["documents"][row] if result.get("documents") else [""] * len(ids)
    metadatas = result["metadatas"][row] if result.get("metadatas") else [{}] * len(ids)
    distances = result["distances"][row] if result.get("distances") else [1.0] * len(ids)
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


@dataclass(frozen=True)
class CataloguePage:
    """What the chat reads of the whole catalogue: every product's metadata and text, and the
    stored embeddings of the first ``max_vectors`` products (enough to calibrate on)."""

    metadatas: list[dict[str, Any]]
    documents: list[str]
    vectors: np.ndarray  # (min(n, max_vectors), dim) float32


def read_catalogue(collection, page_size: int = 5000, max_vectors: int = 5000) -> CataloguePage:
    """Page through the collection once."""
    metadatas: list[dict[str, Any]] = []
    documents: list[str] = []
    vectors: list[np.ndarray] = []
    offset = 0
    while True:
        include = ["metadatas", "documents"] + (["embeddings"] if offset < max_vectors else [])
        page = collection.get(include=include, limit=page_size, offset=offset)
        if not page["ids"]:
            break
        metadatas.extend(dict(m or {}) for m in page["metadatas"])
        documents.extend(d or "" for d in page["documents"])
        if "embeddings" in include:
            vectors.append(np.asarray(page["embeddings"], dtype=np.float32))
        offset += len(page["ids"])
    stacked = np.concatenate(vectors)[:max_vectors] if vectors else np.zeros((0, 0), np.float32)
    return CataloguePage(metadatas, documents, stacked)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9]+")
_FACT_SENTENCE = re.compile(r"^(?:Brand|Category|Price|Rated)\b")
_STOP = frozenset(
    "a an the and or for with of to in on is are it this that by from at as be me i my "
    "show find want need some any under over below above than".split()
)


def _sentences(document: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(document) if s.strip()]


def description_sentences(document: str) -> list[str]:
    """The free-text description of a product text (``product_text`` layout): its sentences
    without the title (first) and the "Brand: / Category: / Price: / Rated" fact sentences."""
    return [s for s in _sentences(document)[1:] if not _FACT_SENTENCE.match(s)]


def best_sentence(document: str, query: str, max_chars: int = 200) -> str:
    """The sentence of ``document`` sharing most words with ``query`` (ties: the earlier one).

    Used as the product's short, grounded reason: it is copied from the catalogue text.
    """
    # prefer the free-text description over the title and the "Brand: / Price:" fact sentences
    sentences = description_sentences(document) or _sentences(document)
    if not sentences:
        return ""
    wanted = {w for w in _WORD.findall(query.lower()) if w not in _STOP}
    stems = {w.rstrip("s") for w in wanted}

    def overlap(sentence: str) -> int:
        words = set(_WORD.findall(sentence.lower()))
        return len(words & wanted) + len({w.rstrip("s") for w in words} & stems)

    best = max(sentences, key=overlap)  # max keeps the first of equal scores
    return clip_words(best, max_chars)


def clip_words(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` at a word boundary, with "…" when cut (a single
    word longer than that is cut inside it, as nothing else fits)."""
    if len(text) <= max_chars:
        return text
    head = text[: max_chars - 1]
    if not text[max_chars - 1].isspace() and " " in head:
        head = head.rsplit(" ", 1)[0]
    return head.rstrip(" ,;:-") + "…"
