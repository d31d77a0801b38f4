"""Request and response models of the chat API (with OpenAPI examples)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from Prod.chat_reco_engine.filters import ProductFilters
from Prod.common.schemas import ID_PATTERN, ID_RULE, Product

GeneratedBy = Literal["llm", "fallback", "guard"]  # guard: LLM answer not grounded
Scorer = Literal["cross-encoder", "bi-encoder"]


class ChatRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "message": "wireless headphones under $100, Sony or Bose",
                    "user_id": "u42",
                    "k": 5,
                },
                {"message": "cheaper ones?", "session_id": "8d0e4c1e-3b0a-4c0f-9d55-4f1d2a6c9b11"},
                {"message": "a gift card", "filters": {"max_price": 50, "min_rating": 4}},
            ]
        },
    )

    message: str = Field(
        ..., min_length=1, description="The customer's message (at most CHAT_MAX_MESSAGE_CHARS)."
    )
    session_id: UUID | None = Field(None, description="Continue this session; omit to start one.")
    user_id: str | None = Field(
        None,
        pattern=ID_PATTERN,
        description=f"Personalise with this user's ALS taste (the ALS engine's ids: {ID_RULE}).",
    )
    filters: ProductFilters | None = Field(
        None,
        description="Explicit filters; they win over filters read from the text. `brand` and "
        "`category` (single values) are accepted as shorthands for `brands` / `categories`.",
    )
    k: int = Field(5, ge=1, le=20, description="Products to recommend.")


class ProductOut(Product):
    title: str
    rating_count: int | None = Field(None, description="How many ratings `avg_rating` averages.")
    score: float = Field(
        ...,
        description="Rank score in [0, 1]: (1 - w) * relevance + w * affinity, both min-max "
        "scaled over this answer's candidates (w = PERSONALISATION_WEIGHT; relevance only "
        "without an ALS factor); compare within one answer only.",
    )
    relevance: float = Field(..., description="Raw cross-encoder (or bi-encoder) score.")
    affinity: float | None = Field(None, description="Scaled ALS affinity when personalised.")
    reason: str = Field(..., description="Sentence of the product text that best fits the query.")
    alternative: bool = Field(
        False,
        description="True when the product is not a match for what was asked (we don't sell that "
        "brand or kind of product, see `unmatched`) but the closest we have.",
    )


class Unmatched(BaseModel):
    """What the shopper asked for that the catalogue does not have."""

    brands: list[str] = Field(default_factory=list, description="Brands nobody sells here.")
    terms: list[str] = Field(
        default_factory=list, description="Words of the request no product matches."
    )
    filters: list[str] = Field(
        default_factory=list,
        description="Price / rating bounds that no product of this kind meets.",
    )


class NamedItem(BaseModel):
    """A liked item the message named ("I loved X"), matched to a catalogue title."""

    query: str = Field(..., description="The words of the message that named it.")
    item_id: str
    title: str = Field(..., description="The catalogue title it was matched to.")
    score: float = Field(
        ..., description="Match score: rapidfuzz blended with the MiniLM title cosine (~0-1.1)."
    )


class ChatResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "session_id": "8d0e4c1e-3b0a-4c0f-9d55-4f1d2a6c9b11",
                    "answer": "The Sony WH-CH520 ($59.99, 4.4/5) fits your budget...",
                    "products": [
                        {
                            "item_id": "P0001",
                            "title": "Sony WH-CH520",
                            "brand": "Sony",
                            "category": "Headphones",
                            "price": 59.99,
                            "avg_rating": 4.4,
                            "rating_count": 1200,
                            "score": 0.93,
                            "relevance": 7.1,
                            "affinity": None,
                            "reason": "Wireless on-ear headphones with 50 hours of battery.",
                            "alternative": False,
                        }
                    ],
                    "filters": {"brands": ["Sony", "Bose"], "max_price": 100.0},
                    "standalone_query": "wireless headphones Sony Bose",
                    "generated_by": "llm",
                    "reranker": "cross-encoder",
                    "personalisation": "none",
                    "turn": "new",
                    "unmatched": None,
                    "notes": [],
                },
                {
                    "session_id": "8d0e4c1e-3b0a-4c0f-9d55-4f1d2a6c9b11",
                    "answer": "We don't carry Dyson. The closest alternatives we have (1): ...",
                    "products": [
                        {
                            "item_id": "P0420",
                            "title": "Hearthstone Cordless Stick Vacuum",
                            "brand": "Hearthstone",
                            "category": "Home & Kitchen",
                            "price": 189.99,
                            "avg_rating": 4.2,
                            "rating_count": 310,
                            "score": 1.0,
                            "relevance": 0.61,
                            "affinity": None,
                            "reason": "Cordless stick vacuum with a 40-minute battery.",
                            "alternative": True,
                        }
                    ],
                    "filters": {},
                    "standalone_query": "Dyson vacuum",
                    "generated_by": "fallback",
                    "reranker": "bi-encoder",
                    "personalisation": "none",
                    "turn": "new",
                    "unmatched": {"brands": ["Dyson"], "terms": [], "filters": []},
                    "notes": [],
                },
            ]
        }
    )

    session_id: str
    answer: str
    products: list[ProductOut]
    filters: dict[str, Any] = Field(..., description="Filters actually applied (set fields only).")
    standalone_query: str = Field(..., description="The query after condensing a follow-up.")
    generated_by: GeneratedBy
    reranker: Scorer
    personalisation: str = Field(..., description="factor | fold_in | item_cosine | none | error")
    turn: Literal["refine", "new", "reset"] = Field(
        "new",
        description="How the message was read: a refinement of the current request, a "
        "new request, or a reset (see the README).",
    )
    unmatched: Unmatched | None = Field(
        None, description="What we don't have; the products are then alternatives."
    )
    notes: list[str] = Field(
        default_factory=list, description="Parts of the message that were ignored, and why."
    )
    named_items: list[NamedItem] = Field(
        default_factory=list,
        description="Liked items the message named, as understood; when any, the products are "
        "the items nearest them by ALS item factors, with a popularity prior (personalisation "
        "`item_cosine`), or their MiniLM neighbours.",
    )


class SearchResponse(BaseModel):
    query: str
    filters: dict[str, Any]
    products: list[ProductOut]
    reranker: Scorer
    personalisation: str


class HistoryMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str
    filters: dict[str, Any]
    product_ids: list[str]
    standalone_query: str | None = None
    generated_by: str | None = None
    created_at: datetime | None = None


class HistoryResponse(BaseModel):
    session_id: str
    user_id: str | None
    messages: list[HistoryMessage]


class DeleteResponse(BaseModel):
    session_id: str
    deleted_messages: int


class HealthResponse(BaseModel):
    """``status`` alone without the API key (when one is set); each part's detail with it."""

    status: Literal["ok", "degraded", "down"]
    embedding: dict[str, Any] | None = None
    reranker: dict[str, Any] | None = None
    llm: dict[str, Any] | None = None
    chroma: dict[str, Any] | None = None
    postgres: dict[str, Any] | None = None
    redis: dict[str, Any] | None = None


class TasteShare(BaseModel):
    """A category or brand of the user's taste."""

    name: str
    items: int = Field(..., description="Distinct products of it the user interacted with.")
    weight: float = Field(..., description="Summed event weight, recency-decayed.")
    share: float = Field(..., description="Of the user's total weight, 0-1.")


class PriceBand(BaseModel):
    """Weighted quartiles of the prices of the products the user interacted with (each one a
    price from the catalogue)."""

    low: float
    median: float
    high: float


class ProfileItem(Product):
    title: str
    source: Literal["history", "als"] = Field(
        ...,
        description="history: one of the user's strongest interactions; als: not interacted "
        "with, scored highest by the active ALS model among their top categories.",
    )
    event: str | None = Field(None, description="Strongest event (history items).")
    weight: float = Field(
        ..., description="Recency-decayed event weight (history) or raw ALS affinity (als)."
    )


class ProfileResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u00042",
                    "summary": "Mostly buys Books and Electronics (Anker, Kindle), usually "
                    "$8.99-$29.99; recently: Kindle Paperwhite, Anker PowerCore 10000.",
                    "generated_by": "fallback",
                    "model_version": "20260101T000000-ab12",
                    "events": 37,
                    "top_categories": [
                        {"name": "Books", "items": 12, "weight": 41.5, "share": 0.55},
                        {"name": "Electronics", "items": 5, "weight": 15.2, "share": 0.2},
                    ],
                    "top_brands": [
                        {"name": "Anker", "items": 3, "weight": 9.8, "share": 0.13},
                        {"name": "Kindle", "items": 2, "weight": 8.0, "share": 0.11},
                    ],
                    "price_band": {"low": 8.99, "median": 15.5, "high": 29.99},
                    "disliked_categories": [],
                    "sample_items": [
                        {
                            "item_id": "p00017",
                            "title": "Kindle Paperwhite",
                            "brand": "Kindle",
                            "category": "Electronics",
                            "price": 139.99,
                            "avg_rating": 4.6,
                            "source": "history",
                            "event": "purchase",
                            "weight": 8.0,
                        }
                    ],
                    "cached": False,
                    "generated_at": "2026-01-01T12:00:00Z",
                }
            ]
        }
    )

    user_id: str
    summary: str = Field(..., description="One or two sentences on the user's taste.")
    generated_by: GeneratedBy = Field(
        ...,
        description="llm: written by the LLM and passed the grounding guard; fallback: the "
        "template (no LLM answer, or nothing to describe); guard: the LLM's summary named "
        "something not in the facts, replaced by the template.",
    )
    model_version: str | None = Field(None, description="Active ALS model (None: none / Redis).")
    events: int = Field(..., description="The user's interactions (all events).")
    top_categories: list[TasteShare]
    top_brands: list[TasteShare]
    price_band: PriceBand | None = None
    disliked_categories: list[str] = Field(
        default_factory=list, description="Categories of products the user disliked."
    )
    sample_items: list[ProfileItem]
    cached: bool = Field(..., description="Served from the Redis cache.")
    generated_at: datetime
