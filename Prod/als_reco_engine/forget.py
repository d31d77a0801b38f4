"""Forgetting a person (``DELETE /api/v1/users/{user_id}``, ``reco users forget``).

Removes everything the platform keeps about one user and counts it:

- Postgres, in one transaction (all or nothing): interactions, served recommendations
  (``recommendation_log``), the stored list, suppressions, chat sessions and their messages, the
  ``user`` row;
- Redis, after the commit: the user's factor in every model version still stored
  (``reco:model:*:user_factors``, the active one, the previous one and any other kept);
- caches: the serving engines' cached profile and fold-in factor (this replica at once, the
  others through the profile-invalidation channel).

A training run in progress may have read the user's interactions before the commit and publish
their factor in its new version: the answer says so (``training_in_progress``), and forgetting
again after the run removes it.

Redis is pinged before Postgres is touched, so a Redis outage is a 503 with nothing removed; if
Redis fails between the two steps the 503 names it and a retry finishes the job (the call is
idempotent: it removes what is left).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from sqlalchemy import Engine, delete, select

from Prod.als_reco_engine.catalogue import redis_errors
from Prod.common.db import postgres_errors
from Prod.common.errors import NotFound
from Prod.common.models import (
    ChatMessage,
    ChatSession,
    Interaction,
    RecommendationListItem,
    RecommendationLog,
    SuppressedItem,
    User,
)

FACTORS_PATTERN = "reco:model:*:user_factors"
# Prod.als_trainer.lock.LOCK_KEY (services never import each other; a test keeps them equal)
TRAINER_LOCK_KEY = "reco:{trainer}:lock"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def forget_user(
    *,
    db: Engine,
    redis_client: redis.Redis,
    user_id: str,
    forget_cached: Callable[[list[str]], None],
    flush_history: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """Remove ``user_id`` from every store; counts per store. NotFound when no store held
    anything of theirs. ``flush_history`` writes the engine's buffered served recommendations
    first, so none of the user's lands after the delete; ``forget_cached`` drops the caches."""
    with redis_errors("user factors"):
        redis_client.ping()
    if flush_history is not None:
        flush_history()
    with postgres_errors("the user's data"), db.begin() as conn:
        sessions = list(
            conn.scalars(select(ChatSession.session_id).where(ChatSession.user_id == user_id))
        )
        messages = 0
        if sessions:
            messages = conn.execute(
                delete(ChatMessage).where(ChatMessage.session_id.in_(sessions))
            ).rowcount
            conn.execute(delete(ChatSession).where(ChatSession.session_id.in_(sessions)))
        postgres = {
            "interactions": _delete(conn, Interaction, user_id),
            "recommendations_served": _delete(conn, RecommendationLog, user_id),
            "list_items": _delete(conn, RecommendationListItem, user_id),
            "suppressions": _delete(conn, SuppressedItem, user_id),
            "chat_sessions": len(sessions),
            "chat_messages": messages,
            "user": _delete(conn, User, user_id),
        }
    with redis_errors("user factors"):
        factors = _delete_factors(redis_client, user_id)
        # a run that read the interactions before the commit publishes the user's factor again
        training = bool(redis_client.exists(TRAINER_LOCK_KEY))
    forget_cached([user_id])
    if not any(postgres.values()) and not factors:
        raise NotFound(f"no data of user {user_id!r} in any store", user_id=user_id)
    return {
        "user_id": user_id,
        "postgres": postgres,
        "redis": {"user_factors": len(factors), "model_versions": factors},
        "caches": "cleared",
        "training_in_progress": training,
    }


def _delete(conn, model, user_id: str) -> int:
    return conn.execute(delete(model).where(model.user_id == user_id)).rowcount


def _delete_factors(redis_client: redis.Redis, user_id: str) -> list[str]:
    """HDEL the user from every stored version's factor hash; the versions that held one."""
    keys = [_text(k) for k in redis_client.scan_iter(match=FACTORS_PATTERN, count=1000)]
    if not keys:
        return []
    pipe = redis_client.pipeline(transaction=False)
    for key in keys:
        pipe.hdel(key, user_id)
    removed = pipe.execute()
    return sorted(
        key.removeprefix("reco:model:").removesuffix(":user_factors")
        for key, n in zip(keys, removed, strict=True)
        if n
    )
