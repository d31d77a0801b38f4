"""HTTP routes of the serving API: parse, call one service function, return the schema.

The two hot routes (``/recommend``, ``/similar``) are ``async`` (no thread-pool hop) and return
orjson-encoded bytes directly: their ``response_model`` documents the shape without paying
pydantic's response validation on every request. ``/recommend`` also has a fast path for
canonical requests (:mod:`Prod.als_reco_engine.fast_path`), installed by ``main.create_app``.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.security import APIKeyHeader
from pydantic import ValidationError

from Prod.als_reco_engine import lists
from Prod.als_reco_engine.history import read_history_page
from Prod.als_reco_engine.index import ItemFilters
from Prod.als_reco_engine.interactions import record_interactions
from Prod.als_reco_engine.schemas import (
    EXPLAIN_DOC,
    ID_PATTERN,
    K_MAX,
    HealthOut,
    HistoryOut,
    InteractionBatch,
    InteractionIn,
    InteractionsOut,
    ListItemsIn,
    ListRemovalOut,
    ListReplaceOut,
    RecommendationOut,
    SimilarOut,
    StatusOut,
    StoredListOut,
    SuppressionRestoreOut,
)
from Prod.als_reco_engine.service import RecoEngine, status_code
from Prod.common.api import require_api_key
from Prod.common.errors import InvalidInput
from Prod.common.schemas import (
    BrandQuery,
    CategoryQuery,
    MaxPriceQuery,
    MinPriceQuery,
    MinRatingQuery,
    check_price_range,
)

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def check_api_key(
    request: Request, api_key: Annotated[str | None, Depends(_api_key_header)] = None
) -> None:
    """The shared API-key check, run inline (a sync dependency would cost a thread hop)."""
    require_api_key(request.app.state.settings, api_key)


async def get_engine(request: Request) -> RecoEngine:
    return request.app.state.engine


EngineDep = Annotated[RecoEngine, Depends(get_engine)]
UserId = Annotated[str, Path(pattern=ID_PATTERN, examples=["u00042"])]
ItemIdPath = Annotated[str, Path(pattern=ID_PATTERN, examples=["i01234"])]
TopK = Annotated[int, Query(ge=1, le=K_MAX, description=f"How many items (1..{K_MAX}).")]
#: the route the fast path (:mod:`Prod.als_reco_engine.fast_path`) answers for
RECOMMEND_ROUTE_NAME = "read_recommendations"
_ERRORS = {
    401: {"description": "Missing or invalid X-API-Key"},
    422: {"description": "Invalid input; the body names the field"},
}

health_router = APIRouter(tags=["ops"])
router = APIRouter(prefix="/api/v1", dependencies=[Depends(check_api_key)], responses=_ERRORS)


def _json(content: dict, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


def _filters(
    category: list[str] | None,
    brand: list[str] | None,
    min_price: float | None,
    max_price: float | None,
    min_rating: float | None,
) -> ItemFilters:
    """Repeated ``category`` / ``brand`` mean any of them, as on the chat's ``/search``; an
    empty price range is a 422 naming both bounds."""
    check_price_range(min_price, max_price)
    return ItemFilters(
        categories=category or (),
        brands=brand or (),
        min_price=min_price,
        max_price=max_price,
        min_rating=min_rating,
    )


@health_router.get("/health", response_model=HealthOut, summary="Liveness (no API key)")
async def read_health() -> dict:
    return {"status": "ok"}


@router.get(
    "/status",
    response_model=StatusOut,
    tags=["ops"],
    summary="Active model, index freshness, strategies available, each store",
    responses={503: {"model": StatusOut, "description": "No strategy can serve"}},
)
def read_status(engine: EngineDep, response: Response) -> dict:
    """HTTP 200 while some strategy serves (``status`` ok, degraded or no_model, with each
    store's state), 503 when none can."""
    report = engine.status()
    response.status_code = status_code(report)
    return report


@router.get(
    "/recommend/{user_id}",
    response_model=RecommendationOut,
    tags=["recommend"],
    summary="Top-k items for a user",
    responses={503: {"description": "Nothing to serve"}},
)
async def read_recommendations(
    engine: EngineDep,
    user_id: UserId,
    k: TopK = 10,
    exclude_seen: Annotated[bool, Query(description="Drop items the user interacted with.")] = True,
    category: CategoryQuery = None,
    brand: BrandQuery = None,
    min_price: MinPriceQuery = None,
    max_price: MaxPriceQuery = None,
    min_rating: MinRatingQuery = None,
    explain: Annotated[bool, Query(description=EXPLAIN_DOC)] = False,
) -> Response:
    """The documented, validating route; canonical requests are answered before routing by
    :class:`Prod.als_reco_engine.fast_path.RecommendFastPath` with the same service call.
    `score` depends on `strategy` (see the schema): compare scores within one answer only."""
    filters = _filters(category, brand, min_price, max_price, min_rating)
    result = await engine.recommend(
        user_id, k=k, exclude_seen=exclude_seen, filters=filters, explain=explain
    )
    return Response(result.to_json(), media_type="application/json")


@router.get(
    "/similar/{item_id}",
    response_model=SimilarOut,
    tags=["recommend"],
    summary="Items similar to an item by its ALS vector, or by its text for a cold item",
    responses={
        404: {"description": "Item neither in the active model nor in the product catalogue"},
        503: {"description": "Chroma unreachable (a cold item's neighbours)"},
    },
)
async def read_similar_items(
    engine: EngineDep,
    item_id: ItemIdPath,
    k: TopK = 10,
    category: CategoryQuery = None,
    brand: BrandQuery = None,
    min_price: MinPriceQuery = None,
    max_price: MaxPriceQuery = None,
    min_rating: MinRatingQuery = None,
) -> Response:
    """`score` is the cosine of the two items' ALS factors (-1..1); an item without a factor
    (added after the last training) gets its nearest products by MiniLM embedding instead,
    `strategy: content`, `score` their cosine."""
    filters = _filters(category, brand, min_price, max_price, min_rating)
    return _json(await engine.similar(item_id, k=k, filters=filters))


@router.post(
    "/interactions",
    response_model=InteractionsOut,
    status_code=201,
    tags=["interactions"],
    summary="Record one event or a batch (all or nothing)",
)
def create_interactions(
    engine: EngineDep,
    body: Annotated[
        InteractionIn | InteractionBatch,
        Body(
            openapi_examples={
                "one": {
                    "summary": "one event",
                    "value": {"user_id": "u00042", "item_id": "i01234", "event": "purchase"},
                },
                "dislike": {
                    "summary": "negative feedback: never recommend this, push similar ones down",
                    "value": {"user_id": "u00042", "item_id": "i04321", "event": "dislike"},
                },
                "batch": {
                    "summary": "a batch",
                    "value": {
                        "events": [
                            {"user_id": "u00042", "item_id": "i01234", "event": "view"},
                            {
                                "user_id": "u00042",
                                "item_id": "i01234",
                                "event": "rating",
                                "rating": 5,
                            },
                        ]
                    },
                },
            }
        ),
    ],
) -> dict:
    events = body.events if isinstance(body, InteractionBatch) else [body]
    return record_interactions(
        db=engine.db,
        events=[e.model_dump() for e in events],
        forget_users=engine.forget_users,
    )


@router.get(
    "/history",
    response_model=HistoryOut,
    tags=["history"],
    summary="Recommendations served, newest first",
)
def read_history(
    engine: EngineDep,
    user_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict:
    return read_history_page(
        db=engine.db, writer=engine.history, user_id=user_id, limit=limit, offset=offset
    )


@router.post(
    "/lists/{user_id}",
    response_model=StoredListOut,
    status_code=201,
    tags=["lists"],
    summary="Create or refresh a user's stored list from the model",
)
async def create_list(engine: EngineDep, user_id: UserId, k: TopK = 20) -> dict:
    return await lists.create_list(engine=engine, user_id=user_id, k=k)


@router.get(
    "/lists/{user_id}",
    response_model=StoredListOut,
    tags=["lists"],
    summary="A user's stored list",
    responses={404: {"description": "No list"}},
)
def read_list(engine: EngineDep, user_id: UserId) -> dict:
    return lists.read_list(db=engine.db, user_id=user_id)


@router.put(
    "/lists/{user_id}",
    response_model=ListReplaceOut,
    tags=["lists"],
    summary="Replace the list with given products, re-scored and sorted by the model",
)
async def update_list(engine: EngineDep, user_id: UserId, body: ListItemsIn) -> dict:
    """Products the user suppressed are left out (named in ``skipped_suppressed``): a PUT,
    often a client re-sending the list it last read, never undoes a removal by accident."""
    return await lists.replace_list(engine=engine, user_id=user_id, item_ids=body.item_ids)


@router.delete(
    "/lists/{user_id}",
    status_code=204,
    tags=["lists"],
    summary="Delete the user's whole stored list (suppressions stay)",
    responses={404: {"description": "No list"}},
)
def delete_list(engine: EngineDep, user_id: UserId) -> Response:
    lists.delete_list(db=engine.db, user_id=user_id)
    return Response(status_code=204)


@router.delete(
    "/lists/{user_id}/items",
    response_model=ListRemovalOut,
    tags=["lists"],
    summary="Remove products from the list; never recommended again until restored",
)
def delete_list_items(
    engine: EngineDep,
    user_id: UserId,
    item_id: Annotated[
        list[str] | None,
        Query(description='Products to remove (repeatable); or a JSON body {"item_ids": [...]}.'),
    ] = None,
    body: Annotated[ListItemsIn | None, Body()] = None,
) -> dict:
    return lists.remove_list_items(
        db=engine.db,
        profiles=engine.profiles,
        user_id=user_id,
        item_ids=_item_ids(item_id, body),
    )


@router.delete(
    "/lists/{user_id}/suppressions",
    response_model=SuppressionRestoreOut,
    tags=["lists"],
    summary="Undo suppressions: the products may be recommended and listed again",
    responses={404: {"description": "None of the products is suppressed for the user"}},
)
def delete_suppressions(
    engine: EngineDep,
    user_id: UserId,
    item_id: Annotated[
        list[str] | None,
        Query(description='Products to restore (repeatable); or a JSON body {"item_ids": [...]}.'),
    ] = None,
    body: Annotated[ListItemsIn | None, Body()] = None,
) -> dict:
    """A suppression is a resource of its own, removed by DELETE, rather than a ``restore``
    flag on PUT: restoring is then explicit and separate from editing the list, PUT keeps one
    meaning (replace, never restore), and a product can be restored without being listed."""
    return lists.restore_suppressed_items(
        db=engine.db,
        profiles=engine.profiles,
        user_id=user_id,
        item_ids=_item_ids(item_id, body),
    )


def _item_ids(item_id: list[str] | None, body: ListItemsIn | None) -> list[str]:
    """Products from ``?item_id=`` and/or a JSON body, under the same id rules."""
    item_ids = (body.item_ids if body is not None else []) + (item_id or [])
    if not item_ids:
        raise InvalidInput('give the products: ?item_id=... or {"item_ids": [...]}')
    try:
        ListItemsIn(item_ids=item_ids)  # same id rules for the query form
    except ValidationError as exc:
        raise InvalidInput(f"malformed item id(s): {exc.errors()[0]['msg']}") from None
    return item_ids
