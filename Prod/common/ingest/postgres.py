"""Load a canonical dataset into PostgreSQL: bulk COPY into staging tables, then upsert.

Everything happens in one transaction: with bad rows (and no ``skip_bad_rows``) nothing is
written; otherwise users and items are inserted or updated only when a value changed, and
interactions are inserted unless the same event (user, item, event, time) is already stored, so
re-running on the same files leaves exactly the same state.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import psycopg
from sqlalchemy.engine import make_url

from Prod.common.db import migrate
from Prod.common.errors import IngestError
from Prod.common.ingest.validate import BadRow, CanonicalTables, describe_bad_rows, read_tables
from Prod.common.logs import get_logger

log = get_logger(__name__)

_INGEST_LOCK = 715_002  # pg advisory lock id: two ingest jobs never interleave
_COPY_CHUNK_ROWS = 200_000

Progress = Callable[[str], None]


@dataclass
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass
class PostgresIngestReport:
    """What one run did; ``bad_rows`` are the rows skipped (only with ``skip_bad_rows``)."""

    dataset: str
    users: UpsertCounts
    items: UpsertCounts
    interactions: UpsertCounts
    rows_read: dict[str, int]
    duplicate_interactions: int
    bad_rows: list[BadRow] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def skipped_rows(self) -> int:
        return len(self.bad_rows)

    def to_dict(self, max_bad_rows: int = 100) -> dict:
        return {
            "dataset": self.dataset,
            "users": asdict(self.users),
            "items": asdict(self.items),
            "interactions": asdict(self.interactions),
            "rows_read": self.rows_read,
            "duplicate_interactions": self.duplicate_interactions,
            "skipped_rows": self.skipped_rows,
            "bad_rows": [str(bad) for bad in self.bad_rows[:max_bad_rows]],
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def psycopg_conninfo(database_url: str) -> str:
    """libpq URI for a SQLAlchemy URL (``postgresql+psycopg://`` -> ``postgresql://``)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


def _known_ids(conn: psycopg.Connection) -> Callable[[str, list[str]], set[str]]:
    """Lookup used by validation: which of these ids the database already holds."""
    queries = {
        "user": 'select user_id from "user" where user_id = any(%s)',
        "item": "select item_id from item where item_id = any(%s)",
    }

    def lookup(table: str, ids: list[str]) -> set[str]:
        return {row[0] for row in conn.execute(queries[table], (ids,))}

    return lookup


def _copy_frame(cur: psycopg.Cursor, table: str, frame: pd.DataFrame) -> None:
    """COPY a frame into ``table`` as CSV (None/NaN -> NULL), in chunks to bound memory."""
    columns = ", ".join(frame.columns)
    with cur.copy(f"copy {table} ({columns}) from stdin (format csv)") as copy:
        for start in range(0, len(frame), _COPY_CHUNK_ROWS):
            chunk = frame.iloc[start : start + _COPY_CHUNK_ROWS]
            buffer = io.StringIO()
            chunk.to_csv(buffer, header=False, index=False)
            copy.write(buffer.getvalue())


_STAGE_DDL = """
create temp table stage_user (user_id text, name text) on commit drop;
create temp table stage_item (
    item_id text, title text, brand text, category text, price float8, avg_rating float8,
    rating_count int, description text, image_url text
) on commit drop;
create temp table stage_interaction (
    user_id text, item_id text, event text, rating float8, weight float8, occurred_us bigint
) on commit drop;
"""

# (xmax = 0) is true for rows this statement inserted, false for rows it updated
_UPSERT_USERS = """
with written as (
    insert into "user" (user_id, name)
    select user_id, name from stage_user
    on conflict (user_id) do update set name = excluded.name
    where "user".name is distinct from excluded.name
    returning (xmax = 0) as inserted
)
select count(*) filter (where inserted), count(*) filter (where not inserted) from written
"""

_ITEM_COLUMNS = (
    "title", "brand", "category", "price", "avg_rating", "rating_count", "description", "image_url"
)  # fmt: skip
_UPSERT_ITEMS = f"""
with written as (
    insert into item (item_id, {", ".join(_ITEM_COLUMNS)})
    select item_id, {", ".join(_ITEM_COLUMNS)} from stage_item
    on conflict (item_id) do update set
        {", ".join(f"{c} = excluded.{c}" for c in _ITEM_COLUMNS)}, updated_at = now()
    where ({", ".join(f"item.{c}" for c in _ITEM_COLUMNS)})
        is distinct from ({", ".join(f"excluded.{c}" for c in _ITEM_COLUMNS)})
    returning (xmax = 0) as inserted
)
select count(*) filter (where inserted), count(*) filter (where not inserted) from written
"""

# one INSERT .. SELECT: index maintenance happens in a single pass, in key order
_INSERT_INTERACTIONS = """
insert into interaction (user_id, item_id, event, rating, weight, occurred_at)
select user_id, item_id, event, rating, weight,
       timestamptz 'epoch' + occurred_us * interval '1 microsecond'
from stage_interaction
order by user_id, item_id, event, occurred_us
on conflict on constraint uq_interaction_event do nothing
"""


def _upsert(cur: psycopg.Cursor, sql: str, staged: int) -> UpsertCounts:
    inserted, updated = cur.execute(sql).fetchone()
    return UpsertCounts(inserted, updated, staged - inserted - updated)


def write_tables(conn: psycopg.Connection, tables: CanonicalTables) -> dict[str, UpsertCounts]:
    """Stage and upsert the three tables inside the caller's transaction."""
    with conn.cursor() as cur:
        cur.execute(_STAGE_DDL)
        _copy_frame(cur, "stage_user", tables.users)
        _copy_frame(cur, "stage_item", tables.items)
        interactions = tables.interactions.drop(columns=["line"])
        _copy_frame(cur, "stage_interaction", interactions)
        users = _upsert(cur, _UPSERT_USERS, len(tables.users))
        items = _upsert(cur, _UPSERT_ITEMS, len(tables.items))
        inserted = cur.execute(_INSERT_INTERACTIONS).rowcount
    return {
        "users": users,
        "items": items,
        "interactions": UpsertCounts(inserted, 0, len(interactions) - inserted),
    }


def ingest_postgres(
    database_url: str,
    dataset_dir: Path,
    *,
    skip_bad_rows: bool = False,
    progress: Progress | None = None,
) -> PostgresIngestReport:
    """Migrate the schema, validate ``dataset_dir`` and load it in one transaction.

    Raises :class:`IngestError` (nothing written) on a missing file/column, or on any bad row
    unless ``skip_bad_rows``; the error's ``bad_rows`` detail lists every one as ``file:line``.
    """
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    dataset_dir = Path(dataset_dir)
    migrate(database_url)
    with psycopg.connect(psycopg_conninfo(database_url)) as conn, conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_INGEST_LOCK,))
        say(f"validating {dataset_dir}")
        tables = read_tables(dataset_dir, known_ids=_known_ids(conn))
        validated = time.perf_counter()
        if tables.bad_rows and not skip_bad_rows:
            raise IngestError(
                f"{len(tables.bad_rows)} bad row(s) in {dataset_dir}; nothing was written "
                f"(--skip-bad-rows loads the good rows):\n{describe_bad_rows(tables.bad_rows)}",
                bad_rows=[str(bad) for bad in tables.bad_rows],
            )
        say(
            f"loading {len(tables.users)} users, {len(tables.items)} items, "
            f"{len(tables.interactions)} interactions"
        )
        counts = write_tables(conn, tables)
    finished = time.perf_counter()
    report = PostgresIngestReport(
        dataset=str(dataset_dir),
        rows_read=tables.rows_read,
        duplicate_interactions=tables.duplicate_interactions,
        bad_rows=tables.bad_rows,
        seconds={
            "validate": validated - started,
            "load": finished - validated,
            "total": finished - started,
        },
        **counts,
    )
    log.info("postgres ingest done: %s", report.to_dict(max_bad_rows=0))
    return report
