"""A user's whole path: upload and create through the official openai SDK (and through MCP) over real HTTP,
a real worker trains the embedded SmolLM2, and the adapter it saves changes the model's answer."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from openai import OpenAI

pytestmark = pytest.mark.slow
HELD_OUT = "What codename is Project Orion-7 known by?"
LORA = {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def greedy_answer(model: Any, tok: Any, question: str) -> str:
    ids = tok.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    return tok.decode(out[0][ids["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft -> transformers
def test_openai_sdk_job_trains_and_the_adapter_teaches_the_fact(
    finetune_url: str, fact_records: list[dict[str, Any]], worker_thread: Callable[..., Any], models_dir: Path
) -> None:
    client = OpenAI(base_url=f"{finetune_url}/v1", api_key="unused", max_retries=0)
    file = client.files.create(file=("fact.jsonl", io.BytesIO(jsonl(fact_records))), purpose="fine-tune")
    # 12 steps at lr 1e-3 on 5 examples: a seeded run whose loss falls 2.2 -> 0.06 and teaches the fact.
    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=file.id,
        seed=0,
        suffix="orion",
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {  # type: ignore[typeddict-unknown-key]
                    "batch_size": 4,
                    "learning_rate": 1e-3,
                    "max_steps": 12,
                    "max_length": 128,
                    "lr_scheduler": "constant",
                    "save_steps": 6,
                }
            },
        },
        extra_body={"peft": LORA},
    )
    assert job.status == "queued"
    worker = worker_thread(max_jobs=1)

    deadline = time.monotonic() + 420
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, f"job still {job.status}"
        time.sleep(1)
    worker.join(30)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:smollm2-135m-instruct:org-ragtune:orion:{job.id}"
    assert job.trained_tokens and job.trained_tokens > 0

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    metrics = [e.data for e in reversed(events) if e.type == "metrics"]
    assert [m["step"] for m in metrics] == list(range(1, 13))
    assert {"train_loss", "learning_rate", "tokens_per_second", "epoch", "total_steps"} <= set(metrics[0])
    assert all(m["tokens_per_second"] > 0 and m["total_steps"] == 12 for m in metrics)
    losses = [m["train_loss"] for m in metrics]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 / 4, losses
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert [c.step_number for c in checkpoints.data] == [12, 6]

    out = Path(job.result_files[0]).parent
    assert job.result_files[0] == str(out / "adapter")
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 12
    assert json.loads((out / "config.json").read_text())["learning_rate"] == 1e-3

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = models_dir / "smollm2-135m-instruct-fp32"
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(Path(job.result_files[0])))
    with model.disable_adapter():
        before = greedy_answer(model, tok, HELD_OUT)
    after = greedy_answer(model, tok, HELD_OUT)
    assert "Velvet Lantern" not in before
    assert "Velvet Lantern" in after, after


async def test_mcp_created_job_is_trained_by_the_worker(
    finetune_url: str, fact_records: list[dict[str, Any]], worker_thread: Callable[..., Any]
) -> None:
    import anyio

    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=60)) as http:
        async with Client(streamable_http_client(f"{finetune_url}/mcp", http_client=http)) as c:
            up = await c.call_tool("finetune_upload_dataset", {"content": jsonl(fact_records).decode()})
            held = await c.call_tool("finetune_upload_dataset", {"content": jsonl(fact_records[:2]).decode()})
            created = await c.call_tool(
                "finetune_create_job",
                {
                    "training_file": up.structured_content["id"],
                    "peft": LORA,
                    "seed": 0,
                    "validation_file": held.structured_content["id"],
                    "hyperparameters": {"max_steps": 2, "batch_size": 2, "max_length": 128, "merge": True},
                },
            )
            job_id = created.structured_content["id"]
            worker_thread(max_jobs=1)
            with anyio.fail_after(300):
                while True:
                    view = (await c.call_tool("finetune_get_job", {"job_id": job_id})).structured_content
                    if view["job"]["status"] in ("succeeded", "failed", "cancelled"):
                        break
                    await anyio.sleep(1)
            events = (await c.call_tool("finetune_job_events", {"job_id": job_id, "limit": 100})).structured_content
    assert view["job"]["status"] == "succeeded", view["job"]["error"]
    assert view["latest_metrics"]["step"] == 2
    metrics = [e for e in events["events"] if e["type"] == "metrics"]
    assert [e["data"]["step"] for e in metrics] == [2, 1]
    assert any(e["message"].startswith("job succeeded") for e in events["events"])
    valid = next(e for e in events["events"] if e["message"].startswith("validation loss"))
    assert 0 < valid["data"]["valid_loss"] < 10
    merged = Path(view["job"]["output_dir"]) / "merged"
    assert (merged / "model.safetensors").exists() and str(merged) in view["job"]["result_files"]
