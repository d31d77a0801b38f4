"""SQLAlchemy 2.0 models: the platform's relational schema in PostgreSQL.

Tables are singular snake_case; ids are text (``user_id``/``item_id`` as the source data has
them: ASINs, MovieLens ids, generated ids); timestamps end in ``_at`` and are timezone-aware.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JsonDoc = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


# --- catalogue and behaviour ----------------------------------------------------------------


class User(Base):
    __tablename__ = "user"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()


class Item(Base):
    __tablename__ = "item"

    item_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    brand: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    price: Mapped[float | None] = mapped_column(Float)
    avg_rating: Mapped[float | None] = mapped_column(Float)
    rating_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    description: Mapped[str | None] = mapped_column(Text)
    image_url: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = _now()


class Interaction(Base):
    """One user-item event. ``id`` grows with arrival and is the trainer's data watermark."""

    __tablename__ = "interaction"
    __table_args__ = (
        # re-ingesting the same file must not duplicate events
        UniqueConstraint("user_id", "item_id", "event", "occurred_at", name="uq_interaction_event"),
        Index("ix_interaction_user_id_occurred_at", "user_id", "occurred_at"),
        Index("ix_interaction_occurred_at", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user.user_id"), nullable=False)
    item_id: Mapped[str] = mapped_column(ForeignKey("item.item_id"), nullable=False)
    event: Mapped[str] = mapped_column(String(32), nullable=False)
    rating: Mapped[float | None] = mapped_column(Float)
    weight: Mapped[float] = mapped_column(Float, nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[datetime] = _now()


# --- models ---------------------------------------------------------------------------------


class ModelVersion(Base):
    """Registry of trained ALS models; mirrors the active-version pointer kept in Redis."""

    __tablename__ = "model_version"

    version_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # training -> published -> active -> retired; or failed
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = _now()
    trained_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    data_watermark: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    n_users: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    n_items: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    n_interactions: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    params: Mapped[dict[str, Any]] = mapped_column(JsonDoc, nullable=False, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JsonDoc, nullable=False, default=dict)
    durations: Mapped[dict[str, Any]] = mapped_column(JsonDoc, nullable=False, default=dict)
    error: Mapped[str | None] = mapped_column(Text)


# --- serving --------------------------------------------------------------------------------


class RecommendationLog(Base):
    """Each recommendation response served, for ``GET /history``."""

    __tablename__ = "recommendation_log"
    __table_args__ = (Index("ix_recommendation_log_user_id_served_at", "user_id", "served_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(128), nullable=False)
    served_at: Mapped[datetime] = _now()
    strategy: Mapped[str] = mapped_column(String(16), nullable=False)
    model_version: Mapped[str | None] = mapped_column(String(64))
    item_ids: Mapped[list[str]] = mapped_column(JsonDoc, nullable=False)
    scores: Mapped[list[float]] = mapped_column(JsonDoc, nullable=False)
    request: Mapped[dict[str, Any]] = mapped_column(JsonDoc, nullable=False, default=dict)


class RecommendationListItem(Base):
    """A customer's stored recommendation list, one row per product."""

    __tablename__ = "recommendation_list_item"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("item.item_id"), primary_key=True)
    score: Mapped[float] = mapped_column(Float, nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    model_version: Mapped[str | None] = mapped_column(String(64))
    strategy: Mapped[str | None] = mapped_column(String(16))  # als, fold_in or popular
    updated_at: Mapped[datetime] = _now()


class SuppressedItem(Base):
    """Products a customer removed from their list: never recommended to them again."""

    __tablename__ = "suppressed_item"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = _now()


# --- chat -----------------------------------------------------------------------------------


class ChatSession(Base):
    __tablename__ = "chat_session"

    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(128))
    # filters carried over between turns
    filters: Mapped[dict[str, Any]] = mapped_column(JsonDoc, nullable=False, default=dict)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class ChatMessage(Base):
    __tablename__ = "chat_message"
    __table_args__ = (Index("ix_chat_message_session_id_id", "session_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("chat_session.session_id", ondelete="CASCADE"), nullable=False
    )
    role: Mapped[str] = mapped_column(String(16), nullable=False)  # user | assistant
    content: Mapped[str] = mapped_column(Text, nullable=False)
    standalone_query: Mapped[str | None] = mapped_column(Text)
    filters: Mapped[dict[str, Any]] = mapped_column(JsonDoc, nullable=False, default=dict)
    item_ids: Mapped[list[str]] = mapped_column(JsonDoc, nullable=False, default=list)
    generated_by: Mapped[str | None] = mapped_column(String(16))  # llm | fallback
    created_at: Mapped[datetime] = _now()


class SchemaMigration(Base):
    __tablename__ = "schema_migration"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    applied_at: Mapped[datetime] = _now()
