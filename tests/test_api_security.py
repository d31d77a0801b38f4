"""The request guard and the one error shape, on the three real apps against the real stores
(issue 13, items 9, 10, 11 and 14).

The reco engine and the trainer run their lifespans; the chat app is used without its lifespan
(its engine would load MiniLM in the background) because everything checked here is answered
before a route touches its engine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

KEY = "s3cret-key"
LIMIT = 4096

# per app: a POST route with a JSON body, and a path of it that takes GET only
_APPS = {
    "reco": ("/api/v1/interactions", "/api/v1/status"),
    "chat": ("/api/v1/chat", "/api/v1/search"),
    "trainer": ("/api/v1/train", "/api/v1/status"),
}


def _build(name: str, settings):
    if name == "reco":
        from Prod.als_reco_engine.main import create_app

        return create_app(settings), True
    if name == "chat":
        from Prod.chat_reco_engine.main import create_app

        return create_app(settings), False
    from Prod.als_trainer.main import create_app

    return create_app(settings, schedule=False), True


@pytest.fixture(params=list(_APPS))
def make(request, settings) -> Iterator:
    """``make(**overrides)`` -> (client, post_path, get_path) for the parametrised app."""
    clients: list[tuple[TestClient, bool]] = []

    def build(**overrides):
        app, lifespan = _build(request.param, settings.model_copy(update=overrides))
        client = TestClient(app)
        if lifespan:
            client.__enter__()
        clients.append((client, lifespan))
        return (client, *_APPS[request.param])

    yield build
    for client, lifespan in clients:
        if lifespan:
            client.__exit__(None, None, None)


def _error(response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == kind and error["message"], error
    return error


# --- item 9 ---------------------------------------------------------------------------------


def test_non_ascii_api_key_is_401_not_500(make):
    client, post_path, get_path = make(api_key=KEY, max_request_bytes=LIMIT)
    for presented in ("sécret€".encode(), "s3cret-kéy".encode("latin-1"), b"\xff\xfe"):
        for path in (get_path, "/metrics"):
            response = client.get(path, headers={"X-API-Key": presented})
            _error(response, 401, "unauthorized")
        response = client.post(post_path, headers={"X-API-Key": presented}, json={})
        _error(response, 401, "unauthorized")
    assert client.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200


def test_non_ascii_configured_key_matches_its_utf8_bytes(make):
    client, _, _ = make(api_key="clé-€-secrète")
    ok = client.get("/metrics", headers={"X-API-Key": "clé-€-secrète".encode()})
    assert ok.status_code == 200
    _error(client.get("/metrics", headers={"X-API-Key": b"cl"}), 401, "unauthorized")


# --- item 10 --------------------------------------------------------------------------------


def test_docs_and_openapi_need_the_key_when_one_is_set(make):
    client, _, _ = make(api_key=KEY)
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        _error(client.get(path), 401, "unauthorized")
        _error(client.get(path, headers={"X-API-Key": "wrong"}), 401, "unauthorized")
        assert client.get(path, headers={"X-API-Key": KEY}).status_code == 200, path
    assert client.get("/health").status_code != 401  # (chat: 503 while its models load)


def test_docs_stay_open_without_a_key_or_when_made_public(make):
    for overrides in ({"api_key": None}, {"api_key": KEY, "api_docs_public": True}):
        client, _, get_path = make(**overrides)
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 200, (overrides, path)
        if overrides["api_key"]:
            _error(client.get(get_path), 401, "unauthorized")  # only the docs became public


# --- item 11 --------------------------------------------------------------------------------


def test_oversized_body_is_413_before_it_is_read(make):
    client, post_path, _ = make(api_key=KEY, max_request_bytes=LIMIT)
    headers = {"X-API-Key": KEY, "content-type": "application/json"}
    error = _error(
        client.post(post_path, content=b" " * (LIMIT + 1), headers=headers),
        413,
        "payload_too_large",
    )
    assert error["max_bytes"] == LIMIT and str(LIMIT + 1) in error["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(4):
            yield b" " * (LIMIT // 2)

    response = client.post(post_path, content=chunks(), headers=headers)
    assert response.request.headers["transfer-encoding"] == "chunked"
    _error(response, 413, "payload_too_large")
    # at the limit it is read and judged as usual
    small = client.post(post_path, content=b" " * (LIMIT - 10) + b"[1]", headers=headers)
    assert small.status_code == 422, small.text


def test_api_key_is_checked_before_the_body(make):
    client, post_path, _ = make(api_key=KEY, max_request_bytes=LIMIT)
    json = {"content-type": "application/json"}
    _error(client.post(post_path, content=b"x" * (LIMIT * 4), headers=json), 401, "unauthorized")
    _error(client.post(post_path, content=b"{not json", headers=json), 401, "unauthorized")


# --- item 14 --------------------------------------------------------------------------------


def test_unknown_route_wrong_method_and_bad_json_use_the_error_shape(make):
    client, post_path, get_path = make()
    error = _error(client.get("/api/v1/no-such-thing"), 404, "not_found")
    assert "/api/v1/no-such-thing" in error["message"]
    response = client.delete(get_path)
    error = _error(response, 405, "method_not_allowed")
    assert "DELETE" in error["message"] and response.headers["allow"]
    json = {"content-type": "application/json"}
    error = _error(client.post(post_path, content=b'{"a": ', headers=json), 400, "invalid_json")
    assert "not valid JSON" in error["message"]
    error = _error(client.post(post_path, content=b"\xc3\x28", headers=json), 400, "invalid_json")
    error = _error(client.post(post_path, json=[1, 2]), 422, "invalid_input")
    assert error["message"] == "must be a JSON object"


# --- issue 15, item 1: one rule for query parameters ----------------------------------------

_PATH_VALUES = {
    "user_id": "u00042",
    "item_id": "i00042",
    "session_id": "8d0e4c1e-3b0a-4c0f-9d55-4f1d2a6c9b11",
}


def test_every_route_answers_an_unknown_query_parameter_with_a_422_naming_it(make):
    """Every API route of every service (fast path included: its 422 is the route's) names a
    parameter it does not take instead of ignoring it."""
    client, _, _ = make()
    operations = [
        (method.upper(), path)
        for path, item in client.get("/openapi.json").json()["paths"].items()
        for method in item
    ]
    assert len(operations) >= 5
    for method, path in operations:
        url = path.format(**_PATH_VALUES)
        response = client.request(method, url, params={"strategy": "popular", "zz": ""})
        error = _error(response, 422, "invalid_input")
        assert error["fields"] == [
            {"field": "query.strategy", "message": "unknown parameter"},
            {"field": "query.zz", "message": "unknown parameter"},
        ], (method, path)
        assert "'strategy', 'zz'" in error["message"] and error["request_id"]
        assert response.headers["x-request-id"] == error["request_id"]


def test_declared_query_parameters_still_work_and_the_message_lists_them(make):
    client, _, get_path = make()
    if get_path == "/api/v1/search":  # chat: its declared parameters, plus one it lacks
        params = {"q": "tv", "k": 3, "min_price": 1, "page": 2}
        takes = "q, brand, category, min_price, max_price, min_rating, user_id, k"
    else:
        params = {"page": 2}
        takes = "none"
    error = _error(client.get(get_path, params=params), 422, "invalid_input")
    assert error["fields"] == [{"field": "query.page", "message": "unknown parameter"}]
    assert error["message"].endswith(f"it takes {takes}"), error["message"]
