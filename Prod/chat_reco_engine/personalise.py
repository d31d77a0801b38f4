"""The hybrid step: blend query relevance with the user's ALS affinity.

``score = (1 - w) * relevance' + w * affinity'`` where ``'`` is min-max scaling over the candidate
set and ``w = settings.personalisation_weight`` (0 = pure relevance, 1 = pure ALS taste). The
affinity of item ``i`` is ``x_u . y_i`` with the user's published factor ``x_u`` or, for a user
the active model has not seen, one folded in from their PostgreSQL interactions (exact ALS
user step against the active item factors). Candidates without an item factor get the lowest
affinity. Users with neither get relevance only.

Negative feedback (a ``dislike``, a rating below ``settings.negative_rating_below``; the rule is
:mod:`Prod.common.feedback`) adds no confidence to the fold-in; the chat drops the user's disliked
products (:meth:`Personaliser.disliked`) and multiplies the blended score by ``1 - w * push``,
where ``push`` (:meth:`Personaliser.push_away`, in [0, 1]) is how close a candidate is to the
"anti-taste" folded in from the disliked items, or the share of them in its category (above the
least share among the candidates), scaled by the share of the user's pairs that are disliked
(:func:`Prod.common.feedback.dislike_push`; the score stays in [0, 1]).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from Prod.common import model_store
from Prod.common.db import session_scope
from Prod.common.feedback import category_share, dislike_push, user_pairs_sql
from Prod.common.logs import get_logger
from Prod.common.models import Item
from Prod.common.stores import chroma_for, redis_for

log = get_logger(__name__)

_MAX_CACHED_USERS = 100_000  # users' interaction summaries kept (cleared when full)


def min_max(values: np.ndarray) -> np.ndarray:
    """(n,) -> (n,) scaled to [0, 1]; a constant vector maps to zeros."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-12:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def blend(relevance: np.ndarray, affinity: np.ndarray | None, weight: float) -> np.ndarray:
    """(n,) final scores: ``(1 - w) * minmax(relevance) + w * minmax(affinity)``."""
    scaled = min_max(relevance)
    if affinity is None or weight <= 0:
        return scaled
    return (1.0 - weight) * scaled + weight * min_max(affinity)


def item_cosine(matrix: np.ndarray, known: list[tuple[int, float]]) -> np.ndarray:
    """(n,) ``sum_j w_j * cos(y_i, y_j)`` over the ``known`` (item row, weight) pairs: item-item
    similarity on the ALS item factors ``matrix`` (n, k); a zero factor has cosine 0."""
    norms = np.linalg.norm(matrix, axis=1).astype(np.float64)
    norms[norms == 0] = 1.0
    rows, weights = zip(*known, strict=True)
    query = (np.asarray(weights)[:, None] * matrix[list(rows)] / norms[list(rows), None]).sum(0)
    return (matrix @ query) / norms


def with_popularity(scores: np.ndarray, popularity: np.ndarray | None, weight: float) -> np.ndarray:
    """(n,) ``minmax(scores) + w * minmax(log1p(popularity))`` over all ``n`` items: the
    :func:`item_cosine` to a few named items plus a popularity prior (3 items alone lose to
    popularity; ``w = settings.named_items_popularity_weight``, ``reco bench named-items``).
    Non-finite scores stay as they are; ``w = 0`` or no popularity: the scores unchanged."""
    scores = np.asarray(scores, dtype=np.float64)
    if popularity is None or weight <= 0 or scores.size == 0:
        return scores
    finite = np.isfinite(scores)
    out = scores.copy()
    if finite.any():
        prior = min_max(np.log1p(np.maximum(np.asarray(popularity, dtype=np.float64), 0.0)))
        out[finite] = min_max(scores[finite]) + weight * prior[finite]
    return out


@dataclass(frozen=True)
class _ItemFactors:
    index: dict[str, int]
    matrix: np.ndarray  # (n_items, k) float32
    gram: np.ndarray  # (k, k) Y^T Y, cached for fold-in


@dataclass(frozen=True)
class _Pairs:
    """One user's Postgres interactions under the negative-feedback rule."""

    liked: list[tuple[str, float]]  # (item_id, summed positive weight)
    disliked: frozenset[str]
    disliked_categories: list[str | None]


def _solve(
    meta: model_store.ModelMeta, items: _ItemFactors, known: list[tuple[int, float]]
) -> np.ndarray:
    """(k,) factor of a user with these (item row, weight) pairs: the exact ALS user step."""
    import torch

    from Prod.common.als import ALSParams, fold_in_user

    params = ALSParams(
        factors=meta.dim,
        regularization=meta.regularization,
        alpha=meta.alpha,
        confidence=meta.confidence,
    )
    idx, weights = zip(*known, strict=True)
    return fold_in_user(
        torch.from_numpy(items.matrix),
        torch.tensor(idx),
        torch.tensor(weights),
        params,
        yty=torch.from_numpy(items.gram),
    ).numpy()


class Personaliser:
    """Reads the active ALS model (Redis + Chroma) and computes user affinities."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self._items: dict[str, _ItemFactors] = {}
        self._folded: dict[tuple[str, str], tuple[float, np.ndarray | None]] = {}
        self._pairs: dict[str, tuple[float, _Pairs]] = {}
        self._lock = threading.Lock()

    def _item_factors(self, meta: model_store.ModelMeta) -> _ItemFactors:
        with self._lock:
            cached = self._items.get(meta.version)
            if cached is None:
                ids, matrix, _ = model_store.load_items(
                    redis_for(self.settings), meta, lambda: chroma_for(self.settings)
                )
                cached = _ItemFactors({i: n for n, i in enumerate(ids)}, matrix, matrix.T @ matrix)
                self._items = {meta.version: cached}  # only the active version is kept
            return cached

    def _fold_in(self, meta: model_store.ModelMeta, user_id: str) -> np.ndarray | None:
        key = (meta.version, user_id)
        hit = self._folded.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.settings.fold_in_cache_s:
            return hit[1]
        items = self._item_factors(meta)
        known = [
            (items.index[i], w) for i, w in self._user_pairs(user_id).liked if i in items.index
        ]
        factor = _solve(meta, items, known) if known else None
        self._folded[key] = (time.monotonic(), factor)
        return factor

    def _user_pairs(self, user_id: str) -> _Pairs:
        """The user's liked and disliked items, cached for ``fold_in_cache_s`` like fold-ins."""
        hit = self._pairs.get(user_id)
        if hit is not None and time.monotonic() - hit[0] < self.settings.fold_in_cache_s:
            return hit[1]
        query = user_pairs_sql(self.settings.negative_rating_below)
        with session_scope(self.settings.database_url) as db:
            rows = db.execute(query, {"user_id": user_id}).all()
            disliked = frozenset(r[0] for r in rows if r[3])
            categories = (
                db.scalars(select(Item.category).where(Item.item_id.in_(disliked))).all()
                if disliked
                else []
            )
        pairs = _Pairs(
            liked=[(r[0], float(r[1])) for r in rows if not r[3]],
            disliked=disliked,
            disliked_categories=list(categories),
        )
        if len(self._pairs) >= _MAX_CACHED_USERS:
            self._pairs.clear()
        self._pairs[user_id] = (time.monotonic(), pairs)
        return pairs

    def disliked(self, user_id: str) -> frozenset[str]:
        """Items the user disliked (a ``dislike``, or a rating below the threshold, as their
        latest rating or dislike of it): never shown to them. Empty when unknown or on error."""
        try:
            return self._user_pairs(user_id).disliked
        except Exception as exc:  # an enhancement; never fail the request
            log.warning("disliked items of user %s unavailable: %s", user_id, exc)
            return frozenset()

    def push_away(
        self, user_id: str, item_ids: list[str], categories: list[str | None]
    ) -> np.ndarray | None:
        """(n,) in [0, 1]: how far each candidate (ids and categories) is pushed down for being
        like the user's disliked items (:func:`Prod.common.feedback.dislike_push`: the active
        model's "anti-taste" and the category). None when nothing is disliked, or on error."""
        try:
            pairs = self._user_pairs(user_id)
            if not pairs.disliked:
                return None
            anti_scores = disliked_scores = None
            redis_client = redis_for(self.settings)
            version = model_store.active_version(redis_client)
            meta = model_store.read_meta(redis_client, version) if version else None
            items = self._item_factors(meta) if meta is not None else None
            disliked = (
                [items.index[i] for i in sorted(pairs.disliked) if i in items.index]
                if (items is not None)
                else []
            )
            if disliked:
                anti = _solve(meta, items, [(row, 1.0) for row in disliked])  # "anti-taste"
                rows = [items.index.get(i) for i in item_ids]
                anti_scores = np.array([0.0 if r is None else items.matrix[r] @ anti for r in rows])
                disliked_scores = items.matrix[disliked] @ anti
            # the category counts relative to the candidates: when the request names the kind
            # (all candidates alike) behaviour alone reorders them
            share = category_share(categories, pairs.disliked_categories)
            return dislike_push(
                n_disliked=len(pairs.disliked),
                n_liked=len(pairs.liked),
                anti_scores=anti_scores,
                disliked_scores=disliked_scores,
                same_category=share - share.min() if share.size else share,
            )
        except Exception as exc:  # personalisation is an enhancement; never fail the request
            log.warning("dislike push skipped for user %s: %s", user_id, exc)
            return None

    def taste(self, user_id: str) -> tuple[model_store.ModelMeta | None, np.ndarray | None, str]:
        """(active model meta, the user's factor or None, source: "factor" | "fold_in" |
        "none"): the published factor, else one folded in from Postgres. Raises store errors."""
        redis_client = redis_for(self.settings)
        version = model_store.active_version(redis_client)
        meta = model_store.read_meta(redis_client, version) if version else None
        if meta is None:
            return None, None, "none"
        factor = model_store.read_user_factor(redis_client, meta, user_id)
        source = "factor"
        if factor is None:
            factor, source = self._fold_in(meta, user_id), "fold_in"
        if factor is None or not np.any(factor):
            return meta, None, "none"
        return meta, factor, source

    def ranked_items(self, user_id: str, limit: int) -> tuple[list[tuple[str, float]], str]:
        """([(item_id, affinity)] best first, source): the active model's ``limit`` best items
        for the user by ``x_u . y_i``, without the items they interacted with (liked or
        disliked); ([], "none") without a model or a taste. Raises store errors."""
        meta, factor, source = self.taste(user_id)
        if factor is None:
            return [], "none"
        items = self._item_factors(meta)
        ids = list(items.index)
        scores = items.matrix @ factor
        pairs = self._user_pairs(user_id)
        seen = [items.index[i] for i, _ in pairs.liked if i in items.index]
        seen += [items.index[i] for i in pairs.disliked if i in items.index]
        scores[seen] = -np.inf
        limit = min(limit, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, limit - 1)[:limit] if limit else np.array([], int)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(ids[r], float(scores[r])) for r in top], source

    def affinities(self, user_id: str, item_ids: list[str]) -> tuple[np.ndarray | None, str]:
        """((n,) raw affinities or None, source: "factor" | "fold_in" | "none" | "error")."""
        try:
            meta, factor, source = self.taste(user_id)
            if factor is None:
                return None, "none"
            items = self._item_factors(meta)
            rows = [items.index.get(i) for i in item_ids]
            if all(r is None for r in rows):
                return None, "none"
            scores = np.array(
                [items.matrix[r] @ factor if r is not None else np.nan for r in rows],
                dtype=np.float64,
            )
            scores[np.isnan(scores)] = np.nanmin(scores)
            return scores, source
        except Exception as exc:  # personalisation is an enhancement; never fail the request
            log.warning("personalisation skipped for user %s: %s", user_id, exc)
            return None, "error"
