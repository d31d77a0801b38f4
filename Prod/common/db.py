"""Engine, sessions and versioned schema migrations (Alembic) for PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.orm import Session, sessionmaker

from Prod.common.errors import InfraError
from Prod.common.logs import get_logger

log = get_logger(__name__)


@lru_cache(maxsize=8)
def get_engine(database_url: str) -> Engine:
    """One pooled engine per database URL and process. A server that does not answer fails a
    connect in 5 s (libpq waits for the OS otherwise: minutes), so health checks and requests
    report an outage instead of hanging."""
    return create_engine(
        database_url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        connect_args={"connect_timeout": 5},
    )


@lru_cache(maxsize=8)
def _sessionmaker(database_url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(database_url), expire_on_commit=False)


# what "PostgreSQL cannot be reached" looks like, through SQLAlchemy or a raw psycopg cursor
_UNREACHABLE = (
    SAOperationalError,
    SAInterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    OSError,
)


def postgres_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the server is down or the connection broke (worth a retry), as
    opposed to a bad statement or a constraint violation."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _UNREACHABLE)


@contextmanager
def postgres_errors(what: str = "the database") -> Iterator[None]:
    """Turn "PostgreSQL unreachable" into :class:`InfraError` (HTTP 503 naming the store); other
    errors pass unchanged. The driver's text stays in the log, not in the client's error."""
    try:
        yield
    except Exception as exc:
        if not postgres_unreachable(exc):
            raise
        log.warning("postgres unreachable (%s): %s", what, exc)
        raise InfraError(
            f"PostgreSQL is unavailable ({what}); try again shortly", store="postgres"
        ) from exc


@contextmanager
def session_scope(database_url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error; an unreachable server
    raises :class:`InfraError` (store ``postgres``)."""
    with postgres_errors():
        session = _sessionmaker(database_url)()
        try:
            yield session
            session.commit()
        except BaseException:
            try:
                session.rollback()
            except Exception as exc:  # the connection is gone: keep the original error
                log.debug("rollback failed: %s", exc)
            raise
        finally:
            session.close()


# --- migrations -----------------------------------------------------------------------------

MIGRATIONS_DIR = Path(__file__).with_name("migrations")  # Alembic: env.py, versions/
MIGRATION_LOCK = 715_001  # pg advisory lock id: services starting together migrate once
INITIAL_REVISION = "0001"  # today's schema as the pre-Alembic migrate() created it
# how autogenerate (and the models-vs-migrations test) compares, beyond tables, columns,
# indexes and constraints
AUTOGENERATE_OPTIONS = {"compare_type": True, "compare_server_default": True}
# Before Alembic, migrate() recorded its versions in schema_migration; version 1 (create_all of
# the models) is the only one ever released, and revision 0001 creates exactly that schema.
_LEGACY_TABLE = "schema_migration"
_LEGACY_VERSION = 1


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """Alembic's configuration in code (no ini file at run time); with ``connection``, env.py
    migrates on it instead of opening its own."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _is_legacy_schema(conn: Connection) -> bool:
    """Whether the pre-Alembic migrate() made this database (schema_migration, no Alembic)."""
    tables = inspect(conn)
    if tables.has_table("alembic_version") or not tables.has_table(_LEGACY_TABLE):
        return False
    newest = conn.scalar(text(f"select max(version) from {_LEGACY_TABLE}"))
    if newest != _LEGACY_VERSION:
        raise RuntimeError(
            f"{_LEGACY_TABLE} is at version {newest}; the only pre-Alembic version is "
            f"{_LEGACY_VERSION}, so this database was not created by this platform"
        )
    return True


def migrate(database_url: str) -> str:
    """Upgrade the schema to the newest Alembic revision and return it. Safe to call
    concurrently: one transaction holds an advisory lock for the whole upgrade, so services
    starting together migrate once and the others find it done. A database created before
    Alembic is stamped at :data:`INITIAL_REVISION` (its tables are kept), then upgraded."""
    engine = get_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        cfg = alembic_config(conn)
        if _is_legacy_schema(conn):
            log.info("adopting a pre-Alembic schema at revision %s", INITIAL_REVISION)
            command.stamp(cfg, INITIAL_REVISION)
        command.upgrade(cfg, "head")
        revision = MigrationContext.configure(conn).get_current_revision()
    if revision is None:  # pragma: no cover - upgrade to head always leaves a revision
        raise RuntimeError("migration left no alembic_version")
    return revision
