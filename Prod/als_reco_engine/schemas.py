"""Request and response models of the serving API (documented in OpenAPI with examples)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from Prod.common.canonical_format import EVENTS
from Prod.common.schemas import ID_PATTERN, Product
from Prod.common.schemas import ItemIdStr as ItemId
from Prod.common.timestamps import RULE as TIMESTAMP_RULE
from Prod.common.timestamps import parse_timestamp

K_MAX = 100  # most items one /recommend or /similar answer holds
EventKind = Literal[EVENTS]  # view, click, add_to_cart, purchase, rating, dislike
Strategy = Literal["als", "fold_in", "popular"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


SCORE_DOC = (
    "Higher is better; compare scores within one answer only, their scale depends on "
    "`strategy`. als: dot product of the user's stored ALS factor and the item's factor (the "
    "model's predicted preference, mostly 0-1); fold_in: the same dot product with a factor "
    "solved now from the user's interactions; popular: the item's summed interaction weight "
    "(view 1 ... purchase 8) over the last 30 days before the newest event (all time when that "
    "is thin; rating_count x avg_rating with no interactions), a count, often in the thousands. "
    "Items like one the user disliked are lowered by up to the answer's score range. "
    "/similar: cosine of the two items' ALS factors, -1..1. null when the active model does "
    "not know the item (stored lists). The order of `items` is the rank."
)


class ScoredItem(Product):
    score: float | None = Field(description=SCORE_DOC)


EXPLAIN_DOC = (
    "Add to each item `explanation`: the user's past items that contributed most to its ALS "
    "score (Hu, Koren & Volinsky 2008, section 5), each with its share of the score's total "
    "absolute contribution; null for popular and content items."
)


class Contribution(BaseModel):
    item_id: str
    title: str | None
    share: float = Field(description="Share of the score's total absolute contribution (0-1).")


class RecommendedItem(ScoredItem):
    strategy: Literal["als", "fold_in", "content"] | None = Field(
        None,
        description="Present when fresh items are mixed in (FRESH_SHARE): content for a product "
        "without an ALS factor yet, chosen by MiniLM similarity to what the user liked (`score` "
        "is that cosine), else the answer's strategy.",
    )
    explanation: list[Contribution] | None = Field(
        None, description="With ?explain=true: " + EXPLAIN_DOC
    )


class RecommendationOut(BaseModel):
    user_id: str
    strategy: Strategy = Field(
        description="als: stored user factor; fold_in: factor solved now "
        "from the user's interactions; popular: recent popularity."
    )
    model_version: str | None = Field(description="Active ALS model version, null when none.")
    items: list[RecommendedItem]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u00042",
                    "strategy": "als",
                    "model_version": "20250101T120000.000Z-3fa9c1",
                    "items": [
                        {
                            "item_id": "i01234",
                            "score": 0.8731,
                            "title": "Trail running shoes",
                            "brand": "Acme",
                            "category": "Sports",
                            "price": 89.9,
                            "avg_rating": 4.4,
                            "explanation": [
                                {"item_id": "i00777", "title": "Running socks", "share": 0.41},
                                {"item_id": "i00912", "title": "Sports watch", "share": 0.22},
                            ],
                        }
                    ],
                }
            ]
        }
    )


class SimilarOut(BaseModel):
    item_id: str
    strategy: Literal["als", "content"] = Field(
        description="als: by ALS item factors; content: the item has no ALS factor (a cold "
        "item), neighbours by MiniLM embedding of the product text (the products collection)."
    )
    model_version: str | None
    items: list[ScoredItem] = Field(
        description="Best first; `score` is the cosine of the two items' ALS factors, or of "
        "their MiniLM embeddings for strategy content (-1..1)."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "item_id": "i01234",
                    "strategy": "als",
                    "model_version": "20250101T120000.000Z-3fa9c1",
                    "items": [
                        {
                            "item_id": "i04321",
                            "score": 0.93,
                            "title": "Trail socks",
                            "brand": "Acme",
                            "category": "Sports",
                            "price": 9.5,
                            "avg_rating": 4.1,
                        }
                    ],
                }
            ]
        }
    )


class InteractionIn(_Strict):
    """One user-item event. ``weight`` defaults by event (view 1, click 2, add_to_cart 4,
    purchase 8, rating = the rating, dislike 1); ``timestamp`` defaults to now (naive = UTC).

    ``dislike``, and a ``rating`` below ``NEGATIVE_RATING_BELOW`` (default 3), are negative
    feedback: no confidence in the model, the item is never recommended to the user again, and
    similar items are pushed down (the latest rating or dislike of a pair decides)."""

    user_id: str = Field(pattern=ID_PATTERN, examples=["u00042"])
    item_id: str = Field(pattern=ID_PATTERN, examples=["i01234"])
    event: EventKind = Field(examples=["purchase"])
    rating: float | None = Field(None, ge=1, le=5, description="Required when event=rating.")
    weight: float | None = Field(None, gt=0, le=1_000_000)
    timestamp: datetime | None = Field(
        None, examples=["2025-01-01T12:00:00Z"], description=f"Event time: {TIMESTAMP_RULE}."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u00042",
                    "item_id": "i01234",
                    "event": "purchase",
                    "timestamp": "2025-01-01T12:00:00Z",
                },
            ]
        }
    )

    @field_validator("timestamp", mode="before")
    @classmethod
    def _check_timestamp(cls, value: object) -> datetime | None:
        # the CSV ingest's rule, not pydantic's (which reads numbers above 2e10 as milliseconds)
        return None if value is None else parse_timestamp(value)

    @model_validator(mode="after")
    def _check(self) -> InteractionIn:
        if self.event == "rating" and self.rating is None:
            raise ValueError("rating is required when event is 'rating'")
        if self.event != "rating" and self.rating is not None:
            raise ValueError(f"rating must be empty for event {self.event!r}")
        return self


class InteractionBatch(_Strict):
    """A batch of events, stored all or nothing."""

    events: list[InteractionIn] = Field(min_length=1, max_length=1000)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        {"user_id": "u00042", "item_id": "i01234", "event": "view"},
                        {"user_id": "u00042", "item_id": "i01234", "event": "rating", "rating": 5},
                    ]
                }
            ]
        }
    )


class InteractionsOut(BaseModel):
    accepted: int = Field(description="Events stored now.")
    duplicates: int = Field(description="Events already stored (same user, item, event, time).")
    created_users: list[str] = Field(description="Users that did not exist before.")
    user_ids: list[str]


class HistoryEntry(BaseModel):
    id: int
    user_id: str
    served_at: datetime
    strategy: str
    model_version: str | None
    items: list[ScoredItem]
    request: dict[str, Any]


class HistoryOut(BaseModel):
    user_id: str | None
    limit: int
    offset: int
    total: int
    has_more: bool
    entries: list[HistoryEntry]


class ListItem(ScoredItem):
    position: int


class StoredListOut(BaseModel):
    user_id: str
    strategy: Strategy | None = Field(
        None,
        description="Strategy that scored the stored list (the scale of its scores); null for "
        "an empty list or one stored before the strategy was recorded.",
    )
    model_version: str | None
    updated_at: datetime | None
    items: list[ListItem]


class ListItemsIn(_Strict):
    item_ids: list[ItemId] = Field(min_length=1, max_length=500, examples=[["i01234", "i04321"]])


class ListRemovalOut(StoredListOut):
    removed: list[str] = Field(description="Products that were in the list and are gone now.")
    suppressed: list[str] = Field(description="Products never recommended to this user again.")


class ListReplaceOut(StoredListOut):
    skipped_suppressed: list[str] = Field(
        description="Given products left out because the user suppressed them; restore them "
        "with DELETE /api/v1/lists/{user_id}/suppressions first."
    )


class SuppressionRestoreOut(BaseModel):
    user_id: str
    restored: list[str] = Field(description="Products that may be recommended again.")
    not_suppressed: list[str] = Field(description="Given products that were not suppressed.")


class StatusOut(BaseModel):
    status: Literal["ok", "degraded", "no_model"]
    model_version: str | None
    active_version: str | None
    item_count: int
    factors: int | None
    trained_at: str | None
    loaded_at: datetime | None
    index_age_s: float | None
    last_check_at: datetime | None
    last_error: str | None
    strategies: dict[str, bool]
    popularity: dict[str, Any] | None
    stores: dict[str, bool]
    history: dict[str, int]
    cached_profiles: int
    ann: dict[str, Any] | None = Field(
        None,
        description="Approximate top-k (ANN_MIN_ITEMS): state off, building or ready; per index "
        "(recommend, similar) its build_s, bytes and nprobe.",
    )
    item_index: dict[str, Any] | None = Field(
        None,
        description="The loaded version's item factors: source (redis, or chroma for older "
        "versions), its Chroma collection and that collection's state: filling (written after the "
        "switch; nothing in serving reads it), complete or failed.",
    )
    experiment: dict[str, Any] | None = Field(
        None,
        description="The running A/B test (`reco ab start`): experiment_id, version_b, share_b, "
        "version_b_loaded; null when none runs.",
    )


class HealthOut(BaseModel):
    status: Literal["ok"]
