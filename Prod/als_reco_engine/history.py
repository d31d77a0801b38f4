"""Recommendation history: responses are queued on the hot path and inserted in batches by a
background thread, so serving never waits on Postgres for logging."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
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


@dataclass
class _Flush:
    done: threading.Event


class HistoryWriter:
    """Queue + writer thread; ``flush()`` waits until everything queued so far is committed."""

    def __init__(
        self,
        engine: Engine,
        batch_size: int = 500,
        max_queued: int = 100_000,
        linger_s: float = 0.2,
    ) -> None:
        self._engine = engine
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued)
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
        row = {
            "user_id": user_id,
            "served_at": datetime.now(timezone.utc),
            "strategy": strategy,
            "model_version": model_version,
            "item_ids": item_ids,
            "scores": scores,
            "request": request,
        }
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout_s: float = 5.0) -> bool:
        if self._thread is None:
            return False
        marker = _Flush(threading.Event())
        self._queue.put(marker)
        return marker.done.wait(timeout_s)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch, markers, stopping = [], [], item is None
            if isinstance(item, _Flush):
                markers.append(item)
            elif item is not None:
                batch.append(item)
            while not stopping and len(batch) < self._batch_size:
                try:  # gather what arrives within linger_s into the same insert
                    item = self._queue.get(timeout=self._linger_s if batch else 0.001)
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                elif isinstance(item, _Flush):
                    markers.append(item)
                    break
                else:
                    batch.append(item)
            self._write(batch)
            for marker in markers:
                marker.done.set()
            if stopping:
                return

    def _write(self, batch: list[dict]) -> None:
        """COPY the batch (JSON pre-encoded with orjson): a few microseconds a row, so the writer
        thread takes little GIL time from the request loop."""
        if not batch:
            return
        try:
            with self._engine.begin() as conn:
                cursor = conn.connection.driver_connection.cursor()
                with cursor.copy(_COPY_SQL) as copy:
                    for r in batch:
                        copy.write_row(
                            (
                                r["user_id"],
                                r["served_at"],
                                r["strategy"],
                                r["model_version"],
                                orjson.dumps(r["item_ids"]).decode(),
                                orjson.dumps(r["scores"]).decode(),
                                orjson.dumps(r["request"]).decode(),
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
