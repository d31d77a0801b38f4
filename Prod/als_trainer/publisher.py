"""Versioned publishing of ALS factors to Redis and Chroma, the atomic switch, rollback, cleanup.

The layout is the contract in :mod:`Prod.common.model_store`. Order of a publish:

1. user factors -> Redis hash ``reco:model:{v}:user_factors`` (pipelined batches);
2. item factors -> Redis hash ``reco:model:{v}:items`` (chunks), then verified (read back whole
   with the engines' reader, :func:`Prod.common.model_store.read_items`);
3. the meta hash ``reco:model:{v}:meta`` (written last: meta present => version complete), with
   ``items = redis`` and ``item_index = filling``;
4. :func:`switch_active`: ``active``/``previous`` pointers in one MULTI/EXEC, WATCHing ``active``;
5. :func:`fill_item_index`: the Chroma collection ``als-items-{v}`` written from the items hash
   (batches <= the server's max), verified, then ``item_index = complete``. Off the switch's path:
   1M x 64 items: 20.6 s to the switch, then a 1,407 s fill (0.43 ms of Chroma CPU an item).

Rollback (:func:`Prod.als_trainer.service.rollback`) moves both pointers with :func:`set_pointers`.

Nothing before step 4 is visible to readers, so a failure only needs :func:`delete_version`. A
failure in step 5 leaves the version active (the engines never read its collection) with
``item_index = failed``; a crash leaves ``filling``; the next run fills it again
(:func:`pending_item_indexes`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import numpy as np
import orjson
import redis

from Prod.common import experiment, model_store
from Prod.common.errors import Conflict, TrainingError
from Prod.common.logs import get_logger

log = get_logger(__name__)

USER_FIELDS_PER_COMMAND = 1000  # one HSET carries this many users
COMMANDS_PER_PIPELINE = 10  # -> 10k users per round trip
ITEM_WRITERS = 2  # Chroma add requests in flight
# Chroma's graph over the item factors: nothing in serving queries it (the engine reads the
# vectors and ranks them itself), so a cheap build: 0.17 instead of 0.31-0.39 ms of server
# CPU an item (20k x 64, defaults ef 100, M 16)
ITEM_HNSW = {"hnsw:construction_ef": 16, "hnsw:M": 8}
_META_PATTERN = "reco:model:*:meta"
_FACTORS_PATTERN = "reco:model:*:user_factors"
_ITEMS_PATTERN = model_store.items_key("*")
_COLLECTION_PREFIX = "als-items-"
# item table columns copied into the Chroma metadata (unknown values are omitted)
ITEM_METADATA_FIELDS = ("title", "brand", "category", "price", "avg_rating", "rating_count")

Progress = Callable[[int], None]  # called with the number of rows just written


def new_version_id(now: datetime | None = None) -> str:
    """Sortable, time-based id with a short random suffix, e.g. ``20250101T120000.123Z-3fa9c1``."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    version = f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"
    model_store.item_collection_name(version)  # validates the characters
    return version


@dataclass(frozen=True)
class FactorSet:
    """A trained model ready to publish.

    user_factors: (n_users, dim) float32, row i belongs to ``user_ids[i]``;
    item_factors: (n_items, dim) float32, row j belongs to ``item_ids[j]``;
    item_metadata: one dict per item (may be empty), Chroma-compatible values only.
    """

    user_ids: Sequence[str]
    user_factors: np.ndarray
    item_ids: Sequence[str]
    item_factors: np.ndarray
    item_metadata: Sequence[dict]

    def __post_init__(self) -> None:
        if self.user_factors.shape[0] != len(self.user_ids):
            raise ValueError("user_factors rows != user_ids")
        if self.item_factors.shape[0] != len(self.item_ids) or len(self.item_metadata) != len(
            self.item_ids
        ):
            raise ValueError("item_factors rows / item_metadata != item_ids")
        if self.user_factors.shape[1] != self.item_factors.shape[1]:
            raise ValueError("user and item factors differ in dimension")

    @property
    def dim(self) -> int:
        return int(self.item_factors.shape[1])


def chroma_metadata(row: dict) -> dict | None:
    """Item row -> Chroma metadata: known fields with non-null values; None when nothing is left."""
    clean = {k: row[k] for k in ITEM_METADATA_FIELDS if row.get(k) is not None}
    return clean or None


# --- writing --------------------------------------------------------------------------------


def write_user_factors(
    client: redis.Redis,
    version: str,
    user_ids: Sequence[str],
    user_factors: np.ndarray,
    progress: Progress | None = None,
) -> int:
    """Write (n_users, dim) float32 factors as raw bytes to the version's hash; returns n_users."""
    key = model_store.user_factors_key(version)
    factors = np.ascontiguousarray(user_factors, dtype=model_store.FACTOR_DTYPE)
    per_pipeline = USER_FIELDS_PER_COMMAND * COMMANDS_PER_PIPELINE
    for start in range(0, len(user_ids), per_pipeline):
        stop = min(start + per_pipeline, len(user_ids))
        pipe = client.pipeline(transaction=False)
        for chunk in range(start, stop, USER_FIELDS_PER_COMMAND):
            end = min(chunk + USER_FIELDS_PER_COMMAND, stop)
            # the stored format: row.tobytes() of a C-contiguous float32 row (decode_factor)
            pipe.hset(key, mapping={user_ids[i]: factors[i].tobytes() for i in range(chunk, end)})
        pipe.execute()
        if progress:
            progress(stop - start)
    return len(user_ids)


def write_item_factors(
    chroma_client,
    version: str,
    item_ids: Sequence[str],
    item_factors: np.ndarray,
    item_metadata: Sequence[dict | None],
    progress: Progress | None = None,
    writers: int = 0,
    batch: int = 0,
):
    """Create ``als-items-{v}`` (ip space) and add every item in batches; returns the collection.

    Fails if the collection already exists: a version is written once, never merged into.
    ``writers``/``batch``: requests in flight and items a request (0: :data:`ITEM_WRITERS`, the
    server's max batch).
    """
    collection = chroma_client.create_collection(
        model_store.item_collection_name(version),
        metadata={"hnsw:space": "ip", "model_version": version, **ITEM_HNSW},
        embedding_function=None,
    )
    most = max(1, int(chroma_client.get_max_batch_size()))
    batch = min(batch, most) if batch > 0 else most
    factors = np.ascontiguousarray(item_factors, dtype=np.float32)

    def add(start: int) -> int:
        stop = min(start + batch, len(item_ids))
        collection.add(
            ids=list(item_ids[start:stop]),
            embeddings=factors[start:stop],
            metadatas=[m or None for m in item_metadata[start:stop]],
        )
        return stop - start

    # two batches in flight keep the server busy while the next request is encoded and sent
    # (198k items: 79 s instead of 87 s); the first error propagates and fails the publish
    with ThreadPoolExecutor(writers or ITEM_WRITERS, thread_name_prefix="chroma-add") as pool:
        pending = [pool.submit(add, start) for start in range(0, len(item_ids), batch)]
        try:
            for future in pending:
                written = future.result()
                if progress:
                    progress(written)
        except BaseException:
            for future in pending:
                future.cancel()  # the caller removes the partial collection
            raise
    return collection


def verify_item_factors(
    collection, item_ids: Sequence[str], item_factors: np.ndarray, sample: int = 32
) -> None:
    """Raise unless the collection holds every item and a sample of vectors reads back equal."""
    count = collection.count()
    if count != len(item_ids):
        raise TrainingError(
            f"item collection {collection.name} holds {count} items, expected {len(item_ids)}"
        )
    if not item_ids:
        return
    picks = np.unique(np.linspace(0, len(item_ids) - 1, num=min(sample, len(item_ids)), dtype=int))
    got = collection.get(ids=[item_ids[i] for i in picks], include=["embeddings"])
    by_id = dict(zip(got["ids"], got["embeddings"], strict=True))
    for i in picks:
        stored = by_id.get(item_ids[i])
        if stored is None or not np.allclose(stored, item_factors[i], rtol=1e-5, atol=1e-6):
            raise TrainingError(f"item {item_ids[i]!r} read back wrong from {collection.name}")


def write_meta(client: redis.Redis, meta: model_store.ModelMeta) -> None:
    client.hset(model_store.meta_key(meta.version), mapping=meta.to_redis())


def write_items(
    client: redis.Redis,
    version: str,
    item_ids: Sequence[str],
    item_factors: np.ndarray,
    item_metadata: Sequence[dict | None],
) -> int:
    """Write the items hash (layout: :mod:`Prod.common.model_store`), ``rows`` last; returns n."""
    key = model_store.items_key(version)
    factors = np.ascontiguousarray(item_factors, dtype=model_store.FACTOR_DTYPE)
    step = model_store.item_chunk_rows(factors.shape[1])
    for chunk, start in enumerate(range(0, len(item_ids), step)):
        stop = min(start + step, len(item_ids))
        client.hset(
            key,
            mapping={
                f"ids:{chunk}": orjson.dumps(list(item_ids[start:stop])),
                f"vectors:{chunk}": factors[start:stop].tobytes(),
                f"metadata:{chunk}": orjson.dumps([m or None for m in item_metadata[start:stop]]),
            },
        )
    client.hset(key, "rows", str(len(item_ids)))
    return len(item_ids)


def verify_items(
    client: redis.Redis, meta: model_store.ModelMeta, item_ids: Sequence[str], item_factors
) -> None:
    """Raise unless the items hash reads back (with the engines' reader) exactly as written."""
    ids, matrix, _ = model_store.read_items(client, meta)
    if ids != list(item_ids) or not np.array_equal(matrix, np.asarray(item_factors, np.float32)):
        raise TrainingError(f"items of {meta.version} read back wrong from Redis")


def items_in_redis(meta: model_store.ModelMeta) -> model_store.ModelMeta:
    """``meta`` saying: items in the Redis items hash, Chroma collection still to fill."""
    extra = {
        **meta.extra,
        model_store.ITEMS_FIELD: model_store.ITEMS_IN_REDIS,
        model_store.ITEM_INDEX_FIELD: model_store.INDEX_FILLING,
    }
    return replace(meta, extra=extra)


def set_index_state(client: redis.Redis, version: str, state: str) -> bool:
    """Record the Chroma collection's state in the meta hash, only while the meta hash exists (a
    deleted version is not brought back as a lone field); returns whether it was written."""
    key = model_store.meta_key(version)
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(key)
            if not pipe.exists(key):
                return False
            pipe.multi()
            pipe.hset(key, model_store.ITEM_INDEX_FIELD, state)
            pipe.execute()
            return True
        except redis.WatchError:  # deleted (or rewritten) meanwhile
            return False


def fill_item_index(
    client: redis.Redis,
    chroma_client,
    version: str,
    progress: Progress | None = None,
    writers: int = 0,
    batch: int = 0,
) -> int:
    """Write a published version's Chroma collection from its items hash (a leftover partial one
    is replaced), verify it, mark ``item_index = complete``; ``failed`` and raise on an error."""
    meta = model_store.read_meta(client, version)
    if meta is None or meta.extra.get(model_store.ITEMS_FIELD) != model_store.ITEMS_IN_REDIS:
        raise TrainingError(f"version {version} has no items hash to fill its collection from")
    try:
        item_ids, factors, metadata = model_store.read_items(client, meta)
        name = model_store.item_collection_name(version)
        if name in list_item_collections(chroma_client):  # a crashed or failed fill's
            chroma_client.delete_collection(name)
        set_index_state(client, version, model_store.INDEX_FILLING)
        collection = write_item_factors(
            chroma_client, version, item_ids, factors, metadata, progress, writers, batch
        )
        verify_item_factors(collection, item_ids, factors)
    except BaseException:
        try:
            set_index_state(client, version, model_store.INDEX_FAILED)
        except redis.RedisError:
            pass
        raise
    set_index_state(client, version, model_store.INDEX_COMPLETE)
    return len(item_ids)


def pending_item_indexes(client: redis.Redis) -> list[str]:
    """Retained versions (active, previous, arm B) whose Chroma collection is not complete."""
    pointers = read_pointers(client)
    versions = {v for v in (pointers.active, pointers.previous) if v}
    versions |= experiment.protected_versions(client)
    pending = []
    for version in sorted(versions):
        meta = model_store.read_meta(client, version)
        if meta is not None and model_store.item_index_state(meta) != model_store.INDEX_COMPLETE:
            pending.append(version)
    return pending


@contextmanager
def untimed(name: str) -> Iterator[None]:
    yield


def publish_version(
    client: redis.Redis,
    chroma_client,
    meta: model_store.ModelMeta,
    factors: FactorSet,
    stage: Callable[[str], AbstractContextManager] = untimed,
) -> None:
    """Write a complete version (users, items, verify, meta last) to Redis; does NOT activate
    it, nor write its Chroma collection (:func:`fill_item_index`, after the switch).

    ``stage(name)`` wraps each step (the trainer times and logs them through it).
    """
    if (
        meta.dim != factors.dim
        or meta.n_users != len(factors.user_ids)
        or meta.n_items != len(factors.item_ids)
    ):
        raise ValueError("meta does not describe these factors")
    with stage("publish_users"):
        write_user_factors(client, meta.version, factors.user_ids, factors.user_factors)
    with stage("publish_items"):
        write_items(
            client, meta.version, factors.item_ids, factors.item_factors, factors.item_metadata
        )
    with stage("verify"):
        verify_items(client, meta, factors.item_ids, factors.item_factors)
        write_meta(client, items_in_redis(meta))


# --- switching ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pointers:
    active: str | None
    previous: str | None


def read_pointers(client: redis.Redis) -> Pointers:
    return Pointers(model_store.active_version(client), model_store.previous_version(client))


def switch_active(client: redis.Redis, new_version: str, retries: int = 20) -> Pointers:
    """Make ``new_version`` active and the old active the previous one, atomically.

    Returns the pointers before the switch. WATCH on ``active`` makes a concurrent switch or
    rollback abort our EXEC, and we retry against the new state.
    """
    if not client.exists(model_store.meta_key(new_version)):
        raise TrainingError(f"refusing to activate {new_version}: its meta hash is missing")
    for _ in range(retries):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(model_store.ACTIVE_KEY, model_store.PREVIOUS_KEY)
                before = read_pointers(pipe)
                pipe.multi()
                pipe.set(model_store.ACTIVE_KEY, new_version)
                if before.active and before.active != new_version:
                    pipe.set(model_store.PREVIOUS_KEY, before.active)
                pipe.execute()
                return before
            except redis.WatchError:
                continue
    raise TrainingError("could not switch the active model: pointers kept changing")


_MOVED = "the model pointers changed meanwhile (a training run or another rollback); retry"


def set_pointers(client: redis.Redis, expected: Pointers, new: Pointers) -> None:
    """Compare-and-set: write ``new`` (None deletes a pointer) in one MULTI/EXEC, only while the
    pointers still equal ``expected``; raises Conflict when a switch or rollback moved them."""
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(model_store.ACTIVE_KEY, model_store.PREVIOUS_KEY)
            now = read_pointers(pipe)
            if now != expected:
                raise Conflict(_MOVED, active=now.active, previous=now.previous)
            pipe.multi()
            for key, value in (
                (model_store.ACTIVE_KEY, new.active),
                (model_store.PREVIOUS_KEY, new.previous),
            ):
                if value:
                    pipe.set(key, value)
                else:
                    pipe.delete(key)
            pipe.execute()
        except redis.WatchError as exc:
            raise Conflict(_MOVED) from exc


# --- deleting -------------------------------------------------------------------------------


def delete_version(client: redis.Redis, chroma_client, version: str) -> None:
    """Remove a version's Redis keys and Chroma collection (whatever of them exists).

    Refuses to delete the active or previous version, or arm B of a running A/B test: readers
    may be using them.
    """
    pointers = read_pointers(client)
    if version in (pointers.active, pointers.previous):
        raise Conflict(f"version {version} is in use and cannot be deleted")
    if version in experiment.protected_versions(client):
        raise Conflict(f"version {version} is arm B of the running A/B test and cannot be deleted")
    # UNLINK frees big hashes in a background thread of the server
    client.unlink(
        model_store.meta_key(version),
        model_store.user_factors_key(version),
        model_store.items_key(version),
    )
    name = model_store.item_collection_name(version)
    if name in list_item_collections(chroma_client):
        chroma_client.delete_collection(name)


def list_item_collections(chroma_client) -> list[str]:
    names = []
    for entry in chroma_client.list_collections():
        name = entry if isinstance(entry, str) else entry.name
        if name.startswith(_COLLECTION_PREFIX):
            names.append(name)
    return names


def published_versions(client: redis.Redis, chroma_client) -> set[str]:
    """Every version with any trace in Redis or Chroma (complete or not)."""
    versions: set[str] = set()
    for pattern in (_META_PATTERN, _FACTORS_PATTERN, _ITEMS_PATTERN):
        for key in client.scan_iter(match=pattern, count=500):
            text = key.decode() if isinstance(key, bytes) else key
            versions.add(text.split(":")[2])
    versions.update(n[len(_COLLECTION_PREFIX) :] for n in list_item_collections(chroma_client))
    return versions


def versions_to_delete(
    versions: set[str], pointers: Pointers, keep: int, exclude: set[str] = frozenset()
) -> list[str]:
    """Which versions go: always keep active and previous, then the newest up to ``keep`` total.

    ``exclude`` protects versions being written right now (e.g. this run's own, before switch).
    """
    protected = {v for v in (pointers.active, pointers.previous) if v} | set(exclude)
    others = sorted((v for v in versions if v not in protected), reverse=True)  # newest first
    room = max(0, keep - len({v for v in (pointers.active, pointers.previous) if v}))
    return others[room:]


def cleanup_versions(
    client: redis.Redis, chroma_client, keep: int, exclude: set[str] = frozenset()
) -> list[str]:
    """Delete all versions but active, previous, arm B of a running A/B test and the newest
    others up to ``keep``."""
    exclude = set(exclude) | experiment.protected_versions(client)
    doomed = versions_to_delete(
        published_versions(client, chroma_client), read_pointers(client), keep, exclude
    )
    for version in doomed:
        try:
            delete_version(client, chroma_client, version)
        except Conflict:  # became active/previous meanwhile (a concurrent rollback)
            continue
        log.info("deleted model version %s", version)
    return doomed
