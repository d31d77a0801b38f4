"""Store outages seen by the chat API (issue 13, items 5, 6 and 10): the real servers are stopped
(:func:`tests.utils.faults.store_down`) and started again, healthy, before the test ends."""

from __future__ import annotations

import json
from contextlib import ExitStack

from fastapi.testclient import TestClient

from Prod.chat_reco_engine.main import create_app
from Prod.orchestrate.local_infra import free_port
from tests.chat.conftest import chat_settings
from tests.reco_engine.conftest import LiveServer
from tests.utils.faults import CuttingProxy, store_down


def _assert_503_naming(response, store: str) -> None:
    assert response.status_code == 503, (response.request.method, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["store"] == store, response.text


def _sse_events(lines) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def test_chat_with_postgres_down_is_503_naming_postgres(client, infra):
    turn = client.post("/api/v1/chat", json={"message": "wireless headphones"})
    session_id = turn.json()["session_id"]
    with store_down(infra, "postgres"):
        _assert_503_naming(client.post("/api/v1/chat", json={"message": "a 4K tv"}), "postgres")
        _assert_503_naming(
            client.post("/api/v1/chat", json={"message": "cheaper", "session_id": session_id}),
            "postgres",
        )
        _assert_503_naming(client.get(f"/api/v1/chat/{session_id}/history"), "postgres")
        _assert_503_naming(client.delete(f"/api/v1/chat/{session_id}"), "postgres")
        # checked before the first event: no answer streamed for a session that can't be stored
        _assert_503_naming(
            client.post("/api/v1/chat/stream", json={"message": "espresso machine"}), "postgres"
        )
    assert client.get(f"/api/v1/chat/{session_id}/history").json()["messages"]  # nothing lost


def test_chat_stream_losing_postgres_mid_answer_ends_with_an_error_event(
    settings, catalogue, llm, infra
):
    llm.behaviour.answer = "The first one fits: light, quiet and within your budget today."
    llm.behaviour.token_delay_s = 0.3  # a few seconds of answer: time to stop Postgres
    app = create_app(chat_settings(settings, catalogue, ollama_host=llm.url))
    with (
        LiveServer(app, free_port()) as server,
        server.client() as http,
        ExitStack() as outage,
        http.stream(
            "POST", "/api/v1/chat/stream", json={"message": "wireless headphones"}, timeout=60
        ) as response,
    ):
        assert response.status_code == 200
        lines = []
        for line in response.iter_lines():
            lines.append(line)
            if line.startswith("event: products"):
                outage.enter_context(store_down(infra, "postgres"))
        events = _sse_events(lines)
    names = [name for name, _ in events]
    assert names[0] == "products" and "token" in names
    assert names[-1] == "error" and "done" not in names, names
    assert events[-1][1]["error"]["store"] == "postgres"


def test_chat_with_chroma_down_is_503_naming_chroma(client, infra):
    assert client.post("/api/v1/chat", json={"message": "espresso machine"}).status_code == 200
    with store_down(infra, "chroma"):
        _assert_503_naming(client.post("/api/v1/chat", json={"message": "a 4K tv"}), "chroma")
        _assert_503_naming(client.get("/api/v1/search", params={"q": "laptop"}), "chroma")
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["chroma"]["status"] == "unavailable"


def test_health_is_503_when_down_and_its_detail_needs_the_key(make_client, infra):
    keyed = make_client(api_key="s3cret")
    key = {"X-API-Key": "s3cret"}
    public = keyed.get("/health")
    assert public.status_code == 200 and set(public.json()) == {"status"}
    assert public.json()["status"] in ("ok", "degraded")
    assert keyed.get("/health", headers={"X-API-Key": "wrong"}).json() == public.json()
    detail = keyed.get("/health", headers=key).json()
    assert detail["postgres"]["status"] == "ready" and detail["redis"]["status"] == "ready"
    assert detail["chroma"]["collection"] and detail["embedding"]["model"]
    with store_down(infra, "postgres"):
        down = keyed.get("/health")
        assert down.status_code == 503 and down.json() == {"status": "down"}
        detail = keyed.get("/health", headers=key)
        assert detail.status_code == 503 and detail.json()["postgres"]["status"] == "unavailable"
    assert keyed.get("/health").status_code == 200


def test_chat_when_chroma_dies_mid_request_is_503_naming_chroma(settings, catalogue, llm):
    """The fault run's ReadError: Chroma's connection reset while a query is in flight."""
    proxy = CuttingProxy(settings.chroma_port)
    try:
        with TestClient(
            create_app(
                chat_settings(settings, catalogue, ollama_host=llm.url, chroma_port=proxy.port)
            )
        ) as client:
            assert client.post("/api/v1/chat", json={"message": "a 4K tv"}).status_code == 200
            proxy.cut_on = b"/query"
            _assert_503_naming(
                client.post("/api/v1/chat", json={"message": "wireless headphones"}), "chroma"
            )
            assert proxy.cuts == 1
            proxy.cut_on = b"/query"
            _assert_503_naming(client.get("/api/v1/search", params={"q": "laptop"}), "chroma")
            assert client.post("/api/v1/chat", json={"message": "a laptop"}).status_code == 200
    finally:
        proxy.close()
