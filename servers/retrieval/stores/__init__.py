"""Storage backends of the retrieval index behind one protocol (base.RetrievalStore): SQLite or PostgreSQL.

`open_store(db_path, database_url, vector_cache_mb)` picks the backend: a PostgreSQL URL
(RAGTUNE_DATABASE_URL) opens stores/postgres.py, anything else the SQLite file at `db_path`.
`copy_index(src, dst, progress)` (stores/copy.py) copies one store into another without re-embedding.
"""

from __future__ import annotations

from pathlib import Path

from ragtune.servers.retrieval.stores.base import RetrievalStore
from ragtune.servers.retrieval.stores.copy import CopyConflict, copy_index

__all__ = ["CopyConflict", "RetrievalStore", "copy_index", "open_store"]

from ragtune.pg import DatabaseUnavailable, is_postgres_url


def open_store(db_path: Path | str, database_url: str | None = None, vector_cache_mb: float = 256.0) -> RetrievalStore:
    """Open (creating and migrating) the store the settings select: PostgreSQL when a URL is given, else SQLite."""
    if is_postgres_url(database_url):
        from ragtune.servers.retrieval.stores.postgres import PostgresStore

        assert database_url is not None
        try:
            return PostgresStore.open(database_url)
        except ModuleNotFoundError as exc:  # psycopg / pgvector come with the postgres extra
            raise DatabaseUnavailable(
                f"RAGTUNE_DATABASE_URL selects PostgreSQL but {exc.name} is not installed: pip install "
                "'ragtune[postgres]' (make install does), or unset RAGTUNE_DATABASE_URL to use SQLite"
            ) from exc
    from ragtune.servers.retrieval.stores.sqlite import SqliteStore

    return SqliteStore.open(db_path, vector_cache_mb)
