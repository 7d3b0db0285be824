"""The worker against a real job store: failures are recorded with a reason, never left running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ragtune.servers.worker.worker import Worker

from ragtune.config import WorkerSettings
from ragtune.jobs import JobStatus, JobStore

ROOT = Path(__file__).resolve().parents[3]


def test_cli_help_names_the_options() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ragtune.servers.worker", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    assert all(flag in out.stdout for flag in ("--once", "--max-jobs", "--job"))


def test_unknown_base_model_fails_with_a_clear_error(store: JobStore, make_job, fact_records, worker_thread) -> None:
    job = make_job(fact_records, model="no-such/model-xyz", max_steps=1)
    worker_thread(once=True).join(30)

    failed = store.get_job(job.id)
    assert failed.status is JobStatus.failed
    assert failed.error.code == "model_not_found"
    assert "unknown base model 'no-such/model-xyz'" in failed.error.message


def test_run_by_job_id_leases_only_that_queued_job(
    store: JobStore, make_job, fact_records, settings: WorkerSettings
) -> None:
    other = make_job(fact_records, model="no-such/other", max_steps=1)
    job = make_job(fact_records, model="no-such/model-xyz", max_steps=1)
    worker = Worker(settings, store, progress=False)

    assert worker.run(job_id=job.id) == 1
    assert store.get_job(job.id).status is JobStatus.failed
    assert store.get_job(job.id).attempts == 1
    assert store.get_job(other.id).status is JobStatus.queued
    assert worker.run(job_id=job.id) == 0  # no longer queued: nothing to run


def test_crashed_training_process_fails_the_job_with_its_last_lines(
    store: JobStore, make_job, fact_records, settings: WorkerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A child killed by the OOM killer leaves no result: the job must fail with what the child last said.
    crash = "import sys; print('loading model'); print('RuntimeError: out of memory', file=sys.stderr); sys.exit(137)"
    monkeypatch.setattr(Worker, "_command", lambda self, job, out: [sys.executable, "-c", crash])
    job = make_job(fact_records, max_steps=1)

    assert Worker(settings, store, progress=False).run(once=True) == 1
    failed = store.get_job(job.id)
    assert failed.status is JobStatus.failed
    assert failed.error.code == "training_crashed"
    assert "exited with code 137" in failed.error.message
    assert "RuntimeError: out of memory" in failed.error.message


def test_missing_training_file_fails_with_the_reason(
    store: JobStore, make_job, fact_records, settings: WorkerSettings
) -> None:
    job = make_job(fact_records, max_steps=1)
    Path(store.get_file(job.training_file).path).unlink()

    assert Worker(settings, store, progress=False).run(once=True) == 1
    failed = store.get_job(job.id)
    assert failed.status is JobStatus.failed
    assert failed.error.code == "invalid_training_job"
    assert "cannot read" in failed.error.message


def test_stopping_worker_requeues_its_job_and_ends_the_child(
    store: JobStore,
    make_job,
    fact_records,
    settings: WorkerSettings,
    monkeypatch: pytest.MonkeyPatch,
    worker_thread,
    wait_for,
) -> None:
    monkeypatch.setattr(
        Worker, "_command", lambda self, job, out: [sys.executable, "-c", "import time; time.sleep(120)"]
    )
    job = make_job(fact_records, max_steps=1)
    w = worker_thread(once=True)
    child = wait_for(lambda: w.worker.child, 30, "the child to start")

    w.worker.stop.set()
    w.join(15)
    assert child.poll() is not None
    requeued = store.get_job(job.id)
    assert requeued.status is JobStatus.queued and requeued.worker_id is None
    assert "re-queued to resume" in store.list_events(job.id, limit=1)[0].message


def test_progress_bar_follows_metrics_events(store: JobStore, make_job, fact_records) -> None:
    from ragtune.servers.worker.worker import _Progress

    job = make_job(fact_records, max_steps=12)
    for step in (1, 2):
        store.add_event(
            job.id,
            f"step {step}/12",
            type="metrics",
            data={"step": step, "total_steps": 12, "train_loss": 2.0 / step, "tokens_per_second": 50.0},
        )
    bar = _Progress(store, job.id)
    bar.update()
    assert (bar.bar.n, bar.bar.total) == (2, 12)
    bar.close()


def test_a_job_that_breaks_the_loop_fails_and_the_worker_goes_on(
    store: JobStore, make_job, fact_records, settings: WorkerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Worker, job: object, out: Path) -> list[str]:
        raise PermissionError("cannot write /forbidden")

    monkeypatch.setattr(Worker, "_command", broken)
    first, second = make_job(fact_records, max_steps=1), make_job(fact_records, max_steps=1)

    assert Worker(settings, store, progress=False).run(max_jobs=2) == 2
    for job in (first, second):
        failed = store.get_job(job.id)
        assert failed.status is JobStatus.failed and failed.error.code == "worker_error"
        assert "cannot write /forbidden" in failed.error.message
