"""Promotion: one global tuned model, kept in the job store, seen by every process that opens it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ragtune import promotion
from ragtune.config import AgentSettings
from ragtune.jobs import Job, JobStatus, JobStore, fine_tuned_model_name, new_id

TOKEN = "promotion-test-token"


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


def test_diverged_loss_is_refused_unless_the_warning_is_accepted(store: JobStore) -> None:
    job = succeeded_job(store)
    for step, loss in enumerate([1.9, 2.0, 2.1, 3.9, 4.5, 4.8], start=1):
        store.add_event(job.id, f"step {step}", type="metrics", data={"step": step, "train_loss": loss})
    with pytest.raises(promotion.PromotionRefused, match=r"rose from 1.90 to 4.80"):
        promotion.promote(store, job.fine_tuned_model or "")
    assert promotion.promoted(store) is None
    accepted = promotion.promote(store, job.fine_tuned_model or "", accept_warnings=True)
    assert accepted.accepted_warnings and "diverged" in accepted.accepted_warnings[0]


@pytest.fixture
def finetune_server(isolated_env: Path) -> Iterator[tuple[str, Path]]:
    """Run the fine-tuning service in its own process with a token; yield its MCP URL and its job store path."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAGTUNE_API_TOKEN": TOKEN}
    cmd = [sys.executable, "-m", "ragtune.servers.finetune", "serve", "--transport", "http", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"fine-tuning service did not start: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)
    yield url + "/mcp", isolated_env / "jobs.db"
    proc.terminate()
    proc.wait(timeout=20)


def test_agents_see_a_promotion_made_over_rest(finetune_server: tuple[str, Path]) -> None:
    mcp_url, db_path = finetune_server
    store = JobStore(db_path)
    job = succeeded_job(store)
    model = job.fine_tuned_model or ""
    agent = AgentSettings(finetune_url=mcp_url, api_token=TOKEN)
    base = promotion.service_url(agent)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert promotion.current_model(agent) is None
    assert httpx.post(f"{base}/v1/models/{model}/promotion", timeout=10).status_code == 401
    missing = httpx.post(f"{base}/v1/models/ft:x:org:y:ftjob-none/promotion", headers=auth, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    promoted = httpx.post(f"{base}/v1/models/{model}/promotion", headers=auth, timeout=10)
    assert promoted.status_code == 200 and promoted.json()["scope"] == "global"
    assert promotion.current_model(agent) == model
    chat = promotion.served_chat_model(agent, model)
    assert chat.model_name == model and str(chat.openai_api_base) == base + "/v1"
    gone = httpx.delete(f"{base}/v1/models/{model}/promotion", headers=auth, timeout=10)
    assert gone.json()["deleted"] is True and promotion.current_model(agent) is None
    store.close()


def test_current_model_is_none_when_the_service_is_down() -> None:
    assert promotion.current_model(AgentSettings(finetune_url="http://127.0.0.1:9/mcp"), timeout=1) is None
