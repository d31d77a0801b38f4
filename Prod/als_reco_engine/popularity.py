"""Popularity fallback: items ranked by recent interaction weight, precomputed and refreshed.

"Recent" is the ``window_days`` before the newest interaction (not before now, so a historic
dataset still has a window). Negative events (dislikes, low ratings: :mod:`Prod.common.feedback`)
add no popularity. With no interactions at all, items are ranked by rating count and average
rating, so even an empty platform recommends something.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
from sqlalchemy import Engine, TextClause, text

from Prod.als_reco_engine.index import Catalogue, build_catalogue
from Prod.als_reco_engine.ticker import Ticker
from Prod.common.feedback import NEGATIVE, signal_sql
from Prod.common.logs import get_logger

log = get_logger(__name__)

_ITEM_COLUMNS = "i.item_id, i.title, i.brand, i.category, i.price, i.avg_rating"


def _recent_sql(negative_below: float) -> TextClause:
    return text(
        f"select {_ITEM_COLUMNS}, p.score from (select item_id, sum(weight) as score "
        f"from interaction where occurred_at >= :since and {signal_sql(negative_below)} <> "
        f"{NEGATIVE} group by item_id order by score desc limit :limit) p "
        "join item i on i.item_id = p.item_id order by p.score desc, i.item_id"
    )


_RATED_SQL = text(
    f"select {_ITEM_COLUMNS}, i.rating_count * coalesce(i.avg_rating, 1) as score from item i "
    "order by score desc, i.item_id limit :limit"
)


@dataclass(frozen=True)
class PopularityTable:
    """catalogue: the candidate items; scores: (n,) float32 popularity aligned with it."""

    catalogue: Catalogue
    scores: np.ndarray
    refreshed_at: datetime
    basis: str  # "recent" | "all_time" | "ratings"


def _table(rows, basis: str) -> PopularityTable:
    item_ids = [r[0] for r in rows]
    metadatas = [
        {"title": r[1], "brand": r[2], "category": r[3], "price": r[4], "avg_rating": r[5]}
        for r in rows
    ]
    return PopularityTable(
        catalogue=build_catalogue(item_ids, metadatas),
        scores=np.array([float(r[6] or 0.0) for r in rows], dtype=np.float32),
        refreshed_at=datetime.now(timezone.utc),
        basis=basis,
    )


def compute_popularity(
    engine: Engine,
    window_days: float = 30.0,
    limit: int = 5000,
    min_items: int = 50,
    *,
    negative_below: float,
) -> PopularityTable:
    """The ``limit`` most popular items: recent window, widened to all time when it is thin."""
    recent_sql = _recent_sql(negative_below)
    with engine.connect() as conn:
        newest = conn.scalar(text("select max(occurred_at) from interaction"))
        if newest is not None:
            since = newest - timedelta(days=window_days)
            rows = conn.execute(recent_sql, {"since": since, "limit": limit}).all()
            if len(rows) >= min_items:
                return _table(rows, "recent")
            epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
            rows = conn.execute(recent_sql, {"since": epoch, "limit": limit}).all()
            if rows:
                return _table(rows, "all_time")
        rows = conn.execute(_RATED_SQL, {"limit": limit}).all()
    return _table(rows, "ratings")


class PopularityRefresher:
    """Holds the current table and recomputes it every ``interval_s`` in a daemon thread."""

    def __init__(
        self,
        engine: Engine,
        interval_s: float = 60.0,
        window_days: float = 30.0,
        *,
        negative_below: float,
    ):
        self._engine = engine
        self._window_days = window_days
        self._negative_below = negative_below
        self.current: PopularityTable | None = None
        self.last_error: str | None = None
        self._ticker = Ticker("popularity", self.refresh, interval_s)

    def refresh(self) -> bool:
        try:
            self.current = compute_popularity(
                self._engine, self._window_days, negative_below=self._negative_below
            )
        except Exception as exc:  # keep the previous table; retried next tick
            self.last_error = f"popularity refresh failed: {exc}"
            log.warning(self.last_error)
            return False
        self.last_error = None
        return True

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()
