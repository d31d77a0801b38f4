"""A customer's stored recommendation list: created from the model (POST), replaced by given
products re-scored by the model (PUT), products removed and suppressed (never recommended
again until restored), deleted.

Every list response is built by :func:`_document` from the stored rows, so POST, PUT, GET and
DELETE agree: scores rounded as served (6 decimals, :func:`.index.round_scores`), ``strategy``
the one the list was stored with (null only for an empty list or one stored before it was
recorded). A write and the read-back of the list run in one transaction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from starlette.concurrency import run_in_threadpool

from Prod.als_reco_engine.index import ItemFilters, round_scores
from Prod.als_reco_engine.profiles import ProfileCache, UserProfile
from Prod.als_reco_engine.service import POPULAR, RecoEngine
from Prod.common.db import postgres_errors
from Prod.common.errors import InvalidInput, NotFound
from Prod.common.models import Item, SuppressedItem
from Prod.common.models import RecommendationListItem as ListItem

_STORE = "stored lists"  # names the store in a 503


def read_list(*, db: Engine, user_id: str) -> dict[str, Any]:
    """The user's stored list, best first; NotFound when there is none."""
    with postgres_errors(_STORE), db.connect() as conn:
        rows = _read_rows(conn, user_id)
    if not rows:
        raise _no_list(user_id)
    return _document(user_id, rows)


async def create_list(*, engine: RecoEngine, user_id: str, k: int) -> dict[str, Any]:
    """Replace the user's list with a fresh top-k (seen and suppressed products left out).
    NotFound when the model has nothing left to recommend (the list is then empty)."""
    result = await engine.recommend(
        user_id, k=k, exclude_seen=True, filters=ItemFilters(), log_history=False
    )
    scored = list(zip(result.item_ids(), result.scores, strict=True))
    rows, _ = await run_in_threadpool(
        _store, engine.db, user_id, scored, result.strategy, result.model_version
    )
    if not rows:
        raise _no_list(user_id)
    return _document(user_id, rows)


async def replace_list(*, engine: RecoEngine, user_id: str, item_ids: list[str]) -> dict[str, Any]:
    """Store the given products as the user's list, re-scored by the model, best first.
    Products the user suppressed are left out and named in ``skipped_suppressed``."""
    item_ids = list(dict.fromkeys(item_ids))
    await run_in_threadpool(require_items, db=engine.db, item_ids=item_ids)
    profile = await engine.profile(user_id)
    # on the event loop, as /recommend: the user factor comes through the hot path's Redis client
    scored, strategy, version = _score_items(engine, profile, item_ids)
    scored.sort(key=lambda pair: -pair[1])  # stable: unscored (-inf) keep the given order
    rows, skipped = await run_in_threadpool(
        _store, engine.db, user_id, scored, strategy, version, skip_suppressed=True
    )
    return {**_document(user_id, rows), "skipped_suppressed": skipped}


def delete_list(*, db: Engine, user_id: str) -> None:
    """Delete the user's whole stored list (NotFound when there is none). Suppressions stay:
    they are the customer's "never again", not part of the list."""
    with postgres_errors(_STORE), db.begin() as conn:
        deleted = conn.execute(delete(ListItem).where(ListItem.user_id == user_id)).rowcount
    if not deleted:
        raise _no_list(user_id)


def remove_list_items(
    *, db: Engine, profiles: ProfileCache, user_id: str, item_ids: list[str]
) -> dict[str, Any]:
    """Delete products from the list and suppress them from future recommendations (the user's
    cached profile is dropped, so the next recommendation leaves them out)."""
    item_ids = list(dict.fromkeys(item_ids))
    require_items(db=db, item_ids=item_ids)
    with postgres_errors(_STORE), db.begin() as conn:
        removed = conn.scalars(
            delete(ListItem)
            .where(ListItem.user_id == user_id, ListItem.item_id.in_(item_ids))
            .returning(ListItem.item_id)
        ).all()
        conn.execute(
            pg_insert(SuppressedItem)
            .values([{"user_id": user_id, "item_id": i} for i in item_ids])
            .on_conflict_do_nothing()
        )
        _renumber(conn, user_id)
        rows = _read_rows(conn, user_id)
    profiles.invalidate([user_id])
    return {**_document(user_id, rows), "removed": sorted(removed), "suppressed": item_ids}


def restore_suppressed_items(
    *, db: Engine, profiles: ProfileCache, user_id: str, item_ids: list[str]
) -> dict[str, Any]:
    """Undo suppressions: the products may be recommended (and stored in lists) again.
    NotFound when none of them is suppressed for the user."""
    item_ids = list(dict.fromkeys(item_ids))
    with postgres_errors(_STORE), db.begin() as conn:
        restored = set(
            conn.scalars(
                delete(SuppressedItem)
                .where(SuppressedItem.user_id == user_id, SuppressedItem.item_id.in_(item_ids))
                .returning(SuppressedItem.item_id)
            )
        )
    if not restored:
        raise NotFound(
            f"none of the given products is suppressed for user {user_id!r}",
            user_id=user_id,
            item_ids=item_ids,
        )
    profiles.invalidate([user_id])
    return {
        "user_id": user_id,
        "restored": sorted(restored),
        "not_suppressed": [i for i in item_ids if i not in restored],
    }


def require_items(*, db: Engine, item_ids: Sequence[str]) -> None:
    """InvalidInput naming the products the catalogue does not have."""
    with postgres_errors("the item catalogue"), db.connect() as conn:
        known = set(conn.scalars(select(Item.item_id).where(Item.item_id.in_(item_ids))))
    unknown = [i for i in item_ids if i not in known]
    if unknown:
        raise InvalidInput(f"unknown item(s): {', '.join(unknown[:20])}", unknown_items=unknown)


def _score_items(
    engine: RecoEngine, profile: UserProfile, item_ids: list[str]
) -> tuple[list[tuple[str, float]], str, str | None]:
    """(item, score) in the given order, the strategy and the model version that scored them.
    A product the model does not know scores -inf (ALS, shown as null) or 0 (popularity)."""
    index = engine.holder.current
    factor, strategy = (None, POPULAR) if index is None else engine.user_factor(index, profile)
    if factor is not None:
        catalogue, lookup = index.catalogue, None
    else:
        table = engine.popularity.current
        catalogue = table.catalogue if table is not None else None
        lookup = table.scores if table is not None else None
    scored = []
    for item_id in item_ids:
        row = catalogue.row_of.get(item_id) if catalogue is not None else None
        if row is None:
            score = -math.inf if factor is not None else 0.0
        elif factor is not None:
            score = float(index.factors[row] @ factor)
        else:
            score = float(lookup[row])
        scored.append((item_id, score))
    return scored, strategy, index.version if index is not None else None


def _store(
    db: Engine,
    user_id: str,
    scored: list[tuple[str, float]],
    strategy: str,
    model_version: str | None,
    *,
    skip_suppressed: bool = False,
) -> tuple[list[Any], list[str]]:
    """Replace the user's list with ``scored`` (best first); returns the stored rows as read
    back and, with ``skip_suppressed``, the products left out because the user suppressed
    them (read in the same transaction)."""
    now = datetime.now(timezone.utc)
    skipped: list[str] = []
    with postgres_errors(_STORE), db.begin() as conn:
        if skip_suppressed and scored:
            suppressed = set(
                conn.scalars(
                    select(SuppressedItem.item_id).where(
                        SuppressedItem.user_id == user_id,
                        SuppressedItem.item_id.in_([i for i, _ in scored]),
                    )
                )
            )
            skipped = [i for i, _ in scored if i in suppressed]
            scored = [(i, score) for i, score in scored if i not in suppressed]
        conn.execute(delete(ListItem).where(ListItem.user_id == user_id))
        if scored:
            conn.execute(
                insert(ListItem),
                [
                    {
                        "user_id": user_id,
                        "item_id": item_id,
                        "score": score,
                        "position": position,
                        "model_version": model_version,
                        "strategy": strategy,
                        "updated_at": now,
                    }
                    for position, (item_id, score) in enumerate(scored, start=1)
                ],
            )
        return _read_rows(conn, user_id), skipped


def _read_rows(conn: Connection, user_id: str) -> list[Any]:
    query = (
        select(
            ListItem.item_id,
            ListItem.score,
            ListItem.position,
            ListItem.model_version,
            ListItem.strategy,
            ListItem.updated_at,
            Item.title,
            Item.brand,
            Item.category,
            Item.price,
            Item.avg_rating,
        )
        .join(Item, Item.item_id == ListItem.item_id)
        .where(ListItem.user_id == user_id)
        .order_by(ListItem.position)
    )
    return list(conn.execute(query).mappings())


def _renumber(conn: Connection, user_id: str) -> None:
    """Positions 1..n again after products were removed from a list."""
    ranked = (
        select(
            ListItem.item_id,
            func.row_number().over(order_by=ListItem.position).label("position"),
        )
        .where(ListItem.user_id == user_id)
        .subquery()
    )
    conn.execute(
        update(ListItem)
        .where(ListItem.user_id == user_id, ListItem.item_id == ranked.c.item_id)
        .values(position=ranked.c.position)
    )


def _document(user_id: str, rows: list[Any]) -> dict[str, Any]:
    """The list response (``StoredListOut``) from its stored rows."""
    scores = round_scores(np.array([r["score"] for r in rows], dtype=np.float64))
    items = [
        {
            "item_id": r["item_id"],
            "score": score if math.isfinite(score) else None,  # -inf: the model lacks it
            "position": r["position"],
            "title": r["title"],
            "brand": r["brand"],
            "category": r["category"],
            "price": r["price"],
            "avg_rating": r["avg_rating"],
        }
        for r, score in zip(rows, scores, strict=True)
    ]
    return {
        "user_id": user_id,
        "strategy": rows[0]["strategy"] if rows else None,
        "model_version": rows[0]["model_version"] if rows else None,
        "updated_at": max((r["updated_at"] for r in rows), default=None),
        "items": items,
    }


def _no_list(user_id: str) -> NotFound:
    return NotFound(f"no stored recommendation list for user {user_id!r}", user_id=user_id)
