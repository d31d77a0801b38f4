"""Conversation state in PostgreSQL (the turn decisions live in ``dialogue``).

A session only ever reads its own rows (every query is keyed by its random UUID ``session_id``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text

from Prod.chat_reco_engine.filters import ProductFilters
from Prod.common.db import session_scope
from Prod.common.errors import Conflict, NotFound
from Prod.common.models import ChatMessage, ChatSession

# --- persistence ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    role: str
    content: str
    standalone_query: str | None = None
    filters: dict[str, Any] = field(default_factory=dict)
    item_ids: list[str] = field(default_factory=list)
    generated_by: str | None = None
    created_at: datetime | None = None


@dataclass
class SessionState:
    """What a new turn needs from the session: carried filters and recent turns (oldest first)."""

    session_id: str
    user_id: str | None
    filters: ProductFilters
    turns: list[Turn]
    exists: bool

    @property
    def last_query(self) -> str | None:
        """The standalone query of the latest user turn (None after a reset)."""
        latest = next((t for t in reversed(self.turns) if t.role == "user"), None)
        return (latest.standalone_query or None) if latest else None

    @property
    def last_item_ids(self) -> list[str]:
        return next((t.item_ids for t in reversed(self.turns) if t.role == "assistant"), [])


def new_session_id() -> str:
    """Random, unguessable session id."""
    return str(uuid.uuid4())


def _turn(row: ChatMessage) -> Turn:
    return Turn(
        role=row.role,
        content=row.content,
        standalone_query=row.standalone_query,
        filters=dict(row.filters or {}),
        item_ids=list(row.item_ids or []),
        generated_by=row.generated_by,
        created_at=row.created_at,
    )


def load_state(
    database_url: str, *, session_id: str | None, user_id: str | None, turns: int
) -> SessionState:
    """The session's state, or a fresh one when ``session_id`` is None. Unknown id -> NotFound;
    a session bound to another user -> Conflict. Either way Postgres is reached first, so a turn
    whose exchange could not be stored fails (503) before any retrieval or answer."""
    if session_id is None:
        check_reachable(database_url)
        return SessionState(new_session_id(), user_id, ProductFilters(), [], exists=False)
    with session_scope(database_url) as db:
        row = db.get(ChatSession, session_id)
        if row is None:
            raise NotFound(f"chat session {session_id} not found", session_id=session_id)
        if user_id is not None and row.user_id is not None and row.user_id != user_id:
            raise Conflict("this chat session belongs to another user", session_id=session_id)
        recent = db.scalars(
            select(ChatMessage)
            .where(ChatMessage.session_id == session_id)
            .order_by(ChatMessage.id.desc())
            .limit(turns * 2)
        ).all()
        return SessionState(
            session_id=session_id,
            user_id=row.user_id or user_id,
            filters=ProductFilters.model_validate(row.filters or {}),
            turns=[_turn(m) for m in reversed(recent)],
            exists=True,
        )


def check_reachable(database_url: str) -> None:
    """One round trip; an unreachable server raises InfraError (store ``postgres``)."""
    with session_scope(database_url) as db:
        db.execute(text("select 1"))


def save_exchange(
    database_url: str,
    *,
    state: SessionState,
    user_text: str,
    standalone_query: str,
    filters: ProductFilters,
    answer: str,
    item_ids: list[str],
    generated_by: str,
    named_ids: list[str] | None = None,
) -> None:
    """Persist the user turn, the assistant turn and the session's filters in one transaction.
    ``named_ids``: items the user named as liked (named_items.py), kept on the user turn."""
    applied = filters.set_fields()
    with session_scope(database_url) as db:
        session = db.get(ChatSession, state.session_id)
        if session is None:
            session = ChatSession(session_id=state.session_id, user_id=state.user_id)
            db.add(session)
        elif session.user_id is None and state.user_id is not None:
            session.user_id = state.user_id
        session.filters = applied
        session.updated_at = func.now()
        db.flush()
        db.add_all(
            [
                ChatMessage(
                    session_id=state.session_id,
                    role="user",
                    content=user_text,
                    standalone_query=standalone_query,
                    filters=applied,
                    item_ids=list(named_ids or []),
                ),
                ChatMessage(
                    session_id=state.session_id,
                    role="assistant",
                    content=answer,
                    filters=applied,
                    item_ids=item_ids,
                    generated_by=generated_by,
                ),
            ]
        )


def read_history(database_url: str, session_id: str, limit: int) -> tuple[str | None, list[Turn]]:
    """(user_id, up to ``limit`` most recent turns oldest first). Unknown id -> NotFound."""
    with session_scope(database_url) as db:
        session = db.get(ChatSession, session_id)
        if session is None:
            raise NotFound(f"chat session {session_id} not found", session_id=session_id)
        rows = db.scalars(
            select(ChatMessage)
            .where(ChatMessage.session_id == session_id)
            .order_by(ChatMessage.id.desc())
            .limit(limit)
        ).all()
        return session.user_id, [_turn(r) for r in reversed(rows)]


def delete_session(database_url: str, session_id: str) -> int:
    """Delete a session and its messages; returns the number of messages deleted."""
    with session_scope(database_url) as db:
        session = db.get(ChatSession, session_id)
        if session is None:
            raise NotFound(f"chat session {session_id} not found", session_id=session_id)
        deleted = db.execute(delete(ChatMessage).where(ChatMessage.session_id == session_id))
        db.delete(session)
        return deleted.rowcount or 0
