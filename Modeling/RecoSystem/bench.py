"""Speed and quality of the project's ALS against ``implicit`` on generated data.

``reco bench als``.

Both get the same CSR, factors, iterations, CG steps and confidences; torch runs with
``threads`` intra-op threads, implicit with ``num_threads=threads`` and one BLAS thread. Each
implementation is timed ``repeats`` times, alternating, and the fastest run counts (the machine
is shared, so the minimum is the least disturbed estimate); nDCG@10 is measured on a per-user
random 20% holdout of the same data.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from Modeling.RecoSystem.evaluate import evaluate_scorer, prepare
from Modeling.RecoSystem.models import als_scorer, fit_implicit
from Prod.common.als import ALSParams, fit_als
from Prod.common.evaluation import user_random_split


def synthetic_interactions(n_interactions: int, seed: int = 0) -> pd.DataFrame:
    """Long-tailed interactions with taste structure (users ~ n/20, items ~ n/50, >= 1000).

    Users' activity is log-normal, items' popularity Zipf-like; 60% of picks come from the
    user's taste cluster (a cluster-specific reordering of the catalogue), the rest from global
    popularity, so there is something for a recommender to learn.
    """
    rng = np.random.default_rng(seed)
    n_users, n_items = max(n_interactions // 20, 100), max(n_interactions // 50, 1000)
    n_clusters = 50
    activity = rng.lognormal(0.0, 1.0, n_users)
    users = rng.choice(n_users, n_interactions, p=activity / activity.sum())
    popularity = np.arange(1, n_items + 1, dtype=np.float64) ** -0.9
    ranks = rng.choice(n_items, n_interactions, p=popularity / popularity.sum())
    cluster_orders = np.argsort(rng.random((n_clusters, n_items)), axis=1)
    from_taste = rng.random(n_interactions) < 0.6
    items = np.where(from_taste, cluster_orders[users % n_clusters, ranks], ranks)
    return pd.DataFrame({
        "user_id": users.astype(np.int64), "item_id": items.astype(np.int64),
        "weight": rng.integers(1, 5, n_interactions).astype(np.float32),
        "timestamp": np.zeros(n_interactions, dtype=np.int64),
    })  # fmt: skip


def _timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def bench_als(
    n_interactions: int = 1_000_000,
    factors: int = 64,
    iterations: int = 5,
    threads: int = 2,
    repeats: int = 2,
    seed: int = 0,
    params: ALSParams | None = None,
    device: str | None = None,
) -> dict:
    """Seconds per iteration for both implementations, their ratio and both nDCG@10."""
    torch.set_num_threads(threads)
    params = replace(params or ALSParams(), factors=factors, iterations=iterations)
    frame = synthetic_interactions(n_interactions, seed)
    parts = user_random_split(frame, 0.2, seed)
    data = prepare(parts.train, parts.test)

    fit_als(data.train, replace(params, iterations=1), device=device, compute_loss=False)  # warm
    torch_times, implicit_times = [], []
    torch_model = implicit_scorer = None
    for _ in range(repeats):
        seconds, torch_model = _timed(
            lambda: fit_als(data.train, params, device=device, compute_loss=False)
        )
        torch_times.append(seconds / iterations)
        seconds, (implicit_scorer, _) = _timed(
            lambda: fit_implicit(data.train, params, num_threads=threads)
        )
        implicit_times.append(seconds / iterations)

    k = 10
    torch_ndcg = evaluate_scorer(als_scorer(torch_model), data, k)[f"ndcg@{k}"]
    implicit_ndcg = evaluate_scorer(implicit_scorer, data, k)[f"ndcg@{k}"]
    torch_s, implicit_s = min(torch_times), min(implicit_times)
    return {
        "interactions": int(data.train._nnz()),
        "users": data.maps.n_users,
        "items": data.maps.n_items,
        "factors": factors,
        "iterations": iterations,
        "cg_steps": params.cg_steps,
        "threads": threads,
        "device": str(torch_model.user_factors.device),
        "torch_s_per_iter": round(torch_s, 4),
        "implicit_s_per_iter": round(implicit_s, 4),
        "ratio": round(torch_s / implicit_s, 3),
        "torch_runs_s_per_iter": [round(t, 4) for t in torch_times],
        "implicit_runs_s_per_iter": [round(t, 4) for t in implicit_times],
        "torch_ndcg@10": torch_ndcg,
        "implicit_ndcg@10": implicit_ndcg,
        "ndcg_ratio": round(torch_ndcg / implicit_ndcg, 4) if implicit_ndcg else None,
    }
