"""`reco eval chat` and `reco bench chat`: retrieval quality on generated queries with a known
target product, and ranking / streaming latency. Both work on a temporary Chroma collection
built from a dataset's ProductsRAG.json (deleted afterwards)."""

from __future__ import annotations

import contextlib
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
from Prod.chat_reco_engine.filters import ProductFilters, parse_text, satisfies
from Prod.chat_reco_engine.ollama_stub import OllamaStubServer
from Prod.chat_reco_engine.service import ChatEngine
from Prod.common.evaluation.metrics import hit_at_k
from Prod.common.ingest.chroma import COLLECTION_METADATA, embedder_function, sync_products
from Prod.common.ingest.validate import Product, read_products
from Prod.common.stores import chroma_for

_TITLE_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'-]+")


@dataclass(frozen=True)
class EvalQuery:
    text: str
    target: str
    intended: ProductFilters


def make_queries(products: list[Product], n: int, seed: int = 0) -> list[EvalQuery]:
    """"<brand> <category> <title words> under $<ceil(price * 1.2)>" for sampled products."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(products))
    queries = []
    for index in order:
        product = products[int(index)]
        meta = product.metadata
        brand, category, price = meta.get("brand"), meta.get("category"), meta.get("price")
        title_words = [w for w in _TITLE_WORD.findall(str(meta.get("title", "")))
                       if not brand or w.lower() not in brand.lower().split()][:4]  # fmt: skip
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
        queries.append(EvalQuery(" ".join(parts), product.item_id,
                                 ProductFilters.model_validate(intended)))  # fmt: skip
        if len(queries) >= n:
            break
    return queries


def reciprocal_rank(ranked: list[str], target: str) -> float:
    return 1.0 / (ranked.index(target) + 1) if target in ranked else 0.0


@contextlib.contextmanager
def temporary_catalogue(
    settings: Settings, dataset_dir: Path, embedder, max_products: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[Settings, list[Product]]]:  # fmt: skip
    """Settings pointing at a fresh collection holding the dataset's valid products, written by
    the shared ingest code (same metadata and hashes as the `products` collection).
    ``progress(done, total)`` follows the embedding."""
    products = read_products(Path(dataset_dir)).products[:max_products]
    name = f"eval-chat-{uuid.uuid4().hex[:8]}"
    client = chroma_for(settings)
    collection = client.create_collection(name, metadata=COLLECTION_METADATA)
    try:
        sync_products(
            collection, products, embedder_function(embedder, settings.embedding_batch_size),
            max_batch_size=int(client.get_max_batch_size()),
            embed_batch_size=settings.embedding_batch_size, progress=progress,
        )  # fmt: skip
        yield settings.model_copy(update={"products_collection": name}), products
    finally:
        with contextlib.suppress(Exception):
            client.delete_collection(name)


def evaluate(engine: ChatEngine, queries: list[EvalQuery], rerank: bool,
             progress: Callable[[int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """hit@5, MRR (over all candidates) and filter correctness for one ranking mode."""
    vocabulary = engine.vocabulary()
    hits, ranks, parsed_ok, satisfied, returned = [], [], 0, 0, 0
    candidates = engine.settings.retrieval_candidates
    for query in queries:
        parsed = ProductFilters.model_validate(parse_text(query.text, vocabulary).filters)
        parsed_ok += parsed == query.intended
        ranking = engine.rank(query.text, parsed, candidates, None, rerank=rerank)
        ranked = [c.item_id for c in ranking.candidates]
        hits.append(hit_at_k(ranked, [query.target], 5))
        ranks.append(reciprocal_rank(ranked, query.target))
        top = ranking.candidates[:5]
        returned += len(top)
        satisfied += sum(satisfies(query.intended, c.metadata) for c in top)
        if progress is not None:
            progress(1)
    return {
        "hit_at_5": round(float(np.mean(hits)), 4) if hits else None,
        "mrr": round(float(np.mean(ranks)), 4) if ranks else None,
        "filter_parse_accuracy": round(parsed_ok / len(queries), 4) if queries else None,
        "filter_correctness": round(satisfied / returned, 4) if returned else None,
        "products_checked": returned,
    }


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def bench_ranking(engine: ChatEngine, queries: list[EvalQuery], user_id: str | None,
                  repeats: int) -> dict[str, Any]:  # fmt: skip
    """Latency of retrieve (N candidates) + rerank + blend, in ms."""
    vocabulary = engine.vocabulary()
    engine.rank(queries[0].text, ProductFilters(), 5, user_id)  # warm-up
    timings = []
    for n in range(repeats):
        query = queries[n % len(queries)]
        filters = ProductFilters.model_validate(parse_text(query.text, vocabulary).filters)
        started = time.perf_counter()
        ranking = engine.rank(query.text, filters, 5, user_id)
        timings.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": percentile(timings, 50), "p99_ms": percentile(timings, 99),
            "mean_ms": round(statistics.fmean(timings), 2), "runs": len(timings),
            "scorer": ranking.scorer, "personalisation": ranking.personalisation}  # fmt: skip


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
    return {"p50_ms": percentile(timings, 50), "p99_ms": percentile(timings, 99),
            "runs": len(timings), "llm": "loopback Ollama stand-in (ollama_stub)"}  # fmt: skip


def temporary_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="reco-chat-")
