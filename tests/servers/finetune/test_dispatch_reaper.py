"""The reaper: a job whose only worker died leaves `running` within its lease plus one reaper period."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from openai import OpenAI
from ragtune.servers.finetune.reaper import Reaper
from ragtune.servers.finetune.service import FinetuneService

from ragtune.config import FinetuneSettings
from ragtune.jobs import JobStatus, JobStore

from .conftest import CHAT

ROOT = Path(__file__).resolve().parents[3]


def _leased(service: FinetuneService, lease: float) -> str:
    file = service.upload(CHAT.encode(), "c.jsonl")
    job = service.create_job({"training_file": file.id})
    leased = service.store.lease_next("ghost", lease, job_id=job.id)
    assert leased is not None and leased.status is JobStatus.running
    return job.id


def test_reconcile_requeues_an_expired_lease_then_fails_it_after_max_attempts(service: FinetuneService) -> None:
    job_id = _leased(service, 0.05)
    time.sleep(0.1)
    assert service.reconcile() == [job_id]
    assert service.get_job(job_id).status is JobStatus.queued
    for _ in range(service.store.max_attempts - 1):
        assert service.store.lease_next("ghost", 0.05, job_id=job_id) is not None
        time.sleep(0.1)
        service.reconcile()
    job = service.get_job(job_id)
    assert job.status is JobStatus.failed and job.error and job.error.code == "worker_lost"
    assert f"gave up after {service.store.max_attempts} attempts" in job.error.message
    assert service.reconcile() == []  # nothing left to reap


def test_a_failing_tick_does_not_stop_the_reaper() -> None:
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(time.monotonic())
        raise RuntimeError("store locked")

    reaper = Reaper(tick, 0.05).start()
    time.sleep(0.4)
    reaper.stop()
    assert len(ticks) >= 3


def test_the_served_app_reaps_on_its_own_timer(settings: FinetuneSettings, serve) -> None:
    cfg = settings.model_copy(update={"reaper_seconds": 0.2})
    client = OpenAI(base_url=f"{serve(cfg)}/v1", api_key="unused", max_retries=0)
    file = client.files.create(file=("c.jsonl", io.BytesIO(CHAT.encode())), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=file.id)
    store = JobStore(cfg.db_path())  # a worker in another process: it leases, then never heartbeats again
    assert store.lease_next("ghost", 0.3, job_id=job.id) is not None
    store.close()
    leased = time.monotonic()
    while client.fine_tuning.jobs.retrieve(job.id).status == "running":
        assert time.monotonic() - leased < 0.3 + 0.2 + 2.0, "the job stayed running after its lease expired"
        time.sleep(0.05)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "queued"
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=5)]
    assert any("worker ghost stopped heartbeating" in m and "re-queued" in m for m in events)


def _training_worker(settings: FinetuneSettings, serve, models_dir: Path, monkeypatch, lease: float, period: float):
    """Serve the app with a fast reaper, create a long job, start one worker process and wait for its first step."""
    for key, value in {
        "RAGTUNE_MODELS_DIR": str(models_dir),
        "RAGTUNE_TRAIN_THREADS": "1",
        "RAGTUNE_HEARTBEAT_SECONDS": "0.5",
        "RAGTUNE_LEASE_SECONDS": str(lease),
    }.items():
        monkeypatch.setenv(key, value)
    client = OpenAI(
        base_url=f"{serve(settings.model_copy(update={'reaper_seconds': period}))}/v1", api_key="x", max_retries=0
    )
    file = client.files.create(file=("c.jsonl", io.BytesIO(CHAT.encode())), purpose="fine-tune")
    hyper = {"batch_size": 4, "max_steps": 200, "max_length": 64, "learning_rate": 1e-4}
    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=file.id,
        method={"type": "supervised", "supervised": {"hyperparameters": hyper}},  # type: ignore[typeddict-item]
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "ragtune.servers.worker", "--once", "--worker-id", "only"],
        cwd=ROOT,
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id, limit=50)):
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            raise AssertionError("the worker never reached a training step")
        time.sleep(0.5)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    return client, job.id, worker


@pytest.mark.slow
def test_kill_9_of_the_only_worker_leaves_running_within_lease_plus_one_period(
    settings: FinetuneSettings, serve, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease, period = 3.0, 1.0
    client, job_id, worker = _training_worker(settings, serve, models_dir, monkeypatch, lease, period)
    try:
        children = psutil.Process(worker.pid).children(recursive=True)
        worker.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        worker.wait(10)
    finally:
        worker.kill()
    psutil.wait_procs(children, timeout=15)  # the training child follows its parent out (watch_parent)

    while (status := client.fine_tuning.jobs.retrieve(job_id).status) == "running":
        # the last heartbeat renewed the lease at most `lease` ago; the next tick comes within `period`
        assert time.monotonic() - killed < lease + period + 3.0, "the dead worker's job stayed running"
        time.sleep(0.1)
    assert status == "queued"  # attempt 1 of 3: re-queued to resume from its checkpoint, for the next worker
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=10)]
    assert any("worker only stopped heartbeating during attempt 1" in m for m in messages)


@pytest.mark.slow
def test_a_worker_frozen_past_its_lease_gives_the_job_up_when_it_wakes(
    settings: FinetuneSettings, serve, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, job_id, worker = _training_worker(settings, serve, models_dir, monkeypatch, 3.0, 0.5)
    try:
        child = psutil.Process(worker.pid).children()[0]
        worker.send_signal(signal.SIGSTOP)  # frozen: no heartbeats, the training child goes on
        _wait(lambda: client.fine_tuning.jobs.retrieve(job_id).status == "queued", 10, "the reaper to take it back")
        worker.send_signal(signal.SIGCONT)
        worker.wait(30)  # its next heartbeat sees the job queued: it stops the child and exits
    finally:
        worker.kill()
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert client.fine_tuning.jobs.retrieve(job_id).status == "queued"  # still there for the next worker
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=10)]
    assert any("this worker lost its lease" in m for m in messages), messages


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)
