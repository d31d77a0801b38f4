"""Clients for Redis and ChromaDB, one per address and process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import httpx
import redis

from Prod.common.errors import InfraError
from Prod.common.logs import get_logger

log = get_logger(__name__)


@lru_cache(maxsize=8)
def get_redis(redis_url: str) -> redis.Redis:
    """A pooled Redis client returning bytes (factors are raw float32)."""
    return redis.Redis.from_url(
        redis_url, socket_timeout=2, socket_connect_timeout=1, health_check_interval=30
    )


@lru_cache(maxsize=8)
def get_chroma(host: str, port: int):
    """``chromadb.HttpClient`` for the Chroma server (telemetry off)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    return chromadb.HttpClient(
        host=host, port=port, settings=ChromaSettings(anonymized_telemetry=False)
    )


def redis_for(settings) -> redis.Redis:
    return get_redis(settings.redis_url)


def chroma_for(settings):
    return get_chroma(settings.chroma_host, int(settings.chroma_port))


@contextmanager
def chroma_errors(what: str = "the product collection") -> Iterator[None]:
    """Turn a Chroma server that is down or dies mid-request (the HTTP client's connect, read or
    protocol errors) into :class:`InfraError` (HTTP 503 naming the store)."""
    try:
        yield
    except httpx.TransportError as exc:
        log.warning("chroma unreachable (%s): %s: %s", what, type(exc).__name__, exc)
        raise InfraError(
            f"Chroma is unavailable ({what}); try again shortly", store="chroma"
        ) from exc


def ping_redis(client: redis.Redis) -> bool:
    """Whether Redis answers a PING (False on any connection error)."""
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
