"""Fold-in: a user's factor solved on the fly from their interactions and the fixed item factors.

Uses the trainer's exact per-user solve (:func:`Prod.common.als.fold_in_user`) with the version's
gramian ``Y^T Y`` computed once at index load, so one solve is a (dim x dim) Cholesky: well under a
millisecond at 64 factors. Results are cached for ``ttl_s`` per (version, user) and dropped as soon
as that user posts new interactions.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import fields

import numpy as np
import torch

from Prod.als_reco_engine.index import ItemIndex
from Prod.common.als import ALSParams, fold_in_user
from Prod.common.model_store import ModelMeta


def params_from_meta(meta: ModelMeta) -> ALSParams:
    """The version's ALS hyper-parameters: the trainer's full ``params`` JSON when published,
    else the contract's required keys (alpha, regularization, confidence)."""
    known = {f.name for f in fields(ALSParams)}
    published = json.loads(meta.extra.get("params") or "{}")
    values = {k: v for k, v in published.items() if k in known}
    values.update(
        factors=meta.dim,
        regularization=meta.regularization,
        alpha=meta.alpha,
        confidence=meta.confidence if meta.confidence in ("linear", "log") else "linear",
    )
    return ALSParams(**values)


_params_by_version: dict[str, ALSParams] = {}


def solve_user_factor(index: ItemIndex, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(dim,) float32 factor of a user who interacted with ``rows`` (m,) with ``weights`` (m,)."""
    factor = fold_in_user(
        torch.from_numpy(index.factors),
        torch.from_numpy(rows),
        torch.from_numpy(weights),
        _params(index.meta),
        yty=torch.from_numpy(index.gramian),
    )
    return factor.numpy().astype(np.float32, copy=False)


def _params(meta: ModelMeta) -> ALSParams:
    params = _params_by_version.get(meta.version)
    if params is None:
        params = _params_by_version[meta.version] = params_from_meta(meta)
    return params


class FoldInCache:
    """user_id -> (version, factor) for ``ttl_s`` seconds; thread-safe, bounded."""

    def __init__(self, ttl_s: float, max_entries: int = 100_000) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: dict[str, tuple[str, float, np.ndarray]] = {}
        self._lock = threading.Lock()

    def get(self, version: str, user_id: str) -> np.ndarray | None:
        entry = self._entries.get(user_id)
        if entry is None or entry[0] != version or entry[1] < time.monotonic():
            return None
        return entry[2]

    def put(self, version: str, user_id: str, factor: np.ndarray) -> None:
        if self._ttl_s <= 0:
            return
        with self._lock:
            if len(self._entries) >= self._max_entries:
                self._evict_expired()
            self._entries[user_id] = (version, time.monotonic() + self._ttl_s, factor)

    def invalidate(self, user_ids) -> None:
        with self._lock:
            for user_id in user_ids:
                self._entries.pop(user_id, None)

    def _evict_expired(self) -> None:
        now = time.monotonic()
        for key in [k for k, (_, expires, _) in self._entries.items() if expires < now]:
            del self._entries[key]
        while len(self._entries) >= self._max_entries:  # still full: drop the oldest inserted
            del self._entries[next(iter(self._entries))]
