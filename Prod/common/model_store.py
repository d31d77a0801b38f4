"""The published-model contract between ``als_trainer`` (writer) and the engines (readers).

A model version ``v`` is published as:

- Redis hash ``reco:model:{v}:meta``: ``version``, ``dim``, ``dtype`` (``float32``), ``n_users``,
  ``n_items``, ``collection``, ``alpha``, ``regularization``, ``confidence`` (``linear``/``log``),
  ``trained_at`` (ISO) - everything a reader needs to decode factors and fold users in;
- Redis hash ``reco:model:{v}:user_factors``: field ``user_id`` -> raw little-endian float32 bytes
  of length ``4 * dim`` (written in pipelined batches);
- Redis hash ``reco:model:{v}:items`` (meta field ``items = redis``): the item factors the
  engines load, in chunks of ``ITEM_CHUNK_BYTES`` of vectors: ``rows`` (count), ``ids:{c}``
  (JSON list), ``vectors:{c}`` (raw float32, row-major), ``metadata:{c}`` (JSON list of dicts or
  null), chunks in row order;
- Chroma collection ``als-items-{v}`` (``hnsw:space = ip``): id = ``item_id``, embedding = item
  factor, metadata = title, brand, category, price, avg_rating (keys absent when unknown). The
  vector-search copy: filled from the items hash AFTER the switch; meta field ``item_index`` says
  ``filling``, ``complete`` or ``failed``. Versions without ``items`` (older ones) are read from it.

Only after the Redis parts are written does the trainer switch ``reco:{model}:active`` (and
remember the old one in ``reco:{model}:previous``) in one Redis transaction, mirroring it in the
Postgres ``model_version`` table. Readers therefore never see a half-published version.

An A/B test serves a second published version to a bucket of users: its pointer is the
``reco:{experiment}:current`` key, described in :mod:`Prod.common.experiment`; the trainer keeps
that version while the test runs.

Redis Cluster: the two pointers share the hash tag ``{model}``, so the switch's WATCH + MULTI/EXEC
over both lands in one slot. A version's meta and factor hashes carry no tag: each is read and
written on its own (a multi-key UNLINK is split by slot by the client), and different versions
land on different masters, so the active and the previous version's factors (the big data: ~300
bytes a user at 64 factors) are spread instead of all piling onto the pointers' master. One
version's factor hash stays on one master (a hash cannot span slots): docs/SCALING.md says when
to bucket it. SCAN over ``reco:model:*`` visits every master (``RedisCluster.scan_iter``).

Upgrade: the pointers were ``reco:model:active`` / ``reco:model:previous``. While the new active
pointer is absent (a standalone Redis written by an older release), the readers here fall back to
the old names, so the running version is still found; the first switch or rollback writes the new
names and the old keys are never read again. Nothing deletes them: ``DEL reco:model:active
reco:model:previous`` once no process of the older release runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from Prod.common.stores import is_cluster

ACTIVE_KEY = "reco:{model}:active"
PREVIOUS_KEY = "reco:{model}:previous"
# the pointers' names before the hash tag: read only while ACTIVE_KEY is absent (standalone)
LEGACY_ACTIVE_KEY = "reco:model:active"
LEGACY_PREVIOUS_KEY = "reco:model:previous"
FACTOR_DTYPE = np.dtype("<f4")
ITEM_CHUNK_BYTES = 16 * 2**20  # vectors in one field of the items hash (65,536 rows at dim 64)
ITEMS_FIELD, ITEMS_IN_REDIS = "items", "redis"  # meta: where the engines read item factors
ITEM_INDEX_FIELD = "item_index"  # meta: state of the Chroma copy
INDEX_FILLING, INDEX_COMPLETE, INDEX_FAILED = "filling", "complete", "failed"
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,60}$")


def meta_key(version: str) -> str:
    return f"reco:model:{version}:meta"


def user_factors_key(version: str) -> str:
    return f"reco:model:{version}:user_factors"


def item_chunk_rows(dim: int) -> int:
    return max(1, ITEM_CHUNK_BYTES // (4 * dim))


def items_key(version: str) -> str:
    return f"reco:model:{version}:items"


def item_collection_name(version: str) -> str:
    if not _VERSION_RE.match(version):
        raise ValueError(f"invalid model version id {version!r}")
    return f"als-items-{version}"


def decode_factor(raw: bytes, dim: int) -> np.ndarray:
    """Raw float32 bytes (``row.tobytes()`` of a C-contiguous ``FACTOR_DTYPE`` row, as the
    publisher writes them) -> (dim,) float32 array (read-only view)."""
    vector = np.frombuffer(raw, dtype=FACTOR_DTYPE)
    if vector.shape != (dim,):
        raise ValueError(f"factor has {vector.size} values, expected {dim}")
    return vector


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class ModelMeta:
    version: str
    dim: int
    n_users: int
    n_items: int
    collection: str
    alpha: float
    regularization: float
    confidence: str = "linear"
    trained_at: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def to_redis(self) -> dict[str, str]:
        return {
            "version": self.version,
            "dim": str(self.dim),
            "dtype": "float32",
            "n_users": str(self.n_users),
            "n_items": str(self.n_items),
            "collection": self.collection,
            "alpha": repr(self.alpha),
            "regularization": repr(self.regularization),
            "confidence": self.confidence,
            "trained_at": self.trained_at,
            **self.extra,
        }

    @classmethod
    def from_redis(cls, raw: dict) -> ModelMeta:
        data = {_text(k): _text(v) for k, v in raw.items()}
        known = {
            "version",
            "dim",
            "dtype",
            "n_users",
            "n_items",
            "collection",
            "alpha",
            "regularization",
            "confidence",
            "trained_at",
        }
        return cls(
            version=data["version"],
            dim=int(data["dim"]),
            n_users=int(data["n_users"]),
            n_items=int(data["n_items"]),
            collection=data["collection"],
            alpha=float(data["alpha"]),
            regularization=float(data["regularization"]),
            confidence=data.get("confidence", "linear"),
            trained_at=data.get("trained_at", ""),
            extra={k: v for k, v in data.items() if k not in known},
        )


# The pre-hash-tag pointer names stand in only on a standalone Redis (a cluster never held them)
# and only while the new active pointer was never written (see the module docstring).


def active_version(redis_client) -> str | None:
    raw = redis_client.get(ACTIVE_KEY)
    if raw is None and not is_cluster(redis_client):
        raw = redis_client.get(LEGACY_ACTIVE_KEY)
    return _text(raw) if raw else None


def previous_version(redis_client) -> str | None:
    raw = redis_client.get(PREVIOUS_KEY)
    if raw is None and not is_cluster(redis_client) and not redis_client.exists(ACTIVE_KEY):
        raw = redis_client.get(LEGACY_PREVIOUS_KEY)
    return _text(raw) if raw else None


def read_meta(redis_client, version: str) -> ModelMeta | None:
    raw = redis_client.hgetall(meta_key(version))
    return ModelMeta.from_redis(raw) if raw else None


def read_user_factor(redis_client, meta: ModelMeta, user_id: str) -> np.ndarray | None:
    raw = redis_client.hget(user_factors_key(meta.version), user_id)
    return decode_factor(raw, meta.dim) if raw else None


def load_item_factors(
    chroma_client, meta: ModelMeta, page_size: int = 5000
) -> tuple[list[str], np.ndarray, list[dict]]:
    """All item factors of a version from Chroma: (item_ids, (n_items, dim) float32, metadatas)."""
    collection = chroma_client.get_collection(meta.collection)
    ids: list[str] = []
    metadatas: list[dict] = []
    chunks: list[np.ndarray] = []
    offset = 0
    while True:
        page = collection.get(include=["embeddings", "metadatas"], limit=page_size, offset=offset)
        if not page["ids"]:
            break
        ids.extend(page["ids"])
        metadatas.extend(m or {} for m in page["metadatas"])
        chunks.append(np.asarray(page["embeddings"], dtype=np.float32))
        offset += len(page["ids"])
    matrix = np.concatenate(chunks) if chunks else np.zeros((0, meta.dim), np.float32)
    return ids, matrix, metadatas


def item_index_state(meta: ModelMeta) -> str:
    """State of the version's Chroma collection (older versions were complete when published)."""
    return meta.extra.get(ITEM_INDEX_FIELD, INDEX_COMPLETE)


def read_items(redis_client, meta: ModelMeta) -> tuple[list[str], np.ndarray, list[dict]]:
    """All item factors of a version from its Redis items hash: (item_ids, (n, dim), metadatas)."""
    key = items_key(meta.version)
    rows = redis_client.hget(key, "rows")
    if rows is None:
        raise ValueError(f"model {meta.version} has no items hash")
    total = int(rows)
    ids: list[str] = []
    metadatas: list[dict] = []
    matrix = np.empty((total, meta.dim), dtype=np.float32)
    start, chunk = 0, 0
    while start < total:
        raw_ids, raw_vectors, raw_meta = redis_client.hmget(
            key, f"ids:{chunk}", f"vectors:{chunk}", f"metadata:{chunk}"
        )
        if raw_ids is None or raw_vectors is None or raw_meta is None:
            raise ValueError(f"model {meta.version}: chunk {chunk} of its items hash is missing")
        chunk_ids = orjson.loads(raw_ids)
        stop = start + len(chunk_ids)
        vectors = np.frombuffer(raw_vectors, dtype=FACTOR_DTYPE)
        if stop > total or vectors.size != len(chunk_ids) * meta.dim:
            raise ValueError(f"model {meta.version}: chunk {chunk} of its items hash is malformed")
        matrix[start:stop] = vectors.reshape(-1, meta.dim)
        ids.extend(chunk_ids)
        metadatas.extend(m or {} for m in orjson.loads(raw_meta))
        start, chunk = stop, chunk + 1
        if not chunk_ids:
            break
    if len(ids) != total:
        raise ValueError(f"model {meta.version}: items hash holds {len(ids)} of {total} rows")
    return ids, matrix, metadatas


def load_items(
    redis_client, meta: ModelMeta, chroma_client: Callable[[], Any]
) -> tuple[list[str], np.ndarray, list[dict]]:
    """A version's item factors from where it keeps them: its Redis items hash, or (versions
    published before it existed) its Chroma collection; ``chroma_client`` is only called then."""
    if meta.extra.get(ITEMS_FIELD) == ITEMS_IN_REDIS:
        return read_items(redis_client, meta)
    return load_item_factors(chroma_client(), meta)
