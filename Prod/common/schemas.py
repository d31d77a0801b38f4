"""The shapes every API shares: ids, a product, and the catalogue filters with their limits.

The ALS engine (``/recommend``, ``/similar``, lists) and the chat (``/chat``, ``/search``) build
their responses and query parameters from these, so a field means the same and is checked the
same way wherever it appears: ``avg_rating`` is the average rating everywhere, an id follows
:data:`ID_PATTERN` everywhere, and ``category`` / ``brand`` / ``min_price`` / ``max_price`` /
``min_rating`` take the same values on every route that filters the catalogue.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, Field

from Prod.common.errors import InvalidInput

# ids as the source data has them (ASINs, numeric MovieLens ids, generated ids, e-mails)
ID_PATTERN = r"^[A-Za-z0-9_.:@+\-]{1,128}$"
ID_RULE = "1-128 letters, digits or _ . : @ + -"
UserIdStr = Annotated[str, Field(pattern=ID_PATTERN, description=f"User id: {ID_RULE}.")]
ItemIdStr = Annotated[str, Field(pattern=ID_PATTERN, description=f"Item id: {ID_RULE}.")]

# a category or brand filter value, and how many values a repeated one may have (any of them)
FILTER_TEXT_MAX = 200
FILTER_VALUES_MAX = 20
PRICE_MAX = 1_000_000.0  # a bound no catalogue price reaches; larger values are typos
RATING_MAX = 5.0


class Product(BaseModel):
    """A catalogue product as every API shows it."""

    item_id: str
    title: str | None = None
    brand: str | None = None
    category: str | None = None
    price: float | None = Field(None, description="Price; null when unknown.")
    avg_rating: float | None = Field(
        None, description="Average rating, 0-5; null when the product has no rating."
    )


# --- catalogue filters as query parameters (the same on /recommend, /similar and /search) -----

_FilterValues = list[Annotated[str, Field(min_length=1, max_length=FILTER_TEXT_MAX)]] | None
CategoryQuery = Annotated[
    _FilterValues,
    Query(
        max_length=FILTER_VALUES_MAX,
        description="Any of these categories (repeatable, case-insensitive).",
        examples=[["Sports"]],
    ),
]
BrandQuery = Annotated[
    _FilterValues,
    Query(
        max_length=FILTER_VALUES_MAX,
        description="Any of these brands (repeatable, case-insensitive).",
    ),
]
MinPriceQuery = Annotated[
    float | None,
    Query(ge=0, le=PRICE_MAX, allow_inf_nan=False, description="Price >= this (unknown: out)."),
]
MaxPriceQuery = Annotated[
    float | None,
    Query(ge=0, le=PRICE_MAX, allow_inf_nan=False, description="Price <= this (unknown: out)."),
]
MinRatingQuery = Annotated[
    float | None,
    Query(
        ge=0,
        le=RATING_MAX,
        allow_inf_nan=False,
        description="Average rating >= this (unknown: out).",
    ),
]
UserIdQuery = Annotated[str | None, Query(pattern=ID_PATTERN, description=f"User id: {ID_RULE}.")]


def check_price_range(min_price: float | None, max_price: float | None) -> None:
    """422 naming both bounds when the range is empty (``min_price`` above ``max_price``)."""
    if min_price is not None and max_price is not None and min_price > max_price:
        message = f"min_price ({min_price:g}) must not exceed max_price ({max_price:g})"
        raise InvalidInput(
            message,
            fields=[
                {"field": "query.min_price", "message": message},
                {"field": "query.max_price", "message": message},
            ],
        )
