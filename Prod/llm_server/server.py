"""The OpenAI chat-completions protocol over a :class:`LocalModel`: ``GET /v1/models``,
``POST /v1/chat/completions`` (streamed as server-sent ``chat.completion.chunk`` events or
whole), with ``response_format`` ``json_schema`` / ``json_object`` (the schema is put in the
prompt, the answer prefilled with ``{`` and stopped after the first JSON object; no constrained
decoding, so a small model's JSON may still be invalid - the client validates it).

OpenAI's protocol rather than Ollama's: it is what vLLM, llama.cpp's server, LM Studio and the
hosted APIs speak, so the same client path (``LLM_PROVIDER=openai``) is proven here for all of
them; the Ollama path has its own loopback stand-in (``ollama_stub``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from Prod.llm_server.model import LocalModel, json_end

SMOLLM2 = "smollm2-135m-instruct"


class ChatCompletionRequest(BaseModel):
    """The fields of OpenAI's request this server honours; others are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    response_format: dict[str, Any] | None = None
    seed: int | None = None


def _json_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema") or {}
    if kind == "json_object":
        return {"type": "object"}
    return None


def create_app(model: LocalModel, default_max_tokens: int = 256) -> FastAPI:
    """The FastAPI app serving ``model`` under its name."""
    app = FastAPI(title=f"local LLM ({model.name})")

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model.name, "object": "model"}]}

    @app.post("/v1/chat/completions", response_model=None)
    def create_chat_completion(request: ChatCompletionRequest):
        if request.model != model.name:
            raise HTTPException(404, f"model {request.model!r} not found (serving {model.name})")
        schema = _json_schema(request.response_format)
        limit = request.max_completion_tokens or request.max_tokens or default_max_tokens
        pieces = model.generate(
            request.messages,
            max_tokens=limit,
            temperature=request.temperature,
            seed=request.seed or 0,
            json_schema=schema,
        )
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if request.stream:
            return StreamingResponse(
                _sse(pieces, completion_id, created, model.name, schema is not None),
                media_type="text/event-stream",
            )
        text = _collect(pieces, json_mode=schema is not None)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"completion_tokens": model.count_tokens(text)},
            }
        )

    return app


def _collect(pieces: Iterator[str], json_mode: bool) -> str:
    """The whole answer; in JSON mode generation stops at the end of the first object."""
    text = ""
    for piece in pieces:
        text += piece
        end = json_end(text) if json_mode else None
        if end is not None:
            pieces.close()  # stops the generation thread
            return text[:end]
    return text


def _chunk(completion_id: str, created: int, name: str, delta: dict, finish: str | None) -> str:
    body = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": name,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n"


def _sse(
    pieces: Iterator[str], completion_id: str, created: int, name: str, json_mode: bool
) -> Iterator[str]:
    yield _chunk(completion_id, created, name, {"role": "assistant", "content": ""}, None)
    sent = ""
    for piece in pieces:
        end = json_end(sent + piece) if json_mode else None
        if end is not None:  # JSON mode: stop at the end of the first object
            piece = (sent + piece)[len(sent) : end]
        sent += piece
        if piece:
            yield _chunk(completion_id, created, name, {"content": piece}, None)
        if end is not None:
            break
    yield _chunk(completion_id, created, name, {}, "stop")
    yield "data: [DONE]\n\n"


class LocalServer:
    """The app on 127.0.0.1:``port`` in a uvicorn thread (``with LocalServer(...) as server``);
    ``server.base_url`` is what ``LLM_BASE_URL`` takes."""

    def __init__(self, model: LocalModel, port: int) -> None:
        import uvicorn

        self.port = port
        config = uvicorn.Config(
            create_app(model), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="llm-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> LocalServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"local LLM server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(10)
