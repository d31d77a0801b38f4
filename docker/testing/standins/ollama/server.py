"""The Ollama stand-in's server: the project's protocol stub on OLLAMA_HOST (0.0.0.0:11434), plus
``/api/pull`` (streamed progress) and ``/api/show``. Pulled names persist in
``/root/.ollama/models.json``, so the model volume behaves like the real one. A name containing
``unavailable`` fails to pull, as a model missing from the registry does.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

from ollama_stub import OllamaBehaviour, OllamaStubServer

STORE = Path(os.environ.get("OLLAMA_MODELS", "/root/.ollama")) / "models.json"
_lock = threading.Lock()


def _address() -> tuple[str, int]:
    raw = os.environ.get("OLLAMA_HOST", "0.0.0.0:11434").split("://")[-1].rstrip("/")
    host, _, port = raw.rpartition(":") if ":" in raw else (raw, "", "11434")
    return host or "0.0.0.0", int(port or 11434)


def _saved() -> list[str]:
    return json.loads(STORE.read_text()) if STORE.exists() else []


def main() -> None:
    stub = OllamaStubServer(OllamaBehaviour(models=_saved()))
    stub._server.server_close()  # the stub binds loopback: serve its handler on OLLAMA_HOST
    base = stub._server.RequestHandlerClass

    class Handler(base):
        def do_POST(self) -> None:
            if self.path not in ("/api/pull", "/api/show"):
                return super().do_POST()
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            name = body.get("model") or body.get("name") or ""
            name = name if ":" in name else f"{name}:latest"
            if self.path == "/api/show":
                if name in stub.behaviour.models:
                    return self._json(200, {"modelfile": "", "details": {"format": "gguf"}})
                return self._json(404, {"error": f"model '{name}' not found"})
            if "unavailable" in name:
                return self._json(500, {"error": "pull model manifest: file does not exist"})
            with _lock:
                if name not in stub.behaviour.models:
                    stub.behaviour.models.append(name)
                    STORE.parent.mkdir(parents=True, exist_ok=True)
                    STORE.write_text(json.dumps(stub.behaviour.models))
            lines = [{"status": "pulling manifest"}, {"status": "success"}]
            if body.get("stream", True) is False:
                return self._json(200, lines[-1])
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()
            for line in lines:
                self.wfile.write(json.dumps(line).encode() + b"\n")

    server = ThreadingHTTPServer(_address(), Handler)
    server.daemon_threads = True
    print(f"ollama stand-in on {server.server_address}, models {stub.behaviour.models}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
