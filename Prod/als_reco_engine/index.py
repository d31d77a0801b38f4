"""The in-memory item index of one published model version, and the holder that hot-swaps it.

An :class:`ItemIndex` is immutable once built: a request takes ``holder.current`` once and uses that
snapshot to the end, so a swap (one reference assignment) never mixes two versions in a response.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import orjson

from Prod.als_reco_engine.ticker import Ticker
from Prod.common.logs import get_logger
from Prod.common.model_store import ModelMeta

log = get_logger(__name__)

UNKNOWN_CODE = -1
_FLOAT32_MAX = float(np.finfo(np.float32).max)  # larger bounds overflow the float32 compare


@dataclass(frozen=True)
class Catalogue:
    """Item ids and metadata as arrays aligned by row, for vectorised filters.

    ``price``/``rating``: (n,) float32, NaN when unknown; ``category_code``/``brand_code``: (n,)
    int32 codes into the case-folded value dictionaries, -1 when unknown. ``item_json``: per row,
    the JSON of :meth:`describe` without its closing brace, so a response appends the score and
    joins bytes instead of building and encoding dicts per item.
    """

    item_ids: list[str]
    row_of: dict[str, int]
    titles: list[str | None]
    brands: list[str | None]
    categories: list[str | None]
    price: np.ndarray
    rating: np.ndarray
    category_code: np.ndarray
    brand_code: np.ndarray
    category_codes: dict[str, int]
    brand_codes: dict[str, int]
    item_json: list[bytes]

    def __len__(self) -> int:
        return len(self.item_ids)

    def rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """Rows of the given ids that are in the catalogue (unknown ids are skipped)."""
        row_of = self.row_of
        return np.fromiter((row_of[i] for i in item_ids if i in row_of), dtype=np.int64)

    def describe(self, row: int) -> dict:
        """Public fields of one item (for responses)."""
        price = float(self.price[row])
        rating = float(self.rating[row])
        return {
            "item_id": self.item_ids[row],
            "title": self.titles[row],
            "brand": self.brands[row],
            "category": self.categories[row],
            "price": None if price != price else round(price, 2),
            "avg_rating": None if rating != rating else round(rating, 2),
        }


def describe_items(catalogue: Catalogue, rows: np.ndarray, scores: list[float]) -> list[dict]:
    """Public fields of the given rows with their (already rounded) scores, as dicts."""
    return [
        {**catalogue.describe(row), "score": score}
        for row, score in zip(rows.tolist(), scores, strict=True)
    ]


def items_json(catalogue: Catalogue, rows: np.ndarray, scores: list[float]) -> orjson.Fragment:
    """The JSON array :func:`describe_items` would encode to, from the precomputed row JSON."""
    item_json = catalogue.item_json
    parts = [
        item_json[row] + b',"score":' + orjson.dumps(score) + b"}"
        for row, score in zip(rows.tolist(), scores, strict=True)
    ]
    return orjson.Fragment(b"[" + b",".join(parts) + b"]")


def round_scores(scores: np.ndarray) -> list[float]:
    """Scores as response floats (6 decimals, as served and logged)."""
    return [round(score, 6) for score in scores.tolist()]


def _item_json(catalogue: Catalogue) -> list[bytes]:
    return [orjson.dumps(catalogue.describe(row))[:-1] for row in range(len(catalogue))]


def _codes(values: list[str | None]) -> tuple[np.ndarray, dict[str, int]]:
    dictionary: dict[str, int] = {}
    codes = np.full(len(values), UNKNOWN_CODE, dtype=np.int32)
    for row, value in enumerate(values):
        if value:
            codes[row] = dictionary.setdefault(value.casefold(), len(dictionary))
    return codes, dictionary


def _floats(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float32)


def build_catalogue(item_ids: list[str], metadatas: list[dict]) -> Catalogue:
    """Catalogue from ids and metadata dicts (title, brand, category, price, avg_rating)."""
    titles = [m.get("title") for m in metadatas]
    brands = [m.get("brand") for m in metadatas]
    categories = [m.get("category") for m in metadatas]
    category_code, category_codes = _codes(categories)
    brand_code, brand_codes = _codes(brands)
    catalogue = Catalogue(
        item_ids=list(item_ids),
        row_of={item_id: row for row, item_id in enumerate(item_ids)},
        titles=titles,
        brands=brands,
        categories=categories,
        price=_floats([m.get("price") for m in metadatas]),
        rating=_floats([m.get("avg_rating") for m in metadatas]),
        category_code=category_code,
        brand_code=brand_code,
        category_codes=category_codes,
        brand_codes=brand_codes,
        item_json=[],
    )
    catalogue.item_json.extend(_item_json(catalogue))
    return catalogue


@dataclass(frozen=True)
class ItemFilters:
    """Filters of ``/recommend`` and ``/similar``, with the chat's meaning of a list: any of.

    categories / brands: the item's category / brand is any of these (case-insensitive); empty
    means no constraint. Given as any iterable (a repeated query parameter), kept as a tuple
    without duplicates in the given order.
    """

    categories: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    max_price: float | None = None
    min_rating: float | None = None
    min_price: float | None = None

    def __post_init__(self) -> None:
        for name in ("categories", "brands"):
            values = getattr(self, name)
            values = (values,) if isinstance(values, str) else values  # one value, not letters
            object.__setattr__(self, name, tuple(dict.fromkeys(values)))

    def active(self) -> bool:
        return bool(self.categories or self.brands) or not (
            self.min_price is None and self.max_price is None and self.min_rating is None
        )

    def as_dict(self) -> dict:
        """The filters set, named as the query parameters (lists for category and brand)."""
        named = {
            "category": list(self.categories),
            "brand": list(self.brands),
            "min_price": self.min_price,
            "max_price": self.max_price,
            "min_rating": self.min_rating,
        }
        return {k: v for k, v in named.items() if v not in (None, [])}


def filter_mask(catalogue: Catalogue, filters: ItemFilters) -> np.ndarray | None:
    """(n,) bool mask of items passing every filter, or None when no filter is set.

    Within categories (and within brands) any value matches; the filters combine with "and".
    Items whose price/rating is unknown fail a price/rating filter (NaN comparisons are False).
    """
    if not filters.active():
        return None
    mask = np.ones(len(catalogue), dtype=bool)
    if filters.categories:
        codes = [catalogue.category_codes.get(c.casefold(), -2) for c in filters.categories]
        mask &= np.isin(catalogue.category_code, codes)
    if filters.brands:
        codes = [catalogue.brand_codes.get(b.casefold(), -2) for b in filters.brands]
        mask &= np.isin(catalogue.brand_code, codes)
    if filters.min_price is not None:
        mask &= catalogue.price >= min(filters.min_price, _FLOAT32_MAX)
    if filters.max_price is not None:
        mask &= catalogue.price <= min(filters.max_price, _FLOAT32_MAX)
    if filters.min_rating is not None:
        mask &= catalogue.rating >= filters.min_rating
    return mask


def top_k(
    scores: np.ndarray, k: int, excluded: np.ndarray | None = None, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows by score, best first, skipping excluded rows and rows outside ``mask``.

    scores: (n,) float32, modified in place (pass a fresh array); excluded: (m,) int rows;
    mask: (n,) bool. Returns (rows (<=k,) int64, scores (<=k,) float32).
    """
    if mask is not None:
        scores[~mask] = -np.inf
    if excluded is not None and excluded.size:
        scores[excluded] = -np.inf
    n = scores.size
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    rows = np.argpartition(scores, n - k)[n - k :] if k < n else np.arange(n)
    rows = rows[np.argsort(-scores[rows], kind="stable")]
    best = scores[rows]
    keep = np.isfinite(best)
    return rows[keep], best[keep]


@dataclass(frozen=True)
class ItemIndex:
    """One model version in memory.

    factors: (n_items, dim) float32 C-contiguous; unit_factors: rows L2-normalised (cosine for
    /similar); gramian: (dim, dim) float32 = factors^T factors (YtY, reused by every fold-in).
    data_watermark: highest interaction id the model was trained on (None when unknown).
    """

    meta: ModelMeta
    catalogue: Catalogue
    factors: np.ndarray
    unit_factors: np.ndarray
    gramian: np.ndarray
    loaded_at: datetime
    data_watermark: int | None = None

    @property
    def version(self) -> str:
        return self.meta.version

    def __len__(self) -> int:
        return len(self.catalogue)


def build_index(
    meta: ModelMeta,
    item_ids: list[str],
    factors: np.ndarray,
    metadatas: list[dict],
    data_watermark: int | None = None,
) -> ItemIndex:
    """Index of a version from its item ids, (n_items, dim) factors and metadatas."""
    factors = np.ascontiguousarray(factors, dtype=np.float32)
    if factors.shape != (len(item_ids), meta.dim):
        raise ValueError(
            f"item factors have shape {factors.shape}, expected ({len(item_ids)}, {meta.dim})"
        )
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    unit = factors / np.maximum(norms, 1e-12)
    return ItemIndex(
        meta=meta,
        catalogue=build_catalogue(item_ids, metadatas),
        factors=factors,
        unit_factors=np.ascontiguousarray(unit, dtype=np.float32),
        gramian=(factors.T @ factors).astype(np.float32),
        loaded_at=datetime.now(timezone.utc),
        data_watermark=data_watermark,
    )


@dataclass
class IndexHolder:
    """The current :class:`ItemIndex` plus a watcher thread that swaps in new versions.

    ``poll`` returns the active version id (None when none is published) and raises when the
    pointer cannot be read; ``load`` builds the index of a version and raises on failure. Either
    failing keeps the loaded index serving and is retried on the next tick.
    """

    poll: Callable[[], str | None]
    load: Callable[[str], ItemIndex]
    interval_s: float = 1.0
    current: ItemIndex | None = None
    active_version: str | None = None
    last_check_at: datetime | None = None
    last_error: str | None = None
    on_swap: Callable[[ItemIndex], None] | None = None
    _ticker: Ticker | None = None
    _failed: dict[str, float] = field(default_factory=dict)

    def refresh(self) -> bool:
        """Check the pointer once; load and swap when it moved. True when a swap happened."""
        try:
            version = self.poll()
        except Exception as exc:  # store unreachable: keep serving what is loaded
            self._note_error(f"cannot read the active model pointer: {exc}")
            return False
        self.last_check_at = datetime.now(timezone.utc)
        self.active_version = version
        if version is None or (self.current is not None and self.current.version == version):
            self.last_error = None if version is not None else self.last_error
            return False
        if time.monotonic() < self._failed.get(version, 0.0):
            return False
        try:
            index = self.load(version)
        except Exception as exc:
            self._failed[version] = time.monotonic() + 5 * self.interval_s
            self._note_error(f"cannot load model {version}: {exc}")
            return False
        previous = self.current
        self.current = index  # the swap: one reference assignment
        self.last_error = None
        log.info(
            "serving model %s (%d items), was %s",
            version,
            len(index),
            previous.version if previous else None,
        )
        if self.on_swap is not None:
            self.on_swap(index)
        return True

    def _note_error(self, message: str) -> None:
        if message != self.last_error:
            log.warning(message)
        self.last_error = message

    def start(self) -> None:
        if self._ticker is None:
            self._ticker = Ticker("index-watcher", self.refresh, self.interval_s)
            self._ticker.start()

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
