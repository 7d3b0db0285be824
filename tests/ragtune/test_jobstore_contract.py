"""The job store contract: every behaviour runs against both backends, a SQLite file and a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ragtune.config import FinetuneSettings
from ragtune.job_stores import open_job_store, open_job_store_at
from ragtune.jobs import (
    BaseJobStore,
    FileObject,
    IllegalTransition,
    Job,
    JobStatus,
    JobStore,
    UnknownId,
    fine_tuned_model_name,
    new_id,
)
from ragtune.jobs_pg import PostgresJobStore

BACKENDS = ["sqlite", "postgres"]


def ids(items: Iterable[Any]) -> list[str]:
    """Return the `id` of each listed object."""
    return [item.id for item in items]


def make_job(store: BaseJobStore, status: JobStatus = JobStatus.queued, created_at: int | None = None) -> Job:
    job = Job(
        id=new_id("ftjob"),
        created_at=created_at or int(time.time()),
        model="smollm2-135m-instruct",
        status=status,
        training_file="file-x",
        user_provided_suffix="demo",
    )
    return store.create_job(job)


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: a SQLite file, or a fresh database on the session's PostgreSQL server."""
    return str(tmp_path / "jobs.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture
def store(location: str) -> Iterator[BaseJobStore]:
    s = open_job_store_at(location)
    yield s
    s.close()


def test_the_location_picks_the_backend(location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = JobStore if location.endswith(".db") else PostgresJobStore
    assert isinstance(open_job_store_at(location), expected)
    if expected is PostgresJobStore:
        monkeypatch.setenv("RAGTUNE_DATABASE_URL", location)
    else:
        monkeypatch.setenv("RAGTUNE_JOBS_DB", location)
    opened = open_job_store(FinetuneSettings())
    assert isinstance(opened, expected) and "secret" not in opened.location
    opened.close()


def test_legal_path_and_events(store: BaseJobStore) -> None:
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
def test_illegal_transitions_are_refused_and_change_nothing(
    store: BaseJobStore, start: JobStatus, to: JobStatus
) -> None:
    job = make_job(store, start)
    with pytest.raises(IllegalTransition, match=f"is {start.value}; it cannot become {to.value}"):
        store.transition(job.id, to)
    assert store.get_job(job.id).status is start
    assert store.list_events(job.id) == []  # the refused transition wrote nothing


def test_unknown_ids(store: BaseJobStore) -> None:
    with pytest.raises(UnknownId, match="no fine-tuning job"):
        store.get_job("ftjob-nope")
    with pytest.raises(UnknownId, match="no file"):
        store.get_file("file-nope")
    with pytest.raises(UnknownId):
        store.list_events("ftjob-nope")
    with pytest.raises(UnknownId):
        store.transition("ftjob-nope", JobStatus.cancelled)
    with pytest.raises(UnknownId, match="to page after"):
        store.list_jobs(after="ftjob-nope")


def test_lease_is_atomic_across_two_stores_on_one_database(location: str) -> None:
    a, b = open_job_store_at(location), open_job_store_at(location)
    jobs = {make_job(a, created_at=1000 + i).id for i in range(12)}
    got: dict[str, list[str]] = {"a": [], "b": []}

    def drain(name: str, s: BaseJobStore) -> None:
        while (job := s.lease_next(name, 30)) is not None:
            got[name].append(job.id)

    threads = [threading.Thread(target=drain, args=(n, s)) for n, s in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(got["a"] + got["b"]) == sorted(jobs), "every job leased exactly once"
    assert not set(got["a"]) & set(got["b"])
    assert {a.get_job(j).attempts for j in jobs} == {1}
    a.close()
    b.close()


def test_oldest_queued_job_is_leased_first_and_ties_go_by_insertion(store: BaseJobStore) -> None:
    old, new = make_job(store, created_at=100), make_job(store, created_at=200)
    tie_1, tie_2 = make_job(store, created_at=300), make_job(store, created_at=300)
    assert [store.lease_next("w", 30).id for _ in range(4)] == [old.id, new.id, tie_1.id, tie_2.id]  # type: ignore[union-attr]
    assert store.lease_next("w", 30) is None
    assert ids(store.list_jobs(limit=10)) == [tie_2.id, tie_1.id, new.id, old.id]


def test_a_named_job_is_leased_only_while_queued(store: BaseJobStore) -> None:
    older = make_job(store, created_at=1)
    named = make_job(store, created_at=2)
    leased = store.lease_next("w1", 30, job_id=named.id)
    assert leased is not None and leased.id == named.id and leased.status is JobStatus.running
    assert store.lease_next("w2", 30, job_id=named.id) is None  # already running
    assert store.get_job(older.id).status is JobStatus.queued


def test_expired_lease_is_requeued_then_failed_after_max_attempts(location: str) -> None:
    store = open_job_store_at(location, max_attempts=2)
    job = make_job(store)
    assert store.lease_next("dead-1", lease_seconds=0.01) is not None
    time.sleep(0.05)  # the lease must really expire; nothing to await
    assert store.recover_expired() == [job.id]
    assert store.get_job(job.id).status is JobStatus.queued and store.get_job(job.id).worker_id is None
    again = store.lease_next("dead-2", lease_seconds=0.01)
    assert again is not None and again.attempts == 2
    time.sleep(0.05)
    assert store.lease_next("w3", 30) is None  # recovery ran inside lease_next and failed the job
    failed = store.get_job(job.id)
    assert failed.status is JobStatus.failed and failed.error and failed.error.code == "worker_lost"
    assert failed.finished_at
    warn = [e for e in store.list_events(job.id, limit=20) if e.level == "warn"]
    assert warn and "re-queued to resume from the last checkpoint" in warn[0].message
    assert store.recover_expired() == []
    store.close()


def test_a_live_lease_is_not_recovered(store: BaseJobStore) -> None:
    job = make_job(store)
    store.lease_next("w1", 30)
    assert store.recover_expired() == [] and store.get_job(job.id).status is JobStatus.running


def test_state_fields_change_only_through_transitions(store: BaseJobStore) -> None:
    job = make_job(store)
    store.lease_next("w1", 30)
    updated = store.update_job(job.id, output_dir="/tmp/out", result_files=["a"])
    assert updated.output_dir == "/tmp/out" and updated.result_files == ["a"]
    assert (updated.status, updated.attempts, updated.worker_id) == (JobStatus.running, 1, "w1")
    with pytest.raises(ValueError, match="use transition"):
        store.update_job(job.id, status=JobStatus.succeeded)
    assert store.get_job(job.id).status is JobStatus.running


def test_jobs_filter_by_status_and_every_given_metadata_pair(store: BaseJobStore) -> None:
    tagged = []
    for i, meta in enumerate([{"team": "a", "run": "1"}, {"team": "a", "run": "2"}, {"team": "b"}, None]):
        job = make_job(store, created_at=1000 + i)
        store.update_job(job.id, metadata=meta)
        tagged.append(job.id)
    assert ids(store.list_jobs(metadata={"team": "a"})) == [tagged[1], tagged[0]]
    assert ids(store.list_jobs(metadata={"team": "a", "run": "1"})) == [tagged[0]]
    assert store.list_jobs(metadata={"team": "c"}) == [] and len(store.list_jobs(metadata={})) == 4
    assert ids(store.list_jobs(metadata={"team": "a"}, limit=1)) == [tagged[1]]
    store.transition(tagged[2], JobStatus.cancelled)
    assert ids(store.list_jobs(status="cancelled")) == [tagged[2]]


def test_heartbeat_reports_cancel_and_lost_lease(store: BaseJobStore) -> None:
    job = make_job(store)
    store.lease_next("w1", 0.5)
    assert store.heartbeat(job.id, "w1", 30) is JobStatus.running
    time.sleep(0.6)
    assert store.recover_expired() == []  # the heartbeat renewed the lease past its first 0.5 s
    assert store.heartbeat(job.id, "intruder", 30) is None
    store.transition(job.id, JobStatus.cancelled, message="cancelled by request")
    assert store.heartbeat(job.id, "w1", 30) is JobStatus.cancelled
    with pytest.raises(UnknownId):
        store.heartbeat("ftjob-nope", "w1", 30)


def test_paging_events_jobs_and_checkpoints(store: BaseJobStore) -> None:
    jobs = [make_job(store, created_at=1000 + i) for i in range(5)]
    first = store.list_jobs(limit=2)
    assert ids(first) == [jobs[4].id, jobs[3].id]
    assert ids(store.list_jobs(after=first[-1].id, limit=10)) == [j.id for j in reversed(jobs[:3])]
    job = jobs[0]
    for i in range(5):
        store.add_event(job.id, f"step {i}", type="metrics", data={"step": i, "train_loss": 1.0 / (i + 1)})
    store.add_event(job.id, "a note", level="warn")
    newest = store.list_events(job.id, limit=2, type="metrics")
    assert [e.data["step"] for e in newest] == [4, 3]  # type: ignore[index]
    older = store.list_events(job.id, after=newest[-1].id, limit=10, type="metrics")
    assert [e.data["step"] for e in older] == [2, 1, 0]  # type: ignore[index]
    tail = store.list_events(job.id, after=older[0].id, order="asc")
    assert [e.message for e in tail] == ["step 3", "step 4", "a note"] and tail[-1].level == "warn"
    with pytest.raises(UnknownId, match="no event"):
        store.list_events(job.id, after="ftevent-nope")
    for step in (10, 20, 30):
        store.add_checkpoint(job.id, step, f"/out/checkpoint-{step}", {"train_loss": 1 / step})
    ck = store.list_checkpoints(job.id, limit=1)
    assert ck[0].step_number == 30 and ck[0].metrics == {"train_loss": 1 / 30}
    assert ck[0].fine_tuned_model_checkpoint == "/out/checkpoint-30" and ck[0].fine_tuning_job_id == job.id
    assert [c.step_number for c in store.list_checkpoints(job.id, after=ck[0].id)] == [20, 10]
    with pytest.raises(UnknownId, match="no checkpoint"):
        store.list_checkpoints(jobs[1].id, after=ck[0].id)


def test_files_round_trip_and_delete_removes_bytes(store: BaseJobStore, tmp_path: Path) -> None:
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
    store.add_file(f.model_copy(update={"id": "file-2", "purpose": "batch", "path": str(tmp_path / "g")}))
    got = store.get_file("file-1")
    assert got.report == {"examples": 1} and got.format == "text" and got.path == str(path)
    assert "path" not in f.model_dump()
    assert ids(store.list_files("fine-tune")) == ["file-1"] and ids(store.list_files()) == ["file-2", "file-1"]
    store.delete_file("file-1")
    assert not path.exists()
    with pytest.raises(UnknownId):
        store.get_file("file-1")


def test_promotion_row_round_trips(store: BaseJobStore) -> None:
    assert store.get_promotion("agents") is None
    store.set_promotion("agents", "ft:m:org::a", "ftjob-a", 10, "")
    store.set_promotion("agents", "ft:m:org::b", "ftjob-b", 20, "w1\nw2")
    assert store.get_promotion("agents") == {
        "slot": "agents",
        "model": "ft:m:org::b",
        "job_id": "ftjob-b",
        "promoted_at": 20,
        "accepted_warnings": "w1\nw2",
    }
    store.clear_promotion("agents")
    assert store.get_promotion("agents") is None


def test_postgres_store_reconnects_after_the_server_drops_it(pg_url: str) -> None:
    import psycopg

    store = PostgresJobStore(pg_url)
    job = make_job(store)
    pid = store.conn.info.backend_pid
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("select pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):
        store.get_job(job.id)  # the statement in flight fails; the store notices the broken connection
    assert store.get_job(job.id).id == job.id  # the next call reconnects
    store.close()


def test_postgres_schema_is_migrated_once_by_concurrent_openers(pg_url: str) -> None:
    stores: list[BaseJobStore] = []
    threads = [threading.Thread(target=lambda: stores.append(PostgresJobStore(pg_url))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(stores) == 3
    make_job(stores[0])
    assert len(stores[2].list_jobs()) == 1
    for s in stores:
        s.close()
