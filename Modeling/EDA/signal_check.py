"""Is there something to learn? Held-out checks of a canonical dataset.

    python -m Modeling.EDA.signal_check Prod/data_ingest [--factors 64] [--json]

Splits events by time (the last ``--test-share`` held out) and reports, over users' held-out
items they had not seen in training:

- how often held-out events fall in each user's two most-used training categories, against
  the chance of that under the catalogue-wide category mix;
- recall@10 of most-popular, item-item cosine kNN and the project's PyTorch ALS
  (:func:`Prod.common.als.fit_als`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from Modeling.EDA.eda import load_dataset
from Prod.common.als import ALSParams, build_user_items, fit_als

K = 10


def time_split(interactions, test_share: float) -> np.ndarray:
    """(n,) bool: True for training events (strictly before the split time)."""
    stamps = interactions["timestamp"].astype("int64").to_numpy()
    return stamps < np.quantile(stamps, 1.0 - test_share)


def recall_at_k(scores: np.ndarray, seen: sp.csr_matrix, held_out: dict[int, set[int]]) -> float:
    """Mean over users of |top-k unseen ∩ held-out unseen| / min(k, |held-out unseen|).

    ``scores``: (n_users, n_items); ``seen``: training matrix whose pattern is masked out.
    """
    recalls = []
    for user, relevant in held_out.items():
        seen_items = seen.indices[seen.indptr[user] : seen.indptr[user + 1]]
        fresh = relevant - set(seen_items.tolist())
        if not fresh:
            continue
        row = scores[user].astype(np.float64).copy()
        row[seen_items] = -np.inf
        top = np.argpartition(-row, K)[:K]
        recalls.append(len(fresh & set(top.tolist())) / min(K, len(fresh)))
    return float(np.mean(recalls)) if recalls else 0.0


def item_knn_scores(seen: sp.csr_matrix) -> np.ndarray:
    """(n_users, n_items) scores from item-item cosine similarity of the binary matrix."""
    binary = seen.copy()
    binary.data[:] = 1.0
    norms = np.sqrt(np.asarray(binary.sum(axis=0)).ravel()) + 1e-9
    similarity = (binary.T @ binary).toarray() / norms[:, None] / norms[None, :]
    np.fill_diagonal(similarity, 0.0)
    return np.asarray(seen @ similarity)


def check_signal(
    dataset_dir: str | Path, *, test_share: float = 0.2, factors: int = 64
) -> dict[str, Any]:
    users, items, interactions = load_dataset(dataset_dir)
    user_codes = interactions["user_id"].astype("category")
    user_index = user_codes.cat.codes.to_numpy()
    item_lookup = {item: i for i, item in enumerate(items["item_id"])}
    item_index = interactions["item_id"].map(item_lookup).to_numpy()
    shape = (len(user_codes.cat.categories), len(items))
    weights = interactions["weight"].to_numpy(dtype=np.float64)
    train = time_split(interactions, test_share)

    seen = sp.csr_matrix((weights[train], (user_index[train], item_index[train])), shape=shape)
    held_out: dict[int, set[int]] = {}
    for user, item in zip(user_index[~train], item_index[~train], strict=True):
        held_out.setdefault(int(user), set()).add(int(item))

    categories = items["category"].fillna("").to_numpy()
    category_codes = np.unique(categories, return_inverse=True)[1]
    train_counts = np.zeros((shape[0], category_codes.max() + 1))
    np.add.at(train_counts, (user_index[train], category_codes[item_index[train]]), 1)
    top_two = np.argsort(-train_counts, axis=1)[:, :2]
    test_users, test_categories = user_index[~train], category_codes[item_index[~train]]
    known = train_counts[test_users].sum(axis=1) > 0
    share = np.bincount(category_codes[item_index], minlength=train_counts.shape[1]) / len(
        item_index
    )
    in_top_two = (top_two[test_users] == test_categories[:, None]).any(axis=1)[known]
    chance = share[top_two[test_users]].sum(axis=1)[known]

    popularity = np.asarray((seen > 0).sum(axis=0)).ravel().astype(np.float64)
    coo = seen.tocoo()
    user_items = build_user_items(
        torch.from_numpy(coo.row),
        torch.from_numpy(coo.col),
        torch.from_numpy(coo.data).float(),
        *shape,
    )
    model = fit_als(user_items, ALSParams(factors=factors), device="cpu", compute_loss=False)
    als_scores = (model.user_factors @ model.item_factors.T).numpy()
    return {
        "dataset": str(dataset_dir),
        "train_events": int(train.sum()),
        "test_events": int((~train).sum()),
        "held_out_in_top2_categories": float(in_top_two.mean()),
        "chance_in_top2_categories": float(chance.mean()),
        "recall@10": {
            "most_popular": recall_at_k(np.tile(popularity, (shape[0], 1)), seen, held_out),
            "item_knn": recall_at_k(item_knn_scores(seen), seen, held_out),
            f"als_{factors}": recall_at_k(als_scores, seen, held_out),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("--test-share", type=float, default=0.2)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print only one JSON line")
    args = parser.parse_args(argv)
    result = check_signal(args.dataset_dir, test_share=args.test_share, factors=args.factors)
    if not args.json:
        print(
            f"held-out events in the user's top-2 training categories: "
            f"{result['held_out_in_top2_categories']:.1%} "
            f"(chance {result['chance_in_top2_categories']:.1%})"
        )
        for name, value in result["recall@10"].items():
            print(f"recall@10 {name:>14}: {value:.4f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
