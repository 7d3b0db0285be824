"""`python -m ragtune.servers.worker`: lease queued fine-tuning jobs from the job store and train them."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from ragtune.config import WorkerSettings, configure_logging

from .worker import Worker


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(
        prog="python -m ragtune.servers.worker",
        description="Lease queued fine-tuning jobs from the job store (RAGTUNE_DATABASE_URL, else RAGTUNE_JOBS_DB or "
        "RAGTUNE_HOME/jobs.db) "
        "and train each in a child process, with heartbeats, checkpoints, cancel, pause and recovery.",
    )
    p.add_argument("--once", action="store_true", help="run at most one queued job, then exit")
    p.add_argument("--max-jobs", type=int, default=None, metavar="N", help="exit after N jobs")
    p.add_argument("--job", default=None, metavar="ID", help="run exactly this queued job, then exit")
    p.add_argument("--worker-id", default=None, help="name of this worker (default host-pid)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the worker until stopped (SIGINT/SIGTERM stop it after re-queueing nothing: leases expire)."""
    args = parse_args(argv)
    settings = WorkerSettings()
    if args.worker_id:
        settings = settings.model_copy(update={"worker_id": args.worker_id})
    configure_logging(settings.log_level)
    worker = Worker(settings)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
    logging.getLogger("ragtune.worker").info("worker %s watching %s", worker.worker_id, worker.store.location)
    try:
        done = worker.run(once=args.once, max_jobs=args.max_jobs, job_id=args.job)
    except KeyboardInterrupt:
        worker.stop.set()
        return 130
    print(f"worker {worker.worker_id}: {done} job(s) processed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
