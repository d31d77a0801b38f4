"""Per-user behaviour the serving path needs, read from Postgres once and cached in memory.

A :class:`UserProfile` holds the items a user interacted with (positive weights summed per item,
as the trainer aggregates them), the items they disliked (negative feedback, the rule of
:mod:`Prod.common.feedback`), the items they suppressed, and their newest interaction id. The cache
keeps the hot path off Postgres; writes through this service invalidate the user's entry at once,
and entries expire after ``ttl_s`` so writes from elsewhere are picked up too. With several
replicas, :class:`ProfileInvalidations` carries each replica's invalidations to the others over
Redis pub/sub, so a user's new events reach fold-in on every replica at once, not after the TTL.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import redis
from sqlalchemy import Engine, text

from Prod.als_reco_engine.index import Catalogue
from Prod.common.feedback import user_pairs_sql
from Prod.common.logs import get_logger
from Prod.common.stores import redis_from_url

log = get_logger(__name__)

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
    """Bounded LRU of profiles with a time-to-live; thread-safe. ``invalidations``: where
    :meth:`invalidate` also tells the other replicas."""

    def __init__(
        self,
        engine: Engine,
        *,
        negative_below: float,
        ttl_s: float = 60.0,
        max_users: int = 200_000,
        invalidations: ProfileInvalidations | None = None,
    ) -> None:
        self._engine = engine
        self._negative_below = negative_below
        self._ttl_s = ttl_s
        self._max_users = max_users
        self._entries: OrderedDict[str, UserProfile] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0  # bumped by invalidate: a load racing a write is not stored
        self.invalidations = invalidations

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

    def invalidate(self, user_ids: Iterable[str], *, publish: bool = True) -> None:
        """Drop the users' entries; ``publish``: the other replicas drop theirs too."""
        user_ids = list(user_ids)
        with self._lock:
            self._generation += 1
            for user_id in user_ids:
                self._entries.pop(user_id, None)
        if publish and self.invalidations is not None:
            self.invalidations.publish(user_ids)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class ProfileInvalidations:
    """Cross-replica profile invalidation over Redis pub/sub (channel :attr:`CHANNEL`).

    :meth:`publish` sends a replica's invalidated user ids (skipped for ``backoff_s`` after a
    failure: Redis down costs one short timeout, then the other replicas fall back to the TTL);
    a daemon thread applies the other replicas' messages through ``on_remote(user_ids)``, and
    ``on_remote(None)`` (forget everyone) after each (re)subscription, since messages sent while
    unsubscribed are lost.
    """

    CHANNEL = "reco:profiles:invalidated"

    def __init__(
        self,
        redis_url: str,
        on_remote: Callable[[list[str] | None], None],
        *,
        timeout_s: float = 0.25,
        backoff_s: float = 5.0,
    ) -> None:
        self.origin = uuid.uuid4().hex  # this replica: its own messages are not applied twice
        self._publisher = redis_from_url(
            redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        # on a Redis Cluster a PUBLISH reaches the subscribers of every node, so the listener
        # subscribes on one node (the channel's slot) and the publisher may send to any
        self._subscriber = redis_from_url(
            redis_url, socket_connect_timeout=2.0, health_check_interval=30
        )
        self._on_remote = on_remote
        self._backoff_s = backoff_s
        self._down_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.subscribed = threading.Event()
        self.received = 0

    def publish(self, user_ids: list[str]) -> None:
        if not user_ids or time.monotonic() < self._down_until:
            return
        message = json.dumps({"origin": self.origin, "users": user_ids})
        try:
            self._publisher.publish(self.CHANNEL, message)
        except (redis.RedisError, OSError) as exc:
            self._down_until = time.monotonic() + self._backoff_s
            log.warning("profile invalidation not published (%s): other replicas use the TTL", exc)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._listen, name="profile-invalidations")
        self._thread.daemon = True
        self._thread.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._publisher.close()
        self._subscriber.close()

    def _listen(self) -> None:
        while not self._stop.is_set():
            pubsub = None
            try:
                # inside the try: a cluster client connects when first used
                pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.CHANNEL)
                self._on_remote(None)  # anything sent while we were not listening is lost
                self.subscribed.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._apply(message["data"])
            except (redis.RedisError, OSError) as exc:
                self.subscribed.clear()
                log.warning("profile invalidations: Redis unavailable (%s); retrying", exc)
                self._stop.wait(self._backoff_s)
            finally:
                if pubsub is not None:
                    pubsub.close()

    def _apply(self, data: bytes) -> None:
        try:
            body = json.loads(data)
            users = [str(user) for user in body["users"]]
        except (ValueError, KeyError, TypeError):
            log.warning("profile invalidations: malformed message ignored")
            return
        if body.get("origin") != self.origin:
            self.received += 1
            self._on_remote(users)
