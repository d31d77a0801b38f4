"""FastAPI pieces every service shares: settings injection, the optional API key, one error
handler mapping domain errors to JSON, and Prometheus request metrics (pure ASGI, cheap on the hot
path)."""

from __future__ import annotations

import hmac
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from config import Settings, get_settings
from Prod.common.errors import RecoError
from Prod.common.logs import get_logger

log = get_logger(__name__)


# --- settings -------------------------------------------------------------------------------


def attach_settings(app: FastAPI, settings: Settings | None) -> Settings:
    """Store the app's settings (tests pass their own) on ``app.state``."""
    app.state.settings = settings or get_settings()
    return app.state.settings


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


# --- API key --------------------------------------------------------------------------------

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def require_api_key(
    settings: SettingsDep, api_key: Annotated[str | None, Depends(_api_key_header)] = None
) -> None:
    """When ``settings.api_key`` is set, every request must carry it in ``X-API-Key``."""
    expected = settings.api_key
    if expected and not (api_key and hmac.compare_digest(api_key, expected)):
        raise Unauthorized("missing or invalid API key (header X-API-Key)")


class Unauthorized(RecoError):
    status_code = 401


# --- errors ---------------------------------------------------------------------------------


def error_body(kind: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, **details}}


def _describe_validation(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    fields = []
    for err in exc.errors():
        location = ".".join(str(part) for part in err.get("loc", ()) if part != "body")
        fields.append({"field": location, "message": err.get("msg", "invalid")})
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields) or "invalid request"
    return summary, fields


def install_error_handlers(app: FastAPI) -> None:
    """Domain errors -> their status with a JSON body naming the problem; never a bare 500."""

    @app.exception_handler(RecoError)
    async def _domain_error(request: Request, exc: RecoError) -> JSONResponse:
        kind = type(exc).__name__
        kind = "".join("_" + c.lower() if c.isupper() else c for c in kind).lstrip("_")
        return JSONResponse(
            error_body(kind, exc.message, **exc.details), status_code=exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        summary, fields = _describe_validation(exc)
        return JSONResponse(
            error_body("invalid_input", summary, fields=fields), status_code=422
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal_error", f"unexpected {type(exc).__name__}; see the service log"),
            status_code=500,
        )


# --- metrics --------------------------------------------------------------------------------


class PrometheusMetrics:
    """Pure ASGI middleware: request counts and latency histograms per route template."""

    def __init__(self, app, service: str) -> None:
        self.app = app
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total", "HTTP requests", ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds", "Request latency", ["service", "method", "route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.service = service

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.requests.labels(self.service, method, template, str(status)).inc()
            self.latency.labels(self.service, method, template).observe(
                time.perf_counter() - start
            )

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI, service: str, path: str = "/metrics") -> None:
    """Wrap ``app`` with request metrics and expose them at ``path`` (Prometheus text format)."""
    holder: dict[str, PrometheusMetrics] = {}

    def factory(inner):
        holder["metrics"] = PrometheusMetrics(inner, service)
        return holder["metrics"]

    app.add_middleware(_MiddlewareFactory, factory=factory)

    @app.get(path, include_in_schema=True, tags=["ops"], summary="Prometheus metrics",
             dependencies=[Depends(require_api_key)])  # fmt: skip
    def read_metrics() -> Response:
        return holder["metrics"].render()


class _MiddlewareFactory:
    def __init__(self, app, factory) -> None:
        self._inner = factory(app)

    async def __call__(self, scope, receive, send) -> None:
        await self._inner(scope, receive, send)
