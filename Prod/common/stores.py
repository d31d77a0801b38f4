"""Clients for Redis and ChromaDB, one per address and process."""

from __future__ import annotations

from functools import lru_cache

import redis


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
