"""The job store: the state machine, atomic leases across processes' connections, and lease recovery."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from ragtune import db
from ragtune.jobs import (
    MIGRATIONS,
    FileObject,
    IllegalTransition,
    Job,
    JobStatus,
    JobStore,
    UnknownId,
    fine_tuned_model_name,
    new_id,
)


def ids(items: Iterable[Any]) -> list[str]:
    """Return the `id` of each listed object."""
    return [item.id for item in items]


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
def store(tmp_path: Path) -> JobStore:
    s = JobStore(tmp_path / "jobs.db")
    yield s
    s.close()


def test_legal_path_and_events(store: JobStore) -> None:
    job = make_job(store, JobStatus.validating_files)
    for to in (JobStatus.queued, JobStatus.paused, JobStatus.queued):
        job = store.transition(job.id, to, message=f"now {to.value}")
    leased = store.lease_next("w1", 30)
    assert leased is not None and leased.id == job.id and leased.status is JobStatus.running
    assert leased.attempts == 1 and leased.worker_id == "w1" and leased.started_at
    done = store.transition(job.id, JobStatus.succeeded, message="done", trained_tokens=123)
    assert done.status is JobStatus.succeeded and done.finished_at and done.trained_tokens == 123
    assert done.worker_id is None
    messages = [e.message for e in store.list_events(job.id, limit=50, order="asc")]
    assert messages[:3] == ["now queued", "now paused", "now queued"] and messages[-1] == "done"
    assert fine_tuned_model_name(done) == f"ft:smollm2-135m-instruct:org-ragtune:demo:{job.id}"


@pytest.mark.parametrize(
    ("start", "to"),
    [
        (JobStatus.succeeded, JobStatus.running),
        (JobStatus.cancelled, JobStatus.queued),
        (JobStatus.failed, JobStatus.cancelled),
        (JobStatus.queued, JobStatus.succeeded),
        (JobStatus.paused, JobStatus.running),
        (JobStatus.validating_files, JobStatus.running),
    ],
)
def test_illegal_transitions_are_refused_and_change_nothing(store: JobStore, start: JobStatus, to: JobStatus) -> None:
    job = make_job(store, start)
    with pytest.raises(IllegalTransition, match=f"is {start.value}; it cannot become {to.value}"):
        store.transition(job.id, to)
    assert store.get_job(job.id).status is start


def test_unknown_ids(store: JobStore) -> None:
    with pytest.raises(UnknownId, match="no fine-tuning job"):
        store.get_job("ftjob-nope")
    with pytest.raises(UnknownId, match="no file"):
        store.get_file("file-nope")
    with pytest.raises(UnknownId):
        store.list_events("ftjob-nope")


def test_lease_is_atomic_across_two_stores_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    a, b = JobStore(path), JobStore(path)
    jobs = {make_job(a, created_at=1000 + i).id for i in range(6)}
    got: dict[str, list[str]] = {"a": [], "b": []}

    def drain(name: str, s: JobStore) -> None:
        while (job := s.lease_next(name, 30)) is not None:
            got[name].append(job.id)

    threads = [threading.Thread(target=drain, args=(n, s)) for n, s in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(got["a"] + got["b"]) == sorted(jobs), "every job leased exactly once"
    assert not set(got["a"]) & set(got["b"])
    a.close()
    b.close()


def test_oldest_queued_job_is_leased_first(store: JobStore) -> None:
    old, new = make_job(store, created_at=100), make_job(store, created_at=200)
    assert store.lease_next("w", 30).id == old.id  # type: ignore[union-attr]
    assert store.lease_next("w", 30).id == new.id  # type: ignore[union-attr]
    assert store.lease_next("w", 30) is None


def test_a_named_job_is_leased_only_while_queued(store: JobStore) -> None:
    older = make_job(store, created_at=1)
    named = make_job(store, created_at=2)
    leased = store.lease_next("w1", 30, job_id=named.id)
    assert leased is not None and leased.id == named.id and leased.status is JobStatus.running
    assert store.lease_next("w2", 30, job_id=named.id) is None  # already running
    assert store.get_job(older.id).status is JobStatus.queued


def test_expired_lease_is_requeued_then_failed_after_max_attempts(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db", max_attempts=2)
    job = make_job(store)
    assert store.lease_next("dead-1", lease_seconds=0.01) is not None
    time.sleep(0.05)  # the lease must really expire; nothing to await
    assert store.recover_expired() == [job.id]
    assert store.get_job(job.id).status is JobStatus.queued
    again = store.lease_next("dead-2", lease_seconds=0.01)
    assert again is not None and again.attempts == 2
    time.sleep(0.05)
    assert store.lease_next("w3", 30) is None  # recovery ran inside lease_next and failed the job
    failed = store.get_job(job.id)
    assert failed.status is JobStatus.failed and failed.error and failed.error.code == "worker_lost"
    warn = [e for e in store.list_events(job.id, limit=20) if e.level == "warn"]
    assert warn and "re-queued to resume from the last checkpoint" in warn[0].message
    store.close()


def test_status_attempts_and_worker_are_stored_once_in_their_columns(store: JobStore) -> None:
    job = make_job(store)
    store.lease_next("w1", 30)
    store.update_job(job.id, output_dir="/tmp/out")
    row = store.conn.execute("select status, attempts, worker_id, body from jobs where id = ?", (job.id,)).fetchone()
    assert (row["status"], row["attempts"], row["worker_id"]) == ("running", 1, "w1")
    assert not {"status", "attempts", "worker_id"} & json.loads(row["body"]).keys()
    with pytest.raises(ValueError, match="use transition"):
        store.update_job(job.id, status=JobStatus.succeeded)
    assert store.get_job(job.id).status is JobStatus.running


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
    store.close()


def test_jobs_filter_by_every_given_metadata_pair(store: JobStore) -> None:
    tagged = []
    for i, meta in enumerate([{"team": "a", "run": "1"}, {"team": "a", "run": "2"}, {"team": "b"}, None]):
        job = make_job(store, created_at=1000 + i)
        store.update_job(job.id, metadata=meta)
        tagged.append(job.id)
    assert ids(store.list_jobs(metadata={"team": "a"})) == [tagged[1], tagged[0]]
    assert ids(store.list_jobs(metadata={"team": "a", "run": "1"})) == [tagged[0]]
    assert store.list_jobs(metadata={"team": "c"}) == [] and len(store.list_jobs(metadata={})) == 4
    assert ids(store.list_jobs(metadata={"team": "a"}, limit=1)) == [tagged[1]]


def test_heartbeat_reports_cancel_and_lost_lease(store: JobStore) -> None:
    job = make_job(store)
    store.lease_next("w1", 30)
    assert store.heartbeat(job.id, "w1", 30) is JobStatus.running
    assert store.heartbeat(job.id, "intruder", 30) is None
    store.transition(job.id, JobStatus.cancelled, message="cancelled by request")
    assert store.heartbeat(job.id, "w1", 30) is JobStatus.cancelled


def test_paging_events_jobs_and_checkpoints(store: JobStore) -> None:
    jobs = [make_job(store, created_at=1000 + i) for i in range(5)]
    first = store.list_jobs(limit=2)
    assert ids(first) == [jobs[4].id, jobs[3].id]
    assert ids(store.list_jobs(after=first[-1].id, limit=10)) == [j.id for j in reversed(jobs[:3])]
    job = jobs[0]
    for i in range(5):
        store.add_event(job.id, f"step {i}", type="metrics", data={"step": i, "train_loss": 1.0 / (i + 1)})
    newest = store.list_events(job.id, limit=2)
    assert [e.data["step"] for e in newest] == [4, 3]  # type: ignore[index]
    older = store.list_events(job.id, after=newest[-1].id, limit=10)
    assert [e.data["step"] for e in older] == [2, 1, 0]  # type: ignore[index]
    for step in (10, 20, 30):
        store.add_checkpoint(job.id, step, f"/out/checkpoint-{step}", {"train_loss": 1 / step})
    ck = store.list_checkpoints(job.id, limit=1)
    assert ck[0].step_number == 30
    assert [c.step_number for c in store.list_checkpoints(job.id, after=ck[0].id)] == [20, 10]


def test_files_round_trip_and_delete_removes_bytes(store: JobStore, tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text('{"text": "x"}\n')
    f = store.add_file(
        FileObject(
            id="file-1",
            bytes=14,
            created_at=1,
            filename="f.jsonl",
            purpose="fine-tune",
            path=str(path),
            format="text",
            report={"examples": 1},
        )
    )
    assert store.get_file("file-1").report == {"examples": 1} and "path" not in f.model_dump()
    assert ids(store.list_files("fine-tune")) == ["file-1"] and store.list_files("batch") == []
    store.delete_file("file-1")
    assert not path.exists()
    with pytest.raises(UnknownId):
        store.get_file("file-1")


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
