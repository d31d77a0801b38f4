"""Logging set-up shared by every service, job and command.

Every line carries the service name and, inside an HTTP request, the request's id (see
:class:`Prod.common.api.RequestGuard`), as text (``LOG_FORMAT=text``, the default) or as one JSON
object per line (``LOG_FORMAT=json``) for a log shipper.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import TextIO

__all__ = [
    "JsonFormatter",
    "configure_logging",
    "current_request_id",
    "get_logger",
    "request_id_var",
]

#: the id of the HTTP request being handled (``None`` outside one); set by the request guard,
#: copied by Starlette into threadpool calls and by asyncio into tasks the request starts
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_FORMAT = "%(asctime)s %(levelname)s [%(service)s] %(name)s: %(message)s%(request_tag)s"


def current_request_id() -> str | None:
    """The id of the request being handled, or ``None`` outside a request."""
    return request_id_var.get()


class _ContextFilter(logging.Filter):
    """Adds ``service`` and ``request_id`` (and the text format's ``request_tag``) to every
    record the handler writes; a record that already carries them keeps its own."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = getattr(record, "service", self.service)
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        record.request_tag = f" request_id={record.request_id}" if record.request_id else ""
        return True


# probes: a compose healthcheck every 10 s and a Prometheus scrape every 15 s would fill the log
_QUIET_PATHS = frozenset({"/health", "/metrics"})
_UVICORN_NOISE = frozenset({"Waiting for application startup."})


class _QuietFilter(logging.Filter):
    """Drops what says nothing to an operator: successful probe lines of the access log and
    uvicorn's "Waiting for application startup."; shows ``uvicorn.error`` (its general logger,
    INFO lines included) as ``uvicorn``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            args = record.args  # (client, method, path, http version, status)
            if len(args) == 5 and str(args[2]).split("?")[0] in _QUIET_PATHS:
                return not 200 <= int(args[4]) < 400
        elif record.name == "uvicorn.error":
            if record.msg in _UVICORN_NOISE:
                return False
            record.name = "uvicorn"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``service``, ``request_id`` (``null`` outside a request) and, when the record has one,
    ``exception`` (the formatted traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": getattr(record, "service", None),
            "request_id": getattr(record, "request_id", None),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(
    service: str,
    level: str = "INFO",
    log_format: str | None = None,
    *,
    stream: TextIO | None = None,
) -> None:
    """Send the process's logs to ``stream`` (stderr), each line tagged with the service name
    and the current request id, as text or JSON lines (``log_format``; ``None``: the
    ``LOG_FORMAT`` setting)."""
    if log_format is None:
        from config import get_settings

        log_format = get_settings().log_format
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_QuietFilter())
    handler.addFilter(_ContextFilter(service))
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn's own dictConfig, if
        uv = logging.getLogger(name)  # it ran first, gives these handlers and cuts them off root
        uv.handlers.clear()
        uv.propagate = True
        uv.setLevel(logging.NOTSET)
    noisy = ("httpx", "chromadb", "urllib3", "sentence_transformers", "httpcore", "apscheduler")
    for name in noisy:
        logging.getLogger(name).setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
