"""Ranking metrics against hand-computed examples (MS Recommenders definitions)."""

from __future__ import annotations

import math

import pytest

from Prod.common.errors import InvalidInput
from Prod.common.evaluation import (
    average_precision_at_k,
    coverage_at_k,
    hit_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)

RECOMMENDED = ["a", "b", "c", "d", "e"]
RELEVANT = {"b", "d", "z"}  # hits at ranks 2 and 4; "z" was never recommended


def test_precision_counts_hits_over_k():
    assert precision_at_k(RECOMMENDED, RELEVANT, 5) == pytest.approx(2 / 5)
    assert precision_at_k(RECOMMENDED, RELEVANT, 2) == pytest.approx(1 / 2)
    # a short list is still divided by k
    assert precision_at_k(["b"], RELEVANT, 5) == pytest.approx(1 / 5)


def test_recall_counts_hits_over_relevant():
    assert recall_at_k(RECOMMENDED, RELEVANT, 5) == pytest.approx(2 / 3)
    assert recall_at_k(RECOMMENDED, RELEVANT, 3) == pytest.approx(1 / 3)
    assert recall_at_k(RECOMMENDED, set(), 3) == 0.0


def test_ndcg_by_hand():
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # min(|rel|=3, k=5) ideal hits
    assert ndcg_at_k(RECOMMENDED, RELEVANT, 5) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["b", "d", "z"], RELEVANT, 3) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], RELEVANT, 2) == 0.0
    # ideal DCG is capped at k: one relevant item at rank 1 of k=1
    assert ndcg_at_k(["b"], RELEVANT, 1) == pytest.approx(1.0)


def test_average_precision_normalised_by_min_relevant_k():
    # hits at 2 (1/2) and 4 (2/4), divided by min(3, 5) = 3
    assert average_precision_at_k(RECOMMENDED, RELEVANT, 5) == pytest.approx((0.5 + 0.5) / 3)
    # k = 2: one hit at 2 (1/2), divided by min(3, 2) = 2
    assert average_precision_at_k(RECOMMENDED, RELEVANT, 2) == pytest.approx(0.25)


def test_hit_and_coverage():
    assert hit_at_k(RECOMMENDED, RELEVANT, 1) == 0.0
    assert hit_at_k(RECOMMENDED, RELEVANT, 2) == 1.0
    lists = [["a", "b", "c"], ["b", "c", "d"]]
    assert coverage_at_k(lists, 10, 2) == pytest.approx(3 / 10)  # a, b, c
    assert coverage_at_k(lists, 10, 3) == pytest.approx(4 / 10)


def test_ranking_metrics_averages_over_users_with_relevant_items():
    result = ranking_metrics([["a", "b"], ["c", "d"], ["e"]], [{"a"}, {"x"}, set()], 2, 5)
    assert result["users"] == 2
    assert result["hit@2"] == pytest.approx(0.5)
    assert result["precision@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert result["ndcg@2"] == pytest.approx(0.5)
    assert result["coverage@2"] == pytest.approx(5 / 5)


def test_bad_k_is_refused():
    with pytest.raises(InvalidInput):
        ndcg_at_k(RECOMMENDED, RELEVANT, 0)
