"""Clients for Redis and ChromaDB, one per address and process.

Redis runs standalone (``redis://``, ``rediss://``) or as a Redis Cluster: ``REDIS_URL`` with the
scheme ``redis+cluster://`` (``rediss+cluster://`` for TLS) names one node of it, the client
discovers the others and routes each command to its slot. The scheme rather than a second setting:
every process that is handed only the URL (Spark executors, the CLI, the invalidation listener)
picks the right client. Keys that one command or transaction touches together share a hash tag
(``reco:{model}:active``, ...; see :mod:`Prod.common.model_store`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import httpx
import redis
from redis.exceptions import CrossSlotTransactionError, RedisClusterException

from Prod.common.errors import InfraError
from Prod.common.logs import get_logger

log = get_logger(__name__)


CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
# options of a standalone client only: a cluster client keeps one connection pool per node
_STANDALONE_ONLY = ("single_connection_client", "health_check_interval")


class ClusterUnavailable(redis.ConnectionError):
    """No node of the Redis Cluster answers, or a slot has no master. redis-py raises
    ``RedisClusterException`` for that, which is not a ``RedisError``: translated, a cluster
    outage takes the same paths as a standalone one (503 naming Redis, fallbacks, retries)."""


def _unavailable(exc: RedisClusterException) -> Exception:
    if isinstance(
        exc, CrossSlotTransactionError
    ):  # a bug (keys without a shared tag), not an outage
        return exc
    return ClusterUnavailable(str(exc))


class _ClusterPipeline(redis.cluster.ClusterPipeline):
    def execute_command(self, *args, **kwargs):
        try:
            return super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise _unavailable(exc) from exc

    def execute(self, raise_on_error: bool = True):
        try:
            return super().execute(raise_on_error)
        except RedisClusterException as exc:
            raise _unavailable(exc) from exc


class _ClusterPubSub(redis.cluster.ClusterPubSub):
    def execute_command(self, *args, **kwargs):
        try:
            return super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise _unavailable(exc) from exc

    def get_message(self, *args, **kwargs):
        try:
            return super().get_message(*args, **kwargs)
        except RedisClusterException as exc:
            raise _unavailable(exc) from exc


class _RedisCluster(redis.RedisCluster):
    """``redis.RedisCluster`` whose outage errors are :class:`ClusterUnavailable`."""

    def execute_command(self, *args, **kwargs):
        try:
            return super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise _unavailable(exc) from exc

    def pipeline(self, transaction=None, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        pipe.__class__ = _ClusterPipeline  # same layout; only the error translation added
        return pipe

    def pubsub(self, node=None, host=None, port=None, **kwargs):
        return _ClusterPubSub(self, node=node, host=host, port=port, **kwargs)


class LazyRedisCluster:
    """A cluster client built on first use: ``RedisCluster`` connects in its constructor, and a
    service must start (and serve its fallbacks) while Redis is down, as with a standalone
    Redis. Every attribute is the built client's; building fails with ClusterUnavailable and
    is tried again on the next use."""

    def __init__(self, url: str, options: dict) -> None:
        self._url, self._options = url, options
        self._client: _RedisCluster | None = None
        self._lock = threading.Lock()

    def _built(self) -> _RedisCluster:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = _RedisCluster.from_url(self._url, **self._options)
                    except RedisClusterException as exc:
                        raise _unavailable(exc) from exc
        return self._client

    def __getattr__(self, name: str):
        return getattr(self._built(), name)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def is_cluster_url(redis_url: str) -> bool:
    return redis_url.partition("://")[0].lower() in CLUSTER_SCHEMES


def redis_from_url(redis_url: str, **options) -> redis.Redis:
    """A new client for ``redis_url``: a Redis Cluster client for a ``redis+cluster://`` URL
    (:class:`LazyRedisCluster`: the methods of ``redis.RedisCluster``; multi-key commands must
    stay within one slot), else ``redis.Redis``. ``options`` are the client's keyword arguments
    (timeouts, ...)."""
    scheme, sep, rest = redis_url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower())
    if plain is None:
        return redis.Redis.from_url(redis_url, **options)
    cluster_options = {k: v for k, v in options.items() if k not in _STANDALONE_ONLY}
    return LazyRedisCluster(f"{plain}{sep}{rest}", cluster_options)


def is_cluster(client) -> bool:
    """Whether ``client`` (or a pipeline of one: ``ClusterPipeline`` subclasses
    ``RedisCluster``) talks to a Redis Cluster."""
    return isinstance(client, redis.RedisCluster | LazyRedisCluster)


@lru_cache(maxsize=8)
def get_redis(redis_url: str) -> redis.Redis:
    """A pooled Redis client returning bytes (factors are raw float32)."""
    return redis_from_url(
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
