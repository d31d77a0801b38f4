"""Engine, sessions and versioned schema migrations for PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import psycopg
from sqlalchemy import Connection, Engine, create_engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.orm import Session, sessionmaker

from Prod.common import models
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


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _initial_schema(conn: Connection) -> None:
    models.Base.metadata.create_all(conn)


# Append only: a migration, once released, never changes.
MIGRATIONS: list[Migration] = [
    Migration(1, "initial schema", _initial_schema),
]

_MIGRATION_LOCK = 715_001  # pg advisory lock id: services starting together migrate once


def migrate(database_url: str) -> int:
    """Bring the schema up to date; returns the schema version. Safe to call concurrently."""
    engine = get_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        models.SchemaMigration.__table__.create(conn, checkfirst=True)
        applied = set(conn.scalars(select(models.SchemaMigration.version)))
        for migration in MIGRATIONS:
            if migration.version in applied:
                continue
            log.info("applying migration %d: %s", migration.version, migration.description)
            migration.apply(conn)
            conn.execute(
                models.SchemaMigration.__table__.insert().values(
                    version=migration.version, description=migration.description
                )
            )
    return MIGRATIONS[-1].version
