"""Load a canonical dataset into PostgreSQL: binary COPY (into staging tables, or straight into
an empty table), then upsert.

Everything happens in one transaction: with bad rows (and no ``skip_bad_rows``) nothing is
written; otherwise users and items are inserted or updated only when a value changed (an
optional column the file leaves out keeps its stored values), and
interactions are inserted unless the same event (user, item, event, time) is already stored, so
re-running on the same files leaves exactly the same state.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
from sqlalchemy.engine import make_url

from Prod.common.canonical_format import ITEM_COLUMNS, ITEMS_FILE, USERS_FILE
from Prod.common.db import migrate
from Prod.common.errors import IngestError
from Prod.common.items import ITEM_COLUMN_GROUPS, USER_COLUMN_GROUPS, BadRow
from Prod.common.logs import get_logger
from Prod.datasets.ingest.validate import CanonicalTables, describe_bad_rows, read_tables

log = get_logger(__name__)

_INGEST_LOCK = 715_002  # pg advisory lock id: two ingest jobs never interleave
_COPY_CHUNK_ROWS = 200_000
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
    # optional columns absent from the file, by file: stored values kept / set to NULL
    kept_columns: dict[str, list[str]] = field(default_factory=dict)
    cleared_columns: list[str] = field(default_factory=list)
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
            "kept_columns": self.kept_columns,
            "cleared_columns": self.cleared_columns,
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
_COUNT_WRITTEN = """
select count(*) filter (where inserted), count(*) filter (where not inserted) from written
"""

_ITEM_COLUMNS = tuple(c for c in ITEM_COLUMNS if c != "item_id")  # the upserted ones


def _upsert_sql(table: str, key: str, columns: tuple[str, ...], updated: tuple[str, ...]) -> str:
    """Insert staged rows; on an existing key set only the ``updated`` columns, and only when
    one of them changed. Columns left out of ``updated`` keep their stored values (an optional
    column absent from the file must not null what is stored)."""
    quoted = f'"{table}"'
    insert = (
        f"insert into {quoted} ({key}, {', '.join(columns)}) "
        f"select {key}, {', '.join(columns)} from stage_{table}"
    )
    if not updated:
        conflict = f"on conflict ({key}) do nothing"
    else:
        stamp = ", updated_at = now()" if table == "item" else ""
        conflict = (
            f"on conflict ({key}) do update set "
            f"{', '.join(f'{c} = excluded.{c}' for c in updated)}{stamp} "
            f"where ({', '.join(f'{quoted}.{c}' for c in updated)}) "
            f"is distinct from ({', '.join(f'excluded.{c}' for c in updated)})"
        )
    written = f"{insert} {conflict} returning (xmax = 0) as inserted"
    return f"with written as ({written}) {_COUNT_WRITTEN}"


_STAGE_INTERACTIONS_DDL = """
create temp table stage_interaction (
    user_id text, item_id text, event text, rating float8, weight float8, occurred_at timestamptz
) on commit drop
"""

# the events not stored yet: an anti-join on the unique event key (a hash join for big batches,
# index probes for small ones)
_SELECT_NEW_INTERACTIONS = """
create temp table stage_new_interaction on commit drop as
select * from stage_interaction staged
where not exists (
    select 1 from interaction x
    where x.user_id = staged.user_id and x.item_id = staged.item_id
      and x.event = staged.event and x.occurred_at = staged.occurred_at
)
order by user_id, item_id, event, occurred_at
"""

_INTERACTION_COLUMNS = "(user_id, item_id, event, rating, weight, occurred_at)"
_INSERT_COLUMNS = f"insert into interaction {_INTERACTION_COLUMNS}"
_INSERT_NEW_INTERACTIONS = f"{_INSERT_COLUMNS} select * from stage_new_interaction"
_INSERT_STAGED_INTERACTIONS = f"{_INSERT_COLUMNS} select * from stage_interaction"
# small batches keep every index and constraint live; the arbiter also covers concurrent writers
_ON_CONFLICT = " on conflict on constraint uq_interaction_event do nothing"

# PostgreSQL binary COPY: signature, flags, header extension length; then tuples; then -1
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + np.array([0, 0], dtype=">i4").tobytes()
_BINARY_TRAILER = np.array([-1], dtype=">i2").tobytes()
# binary timestamptz = int64 microseconds since 2000-01-01 UTC
_PG_EPOCH_UNIX_US = 946_684_800_000_000


@dataclass(frozen=True)
class CopyField:
    """One column of a binary COPY: per-row values and how many bytes of each to send.

    ``values``: (n,) numbers of the wire width (float64 for float8, int64 for int8/timestamptz,
    any byte order) or ``S<k>`` UTF-8 bytes padded to the longest value; ``sizes``: (n,) int
    bytes sent per row, -1 for NULL (nothing sent).
    """

    values: np.ndarray
    sizes: np.ndarray


def binary_copy_tuples(fields: list[CopyField]) -> bytes:
    """Rows in PostgreSQL's binary COPY format (no header/trailer), vectorised.

    Each tuple is int16 field count, then per field int32 byte length + value. Rows are laid
    out at fixed width in one numpy structured array (text padded to the longest value); when
    some values are shorter (or NULL) one boolean mask drops the padding bytes, which leaves
    exactly the variable-length rows, in order. A million rows encode in well under a second.
    """
    layout = [("n_fields", ">i2")]
    for number, column in enumerate(fields):
        wire = column.values.dtype  # numbers travel big-endian: assignment below converts
        wire = wire if wire.kind == "S" else wire.newbyteorder(">")
        layout += [(f"len{number}", ">i4"), (f"value{number}", wire)]
    n_rows = len(fields[0].values) if fields else 0
    rows = np.empty(n_rows, dtype=np.dtype(layout))
    rows["n_fields"] = len(fields)
    padded = []
    for number, column in enumerate(fields):
        rows[f"len{number}"] = column.sizes
        rows[f"value{number}"] = column.values
        width = column.values.dtype.itemsize
        if n_rows and int(column.sizes.min()) < width:
            padded.append((rows.dtype.fields[f"value{number}"][1], width, column.sizes))
    if not padded:
        return rows.tobytes()
    keep = np.ones((n_rows, rows.dtype.itemsize), dtype=bool)
    for offset, width, sizes in padded:
        keep[:, offset : offset + width] = np.arange(width) < sizes[:, None]
    return rows.view(np.uint8)[keep.ravel()].tobytes()


@dataclass(frozen=True)
class _EncodedText:
    """A categorical text column as UTF-8: one padded bytes value and size per category."""

    codes: np.ndarray  # (n,) category of each row
    values: np.ndarray  # (n_categories,) S<k>
    sizes: np.ndarray  # (n_categories,) int32
    ranks: np.ndarray  # (n_categories,) position in code-point order

    @classmethod
    def of(cls, column: pd.Series) -> _EncodedText:
        values = column.astype("category")
        names = np.asarray(values.cat.categories, dtype=object)
        encoded = [name.encode() for name in names]
        sizes = np.array([len(b) for b in encoded], dtype=np.int32)
        width = max(int(sizes.max()), 1) if len(sizes) else 1
        codes = values.cat.codes.to_numpy()
        # Python orders str by code point, as PostgreSQL's C and C.UTF-8 collations do (under
        # another collation the order only helps less); ranks keep the codes' small int type,
        # which numpy sorts by radix, 10x faster than int64
        ranks = np.argsort(np.argsort(names, kind="stable"), kind="stable").astype(codes.dtype)
        return cls(
            codes=codes, values=np.array(encoded, dtype=f"S{width}"), sizes=sizes, ranks=ranks
        )

    def field(self, rows: np.ndarray) -> CopyField:
        codes = self.codes[rows]
        return CopyField(self.values[codes], self.sizes[codes])


def interaction_copy_chunks(
    interactions: pd.DataFrame, first_id: int | None = None
) -> Iterator[bytes]:
    """Binary COPY data for ``_INTERACTION_COLUMNS`` (preceded by ``id`` = ``first_id``,
    ``first_id + 1``, ... when given), header to trailer, in chunks.

    Rows go in unique-key order (user_id, item_id, event, occurred_at): PostgreSQL's sort checks
    for presorted input first, so after a bulk load the unique index and the (user_id, ...)
    index build in a fraction of the time they take on rows in file order.
    """
    texts = [_EncodedText.of(interactions[c]) for c in ("user_id", "item_id", "event")]
    occurred_at = interactions["occurred_us"].to_numpy() - _PG_EPOCH_UNIX_US
    rating = interactions["rating"].to_numpy()
    weight = interactions["weight"].to_numpy()
    order = np.lexsort([occurred_at] + [t.ranks[t.codes] for t in reversed(texts)])
    yield _BINARY_HEADER
    for start in range(0, len(order), _COPY_CHUNK_ROWS):
        rows = order[start : start + _COPY_CHUNK_ROWS]
        has_rating = ~np.isnan(rating[rows])
        eight = np.full(len(rows), 8, dtype=np.int32)
        ids = []
        if first_id is not None:
            ids = [CopyField(np.arange(len(rows)) + (first_id + start), eight)]
        yield binary_copy_tuples(
            ids
            + [t.field(rows) for t in texts]
            + [
                CopyField(rating[rows], np.where(has_rating, eight, -1)),
                CopyField(weight[rows], eight),
                CopyField(occurred_at[rows], eight),
            ]
        )
    yield _BINARY_TRAILER


def _copy_interactions(
    cur: psycopg.Cursor,
    table: str,
    interactions: pd.DataFrame,
    *,
    first_id: int | None = None,
    freeze: bool = False,
) -> None:
    """COPY into ``table``, with the ids from ``first_id`` on when given. ``freeze`` is only
    allowed on a table created or truncated in this transaction."""
    columns = _INTERACTION_COLUMNS if first_id is None else f"(id, {_INTERACTION_COLUMNS[1:]}"
    options = "format binary, freeze" if freeze else "format binary"
    with cur.copy(f"copy {table} {columns} from stdin ({options})") as copy:
        for chunk in interaction_copy_chunks(interactions, first_id):
            copy.write(chunk)


def _reserve_ids(cur: psycopg.Cursor, n: int) -> int:
    """First of ``n`` consecutive new interaction ids, taken from the id sequence in one call
    rather than a nextval() per row. The caller's table lock keeps every other writer out."""
    last = cur.execute(
        "select setval(seq::regclass, nextval(seq::regclass) + %s - 1) "
        "from pg_get_serial_sequence('interaction', 'id') as seq",
        (n,),
    ).fetchone()[0]
    return last - n + 1


def _stage_interactions(cur: psycopg.Cursor, interactions: pd.DataFrame) -> None:
    cur.execute(_STAGE_INTERACTIONS_DDL)
    _copy_interactions(cur, "stage_interaction", interactions)
    cur.execute("analyze stage_interaction")


def _rebuildable_structures(cur: psycopg.Cursor) -> list[tuple[str, str]]:
    """(drop, create) statements for interaction's foreign keys, primary key, unique constraints
    and other indexes, read from the catalogue so later migrations are covered too. (Even the
    primary key: a bigint index builds from sorted ids in a blink, while keeping it live costs
    a B-tree insert per row.)"""
    constraints = cur.execute(
        "select conname, pg_get_constraintdef(oid) from pg_constraint "
        "where conrelid = 'interaction'::regclass and contype in ('f', 'p', 'u') order by contype"
    ).fetchall()
    indexes = cur.execute(
        "select i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) from pg_index i "
        "left join pg_constraint c on c.conindid = i.indexrelid "
        "where i.indrelid = 'interaction'::regclass and c.oid is null"
    ).fetchall()
    return [
        (
            f"alter table interaction drop constraint {name}",
            f"alter table interaction add constraint {name} {definition}",
        )
        for name, definition in constraints
    ] + [(f"drop index {name}", definition) for name, definition in indexes]


def _table_rows(cur: psycopg.Cursor) -> int:
    return cur.execute(
        "select greatest(reltuples, 0)::bigint from pg_class where oid = 'interaction'::regclass"
    ).fetchone()[0]


def _insert_in_bulk(cur: psycopg.Cursor, insert: Callable[[], int]) -> int:
    """Drop FKs, keys and indexes, ``insert()``, rebuild them (same names and definitions).
    Rebuilding re-checks every row, so a violation still fails the transaction."""
    structures = _rebuildable_structures(cur)
    for drop, _ in structures:
        cur.execute(drop)
    inserted = insert()
    for _, create in reversed(structures):
        cur.execute(create)
    return inserted


def _insert_interactions(
    cur: psycopg.Cursor, interactions: pd.DataFrame, bulk_min_rows: int
) -> tuple[int, str]:
    """Insert the events not stored yet; returns (how many, "bulk" | "incremental").

    Big batches (>= ``bulk_min_rows`` new events, and at least half the table's size) lock the
    table against writers and go through :func:`_insert_in_bulk`: one sort per index and one
    validating join per foreign key instead of a million per-row trigger calls and speculative
    index inserts. A big first load skips staging altogether: one binary COPY straight into the
    table. Small batches use INSERT .. ON CONFLICT DO NOTHING with everything live.
    Either way re-runs add nothing, and any failure rolls the whole transaction back.
    """
    staged = len(interactions)
    bulk_min_rows = max(bulk_min_rows, 1)
    if staged >= bulk_min_rows:
        # nobody may add an event between the emptiness check or anti-join and the insert
        cur.execute("lock table interaction in share row exclusive mode")
    table_empty = cur.execute("select not exists (select 1 from interaction)").fetchone()[0]
    if table_empty and staged >= bulk_min_rows:
        # every event is new: validation already kept one row per unique event key

        def copy_into_table() -> int:
            # truncating the (empty, locked) table in this transaction lets COPY store the rows
            # frozen and all-visible: the first reader does not rewrite every page to set hint
            # bits, and autovacuum finds nothing to freeze
            cur.execute("truncate interaction")
            first_id = _reserve_ids(cur, staged)
            _copy_interactions(cur, "interaction", interactions, first_id=first_id, freeze=True)
            return staged

        return _insert_in_bulk(cur, copy_into_table), "bulk"
    _stage_interactions(cur, interactions)
    if table_empty:  # no anti-join needed
        return cur.execute(_INSERT_STAGED_INTERACTIONS + _ON_CONFLICT).rowcount, "incremental"
    cur.execute(_SELECT_NEW_INTERACTIONS)
    new = cur.execute("select count(*) from stage_new_interaction").fetchone()[0]
    if new >= bulk_min_rows and new >= _table_rows(cur) // 2:
        return _insert_in_bulk(cur, lambda: cur.execute(_INSERT_NEW_INTERACTIONS).rowcount), "bulk"
    return cur.execute(_INSERT_NEW_INTERACTIONS + _ON_CONFLICT).rowcount, "incremental"


def _upsert(cur: psycopg.Cursor, sql: str, staged: int) -> UpsertCounts:
    inserted, updated = cur.execute(sql).fetchone()
    return UpsertCounts(inserted, updated, staged - inserted - updated)


# optional columns of users.csv / items.csv that --clear-column may name
_CLEARABLE = {USERS_FILE: USER_COLUMN_GROUPS.optional, ITEMS_FILE: ITEM_COLUMN_GROUPS.optional}
CLEARABLE_COLUMNS = tuple(c for columns in _CLEARABLE.values() for c in columns)


def _updated(columns: tuple[str, ...], kept: frozenset[str]) -> tuple[str, ...]:
    return tuple(c for c in columns if c not in kept)


def kept_columns(
    tables: CanonicalTables, clear_columns: Iterable[str] = ()
) -> dict[str, list[str]]:
    """Optional columns absent from users.csv / items.csv whose stored values are kept, by
    file: all absent ones but those in ``clear_columns`` (which are set to NULL, rating_count
    to 0). Naming a column that is not optional, or that the file has, is an IngestError."""
    clear = set(clear_columns)
    optional = _CLEARABLE
    unknown = sorted(clear - set(CLEARABLE_COLUMNS))
    if unknown:
        raise IngestError(
            f"--clear-column {', '.join(unknown)}: only an optional column of users.csv or "
            f"items.csv can be cleared ({', '.join(CLEARABLE_COLUMNS)})",
            clear_columns=unknown,
        )
    present = sorted(
        f"{name} has {column}"
        for name, columns in optional.items()
        for column in columns
        if column in clear and column not in tables.absent_columns.get(name, ())
    )
    if present:
        raise IngestError(
            f"--clear-column: {'; '.join(present)}; its values are loaded as they are (an empty "
            "cell = unknown). Leave the column out of the file to clear it; nothing was written",
            clear_columns=sorted(clear),
        )
    kept = {
        name: [c for c in tables.absent_columns.get(name, ()) if c not in clear]
        for name in optional
    }
    return {name: columns for name, columns in kept.items() if columns}


def write_tables(
    conn: psycopg.Connection,
    tables: CanonicalTables,
    bulk_min_rows: int = BULK_MIN_ROWS,
    *,
    kept: Iterable[str] = (),
) -> tuple[dict[str, UpsertCounts], str]:
    """Stage and upsert the three tables inside the caller's transaction; returns the counts
    and how interactions were inserted ("bulk" or "incremental"). Existing users and items keep
    their stored values of the ``kept`` columns (see :func:`kept_columns`); new ones get NULL."""
    kept = frozenset(kept)
    with conn.cursor() as cur:
        # sorts and index builds of a million rows stay in memory
        cur.execute("set local work_mem = '256MB'")
        cur.execute("set local maintenance_work_mem = '512MB'")
        cur.execute(_STAGE_DDL)
        _copy_frame(cur, "stage_user", tables.users)
        _copy_frame(cur, "stage_item", tables.items)
        user_sql = _upsert_sql("user", "user_id", ("name",), _updated(("name",), kept))
        item_sql = _upsert_sql("item", "item_id", _ITEM_COLUMNS, _updated(_ITEM_COLUMNS, kept))
        users = _upsert(cur, user_sql, len(tables.users))
        items = _upsert(cur, item_sql, len(tables.items))
        staged = len(tables.interactions)
        inserted, mode = _insert_interactions(cur, tables.interactions, bulk_min_rows)
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
    clear_columns: Iterable[str] = (),
) -> PostgresIngestReport:
    """Migrate the schema, validate ``dataset_dir`` and load it in one transaction.

    Raises :class:`IngestError` (nothing written) on a missing file/column, or on any bad row
    unless ``skip_bad_rows``; the error's ``bad_rows`` detail lists every one as ``file:line``.
    An optional column absent from users.csv or items.csv leaves the stored values alone,
    unless named in ``clear_columns`` (then it is set to NULL for every user/item in the file).
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
        kept = kept_columns(tables, clear_columns)
        for name, columns in kept.items():
            say(f"{name} has no {', '.join(columns)} column: stored values kept")
        say(
            f"loading {len(tables.users)} users, {len(tables.items)} items, "
            f"{len(tables.interactions)} interactions"
        )
        counts, mode = write_tables(
            conn, tables, bulk_min_rows, kept=[c for columns in kept.values() for c in columns]
        )
    finished = time.perf_counter()
    report = PostgresIngestReport(
        dataset=str(dataset_dir),
        rows_read=tables.rows_read,
        duplicate_interactions=tables.duplicate_interactions,
        bad_rows=tables.bad_rows,
        kept_columns=kept,
        cleared_columns=sorted(set(clear_columns)),
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
