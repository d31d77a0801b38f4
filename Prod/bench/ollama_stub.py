"""A protocol-compatible stand-in for an Ollama server, on loopback: no model behind it.

Used by the test suite (the real ``ollama`` client talks to it and the tests read the prompts it
recorded) and by `reco bench chat` (time to first streamed token without a GPU or Mistral
weights). Not for serving users: it answers every chat with a fixed text.

Implements ``/api/chat`` (streamed NDJSON and non-streamed, with ``format`` = JSON schema),
``/api/tags`` and ``/api/version``; records every chat request body it receives. Behaviour is
switchable at run time: ``delay_s`` (slow), ``models`` (an empty list = model missing), and
``stop()`` (down: connection refused).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class OllamaBehaviour:
    models: list[str] = field(default_factory=lambda: ["mistral:7b"])
    answer: str = "Based on the listed products, I recommend the first one."
    filters_json: dict[str, Any] = field(default_factory=dict)  # reply to `format` requests
    delay_s: float = 0.0  # before the first byte of a chat reply
    token_delay_s: float = 0.0


class OllamaStubServer:
    """Threaded HTTP server on 127.0.0.1 (free port); ``start()`` / ``stop()``."""

    def __init__(self, behaviour: OllamaBehaviour | None = None) -> None:
        self.behaviour = behaviour or OllamaBehaviour()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/api/version":
                    self._json(200, {"version": "0.6.0-test"})
                elif self.path == "/api/tags":
                    models = [
                        {"name": m, "model": m, "size": 1, "digest": "0" * 12}
                        for m in server.behaviour.models
                    ]
                    self._json(200, {"models": models})
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/api/chat":
                    self._json(404, {"error": "not found"})
                    return
                with server._lock:
                    server.requests.append(body)
                behaviour = server.behaviour
                if body.get("model") not in behaviour.models:
                    self._json(404, {"error": f"model '{body.get('model')}' not found"})
                    return
                time.sleep(behaviour.delay_s)
                if body.get("format"):
                    content = json.dumps(behaviour.filters_json)
                else:
                    content = behaviour.answer
                if body.get("stream", True) is False:
                    self._json(200, _message(body["model"], content, done=True))
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                try:
                    for token in _tokens(content):
                        line = json.dumps(_message(body["model"], token, False)).encode()
                        self.wfile.write(line + b"\n")
                        self.wfile.flush()
                        time.sleep(behaviour.token_delay_s)
                    self.wfile.write(json.dumps(_message(body["model"], "", True)).encode() + b"\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading (e.g. after its first token)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ollama-stub", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> OllamaStubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def chat_prompts(self) -> list[str]:
        """Every message text sent to /api/chat, in order."""
        with self._lock:
            return [m.get("content", "") for r in self.requests for m in r.get("messages", [])]

    def answer_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if not r.get("format")]


def _tokens(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if n < len(words) - 1 else "") for n, w in enumerate(words)]


def _message(model: str, content: str, done: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "created_at": "2024-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": content},
        "done": done,
    }
    if done:
        body.update(done_reason="stop", total_duration=1, eval_count=len(content.split()))
    return body
