"""Open the job store the settings select: PostgreSQL when RAGTUNE_DATABASE_URL is set, else the SQLite file.

The one place that chooses, so the service, the workers, their training processes and the Ray path always agree.
"""

from __future__ import annotations

from pathlib import Path

from ragtune.config import FinetuneSettings
from ragtune.jobs import BaseJobStore, JobStore
from ragtune.jobs_pg import PostgresJobStore
from ragtune.pg import is_postgres_url


def open_job_store(settings: FinetuneSettings, *, max_attempts: int = 3) -> BaseJobStore:
    """Return the PostgreSQL store at RAGTUNE_DATABASE_URL, or the SQLite file (RAGTUNE_JOBS_DB, HOME/jobs.db)."""
    return open_job_store_at(settings.database() or settings.db_path(), max_attempts=max_attempts)


def open_job_store_at(target: str | Path, *, max_attempts: int = 3) -> BaseJobStore:
    """Open a job store by location: a postgresql:// URL or a SQLite file path."""
    if is_postgres_url(str(target)):
        return PostgresJobStore(str(target), max_attempts=max_attempts)
    return JobStore(target, max_attempts=max_attempts)
