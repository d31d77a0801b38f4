"""HTTP routes of the catalogue: items and users upserted and deleted, a person forgotten.

Thin: parse, call one function of :mod:`.catalogue` / :mod:`.forget`, return the schema. The
routes are sync (``def``): embedding and the stores' round trips run in FastAPI's thread pool,
off the request loop that serves ``/recommend``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path

from Prod.als_reco_engine import catalogue
from Prod.als_reco_engine.catalogue_schemas import (
    ITEM_BATCH_EXAMPLE,
    ITEM_EXAMPLE,
    USER_BATCH_EXAMPLE,
    USER_EXAMPLE,
    ForgetOut,
    ItemBatch,
    ItemIdsIn,
    ItemIn,
    ItemsDeleteOut,
    ItemsUpsertOut,
    UserBatch,
    UserIn,
    UsersUpsertOut,
)
from Prod.als_reco_engine.forget import forget_user
from Prod.als_reco_engine.routes import EngineDep, check_api_key
from Prod.als_reco_engine.service import RecoEngine
from Prod.common.errors import InfraError
from Prod.common.schemas import ID_PATTERN
from Prod.common.stores import chroma_errors, chroma_for, redis_for

_ERRORS = {
    401: {"description": "Missing or invalid X-API-Key"},
    422: {"description": "Invalid input; the body names the record and field, nothing written"},
    503: {"description": "A store is unavailable; the body names it"},
}

catalogue_router = APIRouter(
    prefix="/api/v1", dependencies=[Depends(check_api_key)], responses=_ERRORS
)
ItemIdPath = Annotated[str, Path(pattern=ID_PATTERN, examples=["p00042"])]
UserIdPath = Annotated[str, Path(pattern=ID_PATTERN, examples=["u00042"])]


def _chroma(settings):
    """The Chroma client; a server that cannot be reached is a 503 naming Chroma (the client
    checks the server when it is built and raises a plain error)."""
    try:
        with chroma_errors():
            return chroma_for(settings)
    except InfraError:
        raise
    except Exception as exc:
        raise InfraError(
            "Chroma is unavailable (the product collection); try again shortly", store="chroma"
        ) from exc


def _collection_of(engine: RecoEngine):
    settings = engine.settings

    def collection(embedder_id: str | None):
        return catalogue.products_collection(
            _chroma(settings), settings.products_collection, embedder_id
        )

    return collection


def _existing_collection(engine: RecoEngine):
    """The ``products`` collection, or None when it was never created."""
    settings = engine.settings
    client = _chroma(settings)
    with chroma_errors():
        names = {getattr(c, "name", c) for c in client.list_collections()}
        return (
            client.get_collection(settings.products_collection)
            if (settings.products_collection in names)
            else None
        )


def _in_model(engine: RecoEngine):
    """Whether the serving index or the popularity table holds an item."""
    index, table = engine.holder.current, engine.popularity.current
    catalogues = [c.catalogue for c in (index, table) if c is not None]
    return lambda item_id: any(item_id in c.row_of for c in catalogues)


@catalogue_router.post(
    "/items",
    response_model=ItemsUpsertOut,
    tags=["catalogue"],
    summary="Create or replace one product or a batch (all or nothing), searchable at once",
)
def upsert_items(
    engine: EngineDep,
    body: Annotated[
        ItemIn | ItemBatch,
        Body(
            openapi_examples={
                "one": {"summary": "one product", "value": ITEM_EXAMPLE},
                "batch": {
                    "summary": "a batch (one bad record: 422, nothing written)",
                    "value": ITEM_BATCH_EXAMPLE,
                },
            }
        ),
    ],
) -> dict[str, Any]:
    """Validated by the ingest's rules for `items.csv` (the same messages), then written to
    Postgres and embedded into the chat's Chroma collection in one step: the chat finds the
    product in its next request. Recommendations learn it at the next retrain (once it has
    interactions). A previously deleted product comes back."""
    batch = isinstance(body, ItemBatch)
    items = body.items if batch else [body]
    return catalogue.upsert_items(
        db=engine.db,
        redis_client=redis_for(engine.settings),
        collection_of=_collection_of(engine),
        embed=catalogue.load_catalogue_embedder(engine.settings.embedding_model),
        deleted=engine.deleted,
        items=[item.model_dump() for item in items],
        batch=batch,
    )


def _delete(engine: RecoEngine, item_ids: list[str]) -> dict[str, Any]:
    return catalogue.delete_items(
        db=engine.db,
        redis_client=redis_for(engine.settings),
        collection_of=lambda: _existing_collection(engine),
        deleted=engine.deleted,
        in_model=_in_model(engine),
        item_ids=item_ids,
    )


@catalogue_router.delete(
    "/items/{item_id}",
    response_model=ItemsDeleteOut,
    tags=["catalogue"],
    summary="Delete a product: gone from recommendations, similar items, lists and chat at once",
    responses={404: {"description": "No store knows the product"}},
)
def delete_item(engine: EngineDep, item_id: ItemIdPath) -> dict[str, Any]:
    """Removes the product, its interactions, list entries and suppressions from Postgres and
    its document from the chat's collection; every replica stops serving it at once (its ALS
    factor leaves the model at the next retrain)."""
    return _delete(engine, [item_id])


@catalogue_router.delete(
    "/items",
    response_model=ItemsDeleteOut,
    tags=["catalogue"],
    summary="Delete several products (all or nothing)",
    responses={404: {"description": "Some product is unknown; nothing was deleted"}},
)
def delete_items(engine: EngineDep, body: ItemIdsIn) -> dict[str, Any]:
    return _delete(engine, body.item_ids)


@catalogue_router.post(
    "/users",
    response_model=UsersUpsertOut,
    tags=["catalogue"],
    summary="Create users or replace their name (one or a batch, all or nothing)",
)
def upsert_users(
    engine: EngineDep,
    body: Annotated[
        UserIn | UserBatch,
        Body(
            openapi_examples={
                "one": {"summary": "one user", "value": USER_EXAMPLE},
                "batch": {"summary": "a batch", "value": USER_BATCH_EXAMPLE},
            }
        ),
    ],
) -> dict[str, Any]:
    batch = isinstance(body, UserBatch)
    users = body.users if batch else [body]
    return catalogue.upsert_users(
        db=engine.db, users=[user.model_dump() for user in users], batch=batch
    )


@catalogue_router.delete(
    "/users/{user_id}",
    response_model=ForgetOut,
    tags=["catalogue"],
    summary="Forget a person: every trace in Postgres, Redis and the caches, with counts",
    responses={404: {"description": "No store holds anything of the user"}},
)
def delete_user(engine: EngineDep, user_id: UserIdPath) -> dict[str, Any]:
    """Interactions, served recommendations, the stored list, suppressions, chat sessions and
    messages (one Postgres transaction), then the user's factor in every stored model version
    (Redis), then the cached profile and fold-in on every replica. 503 naming the store that
    is down; a retry removes what is left."""
    return forget_user(
        db=engine.db,
        redis_client=redis_for(engine.settings),
        user_id=user_id,
        forget_cached=engine.forget_users,
        flush_history=engine.history.flush,
    )
