"""`reco eval chat` and `reco bench chat`: retrieval quality on generated queries with a known
target product, and ranking / streaming latency. Both work on a temporary Chroma collection
built from a dataset's ProductsRAG.json by the shared ingest code (deleted afterwards).

Two query sets are generated from the catalogue, each query with one target product:

- ``filtered``: "<brand> <category> <title words> under $<ceil(price * 1.2)>". The parser must
  recover exactly those filters and every returned product must satisfy them (filter
  correctness, must be 100%). The filters leave a handful of candidates, so hit@5 is ~1 for any
  ranker: this set checks filters, not ranking.
- ``free_text``: a few content words of the title and the description, with no brand, category,
  price or rating (no structured constraint), so all ``retrieval_candidates`` compete and hit@5 /
  MRR tell rankers apart.

Each set is ranked three ways from the same retrieved candidates: ``random_order`` (a control: the
candidates shuffled, what a ranker that knows nothing scores), ``bi_encoder`` (retrieval order)
and ``cross_encoder`` (the configured reranker; ``None`` when it cannot be loaded).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from config import Settings
from Prod.chat_reco_engine.filters import ProductFilters, Vocabulary, parse_text, satisfies
from Prod.chat_reco_engine.ollama_stub import OllamaStubServer
from Prod.chat_reco_engine.relevance import content_words
from Prod.chat_reco_engine.retrieval import Candidate, description_sentences
from Prod.chat_reco_engine.service import ChatEngine
from Prod.common.embeddings import embed_texts
from Prod.common.evaluation.metrics import hit_at_k
from Prod.common.ingest.chroma import COLLECTION_METADATA, embedder_function, sync_products
from Prod.common.ingest.validate import Product, read_products
from Prod.common.stores import chroma_for

FILTERED, FREE_TEXT = "filtered", "free_text"
RANDOM_ORDER, BI_ENCODER, CROSS_ENCODER = "random_order", "bi_encoder", "cross_encoder"
RANKERS = (RANDOM_ORDER, BI_ENCODER, CROSS_ENCODER)
HIT_K = 5
_RETRIEVE_CHUNK = 64  # query vectors per Chroma request

_TITLE_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'-]+")


@dataclass(frozen=True)
class EvalQuery:
    text: str
    target: str
    intended: ProductFilters


# --- query generation -----------------------------------------------------------------------


def filtered_queries(
    products: list[Product], vocabulary: Vocabulary, n: int, seed: int = 0
) -> list[EvalQuery]:
    """ "<brand> <category> <title words> under $<ceil(price * 1.2)>" for sampled products.

    Title words that belong to any brand or category name are left out, so the query names
    exactly the intended filters (an "Amazon.com Gift Card" of no known brand would otherwise
    ask for brand Amazon)."""
    rng = np.random.default_rng(seed)
    queries = []
    for index in rng.permutation(len(products)):
        product = products[int(index)]
        meta = product.metadata
        brand, category, price = meta.get("brand"), meta.get("category"), meta.get("price")
        title_words = [
            w
            for w in _TITLE_WORD.findall(str(meta.get("title", "")))
            if not vocabulary.could_name(w)
        ][:4]
        if not title_words:
            continue
        parts, intended = [], {}
        if brand:
            parts.append(brand)
            intended["brands"] = [brand]
        if category:
            parts.append(category)
            intended["categories"] = [category]
        parts.extend(title_words)
        if price is not None:
            cap = math.ceil(float(price) * 1.2)
            parts.append(f"under ${cap}")
            intended["max_price"] = float(cap)
        queries.append(
            EvalQuery(" ".join(parts), product.item_id, ProductFilters.model_validate(intended))
        )
        if len(queries) >= n:
            break
    return queries


def _sample_in_order(words: list[str], k: int, rng: np.random.Generator) -> list[str]:
    if len(words) <= k:
        return words
    picked = sorted(rng.choice(len(words), size=k, replace=False))
    return [words[i] for i in picked]


def free_text_queries(
    products: list[Product],
    vocabulary: Vocabulary,
    n: int,
    seed: int = 0,
    title_words: int = 2,
    description_words: int = 3,
) -> list[EvalQuery]:
    """Up to ``title_words`` content words of the title and ``description_words`` of the
    description (sampled, in text order) of sampled products; products with fewer than two such
    words are passed over. No query names a brand, category, price or rating."""
    rng = np.random.default_rng(seed)
    queries = []
    for index in rng.permutation(len(products)):
        product = products[int(index)]
        title = content_words(str(product.metadata.get("title", "")), vocabulary)
        description = [
            w
            for w in content_words(" ".join(description_sentences(product.text)), vocabulary)
            if w not in title
        ]
        words = _sample_in_order(title, title_words, rng) + _sample_in_order(
            description, description_words, rng
        )
        if len(words) < 2:
            continue
        queries.append(EvalQuery(" ".join(words), product.item_id, ProductFilters()))
        if len(queries) >= n:
            break
    return queries


def query_sets(products: list[Product], n: int, seed: int = 0) -> dict[str, list[EvalQuery]]:
    """Both query sets, ``n`` queries each at most."""
    vocabulary = Vocabulary.from_metadatas(p.metadata for p in products)
    return {
        FILTERED: filtered_queries(products, vocabulary, n, seed),
        FREE_TEXT: free_text_queries(products, vocabulary, n, seed),
    }


# --- the temporary catalogue ----------------------------------------------------------------


@contextlib.contextmanager
def temporary_catalogue(
    settings: Settings,
    dataset_dir: Path,
    embedder,
    max_products: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[Settings, list[Product]]]:
    """Settings pointing at a fresh collection holding the dataset's valid products, written by
    the shared ingest code (same metadata and hashes as the `products` collection).
    ``progress(done, total)`` follows the embedding."""
    products = read_products(Path(dataset_dir)).products[:max_products]
    name = f"eval-chat-{uuid.uuid4().hex[:8]}"
    client = chroma_for(settings)
    collection = client.create_collection(name, metadata=COLLECTION_METADATA)
    try:
        sync_products(
            collection,
            products,
            embedder_function(embedder, settings.embedding_batch_size),
            max_batch_size=int(client.get_max_batch_size()),
            embed_batch_size=settings.embedding_batch_size,
            progress=progress,
        )
        yield settings.model_copy(update={"products_collection": name}), products
    finally:
        with contextlib.suppress(Exception):
            client.delete_collection(name)


# --- evaluation -----------------------------------------------------------------------------


@dataclass
class Retrieved:
    """One query, the filters parsed from it and the candidates retrieved with them."""

    query: EvalQuery
    parsed: ProductFilters
    candidates: list[Candidate]


def retrieve_all(engine: ChatEngine, queries: list[EvalQuery]) -> list[Retrieved]:
    """Parse, embed (one batch) and retrieve every query; queries with the same filters share a
    Chroma request."""
    vocabulary = engine.vocabulary()
    parsed = [
        ProductFilters.model_validate(parse_text(q.text, vocabulary).filters) for q in queries
    ]
    vectors = embed_texts(
        engine.embedder(), [q.text for q in queries], engine.settings.embedding_batch_size
    )
    groups: dict[str, list[int]] = {}
    for n, filters in enumerate(parsed):
        groups.setdefault(filters.model_dump_json(), []).append(n)
    candidates: list[list[Candidate]] = [[] for _ in queries]
    for members in groups.values():
        for start in range(0, len(members), _RETRIEVE_CHUNK):
            chunk = members[start : start + _RETRIEVE_CHUNK]
            for n, found in zip(
                chunk, engine.retrieve(vectors[chunk], parsed[chunk[0]]), strict=True
            ):
                candidates[n] = found
    return [Retrieved(q, p, c) for q, p, c in zip(queries, parsed, candidates, strict=True)]


def ranked_ids(
    engine: ChatEngine, item: Retrieved, ranker: str, rng: np.random.Generator
) -> list[str]:
    """The candidates' ids, best first, as ``ranker`` orders them (no personalisation)."""
    if ranker == RANDOM_ORDER:
        return [item.candidates[i].item_id for i in rng.permutation(len(item.candidates))]
    fresh = [dataclasses.replace(c) for c in item.candidates]  # ranking writes scores into them
    ranking = engine.rank_candidates(
        item.query.text, fresh, len(fresh), None, rerank=ranker == CROSS_ENCODER
    )
    return [c.item_id for c in ranking.candidates]


def reciprocal_rank(ranked: list[str], target: str) -> float:
    return 1.0 / (ranked.index(target) + 1) if target in ranked else 0.0


def ranking_metrics(retrieved: list[Retrieved], rankings: list[list[str]]) -> dict[str, Any]:
    """hit@5, MRR (over all candidates), and filter correctness of the top 5 (over the queries
    that intend filters; ``None`` when none does)."""
    hits, reciprocal, satisfied, checked = [], [], 0, 0
    for item, ranked in zip(retrieved, rankings, strict=True):
        target = item.query.target
        hits.append(hit_at_k(ranked, [target], HIT_K))
        reciprocal.append(reciprocal_rank(ranked, target))
        if not item.query.intended.is_empty():
            metadata = {c.item_id: c.metadata for c in item.candidates}
            top = ranked[:HIT_K]
            satisfied += sum(satisfies(item.query.intended, metadata[i]) for i in top)
            checked += len(top)
    return {
        "hit_at_5": round(float(np.mean(hits)), 4) if hits else None,
        "mrr": round(float(np.mean(reciprocal)), 4) if reciprocal else None,
        "filter_correctness": round(satisfied / checked, 4) if checked else None,
        "products_checked": checked,
    }


def evaluate_set(
    engine: ChatEngine,
    queries: list[EvalQuery],
    rankers: tuple[str, ...],
    progress: Callable[[int], None] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Every ranker on one query set, from the same retrieved candidates."""
    retrieved = retrieve_all(engine, queries)
    rng = np.random.default_rng(seed)
    rankings: dict[str, list[list[str]]] = {ranker: [] for ranker in rankers}
    for item in retrieved:
        for ranker in rankers:
            rankings[ranker].append(ranked_ids(engine, item, ranker, rng))
        if progress is not None:
            progress(1)
    parsed_ok = sum(item.parsed == item.query.intended for item in retrieved)
    retrieved_counts = [len(item.candidates) for item in retrieved]
    return {
        "queries": len(queries),
        "examples": [q.text for q in queries[:3]],
        "filter_parse_accuracy": round(parsed_ok / len(queries), 4) if queries else None,
        "mean_candidates": round(statistics.fmean(retrieved_counts), 1) if queries else None,
        "target_retrieved": round(
            float(
                np.mean(
                    [
                        item.query.target in {c.item_id for c in item.candidates}
                        for item in retrieved
                    ]
                )
            ),
            4,
        )
        if queries
        else None,
        "rankings": {ranker: ranking_metrics(retrieved, rankings[ranker]) for ranker in rankers},
    }


# --- benchmarks -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def bench_ranking(
    engine: ChatEngine, queries: list[EvalQuery], user_id: str | None, repeats: int
) -> dict[str, Any]:
    """Latency of one ranking request: embed the query, retrieve ``retrieval_candidates``,
    rerank, blend; in ms."""
    vocabulary = engine.vocabulary()
    engine.rank(queries[0].text, ProductFilters(), 5, user_id)  # warm-up
    timings, retrieved = [], []
    for n in range(repeats):
        query = queries[n % len(queries)]
        filters = ProductFilters.model_validate(parse_text(query.text, vocabulary).filters)
        started = time.perf_counter()
        ranking = engine.rank(query.text, filters, 5, user_id)
        timings.append((time.perf_counter() - started) * 1000)
        retrieved.append(ranking.n_retrieved)
    return {
        "p50_ms": percentile(timings, 50),
        "p99_ms": percentile(timings, 99),
        "mean_ms": round(statistics.fmean(timings), 2),
        "runs": len(timings),
        "mean_candidates_reranked": round(statistics.fmean(retrieved), 1),
        "scorer": ranking.scorer,
        "personalisation": ranking.personalisation,
    }


def bench_first_token(settings: Settings, queries: list[EvalQuery], repeats: int) -> dict:
    """Time to the first streamed `token` event of POST /chat/stream (Ollama stand-in server)."""
    from fastapi.testclient import TestClient

    from Prod.chat_reco_engine.main import create_app

    server = OllamaStubServer().start()
    timings = []
    try:
        app = create_app(settings.model_copy(update={"ollama_host": server.url}))
        with TestClient(app) as client:
            client.app.state.engine.reranker.wait(300)
            for n in range(repeats + 1):
                started = time.perf_counter()
                body = {"message": queries[n % len(queries)].text}
                with client.stream("POST", "/api/v1/chat/stream", json=body) as response:
                    for line in response.iter_lines():
                        if line.startswith("event: token"):
                            if n > 0:  # the first run warms up
                                timings.append((time.perf_counter() - started) * 1000)
                            break
    finally:
        server.stop()
    return {
        "p50_ms": percentile(timings, 50),
        "p99_ms": percentile(timings, 99),
        "runs": len(timings),
        "llm": "loopback Ollama stand-in (ollama_stub)",
    }


def temporary_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="reco-chat-")
