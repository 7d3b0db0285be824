"""`ragtune-migrate`: copy a SQLite RAGTUNE_HOME (job store and retrieval index) into PostgreSQL.

The job store (jobs.db: files, jobs, events, checkpoints, the promoted model) is copied row by row with its ids,
times, states and order kept; the retrieval index (retrieval.db: collections, documents, chunks, vectors) through
the retrieval stores' `copy_index`, without re-embedding. Running it again copies only what is missing, so an
interrupted copy resumes. Uploaded files, checkpoints and job outputs stay where they are on disk (their paths are
copied as is): keep RAGTUNE_HOME mounted at the same path on every machine. A2A tasks and agent conversations are
not copied; they start afresh on PostgreSQL. Stop the services first, so nothing writes to the SQLite files while
they are read.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ragtune import db, pg
from ragtune.config import FinetuneSettings, RetrievalSettings, configure_logging

log = logging.getLogger("ragtune.migrate")

BATCH = 1000
# Table, its columns in both stores, the conflict key, the SQLite order that keeps insertion order (paging ties).
JOB_TABLES: list[tuple[str, tuple[str, ...], str, str]] = [
    (
        "files",
        ("id", "bytes", "created_at", "filename", "purpose", "status", "path", "format", "report"),
        "id",
        "rowid",
    ),
    ("jobs", ("id", "created_at", "status", "body", "worker_id", "lease_until", "attempts"), "id", "rowid"),
    ("events", ("id", "job_id", "created_at", "level", "message", "data", "type"), "id", "seq"),
    ("checkpoints", ("id", "job_id", "created_at", "step_number", "path", "metrics"), "id", "rowid"),
    ("promotion", ("slot", "model", "job_id", "promoted_at", "accepted_warnings"), "slot", "rowid"),
]
Bar = Callable[[str, int], Callable[[int], None]]  # (label, total) -> advance(n)


class MigrationError(RuntimeError):
    """Raised when there is nothing to copy or nowhere to copy it; the message says what to pass."""


def copy_jobs(jobs_db: Path, url: str, bar: Bar) -> dict[str, int]:
    """Copy every row of a SQLite job store into the PostgreSQL one at `url`; return how many rows were new."""
    from ragtune.jobs_pg import PostgresJobStore

    target = PostgresJobStore(url)  # creates and migrates the PostgreSQL tables
    source = db.connect(jobs_db, vec=False)
    copied: dict[str, int] = {}
    try:
        present = {r[0] for r in source.execute("select name from sqlite_master where type = 'table'")}
        for table, columns, key, order in JOB_TABLES:
            if table not in present:  # a store that never promoted a model has no promotion table
                continue
            total = source.execute(f"select count(*) from {table}").fetchone()[0]
            advance = bar(table, total)
            before = _count(target.conn, table)
            insert = (
                f"insert into {table} ({', '.join(columns)}) values ({', '.join(['%s'] * len(columns))}) "
                f"on conflict ({key}) do nothing"
            )
            for rows in _batches(source.execute(f"select {', '.join(columns)} from {table} order by {order}")):
                with target.conn.transaction(), target.conn.cursor() as cur:
                    cur.executemany(insert, rows)
                advance(len(rows))
            copied[table] = _count(target.conn, table) - before
    finally:
        source.close()
        target.close()
    return copied


def copy_retrieval(index_db: Path, url: str, bar: Bar) -> dict[str, int]:
    """Copy a SQLite retrieval index into PostgreSQL with the retrieval stores' copy_index (vectors kept)."""
    from ragtune.servers.retrieval.stores import copy_index, open_store

    source = open_store(index_db)
    target = open_store(index_db, url)
    try:
        total = sum(source.count_documents(n) for n in source.collection_names())
        advance = bar("documents", total)
        seen = [0]

        def progress(done: float, _total: float | None, _message: str) -> None:
            advance(int(done) - seen[0])
            seen[0] = int(done)

        return copy_index(source, target, progress)
    finally:
        source.close()
        target.close()


def _batches(cursor: Any) -> Iterator[list[tuple[Any, ...]]]:
    while rows := cursor.fetchmany(BATCH):
        yield [tuple(r) for r in rows]


def _count(conn: Any, table: str) -> int:
    return int(conn.execute(f"select count(*) as n from {table}").fetchone()["n"])


def tqdm_bar(enabled: bool) -> Bar:
    """Return a Bar that draws one tqdm progress bar per table (none when `enabled` is false)."""
    from tqdm import tqdm

    def open_bar(label: str, total: int) -> Callable[[int], None]:
        bar = tqdm(total=total, desc=f"{label:>11}", unit="row", disable=not enabled, leave=True, file=sys.stderr)

        def advance(n: int) -> None:
            bar.update(n)
            if bar.n >= total:
                bar.close()

        if total == 0:
            bar.close()
        return advance

    return open_bar


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(
        prog="ragtune-migrate",
        description="Copy a SQLite RAGTUNE_HOME into PostgreSQL: the job store (files, jobs, events, checkpoints) "
        "and the retrieval index (collections, documents, chunks, vectors). Safe to run again: rows already there "
        "are skipped. Stop the ragtune services first. Uploaded files and job outputs stay on disk.",
        epilog="Example: RAGTUNE_DATABASE_URL=postgresql://ragtune:secret@127.0.0.1:5432/ragtune "
        "ragtune-migrate --home .ragtune",
    )
    p.add_argument("--home", type=Path, default=None, help="the SQLite RAGTUNE_HOME to copy (default RAGTUNE_HOME)")
    p.add_argument(
        "--jobs-db", type=Path, default=None, help="job store file (default RAGTUNE_JOBS_DB or HOME/jobs.db)"
    )
    p.add_argument(
        "--index-db",
        type=Path,
        default=None,
        help="retrieval index file (default RAGTUNE_RETRIEVAL_DB or HOME/retrieval.db)",
    )
    p.add_argument(
        "--database-url", default=None, help="target PostgreSQL (default RAGTUNE_DATABASE_URL); needs pgvector"
    )
    p.add_argument("--only", choices=["jobs", "index"], default=None, help="copy only the job store or the index")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they are off when not a terminal)")
    return p.parse_args(argv)


def run(args: argparse.Namespace, bar: Bar) -> dict[str, dict[str, int]]:
    """Copy what `args` names; return the counts per part. Raise MigrationError when there is nothing to do."""
    jobs_settings, index_settings = FinetuneSettings(), RetrievalSettings()
    url = args.database_url or jobs_settings.database()
    if not pg.is_postgres_url(url):
        raise MigrationError(
            "no PostgreSQL to copy into: set RAGTUNE_DATABASE_URL=postgresql://user:password@host:5432/db "
            "or pass --database-url"
        )
    assert url is not None
    if args.home:  # a named home holds both files under their default names
        jobs_db, index_db = args.home / "jobs.db", args.home / "retrieval.db"
    else:
        jobs_db = jobs_settings.jobs_db or jobs_settings.home / "jobs.db"
        index_db = index_settings.retrieval_db or index_settings.home / "retrieval.db"
    parts = {"jobs": args.jobs_db or jobs_db, "index": args.index_db or index_db}
    wanted = [args.only] if args.only else ["jobs", "index"]
    found = [name for name in wanted if parts[name].is_file()]
    if not found:
        missing = ", ".join(str(parts[name]) for name in wanted)
        raise MigrationError(f"nothing to copy: no {missing}. Pass --home (the folder that holds them) or the files")
    done: dict[str, dict[str, int]] = {}
    for name in wanted:
        if name not in found:
            log.warning("no %s at %s: skipped", "job store" if name == "jobs" else "retrieval index", parts[name])
            continue
        log.info("copying %s into %s", parts[name], pg.redact(url))
        done[name] = (copy_jobs if name == "jobs" else copy_retrieval)(parts[name], url, bar)
    return done


def main(argv: Sequence[str] | None = None) -> int:
    """Run the copy and print what it did; exit 2 with the reason when it cannot start."""
    args = parse_args(argv)
    configure_logging("INFO")
    try:
        done = run(args, tqdm_bar(not args.no_progress and sys.stderr.isatty()))
    except (MigrationError, pg.DatabaseUnavailable, db.SchemaTooNew) as e:
        sys.stderr.write(f"ragtune-migrate: {e}\n")
        return 2
    for name, counts in done.items():
        summary = ", ".join(f"{k} {v}" for k, v in counts.items())
        sys.stdout.write(f"{'job store' if name == 'jobs' else 'retrieval index'}: copied {summary}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
