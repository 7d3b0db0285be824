"""The worker against a real job store: it leases, trains SmolLM2 in a child process and finishes jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.jobs import JobStatus, JobStore

pytestmark = pytest.mark.slow


def test_supervised_job_succeeds_with_adapter_plot_metrics_and_checkpoints(
        store: JobStore, make_job, fact_records, worker_thread) -> None:
    job = make_job(fact_records, max_steps=3, learning_rate=1e-3, save_steps=2)
    worker_thread(once=True).join(240)

    done = store.get_job(job.id)
    assert done.status is JobStatus.succeeded, done.error
    assert done.fine_tuned_model == f"ft:smollm2-135m-instruct:ragtune:{job.id}"
    assert done.trained_tokens and done.trained_tokens > 0
    out = Path(done.output_dir)
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out / "adapter") in done.result_files
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["train_loss"] > 0 and r["tokens_per_second"] > 0 for r in rows)
    metrics = store.list_events(job.id, type="metrics", order="asc")
    assert [e.data["step"] for e in metrics] == [1, 2, 3]
    assert {"train_loss", "learning_rate", "tokens_per_second", "epoch", "total_steps"} <= set(metrics[0].data)
    assert [c.step_number for c in store.list_checkpoints(job.id)] == [3, 2]
    assert json.loads((out / "config.json").read_text())["learning_rate"] == 1e-3


def test_unknown_base_model_fails_with_a_clear_error(store: JobStore, make_job, fact_records, worker_thread) -> None:
    job = make_job(fact_records, model="no-such/model-xyz", max_steps=1)
    worker_thread(once=True).join(30)

    failed = store.get_job(job.id)
    assert failed.status is JobStatus.failed
    assert failed.error.code == "model_not_found"
    assert "unknown base model 'no-such/model-xyz'" in failed.error.message
