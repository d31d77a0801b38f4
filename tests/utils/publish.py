"""Test helpers: put a small catalogue + interactions in Postgres, and publish a model trained on
them BY THE REAL TRAINER (``Prod.als_trainer.service.run_training``), so serving/chat tests read
exactly what production would publish.

    data = insert_dataset(settings)                  # unique ids, clustered tastes
    version = train_and_publish(settings)            # forced run; returns the active version id
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
from sqlalchemy import insert

from Prod.common.canonical_format import DEFAULT_WEIGHTS, EVENT_WEIGHTS, RATING_EVENT
from Prod.common.db import session_scope
from Prod.common.models import Interaction, Item, User

CATEGORIES = ("books", "garden", "audio")


@dataclass(frozen=True)
class SmallDataset:
    """What :func:`insert_dataset` wrote. ``taste[user_id]`` is the user's favourite category;
    ``item_category[item_id]`` the item's; ``pairs`` the distinct (user_id, item_id) interacted."""

    prefix: str
    user_ids: list[str]
    item_ids: list[str]
    taste: dict[str, str]
    item_category: dict[str, str]
    pairs: set[tuple[str, str]]
    n_interactions: int


def insert_dataset(
    settings,
    *,
    n_users: int = 40,
    n_items: int = 30,
    events_per_user: int = 8,
    seed: int = 0,
    prefix: str | None = None,
) -> SmallDataset:
    """Insert users, items (some metadata unknown) and clustered interactions; ids are unique.

    Each user draws ~85% of its events from its favourite category, so ALS has structure to find.
    """
    rng = np.random.default_rng(seed)
    prefix = prefix or f"t{uuid.uuid4().hex[:8]}"
    user_ids = [f"{prefix}-u{i:04d}" for i in range(n_users)]
    item_ids = [f"{prefix}-i{j:04d}" for j in range(n_items)]
    item_category = {item: CATEGORIES[j % len(CATEGORIES)] for j, item in enumerate(item_ids)}
    taste = {user: CATEGORIES[i % len(CATEGORIES)] for i, user in enumerate(user_ids)}
    items = [
        {
            "item_id": item,
            "title": f"{item_category[item].title()} product {j}",
            "brand": None if j % 4 == 0 else f"brand{j % 5}",  # unknown brands -> omitted
            "category": item_category[item],
            "price": None if j % 7 == 0 else float(5 + j),
            "avg_rating": None if j % 3 == 0 else round(float(rng.uniform(1, 5)), 2),
            "rating_count": int(rng.integers(0, 500)),
        }
        for j, item in enumerate(item_ids)
    ]
    by_category = {c: [i for i in item_ids if item_category[i] == c] for c in CATEGORIES}
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    events, pairs = [], set()
    events_list = list(EVENT_WEIGHTS)
    for u, user in enumerate(user_ids):
        for e in range(events_per_user):
            pool = by_category[taste[user]] if rng.random() < 0.85 else item_ids
            item = pool[int(rng.integers(len(pool)))]
            event = events_list[int(rng.integers(len(events_list)))]
            events.append(
                {
                    "user_id": user,
                    "item_id": item,
                    "event": event,
                    "weight": EVENT_WEIGHTS[event],
                    "occurred_at": base + timedelta(minutes=u * events_per_user + e),
                }
            )
            pairs.add((user, item))
    with session_scope(settings.database_url) as session:
        session.execute(insert(User), [{"user_id": u, "name": f"User {u}"} for u in user_ids])
        session.execute(insert(Item), items)
        session.execute(insert(Interaction), events)
    return SmallDataset(prefix, user_ids, item_ids, taste, item_category, pairs, len(events))


def add_interactions(
    settings, user_id: str, item_ids: list[str], event: str = "click", rating: float | None = None
) -> None:
    """Append new events (moves the data watermark forward); ``rating`` for rating events."""
    now = datetime.now(timezone.utc)
    weight = rating if event == RATING_EVENT else DEFAULT_WEIGHTS[event]
    rows = [
        {
            "user_id": user_id,
            "item_id": item,
            "event": event,
            "rating": rating,
            "weight": weight,
            "occurred_at": now + timedelta(microseconds=k),
        }
        for k, item in enumerate(item_ids)
    ]
    with session_scope(settings.database_url) as session:
        session.execute(insert(Interaction), rows)


def train_and_publish(settings, *, force: bool = True, evaluate: bool = False) -> str:
    """Run the real trainer once (forced by default) and return the now active version id.

    Raises AssertionError with the run's error when it did not publish.
    """
    from Prod.als_trainer.service import run_training

    result = run_training(settings, force=force, evaluate=evaluate)
    assert result.status == "active", f"training did not publish: {result.to_dict()}"
    return result.version_id


def publish_factors(
    settings,
    user_factors: dict[str, np.ndarray | list[float]],
    item_ids: list[str],
    item_factors: np.ndarray,
    *,
    alpha: float = 4.0,
    regularization: float = 0.1,
):
    """Publish hand-made factors as a new version through the trainer's own publisher (not
    activated); returns its ``ModelMeta``. For tests that need a model with a known taste."""
    from Prod.als_trainer.publisher import FactorSet, new_version_id, publish_version
    from Prod.common import model_store
    from Prod.common.stores import chroma_for, redis_for

    item_factors = np.asarray(item_factors, dtype=np.float32)
    version = new_version_id()
    meta = model_store.ModelMeta(
        version=version,
        dim=item_factors.shape[1],
        n_users=len(user_factors),
        n_items=len(item_ids),
        collection=model_store.item_collection_name(version),
        alpha=alpha,
        regularization=regularization,
    )
    users = list(user_factors)
    factors = FactorSet(
        users,
        np.array([user_factors[u] for u in users], dtype=np.float32).reshape(len(users), -1),
        item_ids,
        item_factors,
        [{} for _ in item_ids],
    )
    publish_version(redis_for(settings), chroma_for(settings), meta, factors)
    return meta
