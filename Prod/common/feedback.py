"""Negative feedback: the one rule deciding which (user, item) pairs the user said "not this" to.

An event is *negative* when it is a ``dislike`` or a ``rating`` below
``settings.negative_rating_below`` (default 3: ratings 1-2 of 5); ``rating`` and ``dislike`` are
*explicit* signals, the other events (view, click, add_to_cart, purchase) implicit ones.

Per (user, item) pair, **the latest explicit signal wins**, and implicit events never override
it (ties in time: negative wins):

- latest explicit signal negative (e.g. purchased, then disliked or rated 1/5): the pair is
  *disliked*. It adds no confidence at all (not even its purchase: the pair is unobserved for ALS
  training and fold-in), it is never recommended to that user, and it pushes their
  recommendations away from similar items (:func:`dislike_push`).
- otherwise (no explicit signal, or the latest is a rating at or above the threshold, e.g. a 1/5
  later re-rated 5/5): the pair is positive with the summed weights of its events; a negative
  event's own weight never counts.

The rule exists twice, for two scales: :func:`user_pairs_sql` (one user's pairs in PostgreSQL,
for serving and chat) and :func:`resolve_pairs` (millions of events in numpy, for training);
``tests/trainer/test_negative_feedback.py`` checks that they agree.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from sqlalchemy import TextClause, text

from Prod.common.canonical_format import DISLIKE_EVENT, RATING_EVENT

NEGATIVE, IMPLICIT, POSITIVE = -1, 0, 1  # an event's signal


def is_negative(event: str, rating: float | None, negative_below: float) -> bool:
    """Whether one event is negative feedback."""
    return event == DISLIKE_EVENT or (
        event == RATING_EVENT and rating is not None and rating < negative_below
    )


def signal_sql(negative_below: float) -> str:
    """SQL expression over an ``interaction`` row: -1 negative, 1 positive explicit, 0 implicit."""
    threshold = float(negative_below)
    if not math.isfinite(threshold):
        raise ValueError("negative_below must be finite")
    return (
        f"(case when event = '{DISLIKE_EVENT}' or (event = '{RATING_EVENT}' "
        f"and rating < {threshold!r}) then {NEGATIVE} "
        f"when event = '{RATING_EVENT}' then {POSITIVE} else {IMPLICIT} end)"
    )


@lru_cache(maxsize=8)
def user_pairs_sql(negative_below: float) -> TextClause:
    """One user's pairs (bind ``:user_id``): ``item_id``, positive weight (0 for a disliked
    pair), newest interaction id, disliked (bool)."""
    signal = signal_sql(negative_below)
    latest_explicit = (
        f"(array_agg({signal} order by occurred_at desc, {signal} asc) "
        f"filter (where {signal} <> {IMPLICIT}))[1]"
    )
    disliked = f"coalesce({latest_explicit} = {NEGATIVE}, false)"
    return text(
        f"select item_id, case when {disliked} then 0.0 else "
        f"coalesce(sum(weight) filter (where {signal} <> {NEGATIVE}), 0.0) end, "
        f"max(id), {disliked} from interaction where user_id = :user_id group by item_id"
    )


def resolve_pairs(
    keys: np.ndarray, weights: np.ndarray, signals: np.ndarray | None, at: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events -> pairs under the rule above.

    keys: (n,) int64 pair key per event; weights: (n,) float32; signals: (n,) -1/0/1 or None
    (all implicit); at: (n,) event times (any monotone number; only read where the signal is
    not 0). Returns (pair keys (p,) sorted, summed positive weights (p,) float32, disliked (p,)
    bool); a disliked pair's weight is 0.
    """
    unique, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.reshape(-1)
    disliked = np.zeros(len(unique), dtype=bool)
    if signals is None or not np.any(signals == NEGATIVE):
        summed = np.bincount(inverse, weights=weights, minlength=len(unique))
        return unique, summed.astype(np.float32), disliked
    counted = np.where(signals == NEGATIVE, 0.0, weights)
    summed = np.bincount(inverse, weights=counted, minlength=len(unique)).astype(np.float32)
    explicit = np.flatnonzero(signals != IMPLICIT)
    pair, when, signal = inverse[explicit], at[explicit], signals[explicit]
    order = np.lexsort((-signal, when, pair))  # by pair, then time; a tie puts negative last
    pair, signal = pair[order], signal[order]
    last = np.r_[pair[1:] != pair[:-1], True]  # the latest explicit event of each pair
    disliked[pair[last]] = signal[last] == NEGATIVE
    summed[disliked] = 0.0
    return unique, summed, disliked


def dislike_push(
    *,
    n_disliked: int,
    n_liked: int,
    anti_scores: np.ndarray | None = None,
    disliked_scores: np.ndarray | None = None,
    same_category: np.ndarray | None = None,
) -> np.ndarray | None:
    """How far each candidate is pushed away for a user, (n,) in [0, 1]; None when nothing.

    The larger of two measures of "like the disliked items" (of those available):

    - behaviour: the disliked items folded in as if liked (the exact ALS user step, weight 1
      each) give an "anti-taste" ``x_neg``; anti_scores: (n,) ``y_i . x_neg`` of the candidates
      (0 where the model does not know one), disliked_scores: (d,) the same for the disliked
      items; ``clip(anti / mean(disliked_scores), 0, 1)``: as close as the disliked items
      themselves = 1.
    - kind: same_category: (n,) the share of the disliked items in the candidate's category
      (:func:`category_share`). On sparse data the factors barely group a category (measured:
      four disliked garden products of the 30-item test catalogue, 64 factors, gave other
      garden products an anti-score of 0.06 of the disliked ones'), the category does.

    Both are scaled by ``n_disliked / (n_disliked + n_liked)``, the share of the user's pairs
    that are disliked: one dislike among 20 purchases barely moves the ranking, four dislikes and
    nothing else move it fully.
    """
    parts = []
    if anti_scores is not None and disliked_scores is not None and len(disliked_scores):
        reference = float(np.mean(disliked_scores))
        if reference > 0:
            parts.append(np.clip(np.asarray(anti_scores, dtype=np.float64) / reference, 0, 1))
    if same_category is not None:
        parts.append(np.clip(np.asarray(same_category, dtype=np.float64), 0, 1))
    if not parts or n_disliked <= 0:
        return None
    return np.maximum.reduce(parts) * (n_disliked / (n_disliked + max(n_liked, 0)))


def category_share(categories: list[str | None], disliked: list[str | None]) -> np.ndarray:
    """(n,) for each candidate category, the share of ``disliked`` categories equal to it
    (case-insensitive; unknown = 0)."""
    known = [c.casefold() for c in disliked if c]
    if not known:
        return np.zeros(len(categories))
    counts: dict[str, int] = {}
    for name in known:
        counts[name] = counts.get(name, 0) + 1
    total = len(disliked)
    return np.array([counts.get(c.casefold(), 0) / total if c else 0.0 for c in categories])
