"""Schema migrations (Alembic): a database made by the pre-Alembic ``migrate()`` is adopted and
upgraded, new revisions reach existing databases, the migrations create what the models declare,
and services starting together migrate once."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url

from Prod.common import db, models
from Prod.datasets.ingest.postgres import psycopg_conninfo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def new_database(settings):
    """A factory of empty databases on the test server, dropped after the test."""
    admin = psycopg_conninfo(settings.database_url)
    names: list[str] = []

    def create() -> str:
        name = f"migrations_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"create database {name}")
        names.append(name)
        return make_url(settings.database_url).set(database=name).render_as_string(False)

    yield create
    for name in names:
        db.get_engine(
            make_url(settings.database_url).set(database=name).render_as_string(False)
        ).dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"drop database {name} with (force)")


def _head() -> str:
    return ScriptDirectory.from_config(db.alembic_config()).get_current_head()


def _create_legacy_database(url: str) -> None:
    """What the pre-Alembic migrate() did: create_all of the models and version 1 recorded in
    schema_migration, in one transaction under the advisory lock (no alembic_version)."""
    with db.get_engine(url).begin() as conn:
        conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": db.MIGRATION_LOCK})
        models.Base.metadata.create_all(conn)
        conn.execute(
            models.SchemaMigration.__table__.insert().values(
                version=1, description="initial schema"
            )
        )


def _add_rows(url: str) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    with db.get_engine(url).begin() as conn:
        conn.execute(models.User.__table__.insert().values(user_id="u1", name="Ada"))
        conn.execute(models.Item.__table__.insert().values(item_id="i1", title="Lamp", price=9.5))
        conn.execute(
            models.Interaction.__table__.insert().values(
                user_id="u1", item_id="i1", event="purchase", weight=3.0, occurred_at=at
            )
        )


def _schema_snapshot(conn: Connection) -> dict[str, list[tuple]]:
    """Tables, columns (type, nullability, default), constraints and indexes as PostgreSQL
    reports them, without Alembic's own table."""
    where = "table_schema = 'public' and table_name <> 'alembic_version'"
    columns = conn.execute(
        text(
            "select table_name, column_name, data_type, character_maximum_length, is_nullable,"
            f" column_default from information_schema.columns where {where}"
            " order by table_name, column_name"
        )
    ).all()
    constraints = conn.execute(
        text(
            "select conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
            " from pg_constraint where connamespace = 'public'::regnamespace"
            " and conrelid::regclass::text <> 'alembic_version' order by 1, 2"
        )
    ).all()
    indexes = conn.execute(
        text(
            "select tablename, indexname, indexdef from pg_indexes where schemaname = 'public'"
            " and tablename <> 'alembic_version' order by 1, 2"
        )
    ).all()
    return {
        "columns": [tuple(r) for r in columns],
        "constraints": [tuple(r) for r in constraints],
        "indexes": [tuple(r) for r in indexes],
    }


def test_database_created_by_the_legacy_migrations_is_adopted_and_upgraded(new_database):
    url = new_database()
    _create_legacy_database(url)
    _add_rows(url)

    assert db.migrate(url) == _head()

    with db.get_engine(url).connect() as conn:
        assert conn.scalars(text("select version_num from alembic_version")).all() == [_head()]
        assert conn.scalars(text("select version from schema_migration")).all() == [1]
        assert conn.execute(text('select user_id, name from "user"')).all() == [("u1", "Ada")]
        assert conn.execute(text("select item_id, price from item")).all() == [("i1", 9.5)]
        assert conn.execute(text("select user_id, item_id, event from interaction")).all() == [
            ("u1", "i1", "purchase")
        ]
    assert db.migrate(url) == _head()  # idempotent once adopted


def test_initial_revision_creates_the_schema_the_legacy_migrations_created(new_database):
    legacy, migrated = new_database(), new_database()
    _create_legacy_database(legacy)
    db.migrate(migrated)
    with db.get_engine(legacy).connect() as a, db.get_engine(migrated).connect() as b:
        assert _schema_snapshot(b) == _schema_snapshot(a)
        assert b.scalars(text("select version from schema_migration")).all() == [1]


def test_models_and_migrations_agree(new_database):
    url = new_database()
    db.migrate(url)
    with db.get_engine(url).connect() as conn:
        context = MigrationContext.configure(conn, opts=dict(db.AUTOGENERATE_OPTIONS))
        assert compare_metadata(context, models.Base.metadata) == []


def test_alembic_cli_finds_no_pending_model_changes(new_database):
    """The developer command the README documents works from the repository root."""
    url = new_database()
    db.migrate(url)
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={url}", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


def test_a_new_revision_reaches_a_database_created_by_the_legacy_migrations(
    new_database, tmp_path, monkeypatch
):
    """The bug: migration 1 was create_all of today's models, so a model change never reached
    an existing database. A revision added after it now does."""
    scripts = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9999_add_item_note.py").write_text(
        f'''"""add item.note (test only)"""

import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = {_head()!r}
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("item", sa.Column("note", sa.Text(), nullable=True))


def downgrade():
    op.drop_column("item", "note")
'''
    )
    monkeypatch.setattr(db, "MIGRATIONS_DIR", scripts)
    url = new_database()
    _create_legacy_database(url)
    _add_rows(url)

    assert db.migrate(url) == "9999"

    with db.get_engine(url).connect() as conn:
        assert "note" in {c["name"] for c in inspect(conn).get_columns("item")}
        assert conn.execute(text("select item_id, note from item")).all() == [("i1", None)]


def test_migrate_is_safe_to_run_concurrently(new_database):
    url = new_database()
    n = 4
    barrier = threading.Barrier(n)
    results: list[str] = []
    errors: list[BaseException] = []

    def start_service() -> None:
        barrier.wait()
        try:
            results.append(db.migrate(url))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start_service) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert results == [_head()] * n
    with db.get_engine(url).connect() as conn:
        assert conn.scalars(text("select version_num from alembic_version")).all() == [_head()]
        assert conn.scalars(text("select version from schema_migration")).all() == [1]


def test_unknown_legacy_version_is_refused_without_touching_the_database(new_database):
    url = new_database()
    with db.get_engine(url).begin() as conn:
        models.SchemaMigration.__table__.create(conn)
        conn.execute(
            models.SchemaMigration.__table__.insert().values(version=2, description="unknown")
        )
    with pytest.raises(RuntimeError, match="schema_migration is at version 2"):
        db.migrate(url)
    with db.get_engine(url).connect() as conn:
        assert not inspect(conn).has_table("alembic_version")
        assert not inspect(conn).has_table("item")
