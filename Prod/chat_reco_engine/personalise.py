"""The hybrid step: blend query relevance with the user's ALS affinity.

``score = (1 - w) * relevance' + w * affinity'`` where ``'`` is min-max scaling over the candidate
set and ``w = settings.personalisation_weight`` (0 = pure relevance, 1 = pure ALS taste). The
affinity of item ``i`` is ``x_u . y_i`` with the user's published factor ``x_u`` or, for a user
the active model has not seen, one folded in from their PostgreSQL interactions (exact ALS
user step against the active item factors). Candidates without an item factor get the lowest
affinity. Users with neither get relevance only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select

from Prod.common import model_store
from Prod.common.db import session_scope
from Prod.common.logs import get_logger
from Prod.common.models import Interaction
from Prod.common.stores import chroma_for, redis_for

log = get_logger(__name__)


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


@dataclass(frozen=True)
class _ItemFactors:
    index: dict[str, int]
    matrix: np.ndarray  # (n_items, k) float32
    gram: np.ndarray  # (k, k) Y^T Y, cached for fold-in


class Personaliser:
    """Reads the active ALS model (Redis + Chroma) and computes user affinities."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self._items: dict[str, _ItemFactors] = {}
        self._folded: dict[tuple[str, str], tuple[float, np.ndarray | None]] = {}
        self._lock = threading.Lock()

    def _item_factors(self, meta: model_store.ModelMeta) -> _ItemFactors:
        with self._lock:
            cached = self._items.get(meta.version)
            if cached is None:
                ids, matrix, _ = model_store.load_item_factors(chroma_for(self.settings), meta)
                cached = _ItemFactors({i: n for n, i in enumerate(ids)}, matrix, matrix.T @ matrix)
                self._items = {meta.version: cached}  # only the active version is kept
            return cached

    def _fold_in(self, meta: model_store.ModelMeta, user_id: str) -> np.ndarray | None:
        key = (meta.version, user_id)
        hit = self._folded.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.settings.fold_in_cache_s:
            return hit[1]
        with session_scope(self.settings.database_url) as db:
            rows = db.execute(
                select(Interaction.item_id, func.sum(Interaction.weight))
                .where(Interaction.user_id == user_id).group_by(Interaction.item_id)
            ).all()  # fmt: skip
        items = self._item_factors(meta)
        known = [(items.index[i], float(w)) for i, w in rows if i in items.index]
        factor = None
        if known:
            import torch

            from Prod.common.als import ALSParams, fold_in_user

            params = ALSParams(factors=meta.dim, regularization=meta.regularization,
                               alpha=meta.alpha, confidence=meta.confidence)  # fmt: skip
            idx, weights = zip(*known, strict=True)
            factor = fold_in_user(
                torch.from_numpy(items.matrix), torch.tensor(idx), torch.tensor(weights),
                params, yty=torch.from_numpy(items.gram),
            ).numpy()  # fmt: skip
        self._folded[key] = (time.monotonic(), factor)
        return factor

    def affinities(self, user_id: str, item_ids: list[str]) -> tuple[np.ndarray | None, str]:
        """((n,) raw affinities or None, source: "factor" | "fold_in" | "none" | "error")."""
        try:
            redis_client = redis_for(self.settings)
            version = model_store.active_version(redis_client)
            meta = model_store.read_meta(redis_client, version) if version else None
            if meta is None:
                return None, "none"
            factor = model_store.read_user_factor(redis_client, meta, user_id)
            source = "factor"
            if factor is None:
                factor, source = self._fold_in(meta, user_id), "fold_in"
            if factor is None or not np.any(factor):
                return None, "none"
            items = self._item_factors(meta)
            rows = [items.index.get(i) for i in item_ids]
            if all(r is None for r in rows):
                return None, "none"
            scores = np.array([items.matrix[r] @ factor if r is not None else np.nan
                               for r in rows], dtype=np.float64)  # fmt: skip
            scores[np.isnan(scores)] = np.nanmin(scores)
            return scores, source
        except Exception as exc:  # personalisation is an enhancement; never fail the request
            log.warning("personalisation skipped for user %s: %s", user_id, exc)
            return None, "error"
