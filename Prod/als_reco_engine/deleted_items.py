"""Items deleted through the catalogue API, kept out of every answer until the model forgets them.

A deleted item stays in the loaded ALS index (and in the popularity table) until the next
retrain, so each replica keeps the deleted ids in memory and excludes their rows. The ids live in
the Redis hash :data:`DELETED_KEY` (item_id -> ISO time of deletion), and :data:`VERSION_KEY`
counts the changes: a replica applies its own deletions at once and reads the others' with one
``GET`` every ``interval_s`` (0.2 s), re-reading the hash only when the counter moved.

Per request the cost is a dict lookup and, when something is deleted, one fancy-index assignment
of the deleted rows (:meth:`DeletedItems.rows_for` is memoised per catalogue): O(deleted items in
the model), never O(n_items).

An id whose item is back in the ``item`` table (re-created by an ingest; an API upsert unmarks it
itself) stops being deleted: the ticker checks every :data:`PRUNE_EVERY_S` and unmarks ids
deleted more than :data:`PRUNE_AFTER_S` ago (a deletion in flight still has its row until it
commits, a moment after it marked the id).

Both keys carry the hash tag ``{catalogue}``, so the MULTI/EXEC that marks ids and moves the
counter lands in one slot of a Redis Cluster. Upgrade: the hash was ``reco:catalogue:deleted``; a
replica's first successful sync moves its fields into the new hash (:func:`adopt_legacy_hash`) on
a standalone Redis, so deleted items stay hidden across the upgrade.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import numpy as np
import redis
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from Prod.als_reco_engine.index import Catalogue
from Prod.als_reco_engine.ticker import Ticker
from Prod.common.logs import get_logger
from Prod.common.models import Item
from Prod.common.stores import is_cluster

log = get_logger(__name__)

DELETED_KEY = "reco:{catalogue}:deleted"
VERSION_KEY = "reco:{catalogue}:deleted:version"
LEGACY_DELETED_KEY = "reco:catalogue:deleted"  # the name before the hash tag
_NO_ROWS = np.zeros(0, dtype=np.int64)
_MEMO_MAX = 4  # catalogues memoised at once: the index, popularity, one swap in flight
PRUNE_EVERY_S = 30.0
PRUNE_AFTER_S = 60.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def mark_deleted(pipe: redis.client.Pipeline, item_ids: list[str]) -> None:
    """Queue the writes that record ``item_ids`` as deleted (the caller executes ``pipe``)."""
    now = datetime.now(timezone.utc).isoformat()
    pipe.hset(DELETED_KEY, mapping=dict.fromkeys(item_ids, now))
    pipe.incr(VERSION_KEY)


def unmark_deleted(pipe: redis.client.Pipeline, item_ids: list[str]) -> None:
    """Queue the writes that bring ``item_ids`` back (an upsert of a deleted item)."""
    pipe.hdel(DELETED_KEY, *item_ids)
    pipe.incr(VERSION_KEY)


def adopt_legacy_hash(client: redis.Redis) -> int:
    """Move the ids of the pre-hash-tag hash into :data:`DELETED_KEY` (an id already there keeps
    its time) and drop the old hash, in one transaction that a concurrent move aborts; the
    number of ids moved. Nothing on a Redis Cluster (it never held the old name). The old
    counter stays: replicas of the older release keep the set they hold."""
    if is_cluster(client):
        return 0
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(LEGACY_DELETED_KEY)
            legacy = pipe.hgetall(LEGACY_DELETED_KEY)
            if not legacy:
                return 0
            pipe.multi()
            for item_id, at in legacy.items():
                pipe.hsetnx(DELETED_KEY, item_id, at)
            pipe.delete(LEGACY_DELETED_KEY)
            pipe.incr(VERSION_KEY)
            pipe.execute()
        except redis.WatchError:  # another replica moved it first
            return 0
    log.info(
        "deleted items: %d ids moved from %s to %s", len(legacy), LEGACY_DELETED_KEY, DELETED_KEY
    )
    return len(legacy)


class DeletedItems:
    """The deleted item ids of this replica, synced from Redis by a ticker thread."""

    def __init__(
        self, redis_client: redis.Redis, db: Engine | None = None, interval_s: float = 0.2
    ) -> None:
        self._redis = redis_client
        self._db = db
        self._next_prune = 0.0
        self._ids: frozenset[str] = frozenset()
        self._version: bytes | None = None
        self._adopted = False  # the pre-hash-tag hash checked (adopt_legacy_hash)
        self._memo: dict[int, tuple[Catalogue, frozenset[str], np.ndarray]] = {}
        self._lock = threading.Lock()
        self._ticker = Ticker("deleted-items", self.tick, interval_s)
        self.last_error: str | None = None

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def rows_for(self, catalogue: Catalogue) -> np.ndarray:
        """(m,) int64 rows of ``catalogue`` that are deleted; empty (shared) when none is."""
        ids = self._ids
        if not ids:
            return _NO_ROWS
        memo = self._memo.get(id(catalogue))
        if memo is not None and memo[0] is catalogue and memo[1] is ids:
            return memo[2]
        rows = catalogue.rows(sorted(ids))
        if len(self._memo) >= _MEMO_MAX:
            self._memo.clear()
        self._memo[id(catalogue)] = (catalogue, ids, rows)
        return rows

    def apply(self, *, deleted: list[str] = (), restored: list[str] = ()) -> None:
        """This replica's own change, effective for its next request (others: next tick)."""
        with self._lock:
            self._ids = (self._ids | frozenset(deleted)) - frozenset(restored)

    def refresh(self) -> bool:
        """Re-read the hash when the change counter moved; True when the set was replaced.
        Redis down: the set stays as it is (logged once) and the next tick retries."""
        try:
            if not self._adopted:
                adopt_legacy_hash(self._redis)
                self._adopted = True
            version = self._redis.get(VERSION_KEY)
            if version == self._version:
                return False
            ids = frozenset(_text(i) for i in self._redis.hkeys(DELETED_KEY))
        except (redis.RedisError, OSError) as exc:
            if self.last_error is None:
                log.warning("deleted items: Redis unavailable (%s); keeping %d", exc, len(self))
            self.last_error = str(exc)
            return False
        with self._lock:
            self._ids, self._version = ids, version
        self.last_error = None
        return True

    def tick(self) -> None:
        self.refresh()
        if self._db is not None and self._ids and time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
            self.prune()

    def prune(self) -> list[str]:
        """Unmark ids back in the item table and deleted over PRUNE_AFTER_S ago; those ids."""
        try:
            with self._db.connect() as conn:
                back = sorted(
                    conn.scalars(select(Item.item_id).where(Item.item_id.in_(sorted(self._ids))))
                )
            if not back:
                return []
            cutoff = datetime.now(timezone.utc).timestamp() - PRUNE_AFTER_S
            marked = self._redis.hmget(DELETED_KEY, back)
            stale = [
                item_id
                for item_id, at in zip(back, marked, strict=True)
                if at is not None and datetime.fromisoformat(_text(at)).timestamp() < cutoff
            ]
            if stale:
                pipe = self._redis.pipeline(transaction=True)
                unmark_deleted(pipe, stale)
                pipe.execute()
                self.apply(restored=stale)
                log.info("deleted items: %d re-created in the catalogue, served again", len(stale))
            return stale
        except (SQLAlchemyError, redis.RedisError, OSError, ValueError) as exc:
            log.warning("deleted items: re-created ids not checked (%s)", exc)
            return []

    def start(self) -> None:
        self.refresh()
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()
