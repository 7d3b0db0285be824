"""Dispatch: local jobs wait for workers; Ray submissions carry the kit's interpreter, store and resources."""

from __future__ import annotations

import re
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from ragtune.servers.finetune.dispatch import DispatchError, LocalDispatcher, RayDispatcher, make_dispatcher
from ragtune.servers.finetune.ray_jobs import worker_env
from ragtune.servers.finetune.service import FinetuneService, ServiceError

from ragtune.config import FinetuneSettings
from ragtune.jobs import Job, JobStatus

from .conftest import CHAT


def _job() -> Job:
    return Job(
        id="ftjob-abc",
        created_at=1,
        model="smollm2-135m-instruct",
        status=JobStatus.queued,
        training_file="file-1",
    )


def test_local_is_the_default_and_never_trains(settings: FinetuneSettings) -> None:
    dispatcher = make_dispatcher(settings)
    assert isinstance(dispatcher, LocalDispatcher)
    assert "python -m ragtune.servers.worker" in dispatcher.submit(_job())


def test_ray_dispatch_without_ray_fails_the_job_with_the_fix(
    settings: FinetuneSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray.job_submission", None)  # as without the ray extra: the import fails
    with pytest.raises(DispatchError, match=r"pip install 'ragtune\[ray\]'"):
        RayDispatcher(None).submit(_job())
    svc = FinetuneService(settings.model_copy(update={"dispatch": "ray"}))
    file = svc.upload(CHAT.encode(), "c.jsonl")
    job = svc.create_job({"training_file": file.id})
    assert job.status is JobStatus.failed and job.error and job.error.code == "dispatch_failed"
    assert "RAGTUNE_DISPATCH=local" in job.error.message
    svc.close()


class RecordingRayClient:
    """Records the arguments the dispatcher gives Ray's JobSubmissionClient (the real one runs in test_ray.py)."""

    def __init__(self, address: str | None, headers: dict[str, str]) -> None:
        self.address, self.headers = address, headers
        self.calls: list[dict[str, Any]] = []

    def submit_job(self, **kwargs: Any) -> str:
        if any(c["submission_id"] == kwargs["submission_id"] for c in self.calls):
            raise RuntimeError(f"Job with submission_id {kwargs['submission_id']} already exists.")
        self.calls.append(kwargs)
        return kwargs["submission_id"]


def test_ray_submission_runs_the_kits_interpreter_with_its_store_and_the_jobs_resources(
    settings: FinetuneSettings,
) -> None:
    made: list[RecordingRayClient] = []

    def factory(address: str | None, headers: dict[str, str]) -> RecordingRayClient:
        made.append(RecordingRayClient(address, headers))
        return made[-1]

    cfg = settings.model_copy(update={"dispatch": "ray", "ray_address": "http://head:8265"})
    real = make_dispatcher(cfg)
    assert isinstance(real, RayDispatcher)
    dispatcher = RayDispatcher(cfg.ray_address, env=real.env, token="s3cret", client_factory=factory)
    job = _job().model_copy(update={"resources": {"gpus": 1.0, "cpus": 4.0, "memory_gb": 2.0}})
    note = dispatcher.submit(job)
    again = dispatcher.submit(job.model_copy(update={"attempts": 1}))

    assert made[0].address == "http://head:8265" and made[0].headers == {"Authorization": "Bearer s3cret"}
    first, second = made[0].calls
    assert first["submission_id"] == "ftjob-abc" and second["submission_id"] == "ftjob-abc-2"
    assert first["entrypoint"] == (
        f"{sys.executable} -m ragtune.servers.worker --once --job ftjob-abc --worker-id ray:ftjob-abc"
    )
    env = first["runtime_env"]["env_vars"]
    assert set(first["runtime_env"]) == {"env_vars"}  # no pip/conda/working_dir: nothing to download
    assert env["RAGTUNE_JOBS_DB"] == str(cfg.db_path().resolve())
    assert env["RAGTUNE_MODELS_DIR"] == str(cfg.models_path().resolve())
    assert "RAGTUNE_DISPATCH" not in env and not any("TOKEN" in k for k in env)
    assert (first["entrypoint_num_gpus"], first["entrypoint_num_cpus"]) == (1.0, 4.0)
    assert first["entrypoint_memory"] == 2 * 1024**3
    assert first["metadata"] == {"ragtune_job": "ftjob-abc", "ragtune_attempts": "0"}
    assert "ftjob-abc" in note and "gpus=1" in note and "ftjob-abc-2" in again


def test_worker_env_never_forwards_secrets() -> None:
    env = worker_env(
        FinetuneSettings(),
        {"RAGTUNE_API_TOKEN": "t", "RAGTUNE_EMBED_API_KEY": "k", "RAGTUNE_TRAIN_THREADS": "1", "PATH": "/bin"},
    )
    assert env["RAGTUNE_TRAIN_THREADS"] == "1"
    assert not {"RAGTUNE_API_TOKEN", "RAGTUNE_EMBED_API_KEY", "PATH"} & env.keys()


@pytest.mark.parametrize(
    ("resources", "fragment"),
    [
        ({"gpu": 1}, "takes {cpus, gpus, memory_gb, processes, num_workers}"),
        ({"gpus": -1}, "from 0 to 4096"),
        ({"cpus": "2"}, "number"),
    ],
)
def test_bad_resources_are_a_400_naming_the_field(
    service: FinetuneService, resources: dict[str, Any], fragment: str
) -> None:
    file = service.upload(CHAT.encode(), "c.jsonl")
    with pytest.raises(ServiceError, match=re.escape(fragment)) as info:
        service.create_job({"training_file": file.id, "x_ragtune": {"resources": resources}})
    assert info.value.status == 400 and info.value.param == "x_ragtune.resources"
    ok = service.create_job({"training_file": file.id, "x_ragtune": {"resources": {"gpus": 2, "memory_gb": 40}}})
    assert ok.resources == {"gpus": 2.0, "memory_gb": 40.0}


class FakeCluster(RecordingRayClient):
    """A Ray cluster whose job list the test writes: the cases a real cluster only shows after a crash or restart."""

    def __init__(self) -> None:
        super().__init__(None, {})
        self.details: list[SimpleNamespace] = []
        self.stopped: list[str] = []

    def run(self, sid: str, job_id: str, status: str, attempts: int = 0, code: int | None = None) -> None:
        meta = {"ragtune_job": job_id, "ragtune_attempts": str(attempts)}
        self.details.append(
            SimpleNamespace(
                submission_id=sid,
                metadata=meta,
                status=status,
                message=f"{status.lower()} in the test",
                start_time=len(self.details),
                driver_exit_code=code,
            )
        )

    def list_jobs(self) -> list[SimpleNamespace]:
        return self.details

    def get_job_logs(self, sid: str) -> str:
        return f"Traceback ...\nRuntimeError: boom in {sid}\n"

    def stop_job(self, sid: str) -> bool:
        self.stopped.append(sid)
        return True


@pytest.fixture
def cluster(service: FinetuneService) -> FakeCluster:
    fake = FakeCluster()
    service.dispatcher = RayDispatcher("http://head:8265", client_factory=lambda *_: fake)
    return fake


def _running_on_ray(service: FinetuneService, cluster: FakeCluster) -> str:
    file = service.upload(CHAT.encode(), "c.jsonl")
    job_id = service.create_job({"training_file": file.id}).id
    assert cluster.calls[-1]["submission_id"] == job_id
    assert service.store.lease_next(f"ray:{job_id}", 60, job_id=job_id) is not None
    return job_id


def test_a_run_that_exited_0_with_its_job_unfinished_fails_it_with_the_log_tail(
    service: FinetuneService, cluster: FakeCluster
) -> None:
    job_id = _running_on_ray(service, cluster)
    cluster.run(job_id, job_id, "SUCCEEDED", code=0)
    assert service.reconcile() == [job_id]
    job = service.get_job(job_id)
    assert job.status is JobStatus.failed and job.error and job.error.code == "ray_job_exited"
    assert f"RuntimeError: boom in {job_id}" in job.error.message


def test_a_vanished_run_is_resubmitted_and_a_failed_one_too_until_attempts_run_out(
    service: FinetuneService, cluster: FakeCluster
) -> None:
    job_id = _running_on_ray(service, cluster)  # the cluster restarted: its job list is empty
    assert service.reconcile() == [job_id]
    assert service.get_job(job_id).status is JobStatus.queued
    assert cluster.calls[-1]["submission_id"] == f"{job_id}-2"
    assert any("vanished" in e.message for e in service.events(job_id, limit=5).data)
    for attempt in (2, 3):
        sid = cluster.calls[-1]["submission_id"]
        assert service.store.lease_next(f"ray:{sid}", 60, job_id=job_id) is not None
        cluster.run(sid, job_id, "FAILED", attempts=attempt - 1, code=-9)
        service.reconcile()
    job = service.get_job(job_id)
    assert job.status is JobStatus.failed and job.error and job.error.code == "worker_lost"
    assert "FAILED, exit code -9" in job.error.message and "gave up after 3 attempts" in job.error.message


def test_ray_job_stop_cancels_and_a_run_that_never_started_fails(
    service: FinetuneService, cluster: FakeCluster
) -> None:
    job_id = _running_on_ray(service, cluster)
    cluster.run(job_id, job_id, "STOPPED")
    service.reconcile()
    assert service.get_job(job_id).status is JobStatus.cancelled

    file = service.upload(CHAT.encode(), "d.jsonl")
    other = service.create_job({"training_file": file.id}).id
    cluster.run(other, other, "FAILED", code=1)  # e.g. the node's Python lacks ragtune: it never leased the job
    service.reconcile()
    job = service.get_job(other)
    assert job.status is JobStatus.failed and job.error and job.error.code == "ray_submission_failed"


def test_cancel_stops_the_live_run(service: FinetuneService, cluster: FakeCluster) -> None:
    job_id = _running_on_ray(service, cluster)
    cluster.run(job_id, job_id, "RUNNING")
    service.cancel_job(job_id)
    assert cluster.stopped == [job_id]
    assert any(f"stopped ray run(s): {job_id}" in e.message for e in service.events(job_id, limit=3).data)
