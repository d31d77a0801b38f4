"""Negative feedback in training: dislikes and low ratings never add confidence; per pair the
latest explicit signal wins. The numpy rule (training) and the SQL rule (serving, chat) agree."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
from sqlalchemy import insert

from Prod.als_trainer.dataset import copy_interactions, index_interactions, read_watermark
from Prod.common.canonical_format import DEFAULT_WEIGHTS
from Prod.common.db import get_engine, session_scope
from Prod.common.feedback import (
    IMPLICIT,
    NEGATIVE,
    POSITIVE,
    category_share,
    dislike_push,
    is_negative,
    resolve_pairs,
    user_pairs_sql,
)
from Prod.common.models import Interaction, Item, User

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)

# (item, [(event, rating, minutes after T0)], expected: positive weight or "disliked")
SCENARIOS = {
    "implicit-only": ([("view", None, 0), ("purchase", None, 1)], 9.0),
    "low-rating": ([("rating", 1.0, 0)], "disliked"),
    "rating-2-is-negative": ([("rating", 2.0, 0)], "disliked"),
    "rating-3-is-positive": ([("rating", 3.0, 0)], 3.0),
    "purchased-then-disliked": ([("purchase", None, 0), ("dislike", None, 5)], "disliked"),
    "purchased-then-rated-1": ([("purchase", None, 0), ("rating", 1.0, 5)], "disliked"),
    "disliked-then-purchased": ([("dislike", None, 0), ("purchase", None, 5)], "disliked"),
    "rated-1-then-5": ([("rating", 1.0, 0), ("view", None, 1), ("rating", 5.0, 5)], 6.0),
    "rated-5-then-disliked": ([("rating", 5.0, 0), ("dislike", None, 5)], "disliked"),
    "tie-goes-to-negative": ([("rating", 5.0, 3), ("dislike", None, 3)], "disliked"),
}


def _expected(outcome) -> tuple[float, bool]:
    return (0.0, True) if outcome == "disliked" else (float(outcome), False)


def _events_arrays(scenarios: dict, negative_below: float = 3.0):
    keys, weights, signals, at = [], [], [], []
    for key, (events, _) in enumerate(scenarios.values()):
        for event, rating, minute in events:
            keys.append(key)
            weights.append(rating if event == "rating" else DEFAULT_WEIGHTS[event])
            explicit = event in ("rating", "dislike")
            negative = is_negative(event, rating, negative_below)
            signals.append(NEGATIVE if negative else POSITIVE if explicit else IMPLICIT)
            at.append(minute * 60e6)
    return (
        np.array(keys, np.int64),
        np.array(weights, np.float32),
        np.array(signals, np.int8),
        np.array(at, np.float64),
    )


def test_latest_explicit_signal_wins_and_negative_events_add_no_weight():
    keys, weights, signals, at = _events_arrays(SCENARIOS)
    pairs, summed, disliked = resolve_pairs(keys, weights, signals, at)
    assert pairs.tolist() == list(range(len(SCENARIOS)))
    for n, (name, (_, outcome)) in enumerate(SCENARIOS.items()):
        assert (float(summed[n]), bool(disliked[n])) == _expected(outcome), name


def test_without_negative_events_pairs_are_plain_sums():
    keys = np.array([3, 1, 3, 1, 2], np.int64)
    weights = np.array([1, 2, 4, 8, 1], np.float32)
    pairs, summed, disliked = resolve_pairs(keys, weights, None, None)
    assert pairs.tolist() == [1, 2, 3] and summed.tolist() == [10, 1, 5] and not disliked.any()


def test_low_ratings_are_not_positive_feedback():
    """Regression (issue 12): a 1/5 rating was summed into the pair's confidence like a view.
    Now the training matrix has no such pair, and users/items left with nothing positive go."""
    csv = (
        b"alice,toy1,1,-1,0\n"  # rated 1/5
        b"alice,toy2,8,,\n"  # purchased ...
        b"alice,toy2,1,-1,600000000\n"  # ... then disliked
        b"alice,book,5,1,0\n"  # rated 5/5
        b"bob,toy1,2,-1,0\n"  # bob only ever rated 2/5: no positive pair, no factor
        b"carol,toy3,4,,\n"
    )
    matrix = index_interactions(csv, watermark=6)
    pairs = {
        (matrix.user_ids[u], matrix.item_ids[i]): float(w)
        for u, i, w in zip(matrix.user_idx, matrix.item_idx, matrix.weights, strict=True)
    }
    assert pairs == {("alice", "book"): 5.0, ("carol", "toy3"): 4.0}
    assert matrix.user_ids.tolist() == ["alice", "carol"]
    assert matrix.item_ids.tolist() == ["book", "toy3"]
    assert matrix.n_events == 6 and matrix.n_disliked == 3 and (matrix.weights > 0).all()


def test_training_rule_and_serving_rule_agree_on_postgres(settings):
    """The COPY + numpy path of the trainer and the per-user SQL of serving/chat resolve the
    same events identically, for the default threshold and a stricter one."""
    prefix = f"neg{uuid.uuid4().hex[:8]}"
    user = f"{prefix}-u"
    items = {name: f"{prefix}-{name}" for name in SCENARIOS}
    rows = [
        {
            "user_id": user,
            "item_id": items[name],
            "event": event,
            "rating": rating,
            "weight": rating if event == "rating" else DEFAULT_WEIGHTS[event],
            "occurred_at": T0 + timedelta(minutes=minute),
        }
        for name, (events, _) in SCENARIOS.items()
        for event, rating, minute in events
    ]
    with session_scope(settings.database_url) as session:
        session.execute(insert(User), [{"user_id": user}])
        session.execute(insert(Item), [{"item_id": i, "title": i} for i in items.values()])
        session.execute(insert(Interaction), rows)
    watermark = read_watermark(settings.database_url)
    for threshold in (3.0, 4.0):
        matrix = index_interactions(
            copy_interactions(settings.database_url, watermark, threshold), watermark
        )
        trained = {
            matrix.item_ids[i]: float(w)
            for u, i, w in zip(matrix.user_idx, matrix.item_idx, matrix.weights, strict=True)
            if matrix.user_ids[u] == user
        }
        with get_engine(settings.database_url).connect() as conn:
            served = conn.execute(user_pairs_sql(threshold), {"user_id": user}).all()
        liked = {r[0]: float(r[1]) for r in served if not r[3]}
        assert trained == liked, threshold
        assert all(r[1] == 0 for r in served if r[3])
        keys, weights, signals, at = _events_arrays(SCENARIOS, threshold)
        _, summed, disliked = resolve_pairs(keys, weights, signals, at)
        expected = {items[n]: float(summed[k]) for k, n in enumerate(SCENARIOS) if not disliked[k]}
        assert liked == expected
    # the last round had threshold 4: a 3/5 rating is negative there
    assert items["rating-3-is-positive"] not in liked


def test_dislike_push_takes_the_closer_of_anti_taste_and_category_scaled_by_share():
    anti_scores = np.array([2.0, 1.0, -3.0, 0.0, 6.0])  # y_i . x_neg of five candidates
    disliked_scores = np.array([1.5, 2.5])  # the same for the two disliked items: mean 2
    push = dislike_push(
        n_disliked=2, n_liked=0, anti_scores=anti_scores, disliked_scores=disliked_scores
    )
    assert np.allclose(push, [1.0, 0.5, 0.0, 0.0, 1.0])  # opposite: 0; beyond: capped at 1
    share = category_share(["toys", "Toys", "books", None, "garden"], ["toys", "TOYS", "books"])
    assert np.allclose(share, [2 / 3, 2 / 3, 1 / 3, 0, 0])
    both = dislike_push(
        n_disliked=2,
        n_liked=6,
        anti_scores=anti_scores,
        disliked_scores=disliked_scores,
        same_category=share,
    )
    assert np.allclose(both, np.maximum(push, share) / 4)
    assert dislike_push(n_disliked=0, n_liked=3, same_category=share) is None
    assert dislike_push(n_disliked=1, n_liked=0) is None
