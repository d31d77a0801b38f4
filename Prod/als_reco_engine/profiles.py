"""Per-user behaviour the serving path needs, read from Postgres once and cached in memory.

A :class:`UserProfile` holds the items a user interacted with (positive weights summed per item,
as the trainer aggregates them), the items they disliked (negative feedback, the rule of
:mod:`Prod.common.feedback`), the items they suppressed, and their newest interaction id. The cache
keeps the hot path off Postgres; writes through this service invalidate the user's entry at once,
and entries expire after ``ttl_s`` so writes from elsewhere are picked up too.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from sqlalchemy import Engine, text

from Prod.als_reco_engine.index import Catalogue
from Prod.common.feedback import user_pairs_sql

_SUPPRESSED_SQL = text("select item_id from suppressed_item where user_id = :user_id")


class ProfileRows(NamedTuple):
    """A profile's items as rows of one catalogue (each (m,) int64 unless said otherwise).

    seen: every interacted item (disliked ones too); liked: the positive pairs, with
    weights: (m,) float32 their summed weights (what fold-in reads); hidden: never recommended
    (suppressed or disliked); disliked: the disliked items.
    """

    seen: np.ndarray
    liked: np.ndarray
    weights: np.ndarray
    hidden: np.ndarray
    disliked: np.ndarray


@dataclass
class UserProfile:
    """item_ids: (m,) interacted items; weights: (m,) float32 summed positive event weights, 0
    for the ``disliked`` items (negative feedback: no confidence, never recommended)."""

    user_id: str
    item_ids: list[str]
    weights: np.ndarray
    suppressed: frozenset[str]
    last_interaction_id: int
    loaded_at: float
    disliked: frozenset[str] = frozenset()
    _rows: dict[int, tuple] = field(default_factory=dict, repr=False)

    @property
    def has_interactions(self) -> bool:
        """Whether there is positive feedback to fold in (dislikes alone give no taste)."""
        return self.n_liked > 0

    @property
    def n_liked(self) -> int:
        return len(self.item_ids) - len(self.disliked)

    def rows_for(self, catalogue: Catalogue) -> ProfileRows:
        """The profile's rows in ``catalogue``, memoised per catalogue."""
        key = id(catalogue)
        cached = self._rows.get(key)
        if cached is not None and cached[0] is catalogue:
            return cached[1]
        row_of = catalogue.row_of
        pairs = [
            (row_of[i], w) for i, w in zip(self.item_ids, self.weights, strict=True) if i in row_of
        ]
        seen = np.array([p[0] for p in pairs], dtype=np.int64)
        weights = np.array([p[1] for p in pairs], dtype=np.float32)
        disliked = catalogue.rows(sorted(self.disliked))
        liked = weights > 0
        rows = ProfileRows(
            seen=seen,
            liked=seen[liked],
            weights=weights[liked],
            hidden=np.concatenate([catalogue.rows(sorted(self.suppressed)), disliked]),
            disliked=disliked,
        )
        self._rows = {key: (catalogue, rows)}  # keep one catalogue only
        return rows


def load_profile(engine: Engine, user_id: str, *, negative_below: float) -> UserProfile:
    """Read one user's interactions and suppressions (two indexed queries); ratings below
    ``negative_below`` and dislikes are negative feedback."""
    with engine.connect() as conn:
        rows = conn.execute(user_pairs_sql(negative_below), {"user_id": user_id}).all()
        suppressed = frozenset(conn.scalars(_SUPPRESSED_SQL, {"user_id": user_id}))
    return UserProfile(
        user_id=user_id,
        item_ids=[r[0] for r in rows],
        weights=np.array([r[1] for r in rows], dtype=np.float32),
        suppressed=suppressed,
        last_interaction_id=max((r[2] for r in rows), default=0),
        loaded_at=time.monotonic(),
        disliked=frozenset(r[0] for r in rows if r[3]),
    )


class ProfileCache:
    """Bounded LRU of profiles with a time-to-live; thread-safe."""

    def __init__(
        self,
        engine: Engine,
        *,
        negative_below: float,
        ttl_s: float = 60.0,
        max_users: int = 200_000,
    ) -> None:
        self._engine = engine
        self._negative_below = negative_below
        self._ttl_s = ttl_s
        self._max_users = max_users
        self._entries: OrderedDict[str, UserProfile] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0  # bumped by invalidate: a load racing a write is not stored

    def cached(self, user_id: str) -> UserProfile | None:
        """The cached profile when fresh, else None (never touches Postgres)."""
        with self._lock:
            profile = self._entries.get(user_id)
            if profile is None:
                return None
            if time.monotonic() - profile.loaded_at > self._ttl_s:
                del self._entries[user_id]
                return None
            self._entries.move_to_end(user_id)
            return profile

    def get(self, user_id: str) -> UserProfile:
        """The profile, loaded from Postgres on a miss (blocking: call off the event loop)."""
        profile = self.cached(user_id)
        if profile is not None:
            return profile
        generation = self._generation
        profile = load_profile(self._engine, user_id, negative_below=self._negative_below)
        with self._lock:
            if generation != self._generation:
                return profile
            self._entries[user_id] = profile
            if len(self._entries) > self._max_users:
                self._entries.popitem(last=False)
        return profile

    def invalidate(self, user_ids) -> None:
        with self._lock:
            self._generation += 1
            for user_id in user_ids:
                self._entries.pop(user_id, None)

    def __len__(self) -> int:
        return len(self._entries)
