"""FastAPI pieces every service shares: settings injection, the optional API key, a request guard
(key and body size checked before the body is read), one error shape for every error, and
Prometheus request metrics (pure ASGI, cheap on the hot path).

Every error a client sees is ``{"error": {"type": "not_found", "message": "...", ...details}}``:
domain errors, unknown routes (404), wrong methods (405), bodies that are not JSON (400), invalid
input (422, naming each field and its problem), a query parameter the route does not take (422
naming it, :data:`QUERY_RULE`), a missing key (401), a too-large body (413).
Each also carries ``request_id``: the request's ``X-Request-ID`` (the client's when it sent a
valid one, else a new one), echoed in the response header and on every log line of the request.
"""

from __future__ import annotations

import hmac
import os
import re
import time
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config import Settings, get_settings
from Prod.common.errors import (
    InvalidInput,
    InvalidJson,
    PayloadTooLarge,
    RecoError,
    Unauthorized,
)
from Prod.common.logs import get_logger, request_id_var

log = get_logger(__name__)

__all__ = [
    "PUBLIC_PATHS",
    "QUERY_RULE",
    "REQUEST_ID_HEADER",
    "RequestGuard",
    "SettingsDep",
    "Unauthorized",
    "api_key_matches",
    "api_key_ok",
    "attach_settings",
    "describe_validation",
    "error_body",
    "error_response",
    "get_app_settings",
    "install_error_handlers",
    "install_metrics",
    "install_offline_docs",
    "install_request_guard",
    "query_param_names",
    "request_id_from",
    "reject_unknown_query_params",
    "require_api_key",
]

#: paths every service answers without the API key
PUBLIC_PATHS = frozenset({"/health"})


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
_KEY_MESSAGE = "missing or invalid API key (header X-API-Key)"


def api_key_matches(presented: str | bytes | None, expected: str | None) -> bool:
    """The one API-key rule: with no key configured everything passes; otherwise the presented
    value must equal it, compared in constant time as bytes (so a non-ASCII header is a plain
    mismatch, never an error). A ``str`` is a header as Starlette decodes it (latin-1), turned
    back into the bytes the client sent; the configured key is UTF-8."""
    if not expected:
        return True
    if presented is None:
        return False
    if isinstance(presented, str):
        try:
            presented = presented.encode("latin-1")
        except UnicodeEncodeError:
            presented = presented.encode("utf-8")
    return hmac.compare_digest(presented, expected.encode("utf-8"))


def api_key_ok(headers: list[tuple[bytes, bytes]], expected: str | None) -> bool:
    """:func:`api_key_matches` on raw ASGI headers (the first ``X-API-Key`` counts)."""
    if not expected:
        return True
    presented = next((value for name, value in headers if name == b"x-api-key"), None)
    return api_key_matches(presented, expected)


def require_api_key(
    settings: SettingsDep, api_key: Annotated[str | None, Depends(_api_key_header)] = None
) -> None:
    """When ``settings.api_key`` is set, every request must carry it in ``X-API-Key`` (the
    request guard already refused requests without it; this documents the scheme in OpenAPI)."""
    if not api_key_matches(api_key, settings.api_key):
        raise Unauthorized(_KEY_MESSAGE)


# --- request guard --------------------------------------------------------------------------


def _public_paths(app: FastAPI, settings: Settings) -> frozenset[str]:
    if not settings.api_docs_public:
        return PUBLIC_PATHS
    docs = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    return PUBLIC_PATHS | {path for path in docs if path}


#: the header a request id arrives in and is echoed in
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_OK = re.compile(rb"[\x21-\x7e]{1,128}")  # visible ASCII: one token on a text log line


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The request's id: the client's ``X-Request-ID`` when it is 1-128 visible ASCII
    characters (no spaces or control characters), else 128 random bits as 32 hex characters
    (the shape of ``uuid4().hex``; ``uuid4()`` itself costs 4x more on the hot path)."""
    for name, value in headers:
        if name == b"x-request-id":
            if _REQUEST_ID_OK.fullmatch(value):
                return value.decode("ascii")
            break
    return os.urandom(16).hex()


class _BodyTooLarge(Exception):
    """Raised from ``receive`` once a streamed body passes the limit."""


class RequestGuard:
    """Pure ASGI layer in front of every app: the request id, then the API key, then the body
    size, both judged before the app reads a byte of the body.

    The request id (:func:`request_id_from`) is held in :data:`Prod.common.logs.request_id_var`
    while the app handles the request (every log line and error body carries it), kept in
    ``request.state.request_id`` for the 500 handler (which runs outside this layer) and echoed
    in the ``X-Request-ID`` response header.

    A declared ``Content-Length`` over ``settings.max_request_bytes`` is a 413 at once; a
    chunked body is counted as it streams and answered 413 when it passes the limit (whatever
    the app made of the interrupted read is dropped).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        await self._guard(scope, receive, send, request_id)
        # not in a ``finally``: after an unhandled error the id stays bound for the lines
        # written outside this layer (Starlette's 500 handler, the server's traceback and access
        # line); a server runs each request in its own task, so it ends with the request
        request_id_var.reset(token)

    async def _guard(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        echoed = (b"x-request-id", request_id.encode("ascii"))
        app = scope["app"]
        settings: Settings = app.state.settings
        headers = scope["headers"]
        if (
            settings.api_key
            and scope["path"] not in _public_paths(app, settings)
            and not scope["path"].startswith(DOCS_ASSETS + "/")
            and not api_key_ok(headers, settings.api_key)
        ):
            await _send_error(scope, receive, send, Unauthorized(_KEY_MESSAGE), request_id)
            return
        limit = settings.max_request_bytes
        declared = next((value for name, value in headers if name == b"content-length"), None)
        # (a malformed Content-Length never gets here: the server refuses it; counted below)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_error(scope, receive, send, _too_large(limit, int(declared)), request_id)
            return
        received = 0
        over = started = False

        async def counted_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the app's answer to the interrupted read; the 413 replaces it
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", ()), echoed]}
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except Exception:
            if not over:
                raise
        if over and not started:
            await _send_error(scope, receive, send, _too_large(limit), request_id)


def _too_large(limit: int, size: int | None = None) -> PayloadTooLarge:
    what = f"{size} bytes" if size is not None else "larger than that"
    return PayloadTooLarge(
        f"request body too large: the limit is {limit} bytes (MAX_REQUEST_BYTES), this one is "
        f"{what}",
        max_bytes=limit,
    )


async def _send_error(
    scope: Scope, receive: Receive, send: Send, exc: RecoError, request_id: str
) -> None:
    await error_response(exc, headers={REQUEST_ID_HEADER: request_id})(scope, receive, send)


def install_request_guard(app: FastAPI) -> None:
    """Add :class:`RequestGuard`; call it after the app's other middleware and before
    :func:`install_metrics`, so it runs first and its 401/413 answers are still counted."""
    app.add_middleware(RequestGuard)


# --- query parameters -----------------------------------------------------------------------


def query_param_names(route: APIRoute) -> tuple[str, ...]:
    """The query parameters ``route`` declares (its own and its dependencies'), in order."""
    names: dict[str, None] = {}
    pending = [route.dependant]
    while pending:
        dependant = pending.pop(0)
        names.update((field.alias, None) for field in dependant.query_params)
        pending.extend(dependant.dependencies)
    return tuple(names)


_DECLARED: dict[int, tuple[APIRoute, tuple[str, ...]]] = {}  # id(route) -> (route, its names)


async def reject_unknown_query_params(request: Request) -> None:
    """The one rule for query parameters, on every API route of every service: those the route
    declares are validated as documented, any other is a 422 naming it, never silently ignored
    (``?strategy=popular`` on a route without a ``strategy`` would otherwise look honoured).

    Installed app-wide as :data:`QUERY_RULE`; async, so it costs no thread-pool hop."""
    if not request.scope.get("query_string"):
        return
    route = request.scope["route"]
    entry = _DECLARED.get(id(route))
    if entry is None:  # once per route (the route object is kept, so its id stays its own)
        entry = _DECLARED.setdefault(id(route), (route, query_param_names(route)))
    declared = entry[1]
    unknown = [name for name in dict.fromkeys(request.query_params) if name not in declared]
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        takes = f"it takes {', '.join(declared)}" if declared else "it takes none"
        plural = "s" if len(unknown) > 1 else ""
        raise InvalidInput(
            f"unknown query parameter{plural} {names} on {request.method} {route.path}; {takes}",
            fields=[{"field": f"query.{name}", "message": "unknown parameter"} for name in unknown],
        )


#: ``FastAPI(dependencies=[QUERY_RULE])``: every route of the app follows the query rule
QUERY_RULE = Depends(reject_unknown_query_params)


# --- errors ---------------------------------------------------------------------------------


def error_body(kind: str, message: str, **details: Any) -> dict[str, Any]:
    """``{"error": {"type", "message", **details}}``, plus ``request_id`` inside a request."""
    error = {"type": kind, "message": message, **details}
    request_id = request_id_var.get()
    if request_id is not None:
        error["request_id"] = request_id
    return {"error": error}


def _kind(exc: RecoError) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def error_response(exc: RecoError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The documented JSON error for a domain error (``type`` is its class name in snake case)."""
    return JSONResponse(
        error_body(_kind(exc), exc.message, **exc.details),
        status_code=exc.status_code,
        headers=headers,
    )


_FASTAPI_BODY_ERROR = "There was an error parsing the body"


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Routing errors (404, 405) and FastAPI's own HTTP errors in the documented shape."""
    code = exc.status_code
    method, path = request.method, request.url.path
    if code == 404 and exc.detail == "Not Found":
        message = f"no endpoint {method} {path}; the API is described at /docs"
    elif code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{method} is not allowed on {path}" + (f"; use {allowed}" if allowed else "")
    elif code == 400 and exc.detail == _FASTAPI_BODY_ERROR:
        return error_response(InvalidJson("the request body is not UTF-8 JSON"))
    else:
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(code).phrase
    kind = HTTPStatus(code).phrase.lower().replace(" ", "_").replace("-", "_")
    body = error_body(kind, message)
    return JSONResponse(body, status_code=code, headers=exc.headers)


# --- validation messages --------------------------------------------------------------------

_SHOULD = re.compile(r"^(Input|String|List|Value|Dictionary|Object|Tuple|Set|Decimal) should ")
_SCALARS = (str, int, float, bool)


def _walk(loc: tuple, body: Any, error_type: str) -> tuple[list, tuple | None, str | None]:
    """Split a body error location into the field path the client sent and the union branch
    pydantic tried (its tags, e.g. ``function-after[_check(), InteractionIn]``, name no field).

    Returns ``(path, site, tag)``: the field path, where the first union branch sits, its tag.
    """
    path: list = []
    site = tag = None
    node = body
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif last and error_type == "missing" and isinstance(node, dict):
            path.append(part)  # a field the client left out
        elif tag is None:
            site, tag = tuple(path), str(part)  # a union branch, not a field
        # deeper branch tags are dropped from the name too
    return path, site, tag


def _field_name(source: str, path: list) -> str:
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    if source == "body":
        return name or "body"
    return f"{source}.{name}" if name else source


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind in ("model_attributes_type", "model_type", "dict_type"):
        return "must be a JSON object"
    message = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    message = _SHOULD.sub("must ", message).replace(" after validation", "")
    value = err.get("input")
    if isinstance(value, _SCALARS) and len(str(value)) <= 60 and kind != "value_error":
        message += f" (got {value!r})"
    return message


def describe_validation(
    errors: list[dict[str, Any]], body: Any = None
) -> tuple[str, list[dict[str, Any]]]:
    """One line and a ``[{"field", "message"}]`` list a client developer can act on.

    Where the body may take one of several shapes (``InteractionIn | InteractionBatch``) only
    the shape the client meant is reported: the one that knows every key it sent (fewest
    ``extra_forbidden``), else the first declared.
    """
    walked = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        source, rest = (str(loc[0]), loc[1:]) if loc else ("body", ())
        if source == "body":
            path, site, tag = _walk(rest, body, err.get("type", ""))
        else:
            path, site, tag = list(rest), None, None
        walked.append((err, source, path, site, tag))
    best: dict[tuple, str] = {}
    for site in {w[3] for w in walked if w[4] is not None}:
        tags: dict[str, int] = {}
        for err, _, _, s, tag in walked:
            if s == site:
                tags.setdefault(tag, 0)
                tags[tag] += err.get("type") == "extra_forbidden"
        best[site] = min(tags, key=lambda t: tags[t])  # ties: first declared (dicts keep order)
    fields = [
        {"field": _field_name(source, path), "message": _message(err)}
        for err, source, path, site, tag in walked
        if tag is None or best[site] == tag
    ]
    summary = "; ".join(
        f["message"] if f["field"] == "body" else f"{f['field']}: {f['message']}" for f in fields
    )
    return summary or "invalid request", fields


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    broken = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if broken is not None:
        position = broken.get("loc", ("body", 0))[-1]
        reason = (broken.get("ctx") or {}).get("error", "JSON decode error")
        return error_response(
            InvalidJson(f"the request body is not valid JSON: {reason} (at character {position})")
        )
    summary, fields = describe_validation(errors, getattr(exc, "body", None))
    return JSONResponse(error_body("invalid_input", summary, fields=fields), status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    """Every error -> its status with the documented JSON body naming the problem; never a bare
    500 and never FastAPI's ``{"detail": ...}``."""

    @app.exception_handler(RecoError)
    async def _domain_error(request: Request, exc: RecoError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _http_error(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette runs this outside the request guard: bind the request's id again
        request_id = getattr(request.state, "request_id", None)
        token = request_id_var.set(request_id)
        try:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            where = f"request_id {request_id}" if request_id else "the traceback"
            message = f"unexpected {type(exc).__name__}; see the service log ({where})"
            body = error_body("internal_error", message)
        finally:
            request_id_var.reset(token)
        headers = {REQUEST_ID_HEADER: request_id} if request_id else None
        return JSONResponse(body, status_code=500, headers=headers)


# --- offline API docs -----------------------------------------------------------------------

#: where each service serves the Swagger UI / ReDoc files (public: third-party code, no data)
DOCS_ASSETS = "/docs-assets"


def install_offline_docs(app: FastAPI) -> None:
    """``/docs`` and ``/redoc`` from files this app serves (the ``fastapi-offline`` wheel's
    Swagger UI and ReDoc builds) instead of FastAPI's CDN links: they render with no internet."""
    import fastapi_offline
    from fastapi.staticfiles import StaticFiles

    static = Path(fastapi_offline.__file__).parent / "static"
    docs, redoc = app.docs_url, app.redoc_url
    app.router.routes[:] = [
        route for route in app.router.routes if getattr(route, "path", None) not in (docs, redoc)
    ]
    app.mount(DOCS_ASSETS, StaticFiles(directory=static), name="docs-assets")

    def openapi_url(request: Request) -> str:
        return request.scope.get("root_path", "") + (app.openapi_url or "")

    if docs:

        @app.get(docs, include_in_schema=False)
        async def swagger_ui(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return get_swagger_ui_html(
                openapi_url=openapi_url(request),
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
                swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
                oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
                init_oauth=app.swagger_ui_init_oauth,
                swagger_ui_parameters=app.swagger_ui_parameters,
            )

    if redoc:

        @app.get(redoc, include_in_schema=False)
        async def redoc_ui(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return get_redoc_html(
                openapi_url=openapi_url(request),
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
                with_google_fonts=False,
            )


# --- metrics --------------------------------------------------------------------------------


class PrometheusMetrics:
    """Pure ASGI middleware: request counts and latency histograms per route template."""

    def __init__(self, app, service: str, registry: CollectorRegistry | None = None) -> None:
        self.app = app
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Request latency",
            ["service", "method", "route"],
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
            self.latency.labels(self.service, method, template).observe(time.perf_counter() - start)

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI, service: str, path: str = "/metrics") -> None:
    """Wrap ``app`` with request metrics and expose them at ``path`` (Prometheus text format).

    The registry is ``app.state.metrics_registry``: a service registers its domain metrics
    there (:func:`Prod.common.metrics.register_metrics`)."""
    holder: dict[str, PrometheusMetrics] = {}
    registry = CollectorRegistry()
    app.state.metrics_registry = registry

    def factory(inner):
        holder["metrics"] = PrometheusMetrics(inner, service, registry)
        return holder["metrics"]

    app.add_middleware(_MiddlewareFactory, factory=factory)

    @app.get(
        path,
        include_in_schema=True,
        tags=["ops"],
        summary="Prometheus metrics",
        dependencies=[Depends(require_api_key)],
    )
    def read_metrics() -> Response:
        return holder["metrics"].render()


class _MiddlewareFactory:
    def __init__(self, app, factory) -> None:
        self._inner = factory(app)

    async def __call__(self, scope, receive, send) -> None:
        await self._inner(scope, receive, send)
