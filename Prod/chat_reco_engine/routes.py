"""HTTP routes: parse, call one ChatEngine function, return its schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import APIKeyHeader

from Prod.chat_reco_engine.schemas import (
    ChatRequest,
    ChatResponse,
    DeleteResponse,
    HealthResponse,
    HistoryResponse,
    ProfileResponse,
    SearchResponse,
)
from Prod.chat_reco_engine.service import ChatEngine, validated_filters
from Prod.chat_reco_engine.wish import WishRequest, WishResponse
from Prod.common.api import (
    SettingsDep,
    api_key_matches,
    error_body,
    error_response,
    require_api_key,
)
from Prod.common.errors import RecoError
from Prod.common.logs import get_logger
from Prod.common.schemas import (
    ID_PATTERN,
    BrandQuery,
    CategoryQuery,
    MaxPriceQuery,
    MinPriceQuery,
    MinRatingQuery,
    UserIdQuery,
)
from Prod.common.stores import chroma_errors

log = get_logger(__name__)

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_api_key)], tags=["chat"])
health_router = APIRouter(tags=["ops"])


def get_engine(request: Request) -> ChatEngine:
    return request.app.state.engine


EngineDep = Annotated[ChatEngine, Depends(get_engine)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid X-API-Key"},
    404: {"description": "Unknown chat session"},
    422: {"description": "Invalid input (message length, filters)"},
    503: {
        "description": "A store (Postgres, Chroma: `error.store`), the product collection or "
        "the embedding model is unavailable"
    },
}


@router.post("/chat", response_model=ChatResponse, responses=_ERRORS, summary="Chat turn")
def create_chat_turn(body: ChatRequest, engine: EngineDep) -> ChatResponse:
    """Answer one message with grounded product recommendations (history is persisted)."""
    with chroma_errors():  # Chroma dying mid-turn: 503 naming it
        return engine.chat(body)


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n"


def _sse(events: Iterator[tuple[str, dict[str, Any]]]) -> Iterator[str]:
    """The events as SSE; a failure after the stream started becomes a last ``error`` event with
    the JSON error body (the status line is already sent), so every stream ends with ``done``
    or ``error``."""
    try:
        for name, data in events:
            yield _event(name, data)
    except RecoError as exc:
        log.warning("chat stream ended with an error: %s", exc.message)
        yield _event("error", json.loads(error_response(exc).body))
    except Exception as exc:
        log.exception("chat stream failed")
        yield _event(
            "error",
            error_body("internal_error", f"unexpected {type(exc).__name__}; see the service log"),
        )


@router.post(
    "/chat/stream",
    responses={
        **_ERRORS,
        200: {
            "content": {"text/event-stream": {}},
            "description": "events: products, token..., done",
        },
    },
    summary="Chat turn, streamed (server-sent events)",
    response_class=StreamingResponse,
)
def create_chat_turn_stream(body: ChatRequest, engine: EngineDep) -> StreamingResponse:
    """Event `products` first, then one `token` event per piece of the answer, then `done`
    with the same payload as POST /chat; a failure after the first event ends the stream with
    an `error` event carrying the JSON error body instead of `done`."""
    with chroma_errors():  # errors surface as HTTP statuses before streaming starts
        turn = engine.prepare_turn(body)  # reaches Postgres first: no answer that can't be stored
    return StreamingResponse(
        _sse(engine.stream_events(turn)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/chat/{session_id}/history", response_model=HistoryResponse, responses=_ERRORS)
def read_chat_history(
    session_id: UUID, engine: EngineDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> HistoryResponse:
    """The session's messages, oldest first (at most `limit` most recent)."""
    return engine.history(str(session_id), limit)


@router.delete("/chat/{session_id}", response_model=DeleteResponse, responses=_ERRORS)
def delete_chat_session(session_id: UUID, engine: EngineDep) -> DeleteResponse:
    """Forget a session and all its messages."""
    return engine.delete(str(session_id))


@router.get(
    "/users/{user_id}/profile",
    response_model=ProfileResponse,
    responses={
        **_ERRORS,
        404: {"description": "Unknown user (no such user and no interactions)"},
        422: {"description": "Invalid user id"},
        503: {"description": "PostgreSQL is unavailable (`error.store`)"},
    },
    summary="Preference summary of a user",
)
def read_user_profile(
    engine: EngineDep,
    user_id: Annotated[str, Path(pattern=ID_PATTERN, examples=["u00042"])],
) -> ProfileResponse:
    """A short summary of the user's taste (LLM, checked by the grounding guard, or template:
    `generated_by`), top categories and brands, price band and sample items; cached per model
    version and invalidated by the user's next interaction. A known user without interactions
    gets an empty profile saying so."""
    return engine.profile(user_id)


@router.post(
    "/users/{user_id}/recommendations",
    response_model=WishResponse,
    responses={**_ERRORS, 422: {"description": "Empty wish, bad k, filters or user id"}},
    summary="Recommendations for a user against a stated wish",
)
def create_wish_recommendations(
    body: WishRequest,
    engine: EngineDep,
    user_id: Annotated[str, Path(pattern=ID_PATTERN, examples=["u00042"])],
) -> WishResponse:
    """The user's ALS candidates meeting the filters read from the wish, reranked by the rest
    of the wish (reranker, and the LLM's 0-2 judgement when it answers validly), blended with
    the ALS score (`WISH_WEIGHT`); a user without a taste gets a plain search (`strategy`)."""
    with chroma_errors():
        return engine.wish.recommend(user_id, body)


@router.get("/search", response_model=SearchResponse, responses=_ERRORS)
def read_search(
    engine: EngineDep,
    q: Annotated[str, Query(min_length=1, description="What to look for")],
    brand: BrandQuery = None,
    category: CategoryQuery = None,
    min_price: MinPriceQuery = None,
    max_price: MaxPriceQuery = None,
    min_rating: MinRatingQuery = None,
    user_id: UserIdQuery = None,
    k: Annotated[int, Query(ge=1, le=50)] = 10,
) -> SearchResponse:
    """Semantic product search with the same filters and ranking as chat (no LLM); the filter
    parameters are those of the ALS engine's /recommend and /similar."""
    filters = validated_filters(
        {
            "brands": brand or [],
            "categories": category or [],
            "min_price": min_price,
            "max_price": max_price,
            "min_rating": min_rating,
        }
    )
    with chroma_errors():
        return engine.search(q, filters, k, user_id)


_optional_api_key = APIKeyHeader(name="X-API-Key", auto_error=False)


@health_router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "Down: no turn can be answered"}},
)
def read_health(
    engine: EngineDep,
    settings: SettingsDep,
    api_key: Annotated[str | None, Depends(_optional_api_key)] = None,
) -> JSONResponse:
    """Overall verdict (HTTP 200 for ok/degraded, 503 for down) for anyone; the embedding
    model, cross-encoder, LLM, Chroma, Postgres and Redis detail only with the API key (when
    one is set), since it names models, collections and internal errors."""
    report = engine.health()
    if api_key_matches(api_key, settings.api_key):
        body = report.model_dump(mode="json")
    else:
        body = {"status": report.status}  # the bare verdict is public
    return JSONResponse(body, status_code=503 if report.status == "down" else 200)
