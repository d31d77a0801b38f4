"""ingest_postgres against the session's real PostgreSQL: one transaction, idempotent re-runs."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import numpy as np
import psycopg
import pytest
from sqlalchemy.engine import make_url

from Prod.common.db import migrate
from Prod.common.errors import IngestError
from Prod.datasets.ingest.postgres import (
    CopyField,
    binary_copy_tuples,
    ingest_postgres,
    psycopg_conninfo,
)
from tests.ingest.conftest import edit, snapshot


def _counts(report) -> dict:
    d = report.to_dict()
    return {name: d[name] for name in ("users", "items", "interactions")}


def test_load_then_rerun_changes_nothing(settings, dataset: Path, prefix: str) -> None:
    first = ingest_postgres(settings.database_url, dataset)
    assert _counts(first) == {
        "users": {"inserted": 3, "updated": 0, "unchanged": 0},
        "items": {"inserted": 3, "updated": 0, "unchanged": 0},
        "interactions": {"inserted": 6, "updated": 0, "unchanged": 0},
    }
    assert first.duplicate_interactions == 1
    loaded = snapshot(settings.database_url, prefix)
    assert len(loaded["interaction"]) == 6
    rating = [row for row in loaded["interaction"] if row[3] == "rating"]
    assert rating[0][4] == 4.0 and rating[0][6].isoformat().startswith("2024-05-02T07:30:00")

    again = ingest_postgres(settings.database_url, dataset)
    assert _counts(again) == {
        "users": {"inserted": 0, "updated": 0, "unchanged": 3},
        "items": {"inserted": 0, "updated": 0, "unchanged": 3},
        "interactions": {"inserted": 0, "updated": 0, "unchanged": 6},
    }
    assert snapshot(settings.database_url, prefix) == loaded  # same rows, ids, timestamps


def test_changed_item_is_updated_and_new_events_appended(settings, dataset, prefix) -> None:
    ingest_postgres(settings.database_url, dataset)
    edit(dataset / "items.csv", "Espresso Maker,Kitchara", "Espresso Maker Pro,Kitchara")
    with (dataset / "interactions.csv").open("a") as handle:
        handle.write(f"{prefix}u3,{prefix}i2,click,,2,2024-06-01T00:00:00\n")
    report = ingest_postgres(settings.database_url, dataset)
    assert _counts(report)["items"] == {"inserted": 0, "updated": 1, "unchanged": 2}
    assert _counts(report)["interactions"] == {"inserted": 1, "updated": 0, "unchanged": 6}
    titles = {row[0]: row[1] for row in snapshot(settings.database_url, prefix)["item"]}
    assert titles[f"{prefix}i2"] == "Espresso Maker Pro"


def test_bad_row_writes_nothing_and_names_file_and_line(settings, dataset, prefix) -> None:
    ingest_postgres(settings.database_url, dataset)
    before = snapshot(settings.database_url, prefix)
    edit(dataset / "users.csv", "Grace", "Grace Hopper")  # a valid change that must not land
    edit(dataset / "interactions.csv", "purchase,,8", "purchase,,eight")  # line 4
    with pytest.raises(IngestError) as caught:
        ingest_postgres(settings.database_url, dataset)
    assert "interactions.csv:4: weight 'eight' is not a number" in caught.value.message
    assert "nothing was written" in caught.value.message
    assert caught.value.details["bad_rows"] == [
        "interactions.csv:4: weight 'eight' is not a number"
    ]
    assert snapshot(settings.database_url, prefix) == before


def test_bad_row_on_first_load_leaves_tables_empty(settings, dataset, prefix) -> None:
    edit(dataset / "interactions.csv", "2024-05-04T08:00:00", "yesterday")
    with pytest.raises(IngestError, match=r"interactions.csv:7: timestamp 'yesterday'"):
        ingest_postgres(settings.database_url, dataset)
    assert snapshot(settings.database_url, prefix) == {"user": [], "item": [], "interaction": []}


def test_skip_bad_rows_loads_the_good_ones(settings, dataset, prefix) -> None:
    edit(
        dataset / "interactions.csv", "view,,1,2024-05-01T10:00:00", "watch,,1,2024-05-01T10:00:00"
    )
    edit(dataset / "users.csv", f"{prefix}u3,", f"{'x' * 129},")  # line 4: id too long
    report = ingest_postgres(settings.database_url, dataset, skip_bad_rows=True)
    assert [str(b) for b in report.bad_rows] == [
        "users.csv:4: user_id longer than 128 chars",
        "interactions.csv:2: event 'watch' is not one of "
        "view, click, add_to_cart, purchase, rating, dislike",
        f"interactions.csv:7: unknown user_id '{prefix}u3' (not in users.csv nor the database)",
        f"interactions.csv:8: unknown user_id '{prefix}u3' (not in users.csv nor the database)",
    ]
    assert report.to_dict()["skipped_rows"] == 4
    rows = snapshot(settings.database_url, prefix)
    assert [r[0] for r in rows["user"]] == [f"{prefix}u1", f"{prefix}u2"]
    assert len(rows["interaction"]) == 4  # lines 3-6


def test_interactions_may_refer_to_users_already_in_the_database(settings, dataset, prefix) -> None:
    ingest_postgres(settings.database_url, dataset)
    (dataset / "users.csv").write_text("user_id,name\n")
    (dataset / "items.csv").write_text("item_id,title\n")
    (dataset / "interactions.csv").write_text(
        f"user_id,item_id,event,rating,weight,timestamp\n{prefix}u1,{prefix}i3,view,,,1717200000\n"
    )
    report = ingest_postgres(settings.database_url, dataset)
    assert _counts(report)["interactions"]["inserted"] == 1


@pytest.fixture
def scratch_database(settings):
    """A fresh database on the test server, for the bulk path (which rebuilds indexes)."""
    name = f"ingest_{uuid.uuid4().hex[:12]}"
    admin = psycopg_conninfo(settings.database_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    url = make_url(settings.database_url).set(database=name).render_as_string(False)
    migrate(url)
    yield url
    from Prod.common.db import get_engine

    get_engine(url).dispose()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"drop database {name} with (force)")


def _schema(url: str) -> list[tuple]:
    with psycopg.connect(psycopg_conninfo(url)) as conn:
        return conn.execute(
            "select conname, pg_get_constraintdef(oid) from pg_constraint "
            "where conrelid = 'interaction'::regclass union all "
            "select indexrelid::regclass::text, pg_get_indexdef(indexrelid) from pg_index "
            "where indrelid = 'interaction'::regclass order by 1, 2"
        ).fetchall()


def test_bulk_path_rebuilds_constraints_and_stays_idempotent(scratch_database, dataset, prefix):
    schema = _schema(scratch_database)
    first = ingest_postgres(scratch_database, dataset, bulk_min_rows=1)
    assert first.interaction_mode == "bulk" and first.interactions.inserted == 6
    assert _schema(scratch_database) == schema  # same FKs, unique key and indexes

    with (dataset / "interactions.csv").open("a") as handle:
        for day in range(1, 8):
            handle.write(f"{prefix}u1,{prefix}i3,view,,1,2024-07-0{day}T00:00:00\n")
    second = ingest_postgres(scratch_database, dataset, bulk_min_rows=1)
    assert second.interaction_mode == "bulk" and second.interactions.inserted == 7
    loaded = snapshot(scratch_database, prefix)

    third = ingest_postgres(scratch_database, dataset, bulk_min_rows=1)
    assert third.interactions.inserted == 0 and third.interaction_mode == "incremental"
    assert snapshot(scratch_database, prefix) == loaded
    assert _schema(scratch_database) == schema
    with psycopg.connect(psycopg_conninfo(scratch_database)) as conn:
        with pytest.raises(psycopg.errors.ForeignKeyViolation):  # the FK is enforced again
            conn.execute(
                "insert into interaction (user_id, item_id, event, weight, occurred_at) "
                "values ('nobody', 'nothing', 'view', 1, now())"
            )


def _reference_tuples(rows: list[tuple[bytes | float | int | None, ...]], formats: str) -> bytes:
    """Binary COPY tuples one row and one field at a time with struct (slow, obviously right):
    ``formats`` has one struct code per field, ``s`` for UTF-8 bytes; None is NULL."""
    out = b""
    for row in rows:
        out += struct.pack(">h", len(row))
        for code, value in zip(formats, row, strict=True):
            if value is None:
                out += struct.pack(">i", -1)
            elif code == "s":
                out += struct.pack(">i", len(value)) + value
            else:
                out += struct.pack(">i", struct.calcsize(code)) + struct.pack(">" + code, value)
    return out


def test_binary_copy_tuples_match_a_row_by_row_reference() -> None:
    names = ["a", "", "größer", "x" * 20]
    rows = [
        (names[i % 4].encode(), float(i) if i % 3 else None, 10**12 - i, i % 5 or None)
        for i in range(50)
    ]
    encoded = [r[0] for r in rows]
    width = max(len(b) for b in encoded)
    rating = np.array([np.nan if r[1] is None else r[1] for r in rows])
    count = np.array([r[3] or 0 for r in rows])
    fields = [
        CopyField(np.array(encoded, dtype=f"S{width}"), np.array([len(b) for b in encoded])),
        CopyField(rating, np.where(np.isnan(rating), -1, 8)),  # native order: converted
        CopyField(np.array([r[2] for r in rows], dtype=">i8"), np.full(len(rows), 8)),
        CopyField(count.astype("<i4"), np.where(count == 0, -1, 4)),
    ]
    assert binary_copy_tuples(fields) == _reference_tuples(rows, "sdqi")
    fixed = [fields[2], CopyField(np.arange(50, dtype=np.int32), np.full(50, 4))]  # no padding
    assert binary_copy_tuples(fixed) == _reference_tuples(
        [(r[2], i) for i, r in enumerate(rows)], "qi"
    )


def _write_varied_dataset(folder: Path, prefix: str) -> None:
    """Ids of many lengths and scripts, every event kind, ratings, NULL names and prices."""
    folder.mkdir()
    users = [f"{prefix}{'u' * n}{i}" for i, n in enumerate((1, 5, 30))] + [f"{prefix}ünï"]
    items = [f"{prefix}p", f"{prefix}Ωmega-item", f"{prefix}{'i' * 90}"]
    (folder / "users.csv").write_text(
        "user_id,name\n" + "".join(f"{u},{'Name' if i % 2 else ''}\n" for i, u in enumerate(users))
    )
    (folder / "items.csv").write_text(
        "item_id,title,price\n"
        + "".join(f"{p},Title {p[-3:]},{i or ''}\n" for i, p in enumerate(items))
    )
    events = ["view,,", "click,,2.5", "add_to_cart,,", "purchase,,8", "rating,3,", "rating,5,1"]
    lines = [
        f"{users[(i * 7) % 4]},{items[(i * 5) % 3]},{events[i % 6]},{1714557600 + 3600 * (i % 11)}"
        for i in range(120)
    ]
    (folder / "interactions.csv").write_text(
        "user_id,item_id,event,rating,weight,timestamp\n" + "\n".join(lines) + "\n"
    )


def _interaction_rows(url: str, prefix: str) -> list[tuple]:
    """Stored interactions without the server-assigned id and created_at, sorted."""
    with psycopg.connect(psycopg_conninfo(url)) as conn:
        return conn.execute(
            "select user_id, item_id, event, rating, weight, occurred_at from interaction "
            "where user_id like %s order by 1, 2, 3, 6",
            (prefix + "%",),
        ).fetchall()


def test_fresh_bulk_copy_stores_the_same_rows_as_the_incremental_path(
    scratch_database, tmp_path, prefix
) -> None:
    folder = tmp_path / "varied"
    _write_varied_dataset(folder, prefix)
    incremental = ingest_postgres(scratch_database, folder, bulk_min_rows=10**9)
    assert incremental.interaction_mode == "incremental"
    expected = _interaction_rows(scratch_database, prefix)
    assert len(expected) == incremental.interactions.inserted > 50
    assert any(row[3] is not None for row in expected) and any(row[3] is None for row in expected)
    with psycopg.connect(psycopg_conninfo(scratch_database), autocommit=True) as conn:
        conn.execute("truncate interaction")

    fresh = ingest_postgres(scratch_database, folder, bulk_min_rows=1)  # empty table: direct COPY
    assert fresh.interaction_mode == "bulk"
    assert fresh.interactions.inserted == incremental.interactions.inserted
    assert _interaction_rows(scratch_database, prefix) == expected
    rerun = ingest_postgres(scratch_database, folder, bulk_min_rows=1)
    assert rerun.interactions.inserted == 0 and rerun.users.unchanged == 4
    assert _interaction_rows(scratch_database, prefix) == expected

    # the fast path reserved one block of ids from the sequence: later inserts follow it
    with (folder / "interactions.csv").open("a") as handle:
        handle.write(f"{prefix}u0,{prefix}p,view,,,2025-12-31T23:59:59\n")
    assert ingest_postgres(scratch_database, folder).interactions.inserted == 1
    with psycopg.connect(psycopg_conninfo(scratch_database)) as conn:
        ids = [row[0] for row in conn.execute("select id from interaction order by id")]
    assert ids == list(range(ids[0], ids[0] + len(expected))) + [ids[0] + len(expected)]


def _item_fields(database_url: str, prefix: str) -> dict[str, tuple]:
    """item_id -> (title, brand, price, description, rating_count) of this test's items."""
    with psycopg.connect(psycopg_conninfo(database_url)) as conn:
        rows = conn.execute(
            "select item_id, title, brand, price, description, rating_count from item "
            "where item_id like %s",
            (prefix + "%",),
        ).fetchall()
    return {row[0]: row[1:] for row in rows}


def _user_names(database_url: str, prefix: str) -> dict[str, str | None]:
    return {row[0]: row[1] for row in snapshot(database_url, prefix)["user"]}


def test_reingest_without_price_column_keeps_stored_prices(settings, dataset, prefix) -> None:
    """Issue 13 item 1: items.csv without price/brand/description nulled every stored value."""
    ingest_postgres(settings.database_url, dataset)
    before = _item_fields(settings.database_url, prefix)
    assert before[f"{prefix}i2"] == ("Espresso Maker", "Kitchara", 149.0, "Makes espresso", 33)
    (dataset / "items.csv").write_text(
        "item_id,title,category,avg_rating,rating_count,image_url\n"
        f"{prefix}i1,Trail Boots,Sports & Outdoors,4.5,120,\n"
        f"{prefix}i2,Espresso Maker Pro,Home & Kitchen,4.1,33,https://example.com/i2.jpg\n"
        f"{prefix}i3,Puzzle Cube,Toys & Games,,,\n"
        f"{prefix}i4,New Kettle,Home & Kitchen,,,\n"
    )
    report = ingest_postgres(settings.database_url, dataset)
    assert report.kept_columns == {"items.csv": ["brand", "price", "description"]}
    assert _counts(report)["items"] == {"inserted": 1, "updated": 1, "unchanged": 2}
    after = _item_fields(settings.database_url, prefix)
    assert after[f"{prefix}i2"] == ("Espresso Maker Pro", "Kitchara", 149.0, "Makes espresso", 33)
    assert after[f"{prefix}i1"] == before[f"{prefix}i1"]
    assert after[f"{prefix}i4"] == ("New Kettle", None, None, None, 0)  # new: unknown
    # a rerun of the same files changes nothing
    again = ingest_postgres(settings.database_url, dataset)
    assert _counts(again)["items"] == {"inserted": 0, "updated": 0, "unchanged": 4}


def test_reingest_without_name_column_keeps_stored_names(settings, dataset, prefix) -> None:
    ingest_postgres(settings.database_url, dataset)
    (dataset / "users.csv").write_text(f"user_id\n{prefix}u1\n{prefix}u2\n{prefix}u3\n")
    report = ingest_postgres(settings.database_url, dataset)
    assert report.kept_columns == {"users.csv": ["name"]}
    assert _counts(report)["users"] == {"inserted": 0, "updated": 0, "unchanged": 3}
    names = _user_names(settings.database_url, prefix)
    assert names == {f"{prefix}u1": "Ada", f"{prefix}u2": "Grace", f"{prefix}u3": None}


def test_clear_column_sets_an_absent_column_to_null(settings, dataset, prefix) -> None:
    ingest_postgres(settings.database_url, dataset)
    (dataset / "items.csv").write_text(
        "item_id,title,brand\n"
        f"{prefix}i1,Trail Boots,Trailforge\n{prefix}i2,Espresso Maker,Kitchara\n"
        f"{prefix}i3,Puzzle Cube,Clever Fox\n"
    )
    report = ingest_postgres(settings.database_url, dataset, clear_columns=["price"])
    assert report.cleared_columns == ["price"]
    assert "price" not in report.kept_columns["items.csv"]
    after = _item_fields(settings.database_url, prefix)
    assert after[f"{prefix}i2"] == ("Espresso Maker", "Kitchara", None, "Makes espresso", 33)


def test_clear_column_of_a_column_the_file_has_is_refused(settings, dataset, prefix) -> None:
    ingest_postgres(settings.database_url, dataset)
    before = snapshot(settings.database_url, prefix)
    with pytest.raises(IngestError, match=r"items.csv has price.*nothing was written"):
        ingest_postgres(settings.database_url, dataset, clear_columns=["price"])
    with pytest.raises(IngestError, match=r"--clear-column title: only an optional column"):
        ingest_postgres(settings.database_url, dataset, clear_columns=["title"])
    assert snapshot(settings.database_url, prefix) == before


def test_duplicate_header_is_an_error_naming_file_and_column(settings, dataset, prefix) -> None:
    """Issue 13 item 1: users.csv with header user_id,user_id nulled every name."""
    ingest_postgres(settings.database_url, dataset)
    before = snapshot(settings.database_url, prefix)
    (dataset / "users.csv").write_text(
        f"user_id,user_id\n{prefix}u1,{prefix}u1\n{prefix}u2,{prefix}u2\n{prefix}u3,{prefix}u3\n"
    )
    with pytest.raises(IngestError) as caught:
        ingest_postgres(settings.database_url, dataset)
    assert caught.value.message.startswith(
        "users.csv:1: column 'user_id' appears more than once in the header"
    )
    assert caught.value.details["duplicate_columns"] == ["user_id"]
    assert snapshot(settings.database_url, prefix) == before


def test_unicode_digit_timestamp_is_a_bad_row_not_a_crash(settings, dataset, prefix) -> None:
    """Issue 13 item 12: '1735689600²' passed str.isdigit and crashed the ingest."""
    edit(dataset / "interactions.csv", "purchase,,8,1714557600", "purchase,,8,1735689600²")
    with pytest.raises(IngestError) as caught:
        ingest_postgres(settings.database_url, dataset)
    assert caught.value.details["bad_rows"] == [
        "interactions.csv:4: timestamp '1735689600²' is neither ISO-8601 nor whole unix seconds"
    ]
    assert snapshot(settings.database_url, prefix) == {"user": [], "item": [], "interaction": []}
    report = ingest_postgres(settings.database_url, dataset, skip_bad_rows=True)
    assert [str(b) for b in report.bad_rows] == caught.value.details["bad_rows"]
    assert report.interactions.inserted == 5


def test_nul_byte_in_users_csv_is_a_bad_row_with_its_file_line(settings, dataset, prefix) -> None:
    """Issue 13 item 12: a NUL passed validation and failed inside COPY at an internal line."""
    edit(dataset / "users.csv", "Grace", "Gra\x00ce")  # line 3
    with pytest.raises(IngestError) as caught:
        ingest_postgres(settings.database_url, dataset)
    assert caught.value.details["bad_rows"][0] == "users.csv:3: name contains a NUL character"
    assert snapshot(settings.database_url, prefix) == {"user": [], "item": [], "interaction": []}
    report = ingest_postgres(settings.database_url, dataset, skip_bad_rows=True)
    assert str(report.bad_rows[0]) == "users.csv:3: name contains a NUL character"
    assert list(_user_names(settings.database_url, prefix)) == [f"{prefix}u1", f"{prefix}u3"]


def test_csv_parse_error_names_the_file_line_not_the_data_row(settings, dataset, prefix) -> None:
    """Issue 13 item 12: an unclosed quote was reported as pandas' 0-based "row 2"."""
    edit(dataset / "users.csv", "Grace", '"Grace')  # line 3 opens a quote nothing closes
    with pytest.raises(IngestError) as caught:
        ingest_postgres(settings.database_url, dataset)
    assert caught.value.message.startswith("users.csv:3: not valid CSV")
    assert caught.value.details["line"] == 3
    assert snapshot(settings.database_url, prefix) == {"user": [], "item": [], "interaction": []}
