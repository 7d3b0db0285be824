"""Dispatch: local jobs wait for workers; Ray dispatch without Ray fails the job with the fix."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from ragtune.servers.finetune.dispatch import DispatchError, LocalDispatcher, RayDispatcher, make_dispatcher
from ragtune.servers.finetune.service import FinetuneService

from ragtune.config import FinetuneSettings
from ragtune.jobs import Job, JobStatus

from .conftest import CHAT

RAY_MISSING = importlib.util.find_spec("ray") is None


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


@pytest.mark.skipif(not RAY_MISSING, reason="checks the message shown when the ray extra is absent")
def test_ray_dispatch_without_ray_fails_the_job_with_the_fix(settings: FinetuneSettings) -> None:
    with pytest.raises(DispatchError, match=r"pip install 'ragtune\[ray\]'"):
        RayDispatcher(None).submit(_job())
    svc = FinetuneService(settings.model_copy(update={"dispatch": "ray"}))
    file = svc.upload(CHAT.encode(), "c.jsonl")
    job = svc.create_job({"training_file": file.id})
    assert job.status is JobStatus.failed and job.error and job.error.code == "dispatch_failed"
    assert "RAGTUNE_DISPATCH=local" in job.error.message
    svc.close()


class RecordingRayClient:
    """Stands in for ray.job_submission.JobSubmissionClient, which is not installed here (optional extra)."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.calls: list[dict[str, Any]] = []

    def submit_job(self, **kwargs: Any) -> str:
        self.calls.append(kwargs)
        return kwargs["submission_id"]


def test_ray_submission_call_shape() -> None:
    made: list[RecordingRayClient] = []

    def factory(address: str | None) -> RecordingRayClient:
        made.append(RecordingRayClient(address))
        return made[-1]

    dispatcher = RayDispatcher("http://head:8265", env={"RAGTUNE_HOME": "/data"}, client_factory=factory)
    note = dispatcher.submit(_job())
    assert made[0].address == "http://head:8265"
    call = made[0].calls[0]
    assert call["entrypoint"] == "python -m ragtune.servers.worker --once --job ftjob-abc"
    assert call["submission_id"] == "ragtune-ftjob-abc-1"
    assert call["runtime_env"] == {"env_vars": {"RAGTUNE_HOME": "/data"}}
    assert "ragtune-ftjob-abc-1" in note
