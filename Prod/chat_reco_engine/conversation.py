"""Conversation state in PostgreSQL and the deterministic condensing of follow-up messages.

A session only ever reads its own rows (every query is keyed by its random UUID ``session_id``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select

from Prod.chat_reco_engine.filters import (
    ProductFilters,
    Vocabulary,
    median_or_none,
    parse_text,
)
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
        return next((t.standalone_query for t in reversed(self.turns)
                     if t.role == "user" and t.standalone_query), None)  # fmt: skip

    @property
    def last_item_ids(self) -> list[str]:
        return next((t.item_ids for t in reversed(self.turns) if t.role == "assistant"), [])


def new_session_id() -> str:
    """Random, unguessable session id."""
    return str(uuid.uuid4())


def _turn(row: ChatMessage) -> Turn:
    return Turn(
        role=row.role, content=row.content, standalone_query=row.standalone_query,
        filters=dict(row.filters or {}), item_ids=list(row.item_ids or []),
        generated_by=row.generated_by, created_at=row.created_at,
    )  # fmt: skip


def load_state(
    database_url: str, *, session_id: str | None, user_id: str | None, turns: int
) -> SessionState:
    """The session's state, or a fresh one when ``session_id`` is None. Unknown id -> NotFound;
    a session bound to another user -> Conflict."""
    if session_id is None:
        return SessionState(new_session_id(), user_id, ProductFilters(), [], exists=False)
    with session_scope(database_url) as db:
        row = db.get(ChatSession, session_id)
        if row is None:
            raise NotFound(f"chat session {session_id} not found", session_id=session_id)
        if user_id is not None and row.user_id is not None and row.user_id != user_id:
            raise Conflict("this chat session belongs to another user", session_id=session_id)
        recent = db.scalars(
            select(ChatMessage).where(ChatMessage.session_id == session_id)
            .order_by(ChatMessage.id.desc()).limit(turns * 2)
        ).all()  # fmt: skip
        return SessionState(
            session_id=session_id,
            user_id=row.user_id or user_id,
            filters=ProductFilters.model_validate(row.filters or {}),
            turns=[_turn(m) for m in reversed(recent)],
            exists=True,
        )


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
) -> None:
    """Persist the user turn, the assistant turn and the session's filters in one transaction."""
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
        db.add_all([
            ChatMessage(session_id=state.session_id, role="user", content=user_text,
                        standalone_query=standalone_query, filters=applied, item_ids=[]),
            ChatMessage(session_id=state.session_id, role="assistant", content=answer,
                        filters=applied, item_ids=item_ids, generated_by=generated_by),
        ])  # fmt: skip


def read_history(database_url: str, session_id: str, limit: int) -> tuple[str | None, list[Turn]]:
    """(user_id, up to ``limit`` most recent turns oldest first). Unknown id -> NotFound."""
    with session_scope(database_url) as db:
        session = db.get(ChatSession, session_id)
        if session is None:
            raise NotFound(f"chat session {session_id} not found", session_id=session_id)
        rows = db.scalars(
            select(ChatMessage).where(ChatMessage.session_id == session_id)
            .order_by(ChatMessage.id.desc()).limit(limit)
        ).all()  # fmt: skip
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


# --- condensing follow-ups ------------------------------------------------------------------

_CHEAPER = re.compile(
    r"\b(?:cheaper|less\s+expensive|lower\s+price[sd]?|more\s+affordable|inexpensive|"
    r"too\s+expensive|budget)\b", re.I,
)  # fmt: skip
_PRICIER = re.compile(
    r"\b(?:more\s+expensive|pricier|higher[\s-]end|premium|fancier|too\s+cheap)\b", re.I
)
_BETTER_RATED = re.compile(
    r"\b(?:better|higher)[\s-]+(?:rated|reviewed|ratings?|reviews?)\b", re.I
)
_RESET = re.compile(
    r"\b(?:start\s+over|new\s+search|reset|clear\s+(?:the\s+)?filters|"
    r"forget\s+(?:it|everything|the\s+filters))\b", re.I,
)  # fmt: skip
_ANY_BRAND = re.compile(
    r"\b(?:any\s+brand|other\s+brands?|all\s+brands|whatever\s+brand|"
    r"(?:don'?t|do\s+not)\s+care\s+about\s+(?:the\s+)?brand)\b", re.I,
)  # fmt: skip
_ANY_PRICE = re.compile(
    r"\b(?:any\s+price|no\s+budget|price\s+doesn'?t\s+matter|forget\s+the\s+price|"
    r"(?:don'?t|do\s+not)\s+care\s+about\s+(?:the\s+)?price)\b", re.I,
)  # fmt: skip
_FOLLOW_UP = re.compile(
    r"^\s*(?:what|how)\s+about\b|^\s*(?:any|anything|something)\s+(?:from|by|in|with)\b|"
    r"^\s*(?:and|or|but|also)\b|\b(?:instead|only|ones?|those|these|them|similar|"
    r"alternatives?|more\s+options|others?|else|same)\b", re.I,
)  # fmt: skip
_FILLER = re.compile(
    r"\b(?:what|how|about|any|anything|something|from|by|show|me|some|the|a|an|ones?|those|"
    r"these|them|please|instead|only|and|or|but|also|i|want|need|like|would|could|you|do|"
    r"have|else|options?|more|other|others|similar|alternatives?|same|with|in|of|for|is|"
    r"are|there|can|let|see|find|get|just|cheaper|less|expensive|pricier|premium|better|"
    r"higher|rated|reviewed|lower|price|prices|affordable|budget|too|cheap|brand|brands)\b",
    re.I,
)


@dataclass(frozen=True)
class Condensed:
    """A standalone query and the filter changes this message makes."""

    query: str
    changes: dict[str, Any]
    carried: ProductFilters
    follow_up: bool
    suspicious: bool


def _content_words(text: str) -> list[str]:
    stripped = _FILLER.sub(" ", re.sub(r"[^\w\s&'-]", " ", text))
    return stripped.split()


def _derived_changes(
    message: str, carried: ProductFilters, previous_products: list[dict[str, Any]]
) -> dict[str, Any]:
    """Relative requests ("cheaper", "better rated", "any brand") -> concrete filter values."""
    changes: dict[str, Any] = {}
    prices = median_or_none(p.get("price") for p in previous_products)
    if _CHEAPER.search(message):
        cap = round(prices - 0.01, 2) if prices else None
        if carried.max_price is not None:
            cap = min(cap, carried.max_price * 0.99) if cap else carried.max_price * 0.8
        if cap is not None and cap >= 0:
            changes["max_price"] = round(cap, 2)
    elif _PRICIER.search(message) and prices:
        changes["min_price"] = round(prices + 0.01, 2)
    if _BETTER_RATED.search(message):
        ratings = median_or_none(p.get("avg_rating") for p in previous_products) or 0.0
        floor = max(ratings, (carried.min_rating or 0.0) + 0.5)
        changes["min_rating"] = round(min(5.0, floor), 1)
    if _ANY_BRAND.search(message):
        changes.update(brands=[], exclude_brands=[])
    if _ANY_PRICE.search(message):
        changes.update(min_price=None, max_price=None)
    return changes


def condense(
    message: str,
    *,
    previous_query: str | None,
    carried: ProductFilters,
    previous_products: list[dict[str, Any]],
    vocabulary: Vocabulary,
) -> Condensed:
    """Turn a message into a standalone query plus filter changes, deterministically.

    "cheaper ones?" after "sony headphones under $100" -> query "sony headphones", max_price
    below the previous results' median price; "what about Sony?" -> same topic, brands=[Sony].
    A new category drops carried brands (brands rarely span categories); "start over" clears all.
    """
    parsed = parse_text(message, vocabulary)
    if parsed.suspicious:
        # instructions hidden in a message are data: no filter changes, no new topic words
        return Condensed(previous_query or message, {}, carried, bool(previous_query), True)
    if _RESET.search(message):
        carried, previous_query = ProductFilters(), None
    changes = dict(parsed.filters)
    content = _content_words(parsed.remainder)
    has_cue = bool(
        _FOLLOW_UP.search(message) or _CHEAPER.search(message) or _PRICIER.search(message)
        or _BETTER_RATED.search(message) or _ANY_BRAND.search(message)
        or _ANY_PRICE.search(message)
    )  # fmt: skip
    follow_up = previous_query is not None and (
        has_cue or ("categories" not in changes and len(content) <= 3)
    )
    if follow_up:
        changes = {**_derived_changes(message, carried, previous_products), **changes}
        query = _join_unique(previous_query or "", " ".join(content))
    else:
        query = " ".join(parsed.remainder.split()) or message.strip()
    new_categories = set(changes.get("categories") or [])
    if new_categories and new_categories != set(carried.categories) and "brands" not in changes:
        changes["brands"] = []
    return Condensed(query, changes, carried, follow_up, False)


def _join_unique(base: str, extra: str) -> str:
    seen = {w.lower() for w in base.split()}
    added = [w for w in extra.split() if w.lower() not in seen]
    return " ".join([*base.split(), *added]).strip()
