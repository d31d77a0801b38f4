"""The web app service: ``python -m Prod.web.main`` (port ``settings.web_port``).

Its own service rather than a route of an engine: the page talks to all three APIs, and a
same-origin proxy (``/api/reco|chat|trainer/...``) spares them CORS rules; the engines stay free
of UI code and the page can be restarted or left out without touching serving.

The app holds no key and checks none: the page sends the user's ``X-API-Key`` with each call,
the proxy forwards it, and each API checks it as usual (the page itself contains no data).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask

from config import Settings
from Prod.common.api import attach_settings, error_body, install_error_handlers
from Prod.common.logs import configure_logging, get_logger

log = get_logger("Prod.web.main")

STATIC = Path(__file__).parent / "static"
#: request headers the proxy passes on (the key, the body's type, the request id)
FORWARDED = ("x-api-key", "content-type", "accept", "x-request-id")
#: upstream paths outside /api/v1
ROOT_PATHS = ("health", "metrics")
#: a chat turn may wait on the LLM (OLLAMA_TIMEOUT_S) and a stream stays open while it writes
UPSTREAM_TIMEOUT = httpx.Timeout(10.0, read=300.0)


def _local(host: str, port: int) -> str:
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://{host}:{port}"


def upstreams(settings: Settings) -> dict[str, str]:
    """Where the proxy reaches each API: ``WEB_*_URL`` or HOST and the service's port."""
    return {
        "reco": (settings.web_reco_url or _local(settings.host, settings.reco_port)).rstrip("/"),
        "chat": (settings.web_chat_url or _local(settings.host, settings.chat_port)).rstrip("/"),
        "trainer": (
            settings.web_trainer_url or _local(settings.host, settings.trainer_port)
        ).rstrip("/"),
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    """The page, its static files, the proxy to the three APIs and ``/health``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.client = httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT)
        log.info(
            "ready: proxying %s",
            ", ".join(f"{name} -> {url}" for name, url in app.state.upstreams.items()),
        )
        try:
            yield
        finally:
            await app.state.client.aclose()

    app = FastAPI(
        title="web",
        version="1.0.0",
        summary="Try and operate the platform in a browser.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    resolved = attach_settings(app, settings)
    app.state.upstreams = upstreams(resolved)
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/ports.json", include_in_schema=False)
    async def ports() -> dict:
        """Each API's port, for the page's links to its /docs (published on the same ports)."""
        return {
            "als_reco_engine": resolved.reco_port,
            "chat_reco_engine": resolved.chat_port,
            "als_trainer": resolved.trainer_port,
        }

    @app.get("/health")
    async def health() -> dict:
        """Up when it serves; each API's own ``/health`` status alongside (no key needed)."""
        apis = {}
        for name, url in app.state.upstreams.items():
            try:
                response = await app.state.client.get(f"{url}/health", timeout=2.0)
                apis[name] = response.json().get("status", "unknown")
            except (httpx.HTTPError, ValueError):
                apis[name] = "unreachable"
        return {"status": "ok", "apis": apis}

    @app.api_route(
        "/api/{service}/{path:path}", methods=["GET", "POST", "PUT", "DELETE"], name="proxy"
    )
    async def proxy(service: str, path: str, request: Request) -> Response:
        base = app.state.upstreams.get(service)
        if base is None:
            known = ", ".join(app.state.upstreams)
            body = error_body("not_found", f"no API {service!r}; the page proxies {known}")
            return JSONResponse(body, status_code=404)
        target = f"{base}/{path}" if path in ROOT_PATHS else f"{base}/api/v1/{path}"
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED}
        upstream = app.state.client.build_request(
            request.method,
            target,
            params=request.query_params.multi_items(),
            headers=headers,
            content=await request.body(),
        )
        try:
            answer = await app.state.client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            message = f"{service} API unreachable at {base} ({type(exc).__name__})"
            return JSONResponse(error_body("infra_error", message, store=service), 503)
        passed = {
            k: v
            for k, v in answer.headers.items()
            if k.lower() in ("content-type", "cache-control", "x-request-id")
        }
        return StreamingResponse(  # chunk by chunk: the chat's SSE tokens arrive as written
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers=passed,
            background=BackgroundTask(answer.aclose),
        )

    return app


def main() -> None:
    import uvicorn

    from config import get_settings

    settings = get_settings()
    configure_logging("web", settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.web_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
