"""Offline evaluation: splits and ranking metrics (functions of recommended/relevant ids)."""

from Prod.common.evaluation.data import IndexMaps, load_interactions, seen_items, to_user_items
from Prod.common.evaluation.metrics import (
    METRIC_NAMES,
    average_precision_at_k,
    coverage_at_k,
    hit_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)
from Prod.common.evaluation.ranking import top_k_excluding_seen
from Prod.common.evaluation.splits import (
    PROTOCOLS,
    Split,
    collapse_pairs,
    split,
    stratified_split,
    user_last_split,
    user_random_split,
)

__all__ = [
    "IndexMaps",
    "load_interactions",
    "seen_items",
    "to_user_items",
    "METRIC_NAMES",
    "average_precision_at_k",
    "coverage_at_k",
    "hit_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "ranking_metrics",
    "recall_at_k",
    "top_k_excluding_seen",
    "PROTOCOLS",
    "Split",
    "collapse_pairs",
    "split",
    "stratified_split",
    "user_last_split",
    "user_random_split",
]
