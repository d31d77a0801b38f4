"""Recommendation history: responses are queued on the hot path (one deque append, no lock, no
thread wake-up) and inserted in batches by a background thread, so serving never waits on Postgres
for logging."""

from __future__ import annotations

import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from Prod.common.logs import get_logger
from Prod.common.models import RecommendationLog

log = get_logger(__name__)

_table = RecommendationLog.__table__
_COPY_SQL = (
    "COPY recommendation_log (user_id, served_at, strategy, model_version, item_ids, scores, "
    "request) FROM STDIN"
)


class HistoryWriter:
    """Deque + writer thread; ``flush()`` waits until everything queued so far is committed.

    The writer wakes every ``linger_s`` (or on ``flush``/``stop``) and drains the deque: waking it
    per response would cost the request loop a GIL hand-off each time.
    """

    def __init__(
        self,
        engine: Engine,
        batch_size: int = 2000,
        max_queued: int = 100_000,
        linger_s: float = 0.2,
    ) -> None:
        self._engine = engine
        self._batch_size = batch_size
        self._max_queued = max_queued
        self._linger_s = linger_s
        self._rows: deque[tuple] = deque()
        self._wake = threading.Event()
        self._waiters: list[threading.Event] = []
        self._waiters_lock = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.dropped = 0  # rows lost because the queue was full or Postgres refused them
        self.written = 0

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
        if len(self._rows) >= self._max_queued:
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

    def _run(self) -> None:
        while True:
            self._wake.wait(self._linger_s)
            self._wake.clear()
            stopping = self._stopping
            with self._waiters_lock:  # taken before draining: their rows are already queued
                waiters, self._waiters = self._waiters, []
            self._drain()
            for done in waiters:
                done.set()
            if stopping:
                return

    def _drain(self) -> None:
        rows = self._rows
        while rows:
            batch = []
            while rows and len(batch) < self._batch_size:
                batch.append(rows.popleft())
            self._write(batch)

    def _write(self, batch: list[tuple]) -> None:
        """COPY the batch (JSON pre-encoded with orjson): a few microseconds a row, so the writer
        thread takes little GIL time from the request loop."""
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
            self.written += len(batch)
        except Exception as exc:  # Postgres down: count the loss, keep serving
            self.dropped += len(batch)
            log.warning("could not write %d history rows: %s", len(batch), exc)


def read_history(
    engine: Engine, *, user_id: str | None, limit: int, offset: int
) -> tuple[list[dict], bool]:
    """Served recommendations newest first; returns (rows, has_more)."""
    query = select(_table).order_by(_table.c.served_at.desc(), _table.c.id.desc())
    if user_id is not None:
        query = query.where(_table.c.user_id == user_id)
    with engine.connect() as conn:
        rows = conn.execute(query.limit(limit + 1).offset(offset)).mappings().all()
    return [dict(r) for r in rows[:limit]], len(rows) > limit


def count_history(engine: Engine, *, user_id: str | None) -> int:
    query = select(func.count()).select_from(_table)
    if user_id is not None:
        query = query.where(_table.c.user_id == user_id)
    with engine.connect() as conn:
        return int(conn.scalar(query))
