"""The SQLite job store's own properties: its columns, old files migrating, and sqlite-utils reading it.

Every behaviour both backends share (transitions, leases, recovery, paging, files) is in test_jobstore_contract.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragtune import db
from ragtune.jobs import MIGRATIONS, Job, JobStatus, JobStore, new_id


def make_job(store: JobStore, status: JobStatus = JobStatus.queued, created_at: int | None = None) -> Job:
    job = Job(
        id=new_id("ftjob"),
        created_at=created_at or int(time.time()),
        model="smollm2-135m-instruct",
        status=status,
        training_file="file-x",
        user_provided_suffix="demo",
    )
    return store.create_job(job)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore(tmp_path / "jobs.db")
    yield s
    s.close()


def test_status_attempts_and_worker_are_stored_once_in_their_columns(store: JobStore) -> None:
    job = make_job(store)
    store.lease_next("w1", 30)
    store.update_job(job.id, output_dir="/tmp/out")
    row = store.conn.execute("select status, attempts, worker_id, body from jobs where id = ?", (job.id,)).fetchone()
    assert (row["status"], row["attempts"], row["worker_id"]) == ("running", 1, "w1")
    assert not {"status", "attempts", "worker_id"} & json.loads(row["body"]).keys()


def test_a_store_written_before_the_single_status_column_migrates(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "old.db", vec=False)
    db.migrate(conn, MIGRATIONS[:1])
    old = Job(id="ftjob-old", created_at=1, model="m", status=JobStatus.queued, training_file="f", attempts=2)
    # Version 1 kept a stale copy of the state in the body; the column was the truth.
    conn.execute(
        "insert into jobs(id, created_at, status, body, attempts) values (?,?,?,?,?)",
        (old.id, 1, "failed", old.model_dump_json(), 2),
    )
    conn.close()
    store = JobStore(tmp_path / "old.db")
    assert store.get_job("ftjob-old").status is JobStatus.failed and store.get_job("ftjob-old").attempts == 2
    body = store.conn.execute("select body from jobs").fetchone()[0]
    assert "status" not in json.loads(body)
    assert store.get_promotion("agents") is None  # the promotion table is created on open for older files
    store.close()


def test_sqlite_utils_cli_reads_the_job_store(store: JobStore) -> None:
    job = make_job(store)
    store.add_checkpoint(job.id, 5, "/tmp/ck-5", {"train_loss": 0.5})
    cli = Path(sys.executable).with_name("sqlite-utils")
    shown = subprocess.run([cli, "tables", str(store.path), "--counts"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr[-2000:]
    counts = {t["table"]: t["count"] for t in json.loads(shown.stdout)}
    assert counts["jobs"] == 1 and counts["checkpoints"] == 1 and counts["files"] == 0
    rows = subprocess.run([cli, "rows", str(store.path), "checkpoints"], capture_output=True, text=True, timeout=60)
    assert json.loads(rows.stdout)[0]["step_number"] == 5


def test_tuning_a_tuned_model_names_the_original_base() -> None:
    """`ft:ft:...` names would grow with every round; OpenAI keeps the first base."""
    from ragtune.jobs import Job, fine_tuned_model_name

    first = Job.model_validate(
        {
            "id": "ftjob-a",
            "model": "e5-small",
            "created_at": 1,
            "status": "succeeded",
            "training_file": "f",
            "user_provided_suffix": "v1",
        }
    )
    one = fine_tuned_model_name(first)
    second = first.model_copy(update={"id": "ftjob-b", "model": one, "user_provided_suffix": "v2"})
    assert one == f"ft:e5-small:{first.organization_id}:v1:ftjob-a"
    assert fine_tuned_model_name(second) == f"ft:e5-small:{first.organization_id}:v2:ftjob-b"
