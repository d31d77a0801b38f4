"""``reco export recommendations``: top-k for many users, for campaigns, through the serving
code path: a :class:`~Prod.als_reco_engine.service.RecoEngine` in this process against the
stores, so filters, seen-item removal, suppressions, dislikes, deleted items, fresh-item mixing
and A/B arms are exactly those of ``GET /api/v1/recommend/{user_id}``.

- Users come in chunks of ``CHUNK_USERS``; a chunk's recommendations run concurrently on one
  event loop (profiles read by the thread pool, mat-vecs batched like the service's), are
  written, and the chunk's cached profiles and fold-ins are dropped: memory stays flat in the
  number of users (``--users all`` is read with a server-side cursor).
- A chunk's user factors are read from Redis in one HMGET before it is served
  (:class:`_ExportEngine`): the service's one HGET a request would be 500 round trips a chunk,
  ~45% of an export's time on a busy machine; the bytes and everything after are the service's.
- Nothing is logged to the served history: an export is not a response a user saw, and the A/B
  report counts only those.
- The file is written to a hidden temporary file beside ``out`` and renamed at the end; any
  failure removes it, so ``out`` is either complete or untouched.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from config import Settings
from Prod.als_reco_engine.guard import StoreUnavailable
from Prod.als_reco_engine.index import ItemFilters
from Prod.als_reco_engine.schemas import K_MAX
from Prod.als_reco_engine.service import RecoEngine, Recommendation
from Prod.common import model_store
from Prod.common.errors import InvalidInput
from Prod.common.models import User
from Prod.common.schemas import ID_PATTERN, ID_RULE

FORMATS = ("csv", "parquet", "jsonl")
ALL_USERS = "all"
CHUNK_USERS = 500  # users in flight at once: ~0.5 MB of results, and enough to batch mat-vecs
ROW_COLUMNS = ("user_id", "rank", "item_id", "score", "strategy", "model_version")
_ID = re.compile(ID_PATTERN)
_HEADER = "user_id"  # a users file may start with this header line


@dataclass
class ExportResult:
    path: str
    format: str
    k: int
    users: int = 0
    rows: int = 0
    seconds: float = 0.0
    strategies: Counter = field(default_factory=Counter)
    model_versions: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "k": self.k,
            "users": self.users,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "users_per_s": round(self.users / self.seconds, 1) if self.seconds else None,
            "strategies": dict(self.strategies),
            "model_versions": dict(self.model_versions),
        }


# --- users ------------------------------------------------------------------------------------


def check_users_file(path: Path) -> int:
    """Validate a users file (one id per line, optional ``user_id`` header, blank lines
    skipped) without keeping it in memory; returns how many ids it lists."""
    if not path.is_file():
        raise InvalidInput(f"users file {str(path)!r} does not exist (or is not a file)")
    count = 0
    for _ in iter_users_file(path):
        count += 1
    if count == 0:
        raise InvalidInput(f"users file {str(path)!r} lists no user id")
    return count


def iter_users_file(path: Path) -> Iterator[str]:
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                user_id = line.strip()
                if not user_id or (number == 1 and user_id == _HEADER):
                    continue
                if not _ID.match(user_id):
                    raise InvalidInput(
                        f"{path}:{number}: {user_id[:60]!r} is not a valid user id ({ID_RULE})"
                    )
                yield user_id
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"users file {str(path)!r} is not UTF-8 text: {exc.reason}") from None


def count_all_users(engine: RecoEngine) -> int:
    with engine.db.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(User)))


def iter_all_users(engine: RecoEngine, page: int = 5000) -> Iterator[str]:
    """Every user id in ``user`` order, streamed (a server-side cursor, ``page`` rows a fetch)."""
    with engine.db.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=page).execute(
            select(User.user_id).order_by(User.user_id)
        )
        for (user_id,) in result:
            yield user_id


# --- writers ----------------------------------------------------------------------------------


def _item_rows(result: Recommendation) -> Iterator[tuple]:
    """One row per recommended item (``ROW_COLUMNS``), the item's own strategy when mixed."""
    extras = result.extras or ()
    for rank, (item_id, score) in enumerate(zip(result.item_ids(), result.scores, strict=True)):
        strategy = extras[rank].get("strategy", result.strategy) if extras else result.strategy
        yield (result.user_id, rank + 1, item_id, score, strategy, result.model_version)


class _CsvWriter:
    def __init__(self, path: Path) -> None:
        self._file = path.open("w", encoding="utf-8", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow(ROW_COLUMNS)

    def write(self, results: list[Recommendation]) -> int:
        rows = [row for result in results for row in _item_rows(result)]
        self._csv.writerows(rows)
        return len(rows)

    def close(self) -> None:
        self._file.close()


class _JsonlWriter:
    """One line per user: exactly the body ``GET /recommend`` answers."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("wb")

    def write(self, results: list[Recommendation]) -> int:
        self._file.write(b"".join(result.to_json() + b"\n" for result in results))
        return sum(len(result.scores) for result in results)

    def close(self) -> None:
        self._file.close()


class _ParquetWriter:
    """``ROW_COLUMNS``, one row group per chunk of users."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        self._schema = pa.schema(
            [
                ("user_id", pa.string()),
                ("rank", pa.int16()),
                ("item_id", pa.string()),
                ("score", pa.float64()),
                ("strategy", pa.string()),
                ("model_version", pa.string()),
            ]
        )
        self._writer = pq.ParquetWriter(str(path), self._schema, compression="zstd")

    def write(self, results: list[Recommendation]) -> int:
        rows = [row for result in results for row in _item_rows(result)]
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in ROW_COLUMNS]
        arrays = [
            self._pa.array(column, type=f.type)
            for column, f in zip(columns, self._schema, strict=True)
        ]
        table = self._pa.Table.from_arrays(arrays, schema=self._schema)
        self._writer.write_table(table)
        return len(rows)

    def close(self) -> None:
        self._writer.close()


_WRITERS = {"csv": _CsvWriter, "jsonl": _JsonlWriter, "parquet": _ParquetWriter}


# --- the engine -------------------------------------------------------------------------------


class _ChunkFactors:
    """The engine's factor connection during an export: a chunk's factors of the active
    version, read in one HMGET (:meth:`load`); other reads (arm B's users) go to Redis."""

    def __init__(self, client) -> None:
        self._client = client
        self._key: str | None = None
        self._values: dict[str, bytes | None] = {}

    def load(self, key: str, user_ids: list[str]) -> None:
        self._key, self._values = None, {}
        values = self._client.hmget(key, user_ids)
        self._key, self._values = key, dict(zip(user_ids, values, strict=True))

    def hget(self, key: str, user_id: str) -> bytes | None:
        if key == self._key and user_id in self._values:
            return self._values[user_id]
        return self._client.hget(key, user_id)

    def close(self) -> None:
        self._client.close()


class _ExportEngine(RecoEngine):
    """The serving engine, its factor reads answered by :class:`_ChunkFactors`."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.chunk_factors = _ChunkFactors(super()._factor_client())

    def _factor_client(self) -> _ChunkFactors:
        return self.chunk_factors

    def prefetch(self, user_ids: list[str]) -> None:
        index = self.holder.current
        if index is None:
            return
        key = model_store.user_factors_key(index.version)
        try:
            self.redis_guard.call(lambda: self.chunk_factors.load(key, user_ids))
        except StoreUnavailable:  # each read then meets the guard as in the service
            pass


# --- the export -------------------------------------------------------------------------------


def check_options(*, users: str, k: int, fmt: str, out: Path) -> None:
    """Every option judged before a store is touched; raises InvalidInput naming the problem."""
    if fmt not in FORMATS:
        raise InvalidInput(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if not 1 <= k <= K_MAX:
        raise InvalidInput(f"--k must be between 1 and {K_MAX} (got {k})")
    if not out.parent.is_dir():
        raise InvalidInput(f"the folder of --out ({str(out.parent)!r}) does not exist")
    if out.is_dir():
        raise InvalidInput(f"--out {str(out)!r} is a folder; give a file name")
    if users != ALL_USERS:
        check_users_file(Path(users))


def export_recommendations(
    settings: Settings,
    *,
    users: str,
    out: Path,
    k: int = 20,
    fmt: str = "csv",
    filters: ItemFilters = ItemFilters(),
    exclude_seen: bool = True,
    on_total: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
    engine: RecoEngine | None = None,
) -> ExportResult:
    """Write top-``k`` for ``users`` (``"all"`` or a users file) to ``out`` in ``fmt``.

    ``on_total(n)`` hears the number of users before the first is served, ``progress(n)`` each
    chunk written. ``engine``: a started engine to use (tests); by default one is started here
    and stopped at the end.
    """
    out = Path(out)
    check_options(users=users, k=k, fmt=fmt, out=out)
    own_engine = engine is None
    if own_engine:
        engine = _ExportEngine(settings)
        engine.start()
    temp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    result = ExportResult(path=str(out), format=fmt, k=k)
    try:
        if users == ALL_USERS:
            total, user_ids = count_all_users(engine), iter_all_users(engine)
        else:
            total, user_ids = check_users_file(Path(users)), iter_users_file(Path(users))
        if on_total is not None:
            on_total(total)
        started = time.perf_counter()
        writer = _WRITERS[fmt](temp)
        try:
            asyncio.run(
                _export(engine, user_ids, writer, result, k, exclude_seen, filters, progress)
            )
        finally:
            writer.close()
        os.replace(temp, out)
        result.seconds = time.perf_counter() - started
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    finally:
        if own_engine:
            engine.stop()
    return result


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


async def _export(
    engine: RecoEngine,
    user_ids: Iterable[str],
    writer: _CsvWriter | _JsonlWriter | _ParquetWriter,
    result: ExportResult,
    k: int,
    exclude_seen: bool,
    filters: ItemFilters,
    progress: Callable[[int], None] | None,
) -> None:
    """Serve each chunk's users concurrently (as requests of one event-loop turn), write it."""
    for chunk in _chunks(user_ids, CHUNK_USERS):
        if isinstance(engine, _ExportEngine):
            engine.prefetch(chunk)
        served = await asyncio.gather(
            *(
                engine.recommend(
                    user_id, k=k, exclude_seen=exclude_seen, filters=filters, log_history=False
                )
                for user_id in chunk
            )
        )
        result.rows += writer.write(served)
        result.users += len(served)
        result.strategies.update(r.strategy for r in served)
        result.model_versions.update(str(r.model_version) for r in served)
        _forget(engine, chunk)
        if progress is not None:
            progress(len(served))


def _forget(engine: RecoEngine, user_ids: list[str]) -> None:
    """Drop the chunk's cached profiles and fold-ins (memory flat; other replicas untouched)."""
    engine.profiles.invalidate(user_ids, publish=False)
    engine.fold_ins.invalidate(user_ids)
