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
import os
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
from Prod.bench.ollama_stub import OllamaStubServer
from Prod.chat_reco_engine.filters import ProductFilters, Vocabulary, parse_text, satisfies
from Prod.chat_reco_engine.relevance import content_words
from Prod.chat_reco_engine.retrieval import Candidate, description_sentences
from Prod.chat_reco_engine.service import ChatEngine
from Prod.common.embeddings import embed_texts
from Prod.common.evaluation.metrics import hit_at_k
from Prod.common.items import COLLECTION_METADATA, embedder_function
from Prod.common.stores import chroma_for
from Prod.datasets.ingest.chroma import sync_products
from Prod.datasets.ingest.validate import Product, read_products

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


# --- the runs behind `reco eval chat` and `reco bench chat` -----------------------------------


def _progress(total: int, description: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="it", leave=False)


def _follow(bar):
    """A ``progress(done, total)`` callback that drives a tqdm bar."""

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update


def _limit_threads(threads: int | None) -> None:
    # on a small shared CPU, torch's worker threads spin against each other and against other
    # processes: one query through MiniLM took 87 ms with 1 thread and 409 ms with 2 (2 cores)
    if threads:
        import torch

        torch.set_num_threads(threads)


def _engine(settings, reranker: str | None = None):
    from Prod.chat_reco_engine.service import ChatEngine

    if reranker is not None:
        settings = settings.model_copy(update={"reranker_model": reranker})
    engine = ChatEngine(settings)
    engine.reranker.wait(600)
    return engine


def dialogue_runs(engine, products: list, per_kind: int, seed: int) -> dict:
    """The dialogue set through the engine twice: with the loopback LLM stand-in (its filter
    proposals and answers in the loop) and with no LLM reachable (the deterministic path)."""
    from Prod.bench.dialogues import generate_dialogues, run_dialogues
    from Prod.chat_reco_engine.schemas import ChatRequest
    from Prod.orchestrate.local_infra import free_port

    dialogues = generate_dialogues(products, per_kind, seed)
    server = OllamaStubServer().start()
    runs = {}
    try:
        for run, host in (
            ("llm_stand_in", server.url),
            ("no_llm", f"http://127.0.0.1:{free_port()}"),
        ):
            runner = engine.with_settings(engine.settings.model_copy(update={"ollama_host": host}))

            def chat(message: str, session_id: str | None, runner=runner) -> dict:
                request = ChatRequest(message=message, session_id=session_id, k=5)
                return runner.chat(request).model_dump(mode="json")

            with _progress(len(dialogues), f"dialogues ({run})") as bar:
                runs[run] = run_dialogues(chat, dialogues, bar.update)
    finally:
        server.stop()
    floor = engine.catalogue().floor
    return {
        "conversations": len(dialogues),
        "counts": runs["no_llm"]["counts"],
        "relevance_floor": floor.as_dict() if floor else None,
        "runs": runs,
    }


def run_chat_eval(
    settings: Settings,
    dataset_dir: Path,
    n_queries: int,
    max_products: int | None,
    reranker: str | None,
    seed: int,
    threads: int | None,
    dialogues: int = 0,
) -> dict:
    """`reco eval chat`: both query sets through every ranker on a temporary collection of the
    dataset's products, then (``dialogues`` > 0) that many conversations per dialogue kind."""
    _limit_threads(threads)
    engine = _engine(settings, reranker)  # load the models before timing anything
    started = time.perf_counter()
    with _progress(0, "indexing products") as bar:
        catalogue = temporary_catalogue(
            engine.settings, dataset_dir, engine.embedder(), max_products, _follow(bar)
        )
        with catalogue as (temp_settings, products):
            indexed = time.perf_counter()
            engine = engine.with_settings(temp_settings)  # the temporary collection
            rankers = tuple(r for r in RANKERS if r != CROSS_ENCODER or engine.reranker.ready)
            results = {}
            for name, queries in query_sets(products, n_queries, seed).items():
                with _progress(len(queries), f"{name} queries") as qbar:
                    results[name] = evaluate_set(engine, queries, rankers, qbar.update, seed)
                    results[name]["rankings"].setdefault(CROSS_ENCODER, None)
            dialogue_results = (
                dialogue_runs(engine, products, dialogues, seed) if dialogues else None
            )
    finished = time.perf_counter()
    evaluated = sum(r["queries"] for r in results.values())
    return {
        "dataset": str(dataset_dir),
        "products": len(products),
        "reranker": engine.reranker.status(),
        "query_sets": results,
        "dialogues": dialogue_results,
        "seconds": {
            "index": round(indexed - started, 2),
            "evaluate": round(finished - indexed, 2),
            "queries_per_s": round(evaluated / max(finished - indexed, 1e-9), 1),
        },
        "torch_threads": _torch_threads(),
        "seed": seed,
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def run_chat_bench(
    settings: Settings,
    dataset_dir: Path,
    repeats: int,
    max_products: int | None,
    user_id: str | None,
    threads: int | None,
) -> dict:
    """`reco bench chat`: ranking latency and time to the first streamed token, with the
    configured reranker or, when it cannot be loaded, a MiniLM-L6-sized stand-in of equal cost."""
    from Prod.bench.rerankers import save_minilm_cross_encoder

    _limit_threads(threads)
    engine = _engine(settings)
    reranker_note = f"configured {settings.reranker_model}"
    with temporary_folder() as folder:
        if not engine.reranker.ready:
            # same architecture and cost as ms-marco-MiniLM-L-6-v2, untrained head
            reranker_note = (
                f"MiniLM-L6-sized cross-encoder, untrained head (configured "
                f"{settings.reranker_model!r} not loadable: "
                f"{engine.reranker.status()['error']})"
            )
            settings = settings.model_copy(
                update={"reranker_model": save_minilm_cross_encoder(Path(folder))}
            )
            engine = _engine(settings)
        with temporary_catalogue(settings, dataset_dir, engine.embedder(), max_products) as (
            temp,
            products,
        ):
            engine = engine.with_settings(temp)
            # free-text queries carry no filter, so every request reranks all the candidates
            queries = query_sets(products, 100)[FREE_TEXT]
            ranking = bench_ranking(engine, queries, user_id, repeats)
            first_token = bench_first_token(temp, queries, min(repeats, 30))
    return {
        "ranking": ranking,
        "first_token": first_token,
        "reranker": reranker_note,
        "candidates": settings.retrieval_candidates,
        "products": len(products),
        "dataset": str(dataset_dir),
        "cpus": os.cpu_count(),
        "torch_threads": _torch_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
