"""Recommendation history: responses are queued on the hot path (one deque append, no lock, no
thread wake-up) and inserted in batches by a background thread, so serving never waits on Postgres
for logging.

While Postgres is unreachable the rows stay queued and the writer retries with a growing pause
(up to ``MAX_RETRY_PAUSE_S``); past ``max_buffered`` queued rows new ones are dropped. Drops,
outages and recoveries are logged with counts, and the counters are in ``/status`` and
``/metrics`` (:class:`HistoryCollector`). ``GET /history`` reads it back
(:func:`read_history_page`)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import Engine, func, select

from Prod.common.db import postgres_errors, postgres_unreachable
from Prod.common.logs import get_logger
from Prod.common.models import RecommendationLog

log = get_logger(__name__)

_COPY_SQL = (
    "COPY recommendation_log (user_id, served_at, strategy, model_version, item_ids, scores, "
    "request) FROM STDIN"
)
MAX_RETRY_PAUSE_S = 5.0  # an outage costs one failed connect per 5 s, not one per batch
DROP_LOG_INTERVAL_S = 10.0  # drops are summed into one warning at most this often


class HistoryWriter:
    """Deque + writer thread; ``flush()`` waits until everything queued so far was tried.

    The writer wakes every ``linger_s`` (or on ``flush``/``stop``) and drains the deque: waking it
    per response would cost the request loop a GIL hand-off each time. A batch that fails because
    Postgres is unreachable goes back to the front of the queue (order kept) and is retried; one
    Postgres refuses for its content is dropped and logged.

    Counters (rows): ``written`` in total, ``flushed`` written after a failed attempt (what the
    buffer saved), ``dropped`` (queue full, refused, or still queued at shutdown), ``buffered``
    (queued now).
    """

    def __init__(
        self,
        engine: Engine,
        batch_size: int = 2000,
        max_buffered: int = 100_000,
        linger_s: float = 0.2,
    ) -> None:
        self._engine = engine
        self._batch_size = batch_size
        self._max_buffered = max_buffered
        self._linger_s = linger_s
        self._rows: deque[tuple] = deque()
        self._in_flight = 0  # rows of the batch being written (out of the deque meanwhile)
        self._wake = threading.Event()
        self._waiters: list[threading.Event] = []
        self._waiters_lock = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.written = 0
        self.flushed = 0
        self._dropped_full = 0  # the hot path's share of ``dropped`` (queue full)
        self._dropped_full_logged = 0
        self._drop_logged_at = 0.0
        self._outage_since: float | None = None  # monotonic time of the first failed attempt
        self._outage_dropped = 0
        self._failures = 0
        self._outage_flushed = 0  # ``flushed`` when the outage began

    @property
    def buffered(self) -> int:
        return len(self._rows) + self._in_flight

    @property
    def in_outage(self) -> bool:
        return self._outage_since is not None

    def log(
        self,
        *,
        user_id: str,
        strategy: str,
        model_version: str | None,
        item_ids: list[str],
        scores: list[float],
        request: dict[str, Any],
    ) -> None:
        """Queue one served response (a tuple append; the writer thread converts it)."""
        if len(self._rows) + self._in_flight >= self._max_buffered:
            self._dropped_full += 1  # counted here, logged by the writer thread
            self.dropped += 1
            return
        self._rows.append(
            (user_id, time.time(), strategy, model_version, item_ids, scores, request)
        )

    def flush(self, timeout_s: float = 5.0) -> bool:
        if self._thread is None:
            return False
        done = threading.Event()
        with self._waiters_lock:
            self._waiters.append(done)
        self._wake.set()
        return done.wait(timeout_s)

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join(timeout=10)
            self._thread = None
        if self._rows:
            lost = len(self._rows)
            self._rows.clear()
            self.dropped += lost
            log.error("history: %d rows still buffered at shutdown are dropped", lost)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._pause())
            self._wake.clear()
            stopping = self._stopping
            with self._waiters_lock:  # taken before draining: their rows are already queued
                waiters, self._waiters = self._waiters, []
            self._drain()
            self._log_drops()
            for done in waiters:
                done.set()
            if stopping:
                return

    def _pause(self) -> float:
        if self._outage_since is None:
            return self._linger_s
        return min(MAX_RETRY_PAUSE_S, self._linger_s * 2 ** min(self._failures, 10))

    def _drain(self) -> None:
        rows = self._rows
        while rows:
            batch = []
            self._in_flight = min(len(rows), self._batch_size)  # before the rows leave
            while len(batch) < self._in_flight:  # only the writer thread takes rows out
                batch.append(rows.popleft())
            written = self._write(batch)
            if not written:
                rows.extendleft(reversed(batch))  # back to the front, order kept
            self._in_flight = 0
            if not written:
                return

    def _write(self, batch: list[tuple]) -> bool:
        """COPY the batch (JSON pre-encoded with orjson): a few microseconds a row, so the writer
        thread takes little GIL time from the request loop. False: Postgres is unreachable and
        the batch should be retried."""
        try:
            with self._engine.begin() as conn:
                cursor = conn.connection.driver_connection.cursor()
                with cursor.copy(_COPY_SQL) as copy:
                    for user_id, served_at, strategy, version, item_ids, scores, request in batch:
                        copy.write_row(
                            (
                                user_id,
                                datetime.fromtimestamp(served_at, timezone.utc),
                                strategy,
                                version,
                                orjson.dumps(item_ids).decode(),
                                orjson.dumps(scores).decode(),
                                orjson.dumps(request).decode(),
                            )
                        )
        except Exception as exc:
            if postgres_unreachable(exc):
                self._on_failure(exc, len(batch))
                return False
            self.dropped += len(batch)  # refused for its content: retrying cannot help
            log.error("history: Postgres refused %d rows, dropped: %s", len(batch), exc)
            return True
        self.written += len(batch)
        if self._outage_since is not None:
            self._on_recovery(len(batch))
        return True

    def _on_failure(self, exc: Exception, batch_rows: int) -> None:
        self._failures += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self._outage_dropped, self._outage_flushed = self.dropped, self.flushed
            log.warning(
                "history: Postgres unreachable, buffering served recommendations (%d queued, "
                "max %d; retrying every <= %.0f s): %s",
                len(self._rows) + batch_rows,
                self._max_buffered,
                MAX_RETRY_PAUSE_S,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )

    def _on_recovery(self, written: int) -> None:
        self.flushed += written
        if self._rows:  # more held rows follow in this drain; report when all are written
            return
        outage_s = time.monotonic() - self._outage_since
        log.warning(
            "history: Postgres reachable again after %.1f s; wrote %d buffered rows, %d dropped "
            "during the outage",
            outage_s,
            self.flushed - self._outage_flushed,
            self.dropped - self._outage_dropped,
        )
        self._outage_since, self._failures = None, 0

    def _log_drops(self) -> None:
        new = self._dropped_full - self._dropped_full_logged
        now = time.monotonic()
        if new and (now - self._drop_logged_at >= DROP_LOG_INTERVAL_S or self._stopping):
            log.warning(
                "history: buffer full (%d rows, HISTORY_MAX_BUFFERED): dropped %d served "
                "recommendations in the last %.0f s, %d in total",
                len(self._rows),
                new,
                min(now - self._drop_logged_at, 1e9),
                self.dropped,
            )
            self._dropped_full_logged += new
            self._drop_logged_at = now

    def counts(self) -> dict[str, int]:
        return {
            "written": self.written,
            "flushed": self.flushed,
            "dropped": self.dropped,
            "buffered": self.buffered,
        }


class HistoryCollector:
    """The writer's counters as Prometheus metrics (read at scrape time, nothing on the hot
    path): ``reco_history_rows_{written,flushed,dropped}_total`` and
    ``reco_history_rows_buffered``."""

    def __init__(self, writer: HistoryWriter) -> None:
        self._writer = writer

    def collect(self) -> Iterator[Metric]:
        w = self._writer
        for name, value, doc in (
            ("written", w.written, "Served-recommendation history rows written to Postgres"),
            ("flushed", w.flushed, "History rows written after Postgres was unreachable"),
            ("dropped", w.dropped, "History rows lost (buffer full, refused, or at shutdown)"),
        ):
            yield CounterMetricFamily(f"reco_history_rows_{name}", doc, value=value)
        yield GaugeMetricFamily(
            "reco_history_rows_buffered", "History rows waiting for Postgres", value=w.buffered
        )


def read_history_page(
    *, db: Engine, writer: HistoryWriter, user_id: str | None, limit: int, offset: int
) -> dict[str, Any]:
    """Served recommendations newest first (``HistoryOut``), of one user or everyone.

    ``writer`` (the engine's) is flushed first, for up to 2 s: a client reads the responses it
    was just served by this process."""
    writer.flush(timeout_s=2.0)
    query = select(
        RecommendationLog.id,
        RecommendationLog.user_id,
        RecommendationLog.served_at,
        RecommendationLog.strategy,
        RecommendationLog.model_version,
        RecommendationLog.item_ids,
        RecommendationLog.scores,
        RecommendationLog.request,
    ).order_by(RecommendationLog.served_at.desc(), RecommendationLog.id.desc())
    count = select(func.count()).select_from(RecommendationLog)
    if user_id is not None:
        query = query.where(RecommendationLog.user_id == user_id)
        count = count.where(RecommendationLog.user_id == user_id)
    with postgres_errors("the history"), db.connect() as conn:
        rows = conn.execute(query.limit(limit + 1).offset(offset)).mappings().all()
        total = int(conn.scalar(count))
    entries = [
        {
            "id": r["id"],
            "user_id": r["user_id"],
            "served_at": r["served_at"],
            "strategy": r["strategy"],
            "model_version": r["model_version"],
            "items": [
                {"item_id": i, "score": s} for i, s in zip(r["item_ids"], r["scores"], strict=True)
            ],
            "request": r["request"],
        }
        for r in rows[:limit]
    ]
    return {
        "user_id": user_id,
        "limit": limit,
        "offset": offset,
        "total": total,
        "has_more": len(rows) > limit,
        "entries": entries,
    }
