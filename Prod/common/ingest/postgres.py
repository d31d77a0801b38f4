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

import numpy as np
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
_COPY_CHUNK_BYTES = 8 << 20
# below this many new interactions, per-row index/FK upkeep is cheaper than rebuilding them
BULK_MIN_ROWS = 100_000

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
    interaction_mode: str = "incremental"  # or "bulk": indexes and FKs rebuilt once
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
            "interaction_mode": self.interaction_mode,
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

# ids travel as integer codes and times as binary timestamptz (binary COPY, no text formatting)
_STAGE_INTERACTIONS_DDL = """
create temp table stage_user_code (code int primary key, user_id text) on commit drop;
create temp table stage_item_code (code int primary key, item_id text) on commit drop;
create temp table stage_event_code (code int primary key, event text) on commit drop;
create temp table stage_interaction (
    user_code int, item_code int, event_code int, rating float8, weight float8,
    occurred_at timestamptz
) on commit drop;
"""

_STAGED_EVENTS = """
select u.user_id, i.item_id, e.event, nullif(s.rating, 'NaN') as rating, s.weight, s.occurred_at
from stage_interaction s
join stage_user_code u on u.code = s.user_code
join stage_item_code i on i.code = s.item_code
join stage_event_code e on e.code = s.event_code
"""

# the events not stored yet: an anti-join on the unique event key (a hash join for big batches,
# index probes for small ones)
_SELECT_NEW_INTERACTIONS = f"""
create temp table stage_new_interaction on commit drop as
select * from ({_STAGED_EVENTS}) staged
where not exists (
    select 1 from interaction x
    where x.user_id = staged.user_id and x.item_id = staged.item_id
      and x.event = staged.event and x.occurred_at = staged.occurred_at
)
order by user_id, item_id, event, occurred_at
"""

_INSERT_COLUMNS = "insert into interaction (user_id, item_id, event, rating, weight, occurred_at)"
_INSERT_NEW_INTERACTIONS = f"{_INSERT_COLUMNS} select * from stage_new_interaction"
_INSERT_STAGED_INTERACTIONS = f"{_INSERT_COLUMNS} {_STAGED_EVENTS}"
# small batches keep every index and constraint live; the arbiter also covers concurrent writers
_ON_CONFLICT = " on conflict on constraint uq_interaction_event do nothing"

# PostgreSQL binary COPY: signature, flags, header extension length; then tuples; then -1
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + np.array([0, 0], dtype=">i4").tobytes()
_BINARY_TRAILER = np.array([-1], dtype=">i2").tobytes()
_INTERACTION_FIELDS = (
    ("user_code", ">i4"), ("item_code", ">i4"), ("event_code", ">i4"),
    ("rating", ">f8"), ("weight", ">f8"), ("occurred_at", ">i8"),
)  # fmt: skip
# binary timestamptz = int64 microseconds since 2000-01-01 UTC
_PG_EPOCH_UNIX_US = 946_684_800_000_000


def binary_copy_payload(columns: dict[str, np.ndarray]) -> bytes:
    """Rows of fixed-width, non-null fields in PostgreSQL's binary COPY format.

    ``columns`` maps each name in ``_INTERACTION_FIELDS`` to an (n,) array. Each tuple is
    int16 field count, then per field int32 byte length + big-endian value: one numpy
    structured array, so a million rows encode in milliseconds.
    """
    layout = [("n_fields", ">i2")]
    for name, dtype in _INTERACTION_FIELDS:
        layout += [(f"{name}_len", ">i4"), (name, dtype)]
    n = len(next(iter(columns.values())))
    rows = np.empty(n, dtype=np.dtype(layout))
    rows["n_fields"] = len(_INTERACTION_FIELDS)
    for name, dtype in _INTERACTION_FIELDS:
        rows[f"{name}_len"] = np.dtype(dtype).itemsize
        rows[name] = columns[name]
    return _BINARY_HEADER + rows.tobytes() + _BINARY_TRAILER


def _stage_interactions(cur: psycopg.Cursor, interactions: pd.DataFrame) -> None:
    """Code tables by COPY csv (small), the event rows by binary COPY (large)."""
    cur.execute(_STAGE_INTERACTIONS_DDL)
    codes: dict[str, np.ndarray] = {}
    for column, table, name in (
        ("user_id", "stage_user_code", "user_code"),
        ("item_id", "stage_item_code", "item_code"),
        ("event", "stage_event_code", "event_code"),
    ):
        # validation hands over categoricals: no second hashing of a million strings
        values = interactions[column].astype("category")
        codes[name] = values.cat.codes.to_numpy()
        categories = values.cat.categories
        mapping = pd.DataFrame({"code": np.arange(len(categories)), column: categories})
        _copy_frame(cur, table, mapping)
    payload = binary_copy_payload(
        {
            **codes,
            "rating": interactions["rating"].to_numpy(),  # NaN -> NULL when inserted
            "weight": interactions["weight"].to_numpy(),
            "occurred_at": interactions["occurred_us"].to_numpy() - _PG_EPOCH_UNIX_US,
        }
    )
    with cur.copy("copy stage_interaction from stdin (format binary)") as copy:
        for start in range(0, len(payload), _COPY_CHUNK_BYTES):
            copy.write(payload[start : start + _COPY_CHUNK_BYTES])
    cur.execute("analyze stage_interaction")


def _rebuildable_structures(cur: psycopg.Cursor) -> list[tuple[str, str]]:
    """(drop, create) statements for interaction's foreign keys, unique constraints and
    non-primary indexes, read from the catalogue so later migrations are covered too."""
    constraints = cur.execute(
        "select conname, pg_get_constraintdef(oid) from pg_constraint "
        "where conrelid = 'interaction'::regclass and contype in ('f', 'u') order by contype"
    ).fetchall()
    indexes = cur.execute(
        "select i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) from pg_index i "
        "left join pg_constraint c on c.conindid = i.indexrelid "
        "where i.indrelid = 'interaction'::regclass and c.oid is null"
    ).fetchall()
    return [
        (f"alter table interaction drop constraint {name}",
         f"alter table interaction add constraint {name} {definition}")
        for name, definition in constraints
    ] + [(f"drop index {name}", definition) for name, definition in indexes]  # fmt: skip


def _table_rows(cur: psycopg.Cursor) -> int:
    return cur.execute(
        "select greatest(reltuples, 0)::bigint from pg_class where oid = 'interaction'::regclass"
    ).fetchone()[0]


def _insert_in_bulk(cur: psycopg.Cursor, insert_sql: str) -> int:
    """Drop FKs, unique constraint and secondary indexes, insert, rebuild them (same names and
    definitions). Rebuilding re-checks every row, so a violation still fails the transaction."""
    structures = _rebuildable_structures(cur)
    for drop, _ in structures:
        cur.execute(drop)
    inserted = cur.execute(insert_sql).rowcount
    for _, create in reversed(structures):
        cur.execute(create)
    return inserted


def _insert_interactions(cur: psycopg.Cursor, staged: int, bulk_min_rows: int) -> tuple[int, str]:
    """Insert the staged events not stored yet; returns (how many, "bulk" | "incremental").

    Big batches (>= ``bulk_min_rows`` new events, and at least half the table's size) lock the
    table against writers and go through :func:`_insert_in_bulk`: one sort per index and one
    validating join per foreign key instead of a million per-row trigger calls and speculative
    index inserts. Small batches use INSERT .. ON CONFLICT DO NOTHING with everything live.
    Either way re-runs add nothing, and any failure rolls the whole transaction back.
    """
    if staged >= bulk_min_rows:
        # nobody may add an event between the anti-join and the insert
        cur.execute("lock table interaction in share row exclusive mode")
    table_empty = cur.execute("select not exists (select 1 from interaction)").fetchone()[0]
    if table_empty:  # first load: every staged event is new, no anti-join needed
        if staged >= bulk_min_rows:
            return _insert_in_bulk(cur, _INSERT_STAGED_INTERACTIONS), "bulk"
        return cur.execute(_INSERT_STAGED_INTERACTIONS + _ON_CONFLICT).rowcount, "incremental"
    cur.execute(_SELECT_NEW_INTERACTIONS)
    new = cur.execute("select count(*) from stage_new_interaction").fetchone()[0]
    if new >= bulk_min_rows and new >= _table_rows(cur) // 2:
        return _insert_in_bulk(cur, _INSERT_NEW_INTERACTIONS), "bulk"
    return cur.execute(_INSERT_NEW_INTERACTIONS + _ON_CONFLICT).rowcount, "incremental"


def _upsert(cur: psycopg.Cursor, sql: str, staged: int) -> UpsertCounts:
    inserted, updated = cur.execute(sql).fetchone()
    return UpsertCounts(inserted, updated, staged - inserted - updated)


def write_tables(
    conn: psycopg.Connection, tables: CanonicalTables, bulk_min_rows: int = BULK_MIN_ROWS
) -> tuple[dict[str, UpsertCounts], str]:
    """Stage and upsert the three tables inside the caller's transaction; returns the counts
    and how interactions were inserted ("bulk" or "incremental")."""
    with conn.cursor() as cur:
        # sorts and index builds of a million rows stay in memory
        cur.execute("set local work_mem = '256MB'")
        cur.execute("set local maintenance_work_mem = '512MB'")
        cur.execute(_STAGE_DDL)
        _copy_frame(cur, "stage_user", tables.users)
        _copy_frame(cur, "stage_item", tables.items)
        users = _upsert(cur, _UPSERT_USERS, len(tables.users))
        items = _upsert(cur, _UPSERT_ITEMS, len(tables.items))
        staged = len(tables.interactions)
        _stage_interactions(cur, tables.interactions)
        inserted, mode = _insert_interactions(cur, staged, bulk_min_rows)
    counts = {
        "users": users,
        "items": items,
        "interactions": UpsertCounts(inserted, 0, staged - inserted),
    }
    return counts, mode


def ingest_postgres(
    database_url: str,
    dataset_dir: Path,
    *,
    skip_bad_rows: bool = False,
    progress: Progress | None = None,
    bulk_min_rows: int = BULK_MIN_ROWS,
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
        counts, mode = write_tables(conn, tables, bulk_min_rows)
    finished = time.perf_counter()
    report = PostgresIngestReport(
        dataset=str(dataset_dir),
        rows_read=tables.rows_read,
        duplicate_interactions=tables.duplicate_interactions,
        bad_rows=tables.bad_rows,
        interaction_mode=mode,
        seconds={
            "validate": validated - started,
            "load": finished - validated,
            "total": finished - started,
        },
        **counts,
    )
    log.info("postgres ingest done: %s", report.to_dict(max_bad_rows=0))
    return report
