"""Data parallel inside one job, for real: the worker launches two torchrun ranks (DDP over gloo on CPU) that train
the embedded SmolLM2 together; rank 0 alone writes events, checkpoints and the result, and a pause reaches both."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest

from ragtune.jobs import JobStatus, JobStore

pytestmark = pytest.mark.slow


def _two_ranks(store: JobStore, make_job, fact_records, **hyper):
    job = make_job(fact_records * 2, **hyper)  # 10 records: one held out, batch 4 = 2 per rank
    return store.update_job(job.id, resources={"processes": 2.0, "cpus": 2.0})


def test_two_cpu_processes_train_one_job_and_only_rank_0_writes(
    store: JobStore, make_job, fact_records, worker_thread
) -> None:
    job = _two_ranks(store, make_job, fact_records, max_steps=3, save_steps=2)
    worker_thread(job_id=job.id).join(400)

    done = store.get_job(job.id)
    assert done.status is JobStatus.succeeded, done.error
    out = Path(done.output_dir or "")
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2
    ranks = result["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["steps_run"] == 3 for r in ranks), ranks
    assert ranks[0]["pid"] != ranks[1]["pid"]
    assert result["steps"] == 3
    # batch 4 over 2 ranks: each optimizer step sees 4 examples in all, so 3 steps cover 12 examples' tokens
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["batch_size"] == 4

    events = store.list_events(job.id, limit=200, order="asc")
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == [1, 2, 3]  # one metrics stream, not one per rank
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    parallel = [e for e in events if (e.data or {}).get("kind") == "parallel"]
    assert len(parallel) == 1 and parallel[0].data["world_size"] == 2 and parallel[0].data["launcher"] == "torchrun"
    # each message once: a rank other than 0 writes nothing
    started = [e.message for e in events if e.message.startswith("loading base model")]
    assert len(started) == 1
    ckpts = sorted(c.step_number for c in store.list_checkpoints(job.id))
    assert ckpts == [2, 3]  # save_steps 2 and the last step, each recorded once
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not list(out.glob("*.tmp"))


def _ranks(job_id: str) -> list[psutil.Process]:
    """The job's training ranks (`... ragtune.servers.worker.child ... --job ID`)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if job_id in cmd and "ragtune.servers.worker.child" in cmd:
            found.append(proc)
    return found


def test_pause_stops_both_ranks_at_one_checkpoint_and_cancel_stops_them(
    store: JobStore, make_job, fact_records, worker_thread, wait_for
) -> None:
    job = _two_ranks(store, make_job, fact_records, max_steps=200)
    w = worker_thread(job_id=job.id)
    wait_for(lambda: store.list_events(job.id, type="metrics", limit=1), 240, "the first data-parallel step")
    assert len(wait_for(lambda: len(_ranks(job.id)) == 2 and _ranks(job.id), 10, "two ranks")) == 2
    store.transition(job.id, JobStatus.paused, message="paused by the test")
    w.join(120)  # both ranks agreed on the step, saved once and exited: the launcher returned rank 0's code 3
    paused = store.get_job(job.id)
    assert paused.status is JobStatus.paused
    ckpts = store.list_checkpoints(job.id)
    assert len(ckpts) == 1 and 1 <= ckpts[0].step_number < 200
    assert Path(ckpts[0].fine_tuned_model_checkpoint).is_dir()
    assert not _ranks(job.id)

    store.transition(job.id, JobStatus.queued, message="resumed by the test")
    w = worker_thread(job_id=job.id)
    wait_for(lambda: len(_ranks(job.id)) == 2, 60, "two ranks again")
    wait_for(
        lambda: any(e.message.startswith("resuming from checkpoint-") for e in store.list_events(job.id, limit=20)),
        240,
        "the resumed ranks to load the checkpoint",
    )
    store.transition(job.id, JobStatus.cancelled, message="cancelled by the test")
    asked = time.monotonic()
    w.join(30)
    wait_for(lambda: not _ranks(job.id), 15, "both ranks to exit after the cancel")
    assert time.monotonic() - asked < 30
    assert store.get_job(job.id).status is JobStatus.cancelled


def test_a_job_every_rank_refuses_fails_with_rank_0s_reason(store: JobStore, make_job, worker_thread) -> None:
    silent = [
        {"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": "Hey.", "weight": 0}]}
        for i in range(12)
    ]
    job = _two_ranks(store, make_job, silent, max_steps=2)
    worker_thread(job_id=job.id).join(240)
    failed = store.get_job(job.id)
    assert failed.status is JobStatus.failed and failed.error is not None
    assert failed.error.code == "invalid_training_job"  # error.json from rank 0, exit code 2 through torchrun
    assert "every assistant turn has weight 0, so nothing would be trained" in failed.error.message
