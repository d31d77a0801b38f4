"""The trainer's quick quality check: a per-user random holdout on a sample of users.

Each run first fits on the data minus the held-out pairs and scores the held-out pairs (seen
training items removed from the ranking). The published model is that fit finished on all the data
by a few warm-started iterations (``TRAIN_REFIT_ITERATIONS``), so the figures describe the
configuration rather than the exact published factors - the usual "evaluate, then refit on
everything" compromise, without paying for a second full fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from Prod.common.evaluation import ranking_metrics


@dataclass(frozen=True)
class HoldoutSplit:
    """train_mask: (nnz,) bool over the pairs; eval_users: (m,) int64 user indices."""

    train_mask: np.ndarray
    eval_users: np.ndarray


def split_holdout(
    user_idx: np.ndarray,
    n_users: int,
    *,
    max_users: int = 2000,
    fraction: float = 0.2,
    min_items: int = 3,
    seed: int = 0,
) -> HoldoutSplit:
    """Hold out ``fraction`` (at least one) of the pairs of up to ``max_users`` sampled users.

    Only users with ``min_items`` or more pairs take part, so every held-out user keeps training
    data. ``user_idx``: (nnz,) int64 of deduplicated pairs.
    """
    rng = np.random.default_rng(seed)
    counts = np.bincount(user_idx, minlength=n_users)
    eligible = np.flatnonzero(counts >= min_items)
    chosen = np.sort(rng.choice(eligible, size=min(max_users, len(eligible)), replace=False))
    train_mask = np.ones(len(user_idx), dtype=bool)
    if len(chosen) == 0:
        return HoldoutSplit(train_mask, chosen.astype(np.int64))
    rows = np.flatnonzero(np.isin(user_idx, chosen))
    # random order within each user: sort by (user, random key), then rank inside the group
    order = rows[np.lexsort((rng.random(len(rows)), user_idx[rows]))]
    users_in_order = user_idx[order]
    group_start = np.searchsorted(users_in_order, users_in_order, side="left")
    rank = np.arange(len(order)) - group_start
    n_hold = np.maximum(1, np.floor(fraction * counts[users_in_order])).astype(np.int64)
    train_mask[order[rank < n_hold]] = False
    return HoldoutSplit(train_mask, chosen.astype(np.int64))


def top_k_unseen(
    scores_for: callable, seen: sp.csr_matrix, users: np.ndarray, k: int, batch: int = 512
) -> np.ndarray:
    """(len(users), k) best item indices per user, items in ``seen`` (n_users, n_items) excluded.

    ``scores_for(user_batch) -> (b, n_items) float32 tensor``.
    """
    n_items = seen.shape[1]
    k = min(k, n_items)
    out = np.zeros((len(users), k), dtype=np.int64)
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        scores = scores_for(chunk).clone()
        sub = seen[chunk].tocoo()
        scores[
            torch.as_tensor(sub.row, dtype=torch.int64), torch.as_tensor(sub.col, dtype=torch.int64)
        ] = -torch.inf
        out[start : start + len(chunk)] = torch.topk(scores, k, dim=1).indices.cpu().numpy()
    return out


def evaluate_factors(
    user_factors: torch.Tensor,
    item_factors: torch.Tensor,
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    split: HoldoutSplit,
    k: int = 10,
) -> dict[str, float]:
    """Holdout metrics of the model and of a popularity baseline on the same split.

    user_factors: (n_users, dim), item_factors: (n_items, dim) float32 fitted on the train pairs.
    """
    n_users, n_items = user_factors.shape[0], item_factors.shape[0]
    train = split.train_mask
    seen = sp.csr_matrix(
        (np.ones(int(train.sum()), np.float32), (user_idx[train], item_idx[train])),
        shape=(n_users, n_items),
    )
    held = ~train
    relevant_by_user: dict[int, list[int]] = {}
    for u, i in zip(user_idx[held].tolist(), item_idx[held].tolist(), strict=True):
        relevant_by_user.setdefault(u, []).append(i)
    users = np.asarray(sorted(relevant_by_user), dtype=np.int64)
    if len(users) == 0:
        return {}
    relevant = [np.asarray(relevant_by_user[u]) for u in users.tolist()]
    items_t = item_factors.float().cpu()
    users_t = user_factors.float().cpu()
    model_top = top_k_unseen(lambda b: users_t[torch.as_tensor(b)] @ items_t.T, seen, users, k)
    counts = np.bincount(item_idx[train], minlength=n_items)
    popularity = torch.as_tensor(counts, dtype=torch.float32)
    popular_top = top_k_unseen(lambda b: popularity.expand(len(b), -1), seen, users, k)
    # the project's metric definitions (Prod.common.evaluation), so figures compare with `reco`
    metrics = ranking_metrics(model_top.tolist(), [r.tolist() for r in relevant], k, n_items)
    baseline = ranking_metrics(popular_top.tolist(), [r.tolist() for r in relevant], k, n_items)
    metrics.pop("users", None)
    metrics[f"popularity_ndcg@{k}"] = baseline[f"ndcg@{k}"]
    metrics[f"popularity_recall@{k}"] = baseline[f"recall@{k}"]
    metrics["eval_users"] = int(len(users))
    metrics["heldout_pairs"] = int(held.sum())
    return metrics
