"""Promotion: one global tuned model, kept in the job store, seen by every process that opens it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragtune import promotion
from ragtune.jobs import Job, JobStatus, JobStore, fine_tuned_model_name, new_id


def succeeded_job(store: JobStore, status: JobStatus = JobStatus.succeeded) -> Job:
    job = Job(
        id=new_id("ftjob"),
        created_at=int(time.time()),
        model="smollm2-135m-instruct",
        status=status,
        training_file="file-x",
        user_provided_suffix="demo",
    )
    store.create_job(job)
    return store.update_job(job.id, fine_tuned_model=fine_tuned_model_name(job))


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    s = JobStore(tmp_path / "jobs.db")
    yield s
    s.close()


def test_promotion_is_seen_by_another_process_and_demotion_clears_it(store: JobStore) -> None:
    job = succeeded_job(store)
    assert promotion.promoted(store) is None
    script = (
        "import sys; from ragtune.jobs import JobStore; from ragtune import promotion; "
        "print(promotion.promote(JobStore(sys.argv[1]), sys.argv[2]).model)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(store.path), job.fine_tuned_model],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == job.fine_tuned_model
    seen = promotion.promoted(store)
    assert seen is not None and seen.model == job.fine_tuned_model and seen.job_id == job.id
    assert seen.scope == "global" and seen.accepted_warnings == []
    assert promotion.demote(store, "ft:other:org:x:ftjob-0") is None  # demoting another model changes nothing
    assert promotion.demote(store, job.fine_tuned_model) is not None
    assert promotion.promoted(store) is None


def test_refuses_models_no_succeeded_job_produced(store: JobStore) -> None:
    running = succeeded_job(store, JobStatus.queued)
    with pytest.raises(promotion.PromotionRefused, match="queued"):
        promotion.promote(store, running.fine_tuned_model or "")
    with pytest.raises(promotion.PromotionRefused, match="no succeeded fine-tuning job"):
        promotion.promote(store, "ft:smollm2-135m-instruct:org-ragtune:demo:ftjob-missing")


def test_promotion_of_a_deleted_job_falls_back_to_the_base_model(store: JobStore) -> None:
    job = succeeded_job(store)
    promotion.promote(store, job.fine_tuned_model or "")
    store.conn.execute("delete from jobs where id = ?", (job.id,))
    assert promotion.promoted(store) is None
