"""Open PostgreSQL the one way ragtune needs it: pgvector present, schema migrated, clear errors when it is not.

Selected by `RAGTUNE_DATABASE_URL=postgresql://...` (unset: the SQLite files under RAGTUNE_HOME). Each component
(index, jobs, ...) keeps its own ordered list of migrations; `ragtune_schema` records how far each has gone, and an
advisory lock makes concurrent replicas migrate one at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ragtune.db import SchemaTooNew

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x7261677475  # "ragtu": pg_advisory_xact_lock key shared by every ragtune migrator


class DatabaseUnavailable(RuntimeError):
    """Raised when RAGTUNE_DATABASE_URL names a server that cannot be reached or lacks pgvector."""


def is_postgres_url(url: str | None) -> bool:
    """Tell whether a database URL selects the PostgreSQL backend."""
    return bool(url) and str(url).split(":", 1)[0] in {"postgresql", "postgres", "postgresql+psycopg"}


def plain_url(url: str) -> str:
    """Return the libpq form of `url` (SQLAlchemy's `postgresql+psycopg://` scheme stripped)."""
    return "postgresql://" + url.split("://", 1)[1] if "://" in url else url


def sqlalchemy_url(url: str) -> str:
    """Return the SQLAlchemy async form of `url` (psycopg 3 driver), as a2a-sdk's DatabaseTaskStore needs."""
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def redact(url: str) -> str:
    """Hide the password of a URL for messages and logs."""
    head, sep, tail = url.partition("://")
    if not sep or "@" not in tail:
        return url
    creds, at, rest = tail.partition("@")
    user = creds.split(":", 1)[0]
    return f"{head}://{user}:***@{rest}" if ":" in creds else url


def connect(url: str, *, autocommit: bool = True, vector: bool = True, **kwargs: Any) -> Any:
    """Return a psycopg connection with pgvector's types registered; explain what to fix when it fails."""
    import psycopg

    try:
        conn = psycopg.connect(plain_url(url), autocommit=autocommit, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot reach PostgreSQL at {redact(url)}: {str(exc).strip().splitlines()[0] if str(exc) else exc}. "
            "Start the server (docker compose --profile postgres up -d postgres) or fix RAGTUNE_DATABASE_URL; "
            "unset it to use the SQLite files under RAGTUNE_HOME."
        ) from exc
    if vector:
        ensure_vector(conn)
    return conn


def ensure_vector(conn: Any) -> None:
    """Create the pgvector extension if needed and register its types; say how to install it when missing."""
    from pgvector.psycopg import register_vector

    row = conn.execute("select 1 from pg_available_extensions where name = 'vector'").fetchone()
    if row is None:
        raise DatabaseUnavailable(
            "the pgvector extension is not installed on this PostgreSQL server: use an image with it "
            "(pgvector/pgvector:pg17) or install it (apt install postgresql-17-pgvector), then retry"
        )
    if conn.execute("select 1 from pg_extension where extname = 'vector'").fetchone() is None:
        try:
            with conn.transaction():
                conn.execute("select pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                conn.execute("create extension if not exists vector")
        except Exception as exc:  # psycopg.errors.InsufficientPrivilege and friends
            raise DatabaseUnavailable(
                f"cannot create the pgvector extension ({exc}): run 'create extension vector' as a superuser once"
            ) from exc
    register_vector(conn)


Migration = str  # one SQL script; statements run in order inside the migration's transaction


def migrate(conn: Any, component: str, migrations: Sequence[Migration]) -> int:
    """Apply `component`'s migrations past its recorded version, under an advisory lock; return the version."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("create table if not exists ragtune_schema (component text primary key, version int not null)")
        row = conn.execute("select version from ragtune_schema where component = %s", (component,)).fetchone()
        current = int(row[0]) if row else 0
        if current > len(migrations):
            raise SchemaTooNew(
                f"the {component} schema in PostgreSQL is version {current}, newer than this ragtune "
                f"({len(migrations)}): upgrade ragtune on this machine to the version that wrote it"
            )
        for version, script in enumerate(migrations, start=1):
            if version <= current:
                continue
            conn.execute(script)
            conn.execute(
                "insert into ragtune_schema(component, version) values (%s, %s) "
                "on conflict (component) do update set version = excluded.version",
                (component, version),
            )
            log.debug("migrated %s to version %d", component, version)
    return max(current, len(migrations))
