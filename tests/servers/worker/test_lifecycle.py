"""Cancel, pause/resume and recovery from a killed worker, with real training children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ragtune.jobs import JobStatus, JobStore

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]


def _first_metrics(store: JobStore, job_id: str) -> bool:
    return bool(store.list_events(job_id, type="metrics", limit=1))


def test_cancel_mid_run_stops_the_child_within_seconds(
    store: JobStore, make_job, fact_records, worker_thread, wait_for
) -> None:
    job = make_job(fact_records, max_steps=200)
    w = worker_thread(once=True)
    wait_for(lambda: _first_metrics(store, job.id), 180, "the first training step")
    child = w.worker.child
    assert child is not None and child.poll() is None

    store.transition(job.id, JobStatus.cancelled, message="cancelled by the test")
    started = time.monotonic()
    w.join(15)

    assert time.monotonic() - started < 10
    assert child.poll() is not None, "the training child is still running"
    assert store.get_job(job.id).status is JobStatus.cancelled
    assert any("cancelled" in e.message for e in store.list_events(job.id, limit=5))


def test_pause_checkpoints_and_resume_continues_from_it(
    store: JobStore, make_job, fact_records, worker_thread, wait_for
) -> None:
    job = make_job(fact_records, max_steps=3)
    w = worker_thread(once=True)
    wait_for(lambda: _first_metrics(store, job.id), 180, "the first training step")
    store.transition(job.id, JobStatus.paused, message="paused by the test")
    w.join(120)

    assert store.get_job(job.id).status is JobStatus.paused
    ckpt = store.list_checkpoints(job.id)[0]
    assert 1 <= ckpt.step_number < 3 and Path(ckpt.fine_tuned_model_checkpoint).is_dir()

    store.transition(job.id, JobStatus.queued, message="resumed by the test")
    worker_thread(once=True).join(240)
    done = store.get_job(job.id)
    assert done.status is JobStatus.succeeded, done.error
    messages = [e.message for e in store.list_events(job.id, limit=100)]
    assert f"resuming from checkpoint-{ckpt.step_number}" in messages
    steps = [e.data["step"] for e in store.list_events(job.id, type="metrics", order="asc", limit=100)]
    assert steps[-1] == 3 and steps.count(1) == 1  # the second attempt did not start over


def test_killed_worker_job_is_recovered_by_another_worker(
    store: JobStore, make_job, fact_records, worker_thread, wait_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGTUNE_LEASE_SECONDS", "3")
    job = make_job(fact_records, max_steps=3, save_steps=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragtune.servers.worker", "--once", "--worker-id", "doomed"],
        cwd=ROOT,
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: store.list_checkpoints(job.id), 240, "the first checkpoint")
        children = psutil.Process(proc.pid).children()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, "the orphaned training child kept running"
    assert store.get_job(job.id).status is JobStatus.running  # until its lease expires

    from ragtune.servers.worker.worker import Worker

    from ragtune.config import WorkerSettings

    rescuer = Worker(WorkerSettings(worker_id="rescuer"), progress=False)
    assert rescuer.run(max_jobs=1) == 1
    done = store.get_job(job.id)
    assert done.status is JobStatus.succeeded, done.error
    assert done.attempts == 2
    messages = [e.message for e in store.list_events(job.id, limit=100)]
    assert any("stopped heartbeating" in m for m in messages)
    assert any(m.startswith("resuming from checkpoint-") for m in messages)
