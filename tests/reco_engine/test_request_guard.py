"""The request guard on a real server (issue 13, items 9 and 11): a body is refused on its
headers, before the client has sent it, and the fast path applies the same key rule."""

from __future__ import annotations

import json
import socket
import time

from fastapi.testclient import TestClient

from Prod.als_reco_engine.main import create_app
from Prod.orchestrate.local_infra import free_port
from tests.reco_engine.conftest import LiveServer

KEY = "s3cret-key"
LIMIT = 64 * 1024


def _read_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    length = int({k.lower(): v for k, v in headers.items()}["content-length"])
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), json.loads(body)


def _post_head(port: int, headers: dict[str, str]) -> bytes:
    lines = ["POST /api/v1/interactions HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += ["Content-Type: application/json"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_huge_body_is_refused_on_its_headers_before_it_is_sent(settings, dataset, published):
    # regression: a 200 MB body with no key was read and parsed (3.3 s, +650 MB resident)
    app = create_app(settings.model_copy(update={"api_key": KEY, "max_request_bytes": LIMIT}))
    with LiveServer(app, free_port()) as server:
        port = int(server.url.rsplit(":", 1)[1])
        huge = {"Content-Length": "200000000"}
        for headers, status, kind in (
            (huge, 401, "unauthorized"),  # the key first: nothing about the body is judged
            ({**huge, "X-API-Key": "sécret".encode().decode("latin-1")}, 401, "unauthorized"),
            ({**huge, "X-API-Key": KEY}, 413, "payload_too_large"),
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                started = time.monotonic()
                sock.sendall(_post_head(port, headers))  # headers only: the body never comes
                code, body = _read_response(sock)
                assert code == status and body["error"]["type"] == kind, body
                assert time.monotonic() - started < 5
        # chunked: counted as it arrives, refused once past the limit (no final chunk sent)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(_post_head(port, {"Transfer-Encoding": "chunked", "X-API-Key": KEY}))
            piece = b" " * (LIMIT // 2 + 1)
            sock.sendall((f"{len(piece):x}\r\n".encode() + piece + b"\r\n") * 2)
            code, body = _read_response(sock)
            assert code == 413 and body["error"]["max_bytes"] == LIMIT, body
        with server.client() as http:  # and the server serves on
            ok = http.get(f"/api/v1/recommend/{dataset.user_ids[0]}", headers={"X-API-Key": KEY})
            assert ok.status_code == 200


def _without_request_id(body: dict) -> dict:
    """The error body less its per-request id (every request gets its own)."""
    return {"error": {k: v for k, v in body["error"].items() if k != "request_id"}}


def test_fast_path_and_route_apply_the_same_key_and_size_rules(settings, dataset, published):
    app = create_app(settings.model_copy(update={"api_key": KEY, "max_request_bytes": 1024}))
    user = dataset.user_ids[1]
    canonical, routed = f"/api/v1/recommend/{user}", f"/api/v1/recommend/{user}?k=010"
    with TestClient(app) as client:
        for presented in (None, "wrong", "sécret€".encode(), b"\xff"):
            headers = {} if presented is None else {"X-API-Key": presented}
            fast, slow = (client.get(url, headers=headers) for url in (canonical, routed))
            assert fast.status_code == slow.status_code == 401, (fast.text, slow.text)
            assert _without_request_id(fast.json()) == _without_request_id(slow.json())
            assert fast.json()["error"]["type"] == "unauthorized"
        keyed = {"X-API-Key": KEY}
        fast, slow = (
            client.request("GET", url, headers=keyed, content=b" " * 1025)
            for url in (canonical, routed)
        )
        assert fast.status_code == slow.status_code == 413
        assert _without_request_id(fast.json()) == _without_request_id(slow.json())
        fast, slow = (client.get(url, headers=keyed) for url in (canonical, routed))
        assert fast.status_code == slow.status_code == 200
        assert fast.json()["items"] == slow.json()["items"]
