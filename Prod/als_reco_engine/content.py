"""Content-based fallbacks for items without an ALS factor ("cold" or "fresh" items: added after
the last training), from their MiniLM embeddings in the Chroma ``products`` collection.

- ``/similar`` of an item the active model does not know: its nearest products by cosine of the
  stored embeddings (:meth:`ContentIndex.similar`), labelled ``strategy: "content"``.
- Mixing: a user's ALS/fold-in top-k gets ``round(share * k)`` fresh items, those nearest to the
  weighted mean embedding of what the user liked (:meth:`ContentIndex.fresh_for`), placed at
  evenly spaced slots (:func:`fresh_slots`). ``share`` is ``RECO_FRESH_SHARE`` (0 disables).

:class:`ContentIndex` keeps the fresh items (ids, unit embeddings, metadata) in memory, refreshed
in the background; user taste vectors are read from Chroma once per loaded profile. Chroma being
down never fails a recommendation (no mixing then); a cold ``/similar`` answers 503 naming Chroma.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from Prod.als_reco_engine.index import Catalogue, ItemFilters, build_catalogue, filter_mask, top_k
from Prod.als_reco_engine.profiles import UserProfile
from Prod.als_reco_engine.ticker import Ticker
from Prod.common.logs import get_logger
from Prod.common.stores import chroma_errors

log = get_logger(__name__)

CONTENT = "content"
_PAGE = 5000
TASTE_ITEMS = 100  # a taste vector averages the user's most weighted liked items, at most this
_FILTERED_POOL = 50  # neighbours fetched per wanted item when filters may drop some
_METADATA_KEYS = ("title", "brand", "category", "price", "avg_rating")


def fresh_count(k: int, share: float, available: int) -> int:
    """How many of ``k`` slots go to fresh items: ``round(share * k)`` (halves up: k=5 at 0.1
    gives 1), at most ``available``."""
    return max(0, min(int(share * k + 0.5), available, k))


def fresh_slots(k: int, n_fresh: int) -> list[int]:
    """0-based positions of ``n_fresh`` fresh items in a list of ``k``: the last slot of each of
    ``n_fresh`` equal blocks (k=10: one fresh item at 10th place, two at 5th and 10th)."""
    return [int(round((j + 1) * k / n_fresh)) - 1 for j in range(n_fresh)] if n_fresh else []


def mix(base: Sequence, fresh: Sequence, k: int) -> tuple[list, list[bool]]:
    """``base`` (best first) with ``fresh`` put at :func:`fresh_slots` of a list of at most ``k``;
    returns (items, is_fresh per item). A short ``base`` leaves the fresh items at the end."""
    total = min(k, len(base) + len(fresh))
    slots = set(fresh_slots(total, len(fresh))) if fresh else set()
    out, flags = [], []
    b = f = 0
    for position in range(total):
        take_fresh = f < len(fresh) and (position in slots or b >= len(base))
        out.append(fresh[f] if take_fresh else base[b])
        flags.append(take_fresh)
        f, b = (f + 1, b) if take_fresh else (f, b + 1)
    return out, flags


def mixed(
    catalogue: Catalogue,
    rows: np.ndarray,
    scores: list[float],
    found: tuple[Catalogue, np.ndarray, np.ndarray],
    k: int,
) -> tuple[Catalogue, np.ndarray, list[float], list[bool]]:
    """An answer (``rows`` of ``catalogue``, best first) with the fresh items ``found``
    (catalogue, rows, cosines) :func:`mix`-ed in: a small catalogue of the answer's items in
    answer order, its rows, the scores, and whether each item is fresh."""
    fresh_catalogue, fresh_rows, fresh_scores = found
    fresh = [
        (fresh_catalogue, row, round(score, 6))
        for row, score in zip(fresh_rows.tolist(), fresh_scores.tolist(), strict=True)
    ]
    own = [(catalogue, row, score) for row, score in zip(rows.tolist(), scores, strict=True)]
    entries, flags = mix(own[: k - len(fresh)], fresh, k)
    answer = build_catalogue(
        [source.item_ids[row] for source, row, _ in entries],
        [source.describe(row) for source, row, _ in entries],
    )
    return answer, np.arange(len(entries), dtype=np.int64), [s for _, _, s in entries], flags


@dataclass(frozen=True)
class FreshItems:
    """Products without a factor in ``version``: catalogue rows aligned with ``vectors`` (n, dim)
    L2-normalised MiniLM embeddings."""

    version: str | None
    catalogue: Catalogue
    vectors: np.ndarray
    refreshed_at: datetime


def _metadata(raw: dict | None) -> dict:
    raw = raw or {}
    return {key: raw.get(key) for key in _METADATA_KEYS}


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class ContentIndex:
    """Fresh items and content look-ups against the ``products`` collection.

    ``collection()`` returns the Chroma collection (raising when Chroma is down); ``known_ids()``
    the item ids of the active ALS model (an empty set when none is published) and its version.
    """

    def __init__(
        self,
        collection: Callable[[], object],
        known_ids: Callable[[], tuple[str | None, dict[str, int]]],
        *,
        interval_s: float = 60.0,
        max_users: int = 50_000,
    ) -> None:
        self._collection = collection
        self._known_ids = known_ids
        self.current: FreshItems | None = None
        self.last_error: str | None = None
        self._tastes: OrderedDict[str, tuple[float, np.ndarray | None]] = OrderedDict()
        self._max_users = max_users
        self._lock = threading.Lock()
        self._ticker = Ticker("fresh-items", self.refresh, interval_s)

    def _open(self):
        """The collection, or None when it does not exist (nothing ingested yet)."""
        from chromadb.errors import NotFoundError

        try:
            return self._collection()
        except NotFoundError:
            return None

    # --- fresh items ------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Re-read which products have no ALS factor (ids only, then their vectors)."""
        try:
            version, known = self._known_ids()
            collection = self._open()
            with chroma_errors("fresh items"):
                ids = _all_ids(collection) if collection is not None else []
                fresh_ids, vectors, metadatas = _vectors(
                    collection, [i for i in ids if i not in known]
                )
        except Exception as exc:  # keep the previous set; retried next tick
            message = f"fresh-item refresh failed: {exc}"
            if message != self.last_error:  # once, not every tick
                log.warning(message)
            self.last_error = message
            return False
        self.current = FreshItems(
            version=version,
            catalogue=build_catalogue(fresh_ids, metadatas),
            vectors=_unit(vectors) if len(fresh_ids) else np.zeros((0, 0), np.float32),
            refreshed_at=datetime.now(timezone.utc),
        )
        self.last_error = None
        return True

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()

    def fresh_for(
        self,
        profile: UserProfile,
        n: int,
        *,
        exclude_seen: bool,
        filters: ItemFilters,
        model: tuple[str, dict[str, int]],
        gone: Callable[[Catalogue], np.ndarray] | None = None,
    ) -> tuple[Catalogue, np.ndarray, np.ndarray] | None:
        """The ``n`` fresh items nearest to the user's taste (catalogue, rows, cosines), or None
        when there are none, the user has no embedded liked item, or Chroma is unreachable.

        Suppressed and disliked items are never returned, seen ones unless ``exclude_seen`` is
        off; ``model``: the serving (version, item rows): after a swap, items that got a factor
        are not fresh any more; ``gone(catalogue)``: rows of deleted items."""
        fresh = self.current
        if fresh is None or n <= 0 or len(fresh.catalogue) == 0:
            return None
        taste = self._taste(profile)
        if taste is None:
            return None
        excluded = profile.suppressed | profile.disliked
        if exclude_seen:
            excluded = excluded | frozenset(profile.item_ids)
        catalogue = fresh.catalogue
        drop = [catalogue.rows(sorted(excluded))]
        if gone is not None:
            drop.append(gone(catalogue))
        version, known = model
        if version != fresh.version:  # swapped since the last refresh (rare): O(fresh items)
            drop.append(catalogue.rows([i for i in catalogue.item_ids if i in known]))
        mask = filter_mask(catalogue, filters)
        rows, best = top_k(fresh.vectors @ taste, n, np.concatenate(drop), mask)
        return (catalogue, rows, best) if rows.size else None

    def _taste(self, profile: UserProfile) -> np.ndarray | None:
        """Unit weighted mean of the embeddings of the user's most weighted liked items, read
        from Chroma once per loaded profile."""
        user_id, loaded_at = profile.user_id, profile.loaded_at
        with self._lock:
            cached = self._tastes.get(user_id)
            if cached is not None and cached[0] == loaded_at:
                self._tastes.move_to_end(user_id)
                return cached[1]
        weights = profile.weights.tolist()
        liked = {i: w for i, w in zip(profile.item_ids, weights, strict=True) if w > 0}
        heaviest = sorted(liked.items(), key=lambda pair: (-pair[1], pair[0]))[:TASTE_ITEMS]
        try:
            collection = self._open()
            if collection is None:
                return None
            with chroma_errors("taste vectors"):
                page = collection.get(ids=[i for i, _ in heaviest], include=["embeddings"])
        except Exception as exc:  # no mixing this time; the next request tries again
            log.warning("no taste vector for %s: %s", user_id, exc)
            return None
        taste = None
        if len(page["ids"]):
            weights = np.array([liked[i] for i in page["ids"]], dtype=np.float32)
            vectors = _unit(np.asarray(page["embeddings"], dtype=np.float32))
            mean = weights @ vectors
            norm = float(np.linalg.norm(mean))
            taste = (mean / norm).astype(np.float32) if norm > 0 else None
        with self._lock:
            self._tastes[user_id] = (loaded_at, taste)
            while len(self._tastes) > self._max_users:
                self._tastes.popitem(last=False)
        return taste

    # --- similar items of a cold item -------------------------------------------------------

    def similar(
        self, item_id: str, k: int, filters: ItemFilters
    ) -> tuple[Catalogue, np.ndarray, np.ndarray] | None:
        """The ``k`` products nearest to ``item_id``'s embedding: (catalogue, rows, cosines) best
        first; None when the collection does not hold the item.
        Raises :class:`~Prod.common.errors.InfraError` when Chroma is unreachable."""
        with chroma_errors("similar items by content"):
            collection = self._open()
            if collection is None:
                return None
            page = collection.get(ids=[item_id], include=["embeddings"])
            if not len(page["ids"]):
                return None
            wanted = k + 1
            if filters.active():
                wanted = min(collection.count(), wanted * _FILTERED_POOL)
            result = collection.query(
                query_embeddings=np.asarray(page["embeddings"], np.float32).tolist(),
                n_results=max(1, wanted),
                include=["metadatas", "distances"],
            )
        ids = list(result["ids"][0])
        catalogue = build_catalogue(ids, [_metadata(m) for m in result["metadatas"][0]])
        scores = np.array([1.0 - float(d) for d in result["distances"][0]], dtype=np.float32)
        itself = np.array([row for row, i in enumerate(ids) if i == item_id], np.int64)
        rows, best = top_k(scores, k, itself, filter_mask(catalogue, filters))
        return catalogue, rows, best


def _all_ids(collection) -> list[str]:
    ids: list[str] = []
    while True:
        page = collection.get(include=[], limit=_PAGE, offset=len(ids))
        if not page["ids"]:
            return ids
        ids.extend(page["ids"])


def _vectors(collection, item_ids: list[str]) -> tuple[list[str], np.ndarray, list[dict]]:
    """(ids still stored, their embeddings (n, dim), metadata) of ``item_ids``, in that order."""
    kept, vectors, metadatas = [], [], []
    for start in range(0, len(item_ids), _PAGE):
        page = collection.get(
            ids=item_ids[start : start + _PAGE], include=["embeddings", "metadatas"]
        )
        kept.extend(page["ids"])
        vectors.append(np.asarray(page["embeddings"], dtype=np.float32))
        metadatas.extend(_metadata(m) for m in page["metadatas"])
    if not kept:
        return [], np.zeros((0, 0), np.float32), []
    return kept, np.concatenate([v for v in vectors if len(v)]), metadatas
