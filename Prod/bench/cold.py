"""What mixing fresh items in by content (``FRESH_SHARE``, :mod:`Prod.als_reco_engine.content`)
does to nDCG@k, offline, on a time-based ``user-last`` split of a canonical dataset.

Cold items are simulated: the newest ``cold_share`` of the items (by first interaction) get no ALS
factor (their interactions are held out of the training fit, as if they had arrived after the
last training). Each evaluated user (a test item and a training item with a factor) is served as
the engine serves them: the ALS top-k without training items, then ``round(share * k)`` slots
given to the fresh items nearest by MiniLM cosine to the weighted mean embedding of the user's
training items (:func:`~Prod.als_reco_engine.content.mix`, the engine's own placement).
``warm`` is the reference where every item has a factor (the model after the next retrain).

    reco bench cold Prod/data_ingest /tmp/ml --shares 0,0.1,0.2   (or python -m Prod.bench.cold)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from Prod.als_reco_engine.content import TASTE_ITEMS, fresh_count, mix
from Prod.common.als import ALSParams, fit_als
from Prod.common.canonical_format import RAG_FILE
from Prod.common.errors import InvalidInput
from Prod.common.evaluation import IndexMaps, load_interactions, to_user_items, user_last_split
from Prod.common.evaluation.metrics import ndcg_at_k
from Prod.common.items import embedding_text

DEFAULT_PARAMS = Path(__file__).resolve().parents[1] / "als_trainer" / "params" / "als_params.json"


def newest_items(frame: pd.DataFrame, share: float) -> set[str]:
    """The ``share`` of items whose first interaction is the latest (ties by id)."""
    first = frame.groupby("item_id")["timestamp"].min().reset_index()
    first = first.sort_values(["timestamp", "item_id"], ascending=[False, True])
    return set(first["item_id"].iloc[: int(round(share * len(first)))])


def item_vectors(dataset_dir: Path, item_ids: list[str], embedder) -> dict[str, np.ndarray]:
    """Unit MiniLM vectors of the products' embedded text (as the Chroma ingest writes them)."""
    from Prod.common.embeddings import embed_texts

    path = dataset_dir / RAG_FILE
    if not path.is_file():
        raise InvalidInput(f"no {RAG_FILE} in {dataset_dir}: the product texts are needed")
    records = json.loads(path.read_text(encoding="utf-8"))
    texts = {r["item_id"]: embedding_text(r["text"]) for r in records}
    wanted = [i for i in item_ids if i in texts]
    vectors = embed_texts(embedder, [texts[i] for i in wanted])
    return dict(zip(wanted, vectors, strict=True))


def fit_factors(
    train: pd.DataFrame, params: ALSParams | None = None
) -> tuple[IndexMaps, np.ndarray, np.ndarray]:
    """ALS (the trainer's params file unless ``params``) fitted on ``train``: the index maps and
    the user and item factors as arrays (the offline benches' model)."""
    params = params or ALSParams.from_file(DEFAULT_PARAMS)
    maps = IndexMaps.from_frame(train)
    model = fit_als(to_user_items(train, maps), params, compute_loss=False)
    return maps, model.user_factors.numpy(), model.item_factors.numpy()


def _als_lists(
    maps: IndexMaps, x: np.ndarray, y: np.ndarray, users: list[str], seen: dict, k: int
) -> dict[str, list[str]]:
    """Top-k item ids per user by ALS score, training items excluded."""
    row_of = {u: n for n, u in enumerate(maps.user_ids)}
    item_row = {i: n for n, i in enumerate(maps.item_ids)}
    out = {}
    for user in users:
        scores = y @ x[row_of[user]]
        rows = [item_row[i] for i in seen[user] if i in item_row]
        scores[rows] = -np.inf
        top = np.argpartition(-scores, k)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        out[user] = [maps.item_ids[r] for r in top if np.isfinite(scores[r])]
    return out


def bench_cold(
    dataset_dir: str | Path,
    *,
    embedder,
    shares: tuple[float, ...] = (0.0, 0.1, 0.2),
    cold_share: float = 0.1,
    k: int = 10,
    params: ALSParams | None = None,
) -> dict:
    """nDCG@k of ALS with each fresh-item share, and of the all-warm model, on ``user-last``."""
    dataset_dir = Path(dataset_dir)
    started = time.perf_counter()
    frame = load_interactions(dataset_dir)
    parts = user_last_split(frame)
    cold = newest_items(frame, cold_share)
    warm_train = parts.train[~parts.train["item_id"].isin(cold)]
    maps, x, y = fit_factors(warm_train, params)
    full_maps, full_x, full_y = fit_factors(parts.train, params)
    known_users = set(maps.user_ids)
    test = parts.test[parts.test["user_id"].isin(known_users)]
    relevant = test.groupby("user_id")["item_id"].agg(set).to_dict()
    users = sorted(relevant)
    history = parts.train[parts.train["user_id"].isin(relevant)]
    seen = history.groupby("user_id")["item_id"].agg(list).to_dict()
    liked = {
        u: dict(zip(g["item_id"], g["weight"].astype(float), strict=True))
        for u, g in history.groupby("user_id")
    }
    fit_s = time.perf_counter() - started

    vectors = item_vectors(dataset_dir, sorted(set(frame["item_id"])), embedder)
    fresh_ids = sorted(i for i in cold if i in vectors)
    fresh_matrix = np.stack([vectors[i] for i in fresh_ids]) if fresh_ids else None
    als = _als_lists(maps, x, y, users, seen, k)
    warm = _als_lists(full_maps, full_x, full_y, users, seen, k)

    cold_users = [u for u in users if relevant[u] & cold]  # whose test item is a cold one
    results = {"warm (all items have factors)": _ndcg(warm, relevant, k)}
    on_cold = {"warm (all items have factors)": _ndcg(warm, relevant, k, cold_users)}
    for share in shares:
        n = fresh_count(k, share, k)
        served = {}
        for user in users:
            fresh = _nearest_fresh(liked[user], vectors, fresh_ids, fresh_matrix, seen[user], n)
            served[user] = mix(als[user][: k - len(fresh)], fresh, k)[0] if fresh else als[user]
        results[f"share {share:g}"] = _ndcg(served, relevant, k)
        on_cold[f"share {share:g}"] = _ndcg(served, relevant, k, cold_users)
    return {
        "dataset": str(dataset_dir),
        "protocol": "user-last",
        "k": k,
        "items": int(frame["item_id"].nunique()),
        "cold_items": len(cold),
        "users_evaluated": len(users),
        "users_with_cold_test_item": len(cold_users),
        f"ndcg@{k}": results,
        f"ndcg@{k}_users_with_cold_test_item": on_cold,
        "seconds": round(time.perf_counter() - started, 1),
        "fit_s": round(fit_s, 1),
    }


def _nearest_fresh(liked, vectors, fresh_ids, fresh_matrix, seen, n) -> list[str]:
    """The engine's taste: unit weighted mean of the embeddings of the most weighted items."""
    if n <= 0 or fresh_matrix is None:
        return []
    heaviest = sorted(liked.items(), key=lambda p: (-p[1], p[0]))[:TASTE_ITEMS]
    pairs = [(vectors[i], w) for i, w in heaviest if i in vectors]
    if not pairs:
        return []
    mean = sum(w * v for v, w in pairs)
    scores = fresh_matrix @ (mean / max(float(np.linalg.norm(mean)), 1e-12))
    seen_set = set(seen)
    order = np.argsort(-scores, kind="stable")
    return [fresh_ids[r] for r in order if fresh_ids[r] not in seen_set][:n]


def _ndcg(lists: dict, relevant: dict[str, set], k: int, users: list[str] | None = None) -> float:
    users = list(relevant) if users is None else users
    if not users:
        return float("nan")
    return round(float(np.mean([ndcg_at_k(lists[u], relevant[u], k) for u in users])), 5)


def parse_fractions(text: str, option: str) -> tuple[float, ...]:
    """``"0,0.1,0.2"`` -> (0.0, 0.1, 0.2); each in [0, 1], else InvalidInput naming ``option``."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise InvalidInput(f"{option} must be numbers separated by commas, got {text!r}") from None
    if not all(0 <= value <= 1 for value in values):
        raise InvalidInput(f"{option} must each be within 0..1, got {text!r}")
    return values


def parse_shares(text: str) -> tuple[float, ...]:
    """The ``--shares`` list, e.g. ``"0,0.1,0.2"``."""
    return parse_fractions(text, "--shares")


def run_cold_bench(
    dataset_dirs: list[Path], shares: tuple[float, ...], cold_share: float = 0.1, k: int = 10
) -> dict:
    """:func:`bench_cold` of each dataset with the real MiniLM (``reco bench cold``)."""
    from Prod.common.embeddings import load_embedder

    torch.manual_seed(0)
    embedder = load_embedder("")
    reports = [
        bench_cold(folder, embedder=embedder, shares=shares, cold_share=cold_share, k=k)
        for folder in dataset_dirs
    ]
    return {"datasets": reports}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset_dirs", nargs="+", type=Path)
    parser.add_argument("--shares", default="0,0.1,0.2")
    parser.add_argument("--cold-share", type=float, default=0.1)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    report = run_cold_bench(args.dataset_dirs, parse_shares(args.shares), args.cold_share, args.k)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
