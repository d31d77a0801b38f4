"""Request and response models of the catalogue routes (items, users, forgetting a user).

Only the JSON shape is checked here (ids, types, sizes); the values follow the ingest's row
rules (:mod:`Prod.common.items`: title not empty, price >= 0, avg_rating 0-5,
rating_count a whole number >= 0, no duplicate id), checked by :mod:`.catalogue` with the
ingest's messages, so a record the ingest refuses is refused here in the same words.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from Prod.common.schemas import ItemIdStr, UserIdStr

BATCH_MAX = 500  # records one request upserts (embedding 500 products on a CPU: ~2 s)
TEXT_MAX = 20_000
INT32_MAX = 2**31 - 1  # the item table's rating_count column

ITEM_EXAMPLE = {
    "item_id": "p90001",
    "title": "Summit Ridge Trail Running Shoes",
    "brand": "Summit Ridge",
    "category": "Sports & Outdoors",
    "price": 89.99,
    "avg_rating": 4.5,
    "rating_count": 12,
    "description": "Lightweight trail running shoes with a grippy outsole and a padded collar.",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ItemIn(_Strict):
    """One product, created or replaced whole (a field left out is unknown, as an empty field
    of ``items.csv``)."""

    item_id: ItemIdStr
    title: str = Field(max_length=TEXT_MAX, description="Required, not empty.")
    brand: str | None = Field(None, max_length=TEXT_MAX)
    category: str | None = Field(None, max_length=TEXT_MAX)
    price: float | None = Field(None, description=">= 0; null when unknown.")
    avg_rating: float | None = Field(None, description="0-5; null when unknown.")
    rating_count: float | None = Field(
        None, le=INT32_MAX, description="A whole number >= 0 (default 0)."
    )
    description: str | None = Field(None, max_length=TEXT_MAX)
    image_url: str | None = Field(None, max_length=2_000)

    model_config = ConfigDict(json_schema_extra={"examples": [ITEM_EXAMPLE]})


ITEM_BATCH_EXAMPLE = {
    "items": [
        ITEM_EXAMPLE,
        {
            "item_id": "p90002",
            "title": "Summit Ridge Merino Running Socks",
            "brand": "Summit Ridge",
            "category": "Sports & Outdoors",
            "price": 14.5,
        },
    ]
}
USER_EXAMPLE = {"user_id": "u90001", "name": "Ada"}
USER_BATCH_EXAMPLE = {"users": [USER_EXAMPLE, {"user_id": "u90002"}]}


class ItemBatch(_Strict):
    """Products upserted all or nothing: one bad record and nothing is written."""

    items: list[ItemIn] = Field(min_length=1, max_length=BATCH_MAX)

    model_config = ConfigDict(json_schema_extra={"examples": [ITEM_BATCH_EXAMPLE]})


class ItemsUpsertOut(BaseModel):
    created: list[str] = Field(description="Items that did not exist before.")
    updated: list[str] = Field(description="Items replaced by the given records.")
    embedded: int = Field(description="Products embedded and written to the Chroma collection.")
    collection: str = Field(description="The Chroma collection the chat searches.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"created": ["p90001"], "updated": [], "embedded": 1, "collection": "products"}
            ]
        }
    )


class ItemIdsIn(_Strict):
    item_ids: list[ItemIdStr] = Field(min_length=1, max_length=BATCH_MAX)

    model_config = ConfigDict(json_schema_extra={"examples": [{"item_ids": ["p90001", "p90002"]}]})


class ItemsDeleteOut(BaseModel):
    deleted: list[str] = Field(description="Items gone from recommendations, lists and chat.")
    items: int = Field(description="Rows removed from the item table.")
    interactions: int = Field(description="Interactions with the items removed.")
    list_entries: int = Field(description="Stored-list entries removed (lists renumbered).")
    suppressions: int = Field(description="Suppressions of the items removed.")
    products: int = Field(description="Products removed from the Chroma collection.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "deleted": ["p90001"],
                    "items": 1,
                    "interactions": 3,
                    "list_entries": 1,
                    "suppressions": 0,
                    "products": 1,
                }
            ]
        }
    )


class UserIn(_Strict):
    user_id: UserIdStr
    name: str | None = Field(None, max_length=TEXT_MAX)

    model_config = ConfigDict(json_schema_extra={"examples": [USER_EXAMPLE]})


class UserBatch(_Strict):
    users: list[UserIn] = Field(min_length=1, max_length=BATCH_MAX)

    model_config = ConfigDict(json_schema_extra={"examples": [USER_BATCH_EXAMPLE]})


class UsersUpsertOut(BaseModel):
    created: list[str]
    updated: list[str]

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"created": ["u90001"], "updated": ["u00042"]}]}
    )


class PostgresForgotten(BaseModel):
    interactions: int
    recommendations_served: int = Field(description="Rows of the served-recommendation history.")
    list_items: int
    suppressions: int
    chat_sessions: int
    chat_messages: int
    user: int = Field(description="1 when the user row existed.")


class RedisForgotten(BaseModel):
    user_factors: int = Field(description="Factors removed, one per model version holding one.")
    model_versions: list[str]


class ForgetOut(BaseModel):
    user_id: str
    postgres: PostgresForgotten
    redis: RedisForgotten
    caches: str = Field(description="Cached profile and fold-in factor: always cleared.")
    training_in_progress: bool = Field(
        description="A training run was in progress: it may publish the user's factor in its "
        "new version (it read the data before this call); forget again after it finishes."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u00042",
                    "postgres": {
                        "interactions": 57,
                        "recommendations_served": 3,
                        "list_items": 10,
                        "suppressions": 1,
                        "chat_sessions": 1,
                        "chat_messages": 4,
                        "user": 1,
                    },
                    "redis": {
                        "user_factors": 2,
                        "model_versions": [
                            "20250101T120000.000Z-3fa9c1",
                            "20250102T120000.000Z-7be210",
                        ],
                    },
                    "caches": "cleared",
                    "training_in_progress": False,
                }
            ]
        }
    )
