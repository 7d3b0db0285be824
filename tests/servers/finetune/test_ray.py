"""Ray Jobs dispatch against a real local Ray head (token auth on): the official openai SDK drives the service with
RAGTUNE_DISPATCH=ray; jobs succeed with metrics and an adapter, cancel stops the Ray job, a killed run resumes,
pause ends the run after a checkpoint and resume resubmits from it."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from openai import OpenAI
from pydantic import SecretStr

from ragtune.config import FinetuneSettings

from .conftest import CHAT

pytestmark = pytest.mark.slow
ray_submission = pytest.importorskip(
    "ray.job_submission", reason="the ray extra is not installed (make install has it)"
)
HYPER = {"batch_size": 4, "max_length": 64, "learning_rate": 1e-4, "lr_scheduler": "constant"}
LORA = {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayHead:
    """A real Ray head on loopback (`ray start --head --block`), stopped by process group at teardown."""

    def __init__(self) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths have a length limit
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{_port()}"
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0"}
        ray = Path(sys.executable).with_name("ray")
        self.proc = subprocess.Popen(
            [str(ray), "start", "--head", "--block", "--port", str(_port()), "--num-cpus", "2", "--num-gpus", "0"]
            + ["--include-dashboard", "true", "--dashboard-host", "127.0.0.1"]
            + ["--dashboard-port", self.url.rsplit(":", 1)[1], "--node-ip-address", "127.0.0.1"]
            + ["--temp-dir", str(self.temp), "--disable-usage-stats"]
            # ports Ray otherwise fixes (10001, 52365, ...): free ones, so a second cluster on the machine cannot clash
            + ["--ray-client-server-port", str(_port()), "--dashboard-agent-listen-port", str(_port())]
            + ["--metrics-export-port", str(_port()), "--runtime-env-agent-port", str(_port())],
            env=env,
            stdout=(self.temp / "head.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.client = self._wait_for_jobs_api(120)

    def _wait_for_jobs_api(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = ray_submission.JobSubmissionClient(self.url, headers={"Authorization": f"Bearer {self.token}"})
                client.list_jobs()
                return client
            except Exception as e:
                log = (self.temp / "head.log").read_text(errors="replace")[-2000:]
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the Ray head did not serve its Jobs API: {e}\n{log}") from e
                time.sleep(1)

    def stop(self) -> None:
        """SIGTERM the head's process group (it stops its raylet, GCS and dashboard), then SIGKILL what is left."""
        for sig, wait in ((signal.SIGTERM, 8), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    """One Ray head for this module's tests (starting one takes ~20 s on 2 cores)."""
    head = RayHead()
    yield head
    head.stop()


@pytest.fixture
def sdk(
    ray_head: RayHead, settings: FinetuneSettings, serve, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> OpenAI:
    """The official openai SDK against the fine-tuning service with RAGTUNE_DISPATCH=ray at the test head."""
    for key, value in {
        "RAGTUNE_MODELS_DIR": str(models_dir),
        "RAGTUNE_TRAIN_THREADS": "1",
        "RAGTUNE_HEARTBEAT_SECONDS": "0.5",
        "RAGTUNE_LEASE_SECONDS": "20",
    }.items():
        monkeypatch.setenv(key, value)  # the service forwards RAGTUNE_* to the Ray run's env
    cfg = settings.model_copy(
        update={
            "dispatch": "ray",
            "ray_address": ray_head.url,
            "ray_token": SecretStr(ray_head.token),
            "reaper_seconds": 0.5,
        }
    )
    return OpenAI(base_url=f"{serve(cfg)}/v1", api_key="unused", max_retries=0)


def _create(client: OpenAI, **hyper: Any) -> Any:
    file = client.files.create(file=("c.jsonl", io.BytesIO(CHAT.encode())), purpose="fine-tune")
    return client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=file.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {**HYPER, **hyper}}},  # type: ignore[typeddict-item]
        extra_body={"peft": LORA},
    )


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.5)
    return value


def _finished(client: OpenAI, job_id: str) -> Any:
    job = client.fine_tuning.jobs.retrieve(job_id)
    return job if job.status in ("succeeded", "failed", "cancelled") else None


def _stepped(client: OpenAI, job_id: str) -> bool:
    return any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job_id, limit=50))


def test_openai_sdk_job_succeeds_through_ray_with_metrics_and_an_adapter(sdk: OpenAI, ray_head: RayHead) -> None:
    job = _create(sdk, max_steps=3)
    done = _until(lambda: _finished(sdk, job.id), 400, "the Ray-dispatched job to finish")
    assert done.status == "succeeded", done.error
    losses = [e.data["train_loss"] for e in sdk.fine_tuning.jobs.list_events(job.id, limit=50) if e.type == "metrics"]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)
    adapter = Path(done.result_files[0]) / "adapter_model.safetensors"
    assert adapter.is_file() and adapter.stat().st_size > 0
    # submission id = job id; Ray marks it SUCCEEDED once the worker process has exited after finishing the job
    _until(lambda: str(ray_head.client.get_job_status(job.id)) == "SUCCEEDED", 30, "Ray to see the run exit")
    info = ray_head.client.get_job_info(job.id)
    assert info.metadata["ragtune_job"] == job.id and info.driver_exit_code == 0
    assert info.entrypoint.startswith(f"{sys.executable} -m ragtune.servers.worker --once --job {job.id}")
    assert job.id in [j.submission_id for j in ray_head.client.list_jobs()]


def test_cancel_stops_the_ray_job_within_seconds(sdk: OpenAI, ray_head: RayHead) -> None:
    job = _create(sdk, max_steps=500)
    _until(lambda: _stepped(sdk, job.id), 300, "the first training step under Ray")
    cancelled = sdk.fine_tuning.jobs.cancel(job.id)
    asked = time.monotonic()
    assert cancelled.status == "cancelled"
    _until(lambda: str(ray_head.client.get_job_status(job.id)) == "STOPPED", 15, "Ray to stop the job")
    assert time.monotonic() - asked < 15
    _until(lambda: not _worker_processes(job.id), 15, "the worker and its training child to exit")
    assert sdk.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def test_killing_the_ray_jobs_process_resumes_from_its_checkpoint(sdk: OpenAI, ray_head: RayHead) -> None:
    job = _create(sdk, max_steps=4, save_steps=1)
    _until(lambda: sdk.fine_tuning.jobs.checkpoints.list(job.id).data, 300, "the first checkpoint")
    workers = _until(lambda: _worker_processes(job.id), 10, "the Ray run's worker process")
    for proc in workers:
        proc.send_signal(signal.SIGKILL)  # the worker dies without a word; Ray sees its driver exit
    done = _until(lambda: _finished(sdk, job.id), 400, "the resumed job to finish")
    assert done.status == "succeeded", done.error
    messages = [e.message for e in sdk.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert any(f"Ray submission {job.id} is FAILED" in m and "re-queued" in m for m in messages), messages
    assert any(m.startswith("resuming from checkpoint-") for m in messages), messages
    _until(lambda: str(ray_head.client.get_job_status(f"{job.id}-2")) == "SUCCEEDED", 30, "the resubmission to exit")
    assert str(ray_head.client.get_job_status(job.id)) == "FAILED"  # the killed first run


def test_pause_ends_the_ray_run_after_a_checkpoint_and_resume_resubmits_from_it(sdk: OpenAI, ray_head: RayHead) -> None:
    job = _create(sdk, max_steps=4)
    _until(lambda: _stepped(sdk, job.id), 300, "the first training step under Ray")
    assert sdk.fine_tuning.jobs.pause(job.id).status == "paused"
    _until(lambda: str(ray_head.client.get_job_status(job.id)) == "SUCCEEDED", 120, "the paused run to exit")
    ckpt = sdk.fine_tuning.jobs.checkpoints.list(job.id).data[0]
    assert sdk.fine_tuning.jobs.retrieve(job.id).status == "paused" and ckpt.step_number < 4

    assert sdk.fine_tuning.jobs.resume(job.id).status == "queued"
    done = _until(lambda: _finished(sdk, job.id), 400, "the resumed job to finish")
    assert done.status == "succeeded", done.error
    messages = [e.message for e in sdk.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert f"resuming from checkpoint-{ckpt.step_number}" in messages
    assert any(f"as {job.id}-2" in m for m in messages)  # the resubmission's note


def test_ray_train_runs_one_job_on_two_workers_and_only_rank_0_writes(sdk: OpenAI, ray_head: RayHead) -> None:
    file = sdk.files.create(file=("c.jsonl", io.BytesIO(CHAT.encode())), purpose="fine-tune")
    job = sdk.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=file.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {**HYPER, "max_steps": 2}}},  # type: ignore[typeddict-item]
        extra_body={"peft": LORA, "x_ragtune": {"resources": {"num_workers": 2, "gpus": 0, "cpus": 2}}},
    )
    done = _until(lambda: _finished(sdk, job.id), 400, "the Ray Train job to finish")
    assert done.status == "succeeded", done.error
    assert str(ray_head.client.get_job_status(job.id)) in ("RUNNING", "SUCCEEDED")
    out = Path(done.result_files[0]).parent
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2
    assert [r["rank"] for r in result["ranks"]] == [0, 1] and all(r["steps_run"] == 2 for r in result["ranks"])
    events = list(sdk.fine_tuning.jobs.list_events(job.id, limit=100))
    assert [e.data["step"] for e in events if e.type == "metrics"] == [2, 1]  # one stream (newest first)
    parallel = [e for e in events if (e.data or {}).get("kind") == "parallel"]
    assert len(parallel) == 1 and parallel[0].data == {"kind": "parallel", "world_size": 2, "launcher": "Ray Train"}
    assert sum(e.message.startswith("loading base model") for e in events) == 1
    # the entrypoint only drives TorchTrainer (no CPU of its own on a 2-CPU head); the two workers hold one each
    assert any(e.message.endswith(f"as {job.id} (num_cpus=0)") for e in events), [e.message for e in events]
    assert (Path(done.result_files[0]) / "adapter_model.safetensors").is_file()
    # Ray Train kept the final report (rank 0's exit code) with its checkpoint, as Train V2 needs
    assert list((out / "ray-train").glob("*/checkpoint_*/rc.txt"))


def _worker_processes(job_id: str) -> list[psutil.Process]:
    """The Ray run's worker (`... --job ID`) and its training child (`... child ... --job ID`)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "--job" in cmd and job_id in cmd and any("ragtune.servers.worker" in c for c in cmd):
            found.append(proc)
    return found
