"""Recording user-item events (``POST /interactions``): one transaction, all or nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from Prod.common.canonical_format import DEFAULT_WEIGHTS, RATING_EVENT
from Prod.common.db import postgres_errors
from Prod.common.errors import InvalidInput
from Prod.common.models import Interaction, Item, User


def record_interactions(
    *,
    db: Engine,
    events: Sequence[dict[str, Any]],
    forget_users: Callable[[list[str]], None],
) -> dict[str, Any]:
    """Insert ``events`` (``InteractionIn`` dicts) in one transaction; new users are created,
    an event already stored (same user, item, event and time) is counted as a duplicate.

    Unknown items raise InvalidInput naming them and nothing is stored. After the commit
    ``forget_users`` (:meth:`RecoEngine.forget_users`) drops what the engine cached about the
    users, so their next recommendation folds the new events in.
    """
    item_ids = sorted({e["item_id"] for e in events})
    user_ids = sorted({e["user_id"] for e in events})
    rows = [_interaction_row(e) for e in events]
    with postgres_errors("the interaction database"), db.begin() as conn:
        known = set(conn.scalars(select(Item.item_id).where(Item.item_id.in_(item_ids))))
        unknown = [i for i in item_ids if i not in known]
        if unknown:
            raise InvalidInput(f"unknown item(s): {', '.join(unknown[:20])}", unknown_items=unknown)
        created = conn.scalars(
            pg_insert(User)
            .values([{"user_id": u} for u in user_ids])
            .on_conflict_do_nothing()
            .returning(User.user_id)
        ).all()
        inserted = conn.scalars(
            pg_insert(Interaction)
            .values(rows)
            .on_conflict_do_nothing(constraint="uq_interaction_event")
            .returning(Interaction.id)
        ).all()
    forget_users(user_ids)
    return {
        "accepted": len(inserted),
        "duplicates": len(rows) - len(inserted),
        "created_users": sorted(created),
        "user_ids": user_ids,
    }


def _interaction_row(event: dict[str, Any]) -> dict[str, Any]:
    """The ``interaction`` row of an event: weight by event kind unless given (a rating weighs
    its value), time now unless given (naive = UTC)."""
    weight = event.get("weight")
    if weight is None:
        kind = event["event"]
        weight = event["rating"] if kind == RATING_EVENT else DEFAULT_WEIGHTS[kind]
    occurred_at = event.get("timestamp") or datetime.now(timezone.utc)
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=timezone.utc)
    return {
        "user_id": event["user_id"],
        "item_id": event["item_id"],
        "event": event["event"],
        "rating": event.get("rating"),
        "weight": float(weight),
        "occurred_at": occurred_at,
    }
