"""Request ids and structured logs on the three real apps (issue 14, item 11).

Each app gets a few extra routes that log (async, sync in the threadpool, a streamed body, an
unhandled error) so the lines of one request can be told apart from the background threads'.
The chat app is used without its lifespan (its engine would load MiniLM), as in
``test_api_security.py``; its stream route runs the real ``_sse`` wrapper.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from Prod.common.logs import configure_logging, current_request_id

KEY = "s3cret-key"
LIMIT = 4096
_HEX32 = re.compile(r"[0-9a-f]{32}")
_LOGGER = "tests.request_log"
log = logging.getLogger(_LOGGER)

# per app: a POST route with a JSON body (an empty object is a 422)
_APPS = {"reco": "/api/v1/interactions", "chat": "/api/v1/chat", "trainer": "/api/v1/train"}


async def _log_async() -> dict:
    log.info("async route")
    return {"request_id": current_request_id()}


def _log_sync() -> dict:
    log.info("sync route (threadpool)")
    return {"request_id": current_request_id()}


def _boom() -> None:
    log.info("about to fail")
    raise RuntimeError("boom")


def _stream() -> StreamingResponse:
    from Prod.chat_reco_engine.routes import _sse

    def events():
        log.info("stream event")
        yield "token", {"text": "hi"}
        raise RuntimeError("stream broke")

    return StreamingResponse(_sse(events()), media_type="text/event-stream")


def _build(name: str, settings):
    if name == "reco":
        from Prod.als_reco_engine.main import create_app

        app, lifespan = create_app(settings), True
    elif name == "chat":
        from Prod.chat_reco_engine.main import create_app

        app, lifespan = create_app(settings), False
    else:
        from Prod.als_trainer.main import create_app

        app, lifespan = create_app(settings, schedule=False), True
    app.add_api_route("/test/log-async", _log_async)
    app.add_api_route("/test/log-sync", _log_sync)
    app.add_api_route("/test/boom", _boom)
    app.add_api_route("/test/stream", _stream)
    return app, lifespan


@pytest.fixture(params=list(_APPS))
def make(request, settings) -> Iterator:
    """``make(**overrides)`` -> (client, post_path) for the parametrised app."""
    clients: list[tuple[TestClient, bool]] = []

    def build(**overrides):
        app, lifespan = _build(request.param, settings.model_copy(update=overrides))
        client = TestClient(app, raise_server_exceptions=False)
        if lifespan:
            client.__enter__()
        clients.append((client, lifespan))
        return client, _APPS[request.param]

    yield build
    for client, lifespan in clients:
        if lifespan:
            client.__exit__(None, None, None)


@pytest.fixture
def log_output() -> Iterator:
    """``log_output(log_format)`` -> the stream ``configure_logging`` now writes to; the root
    logger's handlers and level are restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level

    def configure(log_format: str = "text") -> io.StringIO:
        stream = io.StringIO()
        configure_logging("test-service", "INFO", log_format, stream=stream)
        return stream

    yield configure
    root.handlers[:], level = saved
    root.setLevel(level)


def _error(response, status: int, request_id: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"] == request_id
    error = response.json()["error"]
    assert error["request_id"] == request_id, error
    return error


def test_request_id_is_echoed_and_in_error_bodies(make):
    client, post_path = make(api_key=KEY, max_request_bytes=LIMIT)
    auth = {"X-API-Key": KEY}
    ok = client.get("/test/log-async", headers={**auth, "X-Request-ID": "client-id-1"})
    assert ok.headers["x-request-id"] == "client-id-1"
    assert ok.json() == {"request_id": "client-id-1"}
    ok = client.get("/test/log-sync", headers={**auth, "X-Request-ID": "client-id-2"})
    assert ok.json() == {"request_id": "client-id-2"}  # the threadpool sees the context
    # a new id when the client sends none, different per request
    first, second = (client.get("/health").headers["x-request-id"] for _ in range(2))
    assert _HEX32.fullmatch(first) and _HEX32.fullmatch(second) and first != second

    _error(client.get("/api/v1/status", headers={"X-Request-ID": "r-401"}), 401, "r-401")
    _error(client.get("/nowhere", headers={**auth, "X-Request-ID": "r-404"}), 404, "r-404")
    _error(client.put("/health", headers={**auth, "X-Request-ID": "r-405"}), 405, "r-405")
    sent = {**auth, "X-Request-ID": "r-422"}
    _error(client.post(post_path, headers=sent, json={"unknown": 1}), 422, "r-422")
    sent = {**auth, "X-Request-ID": "r-400", "Content-Type": "application/json"}
    _error(client.post(post_path, headers=sent, content=b"{not json"), 400, "r-400")
    sent = {**auth, "X-Request-ID": "r-413"}
    _error(client.post(post_path, headers=sent, content=b"x" * (LIMIT + 1)), 413, "r-413")
    sent = {**auth, "X-Request-ID": "r-500"}
    error = _error(client.get("/test/boom", headers=sent), 500, "r-500")
    assert error["type"] == "internal_error"
    assert "see the service log (request_id r-500)" in error["message"]

    # a stream that fails after it started: its last event carries the id
    stream = client.get("/test/stream", headers={**auth, "X-Request-ID": "r-sse"})
    assert stream.headers["x-request-id"] == "r-sse"
    last = stream.text.strip().split("\n\n")[-1]
    assert last.startswith("event: error\n")
    assert json.loads(last.split("data: ", 1)[1])["error"]["request_id"] == "r-sse"


def test_request_id_is_in_every_log_line_of_the_request(make, log_output):
    client, _ = make()
    stream = log_output("text")
    for path in ("/test/log-async", "/test/log-sync", "/test/boom", "/test/stream"):
        client.get(path, headers={"X-Request-ID": f"id{path.replace('/', '-')}"})
    lines = [line for line in stream.getvalue().splitlines() if f" {_LOGGER}: " in line]
    assert len(lines) == 4, lines
    for line, path in zip(lines, ("log-async", "log-sync", "boom", "stream"), strict=True):
        assert line.endswith(f" request_id=id-test-{path}"), line
        assert "[test-service]" in line
    # the error lines (the 500 handler's and the stream's) point at the same request
    text = stream.getvalue()
    assert re.search(r"unhandled error on GET /test/boom request_id=id-test-boom\n", text), text
    assert re.search(r"chat stream failed request_id=id-test-stream\n", text), text
    assert "RuntimeError: boom" in text  # the traceback follows its line


def test_json_log_format_emits_one_json_object_per_line(make, log_output):
    client, _ = make()
    stream = log_output("json")
    client.get("/test/log-sync", headers={"X-Request-ID": "json-1"})
    client.get("/test/boom", headers={"X-Request-ID": "json-2"})
    logging.getLogger(_LOGGER).info("outside any request: %s", 'quoted "text"\nnewline')
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    keys = {"time", "level", "logger", "message", "service", "request_id"}
    assert all(keys <= set(entry) for entry in entries), entries
    assert all(entry["service"] == "test-service" for entry in entries)
    ours = [e for e in entries if e["logger"] in (_LOGGER, "Prod.common.api")]
    assert [(e["message"], e["request_id"]) for e in ours] == [
        ("sync route (threadpool)", "json-1"),
        ("about to fail", "json-2"),
        ("unhandled error on GET /test/boom", "json-2"),
        ('outside any request: quoted "text"\nnewline', None),
    ]
    assert ours[2]["level"] == "ERROR" and "RuntimeError: boom" in ours[2]["exception"]
    assert "exception" not in ours[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", ours[0]["time"])


@pytest.mark.parametrize(
    "bad",
    [b"has space", b"x" * 129, b"caf\xe9", b"tab\there", b""],
    ids=["space", "too-long", "non-ascii", "control", "empty"],
)
def test_bad_request_id_header_is_replaced(make, bad):
    client, _ = make()
    response = client.get("/nowhere", headers={"X-Request-ID": bad})
    request_id = response.headers["x-request-id"]
    assert _HEX32.fullmatch(request_id), request_id
    assert response.json()["error"]["request_id"] == request_id
    longest = "a-Z_0.9:~" + "x" * 119  # 128 visible ASCII characters are kept as sent
    assert client.get("/health", headers={"X-Request-ID": longest}).headers["x-request-id"] == (
        longest
    )


def test_fast_path_answers_carry_the_request_id(settings):
    """``/recommend`` answered by the fast path (behind the guard) echoes the id too."""
    from Prod.als_reco_engine.main import create_app

    with TestClient(create_app(settings)) as client:
        response = client.get("/api/v1/recommend/fresh-user", headers={"X-Request-ID": "fast-1"})
        assert response.headers["x-request-id"] == "fast-1"
        if response.status_code != 200:  # no model published yet: the route's error
            assert response.json()["error"]["request_id"] == "fast-1"
        else:
            assert "error" not in response.json()
