"""HTTP routes: parse, call one ChatEngine function, return its schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from Prod.chat_reco_engine.schemas import (
    ChatRequest,
    ChatResponse,
    DeleteResponse,
    HealthResponse,
    HistoryResponse,
    SearchResponse,
)
from Prod.chat_reco_engine.service import ChatEngine, validated_filters
from Prod.common.api import require_api_key

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_api_key)], tags=["chat"])
health_router = APIRouter(tags=["ops"])


def get_engine(request: Request) -> ChatEngine:
    return request.app.state.engine


EngineDep = Annotated[ChatEngine, Depends(get_engine)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid X-API-Key"},
    404: {"description": "Unknown chat session"},
    422: {"description": "Invalid input (message length, filters)"},
    503: {"description": "Product collection or embedding model unavailable"},
}


@router.post("/chat", response_model=ChatResponse, responses=_ERRORS, summary="Chat turn")
def create_chat_turn(body: ChatRequest, engine: EngineDep) -> ChatResponse:
    """Answer one message with grounded product recommendations (history is persisted)."""
    return engine.chat(body)


def _sse(events: Iterator[tuple[str, dict[str, Any]]]) -> Iterator[str]:
    for name, data in events:
        yield f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n"


@router.post(
    "/chat/stream",
    responses={**_ERRORS, 200: {"content": {"text/event-stream": {}},
                                "description": "events: products, token..., done"}},
    summary="Chat turn, streamed (server-sent events)",
    response_class=StreamingResponse,
)  # fmt: skip
def create_chat_turn_stream(body: ChatRequest, engine: EngineDep) -> StreamingResponse:
    """Event `products` first, then one `token` event per piece of the answer, then `done`
    with the same payload as POST /chat."""
    turn = engine.prepare_turn(body)  # errors surface as HTTP statuses before streaming starts
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


@router.get("/search", response_model=SearchResponse, responses=_ERRORS)
def read_search(
    engine: EngineDep,
    q: Annotated[str, Query(min_length=1, description="What to look for")],
    brand: Annotated[list[str] | None, Query(description="Any of these brands")] = None,
    category: Annotated[list[str] | None, Query(description="Any of these categories")] = None,
    min_price: Annotated[float | None, Query()] = None,
    max_price: Annotated[float | None, Query()] = None,
    min_rating: Annotated[float | None, Query()] = None,
    user_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    k: Annotated[int, Query(ge=1, le=50)] = 10,
) -> SearchResponse:
    """Semantic product search with the same filters and ranking as chat (no LLM)."""
    filters = validated_filters({
        "brands": brand or [], "categories": category or [], "min_price": min_price,
        "max_price": max_price, "min_rating": min_rating,
    })  # fmt: skip
    return engine.search(q, filters, k, user_id)


@health_router.get("/health", response_model=HealthResponse)
def read_health(engine: EngineDep) -> HealthResponse:
    """Embedding model, cross-encoder, LLM and Chroma status, reported separately."""
    return engine.health()
