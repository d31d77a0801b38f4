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
    personalisation: str = Field(..., description="factor | fold_in | none | error")
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
