"""How the wish blend weight is set: nDCG@k of wish recommendations for each ``WISH_WEIGHT``.

Offline, on a ``user-last`` split of a canonical dataset (the last ``n_last`` items of each user
held out): ALS (the trainer's params file) is fitted on the rest. For each evaluated user the
wish is the category (or genre: a ``|``-separated category is a genre list) of most of their
held-out items, phrased naturally ("something in home & kitchen"); the held-out items of that
category are the relevant ones. The user's candidates are their ALS top ``candidates`` without
training items; the wish relevance is the chat's reranker on the product texts (the cross-encoder
of ``RERANKER_MODEL`` when it loads, else MiniLM similarity, as in the service), blended by
:func:`Prod.chat_reco_engine.wish.final_scores` and ordered by
:func:`~Prod.chat_reco_engine.wish.order` (the service's code). ``w = 0`` is ALS alone, ``w = 1``
the wish alone. The wish is scored as free text, the regime of wishes that name no catalogue value
("for a 5-year-old", "lighter"); in the service a literal category name becomes a hard filter, for
which ``category filter`` (ALS order inside the category) is the reference. No LLM is asked.

    reco bench wish Prod/data_ingest --users 500      (or python -m Prod.bench.wish)
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from Prod.bench.cold import fit_factors, parse_fractions
from Prod.chat_reco_engine.retrieval import Candidate
from Prod.chat_reco_engine.wish import final_scores, order, wish_scores
from Prod.common.als import ALSParams
from Prod.common.canonical_format import RAG_FILE
from Prod.common.errors import InvalidInput
from Prod.common.evaluation import load_interactions, user_last_split
from Prod.common.evaluation.metrics import ndcg_at_k
from Prod.common.items import embedding_text

DEFAULT_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
PHRASES = (  # rotated over the users
    "something in {c}",
    "I'd like something from {c}",
    "recommend me something, {c} this time",
    "anything good in {c}?",
)


_GENRES = re.compile(r"Genres: ([^.]+)\.")  # MovieLens texts list every genre


def _categories(record: dict) -> list[str]:
    """The record's genres (MovieLens) or its category (``|``-separated lists split)."""
    genres = _GENRES.search(record.get("text") or "")
    raw = (
        genres.group(1).replace(",", "|")
        if genres
        else str(record["metadata"].get("category") or "")
    )
    return [part.strip() for part in raw.split("|") if part.strip()]


def _products(dataset_dir: Path) -> dict[str, dict]:
    path = dataset_dir / RAG_FILE
    if not path.is_file():
        raise InvalidInput(f"no {RAG_FILE} in {dataset_dir}: the product texts are needed")
    records = json.loads(path.read_text(encoding="utf-8"))
    return {r["item_id"]: r for r in records}


def bench_wish(
    dataset_dir: str | Path,
    *,
    embedder,
    reranker,
    weights: tuple[float, ...] = DEFAULT_WEIGHTS,
    n_users: int = 500,
    n_last: int = 5,
    candidates: int = 100,
    k: int = 10,
    seed: int = 0,
    params: ALSParams | None = None,
) -> dict:
    """nDCG@k of the wish blend per weight, and of the category filter, on ``user-last``."""
    from Prod.common.embeddings import embed_texts

    dataset_dir = Path(dataset_dir)
    started = time.perf_counter()
    products = _products(dataset_dir)
    parts = user_last_split(load_interactions(dataset_dir), n_last=n_last)
    maps, x, y = fit_factors(parts.train, params)
    fit_s = time.perf_counter() - started

    row_of = {u: n for n, u in enumerate(maps.user_ids)}
    item_row = {i: n for n, i in enumerate(maps.item_ids)}
    seen = parts.train.groupby("user_id")["item_id"].agg(list).to_dict()
    held = parts.test[parts.test["user_id"].isin(row_of)].groupby("user_id")["item_id"]
    held = held.agg(list).to_dict()
    users = sorted(u for u in held if any(i in products for i in held[u]))
    rng = np.random.default_rng(seed)
    if len(users) > n_users:
        users = sorted(rng.choice(users, size=n_users, replace=False).tolist())

    ndcg: dict[str, list[float]] = {f"w={w:g}": [] for w in weights}
    ndcg["category filter"] = []
    categories = {i: set(_categories(record)) for i, record in products.items()}
    cases = []
    for user in users:
        counts = Counter(c for i in held[user] if i in products for c in categories[i])
        if not counts:
            continue
        category = min(counts, key=lambda c: (-counts[c], c))  # most held-out items; ties by name
        fits = {i for i in products if category in categories[i]}
        relevant = set(held[user]) & fits
        scores = y @ x[row_of[user]]
        scores[[item_row[i] for i in seen.get(user, []) if i in item_row]] = -np.inf
        ranked = [
            maps.item_ids[r] for r in np.argsort(-scores, kind="stable") if np.isfinite(scores[r])
        ]
        ndcg["category filter"].append(ndcg_at_k([i for i in ranked if i in fits][:k], relevant, k))
        pool = [i for i in ranked if i in products][:candidates]
        als = np.array([scores[item_row[i]] for i in pool], dtype=np.float64)
        cases.append((category, relevant, pool, als))

    # only the candidates' texts are embedded (MovieLens has ~10k items)
    needed = sorted({i for _, _, pool, _ in cases for i in pool})
    vectors = embed_texts(embedder, [embedding_text(products[i]["text"]) for i in needed])
    vector_of = dict(zip(needed, vectors, strict=True))
    embed_s = time.perf_counter() - started - fit_s

    in_pool, scorers = [], Counter()
    for n, (category, relevant, pool, als) in enumerate(cases):
        in_pool.append(len(relevant & set(pool)) / len(relevant))
        wish = PHRASES[n % len(PHRASES)].format(c=category.lower())
        wish_vector = embed_texts(embedder, [wish])[0]
        pool_candidates = [
            Candidate(
                i,
                products[i]["text"],
                dict(products[i]["metadata"]),
                float(vector_of[i] @ wish_vector),
            )
            for i in pool
        ]
        relevance, scorer = reranker.score(wish, pool_candidates)
        scorers[scorer] += 1
        for w in weights:
            blended = final_scores(wish_scores(relevance), als, w)
            top = [pool[i] for i in order(blended, als)[:k]]
            ndcg[f"w={w:g}"].append(ndcg_at_k(top, relevant, k))
    means = {name: round(float(np.mean(values)), 4) for name, values in ndcg.items() if values}
    blends = {w: means[f"w={w:g}"] for w in weights if f"w={w:g}" in means}
    return {
        "dataset": str(dataset_dir),
        "protocol": f"user-last {n_last}",
        "k": k,
        "candidates": candidates,
        "candidate_texts_embedded": len(needed),
        "users_evaluated": len(ndcg["category filter"]),
        "relevance": dict(scorers),
        f"ndcg@{k}": means,
        "best_weight": max(blends, key=lambda w: (blends[w], -abs(w - 0.5))) if blends else None,
        "relevant_in_candidates": round(float(np.mean(in_pool)), 4) if in_pool else None,
        "seconds": round(time.perf_counter() - started, 1),
        "fit_s": round(fit_s, 1),
        "embed_s": round(embed_s, 1),
    }


def render(result: dict, say) -> None:
    """Readable lines: one table per dataset, a row per weight (``say`` prints a line)."""
    reranker = result.get("reranker") or {}
    say(f"wish relevance: {reranker.get('scorer')} (reranker {reranker.get('model') or 'none'})")
    for report in result["datasets"]:
        key = f"ndcg@{report['k']}"
        say("")
        say(
            f"{report['dataset']}: {report['users_evaluated']} users, {report['protocol']}, "
            f"ALS top {report['candidates']} candidates ({report['relevant_in_candidates']:.0%} "
            f"of relevant items in them), {report['seconds']} s"
        )
        say(f"  {'ranking':<34} {key:>8}")
        for name, value in report[key].items():
            label = {"w=0": "w=0 (ALS alone)", "w=1": "w=1 (wish alone)"}.get(name, name)
            if name == "category filter":
                label = "category filter (hard, reference)"
            mark = "  <- best blend" if name == f"w={report['best_weight']:g}" else ""
            say(f"  {label:<34} {value:>8.4f}{mark}")


def parse_weights(text: str) -> tuple[float, ...]:
    """The ``--weights`` list, e.g. ``"0,0.5,1"``."""
    return parse_fractions(text, "--weights")


def run_wish_bench(
    dataset_dirs: list[Path],
    weights: tuple[float, ...] = DEFAULT_WEIGHTS,
    n_users: int = 500,
    n_last: int = 5,
    candidates: int = 100,
    k: int = 10,
    reranker_model: str | None = None,
) -> dict:
    """:func:`bench_wish` of each dataset with the real MiniLM and the configured reranker."""
    from config import get_settings
    from Prod.chat_reco_engine.rerank import Reranker
    from Prod.common.embeddings import load_embedder

    settings = get_settings()
    torch.manual_seed(0)
    embedder = load_embedder(settings.embedding_model)
    model = settings.reranker_model if reranker_model is None else reranker_model
    reranker = Reranker(model, max_length=settings.rerank_max_tokens, top_n=settings.rerank_top_n)
    reranker.wait()
    reports = [
        bench_wish(
            folder,
            embedder=embedder,
            reranker=reranker,
            weights=weights,
            n_users=n_users,
            n_last=n_last,
            candidates=candidates,
            k=k,
        )
        for folder in dataset_dirs
    ]
    return {"reranker": reranker.status(), "datasets": reports}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset_dirs", nargs="+", type=Path)
    parser.add_argument("--weights", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--n-last", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--reranker", default=None)
    args = parser.parse_args(argv)
    report = run_wish_bench(
        args.dataset_dirs,
        parse_weights(args.weights),
        args.users,
        args.n_last,
        args.candidates,
        args.k,
        args.reranker,
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
