"""Ranking metrics as functions of ``(recommended ids, relevant ids)``; they never call a model.

Definitions follow Microsoft Recommenders' ``python_evaluation`` (binary relevance):

- precision@k = hits in the top k / k (k, not the list length, so short lists are penalised)
- recall@k = hits / |relevant|
- nDCG@k = sum_{hit at rank r} 1/log(1+r) / sum_{r=1..min(|relevant|,k)} 1/log(1+r)
  (the log base cancels in the ratio)
- MAP@k (``map_at_k``, Spark's definition) = sum_{hit at rank r} (hits up to r)/r / min(|rel|, k)
- hit@k = 1 if any relevant item is in the top k
- coverage@k = distinct items recommended in all top-k lists / catalogue size

Per-user values are averaged over the users that have at least one relevant item.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence

from Prod.common.errors import InvalidInput

__all__ = [
    "precision_at_k",
    "recall_at_k",
    "ndcg_at_k",
    "average_precision_at_k",
    "hit_at_k",
    "coverage_at_k",
    "ranking_metrics",
    "METRIC_NAMES",
]

METRIC_NAMES = ("ndcg", "precision", "recall", "map", "hit", "coverage")


def _check_k(k: int) -> None:
    if k < 1:
        raise InvalidInput(f"k must be >= 1, got {k}")


def _hits(recommended: Sequence[Hashable], relevant: set, k: int) -> list[bool]:
    return [item in relevant for item in recommended[:k]]


def precision_at_k(recommended: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    _check_k(k)
    return sum(_hits(recommended, set(relevant), k)) / k


def recall_at_k(recommended: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    _check_k(k)
    relevant = set(relevant)
    if not relevant:
        return 0.0
    return sum(_hits(recommended, relevant, k)) / len(relevant)


def ndcg_at_k(recommended: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    _check_k(k)
    relevant = set(relevant)
    if not relevant:
        return 0.0
    dcg = sum(
        1.0 / math.log2(rank + 1)
        for rank, hit in enumerate(_hits(recommended, relevant, k), 1)
        if hit
    )
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return dcg / ideal


def average_precision_at_k(
    recommended: Sequence[Hashable], relevant: Iterable[Hashable], k: int
) -> float:
    """AP@k normalised by ``min(|relevant|, k)`` (MS Recommenders ``map_at_k`` per user)."""
    _check_k(k)
    relevant = set(relevant)
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for rank, hit in enumerate(_hits(recommended, relevant, k), 1):
        if hit:
            hits += 1
            total += hits / rank
    return total / min(len(relevant), k)


def hit_at_k(recommended: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    _check_k(k)
    return float(any(_hits(recommended, set(relevant), k)))


def coverage_at_k(
    recommended_lists: Iterable[Sequence[Hashable]], catalogue_size: int, k: int
) -> float:
    """Share of the catalogue that appears in at least one top-k list."""
    _check_k(k)
    if catalogue_size < 1:
        raise InvalidInput("catalogue_size must be >= 1")
    seen: set = set()
    for recommended in recommended_lists:
        seen.update(recommended[:k])
    return len(seen) / catalogue_size


def ranking_metrics(
    recommended_lists: Sequence[Sequence[Hashable]],
    relevant_lists: Sequence[Iterable[Hashable]],
    k: int,
    catalogue_size: int,
) -> dict[str, float]:
    """Mean of each per-user metric over users with relevant items, plus coverage.

    Returns ``{"ndcg@k", "precision@k", "recall@k", "map@k", "hit@k", "coverage@k", "users"}``.
    """
    if len(recommended_lists) != len(relevant_lists):
        raise InvalidInput("one recommended list per relevant list is needed")
    per_user = {name: 0.0 for name in ("ndcg", "precision", "recall", "map", "hit")}
    users = 0
    for recommended, relevant in zip(recommended_lists, relevant_lists, strict=True):
        relevant = set(relevant)
        if not relevant:
            continue
        users += 1
        per_user["ndcg"] += ndcg_at_k(recommended, relevant, k)
        per_user["precision"] += precision_at_k(recommended, relevant, k)
        per_user["recall"] += recall_at_k(recommended, relevant, k)
        per_user["map"] += average_precision_at_k(recommended, relevant, k)
        per_user["hit"] += hit_at_k(recommended, relevant, k)
    result = {f"{name}@{k}": (total / users if users else 0.0) for name, total in per_user.items()}
    result[f"coverage@{k}"] = coverage_at_k(recommended_lists, catalogue_size, k)
    result["users"] = users
    return result
