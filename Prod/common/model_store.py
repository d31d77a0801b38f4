"""The published-model contract between ``als_trainer`` (writer) and the engines (readers).

A model version ``v`` is published as:

- Redis hash ``reco:model:{v}:meta``: ``version``, ``dim``, ``dtype`` (``float32``), ``n_users``,
  ``n_items``, ``collection``, ``alpha``, ``regularization``, ``confidence`` (``linear``/``log``),
  ``trained_at`` (ISO) - everything a reader needs to decode factors and fold users in;
- Redis hash ``reco:model:{v}:user_factors``: field ``user_id`` -> raw little-endian float32 bytes
  of length ``4 * dim`` (written in pipelined batches);
- Chroma collection ``als-items-{v}`` (``hnsw:space = ip``): id = ``item_id``, embedding = item
  factor, metadata = title, brand, category, price, avg_rating (keys absent when unknown).

Only after all of that is written does the trainer switch ``reco:model:active`` (and remember the
old one in ``reco:model:previous``) in one Redis transaction, mirroring it in the Postgres
``model_version`` table. Readers therefore never see a half-published version.

An A/B test serves a second published version to a bucket of users: its pointer is the
``reco:experiment`` key, described in :mod:`Prod.common.experiment`; the trainer keeps that
version while the test runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

ACTIVE_KEY = "reco:model:active"
PREVIOUS_KEY = "reco:model:previous"
FACTOR_DTYPE = np.dtype("<f4")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,60}$")


def meta_key(version: str) -> str:
    return f"reco:model:{version}:meta"


def user_factors_key(version: str) -> str:
    return f"reco:model:{version}:user_factors"


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


def active_version(redis_client) -> str | None:
    raw = redis_client.get(ACTIVE_KEY)
    return _text(raw) if raw else None


def previous_version(redis_client) -> str | None:
    raw = redis_client.get(PREVIOUS_KEY)
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
