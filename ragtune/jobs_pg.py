"""The job store on PostgreSQL (RAGTUNE_DATABASE_URL): workers on several machines lease from one database.

Same rules as the SQLite store (they live in `ragtune.jobs.BaseJobStore`); what differs is how writers are kept
apart. A worker leases with `SELECT ... FOR UPDATE SKIP LOCKED`, so two workers polling at once take different
jobs and never wait on each other; a transition or heartbeat locks its one row (`FOR UPDATE`). Uploaded files and
job outputs stay on disk under RAGTUNE_HOME (a volume every machine mounts): only their metadata is here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from ragtune import pg
from ragtune.jobs import BaseJobStore

log = logging.getLogger(__name__)

COMPONENT = "jobs"  # its row in ragtune_schema
# `rowid` is an identity column standing in for SQLite's implicit rowid (insertion order, the paging tie-break),
# so one set of SQL serves both engines.
MIGRATIONS: list[pg.Migration] = [
    """
    create table files (
      id text primary key, rowid bigint generated always as identity, bytes bigint not null,
      created_at bigint not null, filename text not null, purpose text not null, status text not null,
      path text not null, format text, report text not null
    );
    create index files_created on files(created_at, rowid);
    create table jobs (
      id text primary key, rowid bigint generated always as identity, created_at bigint not null,
      status text not null, body text not null, worker_id text, lease_until double precision,
      attempts integer not null default 0
    );
    create index jobs_status on jobs(status, created_at, rowid);
    create index jobs_created on jobs(created_at, rowid);
    create table events (
      seq bigint generated always as identity primary key, id text unique not null,
      job_id text not null references jobs(id) on delete cascade, created_at bigint not null, level text not null,
      message text not null, data text, type text not null
    );
    create index events_job on events(job_id, seq);
    create table checkpoints (
      id text primary key, rowid bigint generated always as identity,
      job_id text not null references jobs(id) on delete cascade, created_at bigint not null,
      step_number integer not null, path text not null, metrics text not null
    );
    create index checkpoints_job on checkpoints(job_id, step_number);
    create table promotion (
      slot text primary key, model text not null, job_id text not null, promoted_at bigint not null,
      accepted_warnings text not null default ''
    );
    """,
]


class PostgresJobStore(BaseJobStore):
    """Files, jobs, events and checkpoints in PostgreSQL; safe for many processes on many machines."""

    lock_row: ClassVar[str] = " for update"
    skip_locked: ClassVar[str] = " for update skip locked"

    def __init__(self, url: str, *, max_attempts: int = 3) -> None:
        super().__init__(max_attempts=max_attempts)
        self.url = url
        conn = pg.connect(self.url, vector=False)
        pg.migrate(conn, COMPONENT, MIGRATIONS)  # tuple rows, as ragtune.pg reads them
        self.conn = self._rows_by_name(conn)

    def _connect(self) -> Any:
        return self._rows_by_name(pg.connect(self.url, vector=False))

    @staticmethod
    def _rows_by_name(conn: Any) -> Any:
        from psycopg.rows import dict_row

        conn.row_factory = dict_row  # the shared SQL reads columns by name, as sqlite3.Row allows
        return conn

    @property
    def location(self) -> str:
        """Return the database URL with its password hidden."""
        return pg.redact(self.url)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def _live(self) -> Any:
        """Return the connection, reconnecting once if the server dropped it (a restart, an idle timeout)."""
        if self.conn.closed or self.conn.broken:
            log.warning("job store connection to %s was lost; reconnecting", self.location)
            self.conn = self._connect()
        return self.conn

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        cur = self._live().execute(sql.replace("?", "%s"), tuple(args))
        return cur.fetchall() if cur.description is not None else []

    def _begin(self) -> AbstractContextManager[Any]:
        return self._live().transaction()

    def _metadata_clause(self) -> str:
        return "(body::jsonb -> 'metadata' ->> ?) = ?"
