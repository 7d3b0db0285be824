"""Two real worker processes lease from one PostgreSQL job store: every queued job trains exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ragtune.jobs import TERMINAL, BaseJobStore, Job, JobStatus
from ragtune.jobs_pg import PostgresJobStore

JOBS = 3


@pytest.fixture
def store(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[BaseJobStore]:
    """The PostgreSQL job store the conftest's make_job writes to (overrides the SQLite one)."""
    monkeypatch.setenv("RAGTUNE_DATABASE_URL", pg_url)
    s = PostgresJobStore(pg_url)
    yield s
    s.close()


def start_worker(name: str, home: Path) -> subprocess.Popen[bytes]:
    """Start `python -m ragtune.servers.worker` as its own process (its env carries RAGTUNE_DATABASE_URL)."""
    log = (home / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "ragtune.servers.worker", "--worker-id", name],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )


@pytest.mark.slow  # three real one-step trainings in two processes: ~70 s on 2 shared cores
def test_two_worker_processes_on_one_database_train_each_job_once(
    store: BaseJobStore,
    make_job: Callable[..., Job],
    fact_records: list[dict[str, Any]],
    isolated_env: Path,
    wait_for: Callable[..., Any],
) -> None:
    isolated_env.mkdir(parents=True, exist_ok=True)
    jobs = [make_job(fact_records, max_steps=1, n_epochs=1) for _ in range(JOBS)]
    workers = [start_worker(name, isolated_env) for name in ("wa", "wb")]
    try:
        wait_for(lambda: all(store.get_job(j.id).status in TERMINAL for j in jobs), 540, "every job to finish")
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(60)
    logs = "\n".join((isolated_env / f"{n}.log").read_text(errors="replace")[-3000:] for n in ("wa", "wb"))
    leased_by: dict[str, str] = {}
    for job in jobs:
        done = store.get_job(job.id)
        assert done.status is JobStatus.succeeded, f"{job.id}: {done.status} {done.error}\n{logs}"
        assert done.attempts == 1
        starts = [e.message for e in store.list_events(job.id, limit=100) if "started attempt" in e.message]
        assert len(starts) == 1, starts  # leased once, by one worker
        leased_by[job.id] = starts[0].split()[1]
        steps = [e.data["step"] for e in store.list_events(job.id, type="metrics", limit=100) if e.data]
        assert steps == [1], steps  # trained once: one optimizer step, never repeated by the other worker
    assert set(leased_by.values()) == {"wa", "wb"}, f"both workers should have trained: {leased_by}"
    assert all(w.returncode == 0 for w in workers), logs
    assert logs.count("watching postgresql://") == 2, logs  # each worker said which store it watches
