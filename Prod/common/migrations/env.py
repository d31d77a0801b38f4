"""Alembic environment: the target is the models' metadata.

``Prod.common.db.migrate`` passes its own connection (``config.attributes["connection"]``), already
inside a transaction holding the migration advisory lock, so the upgrade commits or rolls back with
it. The ``alembic`` CLI connects to ``-x url=...``, ``sqlalchemy.url`` or the settings'
DATABASE_URL, and takes the same lock.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, pool, text

from Prod.common import models
from Prod.common.db import AUTOGENERATE_OPTIONS, MIGRATION_LOCK

config = context.config
target_metadata = models.Base.metadata
if config.config_file_name is not None:  # the CLI (alembic.ini); migrate() passes no file
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if url:
        return url
    from config import get_settings

    return get_settings().database_url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection, target_metadata=target_metadata, **AUTOGENERATE_OPTIONS
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **AUTOGENERATE_OPTIONS,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_database_url(), poolclass=pool.NullPool)
    with engine.begin() as connection:
        connection.execute(text("select pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        _run(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
