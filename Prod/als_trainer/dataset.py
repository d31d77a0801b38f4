"""Reading the training data out of PostgreSQL, fast, into index-mapped numpy arrays.

One ``COPY (SELECT user_id, item_id, weight, signal, time ...) TO STDOUT (FORMAT csv)`` streams
the rows into memory and pandas' C parser turns the id columns straight into categoricals, whose
categories are the index maps and whose codes are the row/column indices (no Python object per
row). 10M interactions take a few seconds and well under 2 GB.

Negative feedback (a ``dislike``, a rating below ``settings.negative_rating_below``) never adds
confidence: a pair whose latest explicit signal is negative is left out of the matrix (unobserved,
as ALS treats every pair it has no event for), and so are users and items left with no positive
pair. The rule: :mod:`Prod.common.feedback`. Signal and time are empty for implicit events, so
data without ratings or dislikes pays two empty CSV fields a row.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import select, text

from Prod.als_trainer.publisher import ITEM_METADATA_FIELDS, chroma_metadata
from Prod.common.db import get_engine
from Prod.common.feedback import IMPLICIT, resolve_pairs, signal_sql
from Prod.common.models import Item


@dataclass(frozen=True)
class InteractionMatrix:
    """Deduplicated positive (user, item) pairs with summed weights, and the index maps.

    user_ids: (n_users,) str, row i of the factors belongs to ``user_ids[i]``;
    item_ids: (n_items,) str; user_idx, item_idx: (nnz,) int64; weights: (nnz,) float32 > 0;
    n_events: interaction rows read (before summing duplicates); watermark: max interaction id;
    n_disliked: pairs left out as negative feedback.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_idx: np.ndarray
    item_idx: np.ndarray
    weights: np.ndarray
    n_events: int
    watermark: int
    n_disliked: int = 0

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def nnz(self) -> int:
        return len(self.weights)


def read_watermark(database_url: str) -> int:
    """Highest interaction id (0 when there are none): the data a run would train on."""
    with get_engine(database_url).connect() as conn:
        return int(conn.execute(text("select coalesce(max(id), 0) from interaction")).scalar_one())


def copy_interactions(
    database_url: str,
    watermark: int,
    negative_below: float,
    users: tuple[str | None, str | None] = (None, None),
) -> bytes:
    """CSV bytes ``user_id,item_id,weight,signal,at`` of every interaction with
    ``id <= watermark``; signal (-1 negative, 1 positive rating) and at (event time, unix
    microseconds) are empty for implicit events. ``users``: only ``low <= user_id < high``
    (None = unbounded; the Spark backend reads one user range per partition)."""
    raw = get_engine(database_url).raw_connection()
    try:
        buffer = io.BytesIO()
        signal = signal_sql(negative_below)
        explicit = f"nullif({signal}, {IMPLICIT})"
        at = (
            f"case when {explicit} is not null then "
            "(extract(epoch from occurred_at) * 1000000)::bigint end"
        )
        with raw.driver_connection.cursor() as cur:
            where, args = "id <= %s", [int(watermark)]
            for bound, op in zip(users, (">=", "<"), strict=True):
                if bound is not None:
                    where, args = f"{where} AND user_id {op} %s", [*args, bound]
            query = (
                f"COPY (SELECT user_id, item_id, weight, {explicit}, {at} FROM interaction "
                f"WHERE {where}) TO STDOUT (FORMAT csv)"
            )
            with cur.copy(query, args) as copy:
                for block in copy:
                    buffer.write(block)
        raw.commit()
        return buffer.getvalue()
    finally:
        raw.close()


def index_interactions(csv_bytes: bytes, watermark: int) -> InteractionMatrix:
    """Parse COPY output into index maps + summed positive (user, item) pairs."""
    frame = pd.read_csv(
        io.BytesIO(csv_bytes),
        header=None,
        names=["user_id", "item_id", "weight", "signal", "at"],
        dtype={
            "user_id": "category",
            "item_id": "category",
            "weight": np.float32,
            "signal": np.float32,
            "at": np.float64,
        },
        keep_default_na=False,  # an id like "NA" is an id, not a missing value
        na_values={"signal": [""], "at": [""]},
    )
    users = frame["user_id"].cat
    items = frame["item_id"].cat
    user_ids = np.asarray(users.categories, dtype=object)
    item_ids = np.asarray(items.categories, dtype=object)
    user_idx = users.codes.to_numpy(np.int64)
    item_idx = items.codes.to_numpy(np.int64)
    weights = frame["weight"].to_numpy(np.float32)
    signals = np.nan_to_num(frame["signal"].to_numpy(np.float32), nan=IMPLICIT).astype(np.int8)
    at = frame["at"].to_numpy(np.float64)
    pair_user, pair_item, pair_weight, disliked = sum_duplicates(
        user_idx, item_idx, weights, len(item_ids), signals, at
    )
    n_disliked = int(disliked.sum())
    if n_disliked:
        keep = ~disliked
        pair_user, pair_item, pair_weight = pair_user[keep], pair_item[keep], pair_weight[keep]
        user_ids, pair_user = _compact(user_ids, pair_user)
        item_ids, pair_item = _compact(item_ids, pair_item)
    return InteractionMatrix(
        user_ids=user_ids,
        item_ids=item_ids,
        user_idx=pair_user,
        item_idx=pair_item,
        weights=pair_weight,
        n_events=len(frame),
        watermark=watermark,
        n_disliked=n_disliked,
    )


def _compact(ids: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop ids no pair uses any more; (kept ids, idx renumbered into them, order kept)."""
    used = np.unique(idx)
    if len(used) == len(ids):
        return ids, idx
    return ids[used], np.searchsorted(used, idx)


def sum_duplicates(
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    weights: np.ndarray,
    n_items: int,
    signals: np.ndarray | None = None,
    at: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Repeated (user, item) events -> one pair, sorted by (user, item): (user_idx, item_idx,
    summed positive weight, disliked). ``signals``/``at``: per event, see
    :func:`Prod.common.feedback.resolve_pairs` (None = all implicit)."""
    keys = user_idx * np.int64(max(n_items, 1)) + item_idx
    unique, summed, disliked = resolve_pairs(keys, weights, signals, at)
    return unique // max(n_items, 1), unique % max(n_items, 1), summed, disliked


def load_interactions(
    database_url: str, watermark: int, negative_below: float
) -> InteractionMatrix:
    raw = copy_interactions(database_url, watermark, negative_below)
    return index_interactions(raw, watermark)


def load_item_metadata(database_url: str, item_ids: np.ndarray) -> list[dict | None]:
    """Chroma metadata (title, brand, ...; nulls omitted) for each id, in ``item_ids`` order."""
    columns = [Item.item_id, *(getattr(Item, name) for name in ITEM_METADATA_FIELDS)]
    wanted = set(item_ids.tolist())
    rows: dict[str, dict | None] = {}
    with get_engine(database_url).connect() as conn:
        # whole catalogue in one streamed query: cheaper than a huge IN list
        for row in conn.execution_options(stream_results=True, yield_per=20_000).execute(
            select(*columns)
        ):
            if row.item_id in wanted:
                rows[row.item_id] = chroma_metadata(row._asdict())
    return [rows.get(item_id) for item_id in item_ids]
