#!/usr/bin/env python
"""Drive ragtune's fine-tuning REST API with the official openai SDK: upload, create, follow events, checkpoints.

    python -m ragtune.servers.finetune serve --transport http      # http://127.0.0.1:8702/v1
    python -m ragtune.servers.worker                               # trains queued jobs
    python clients/finetune_openai.py --max-steps 5        # a small LoRA job on the embedded model

Without --file it uploads a small built-in chat dataset. `--until queued` stops once the job is queued
(no worker needed). Exits non-zero when a step does not give what it should: a malformed file must be
refused with its line number, the job must reach the requested state, a succeeded job must name its model.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import time
from pathlib import Path

from openai import AsyncOpenAI, BadRequestError

TERMINAL = {"succeeded", "failed", "cancelled"}
EXAMPLES = [
    ("What is ragtune?", "An open-source kit: retrieval and fine-tuning as MCP tools, plus agents over A2A."),
    ("Which port does the retrieval server use?", "Port 8701, serving MCP at /mcp."),
    (
        "Which port does the fine-tuning server use?",
        "Port 8702: MCP at /mcp and the OpenAI-compatible REST API at /v1.",
    ),
    (
        "What is LoRA?",
        "LoRA freezes the model and trains small low-rank matrices: 0.1 to 1 percent of the weights.",
    ),
    ("How much memory do 7B weights take in bf16?", "About 14 GB: two bytes per parameter."),
    (
        "When should I use RAG instead of fine-tuning?",
        "When the facts change often or you have under 50 examples.",
    ),
    (
        "What does continued pretraining risk?",
        "It can hurt instruction following; instruction-tune afterwards.",
    ),
    ("What does DPO train on?", "Pairs of a preferred and a rejected answer to the same prompt."),
    (
        "What is rejection sampling?",
        "Sample several answers, keep the best by a reward, then fine-tune on them.",
    ),
    ("Where does ragtune keep its data?", "Under RAGTUNE_HOME, by default ./.ragtune."),
    ("How do agents talk to each other?", "Over A2A, the agent-to-agent protocol, with cards and tasks."),
    ("Which token protects the HTTP servers?", "RAGTUNE_API_TOKEN, sent as a bearer token."),
]


def builtin_dataset() -> bytes:
    """Return a small OpenAI chat-format JSONL dataset about ragtune."""
    lines = [
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
        for q, a in EXAMPLES
    ]
    return ("\n".join(lines) + "\n").encode()


async def show_refusal(client: AsyncOpenAI) -> None:
    """Upload a malformed file and check it is refused with the bad line named (and nothing stored)."""
    before = {f.id async for f in client.files.list()}
    bad = builtin_dataset().splitlines()[0] + b'\n{"messages": [{"role": "user", "content": "no answer"\n'
    try:
        await client.files.create(file=("bad.jsonl", io.BytesIO(bad)), purpose="fine-tune")
    except BadRequestError as exc:
        assert "line 2" in str(exc) or '"line": 2' in str(exc), f"the error should name line 2: {exc}"
        print(f"malformed file refused: {exc.message[:160]}")
    else:
        raise AssertionError("a malformed dataset was accepted")
    after = {f.id async for f in client.files.list()}
    assert after == before, "a refused upload left a file behind"


async def follow(client: AsyncOpenAI, job_id: str, until: str, timeout: float) -> str:
    """Print new events until the job reaches `until` (or any end state); return the last status."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        job = await client.fine_tuning.jobs.retrieve(job_id)
        events = (await client.fine_tuning.jobs.list_events(job_id, limit=100)).data
        for event in reversed(events):  # the API lists newest first
            if event.id not in seen:
                seen.add(event.id)
                print(f"  [{event.type or 'message'}] {event.message}")
        if job.status == until or job.status in TERMINAL:
            return job.status
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is still {job.status} after {timeout:.0f}s; is a worker running?")
        await asyncio.sleep(1.0)


async def main(argv: list[str] | None = None) -> int:
    """Upload a dataset, create a job, follow it, and check each step."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--base-url",
        default=os.environ.get("RAGTUNE_FINETUNE_REST", "http://127.0.0.1:8702/v1"),
        help="the fine-tuning REST API (default http://127.0.0.1:8702/v1)",
    )
    parser.add_argument("--token", default=os.environ.get("RAGTUNE_API_TOKEN"), help="bearer token (RAGTUNE_API_TOKEN)")
    parser.add_argument("--file", type=Path, help="training JSONL (default: a built-in 12-example chat set)")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="base model")
    parser.add_argument("--method", default="supervised", choices=["supervised", "dpo", "cpt", "rejection_sampling"])
    parser.add_argument("--max-steps", type=int, default=5, help="training steps (keep it small on a CPU)")
    parser.add_argument(
        "--until",
        default="succeeded",
        choices=["queued", "running", "succeeded"],
        help="stop following once the job reaches this state",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for that state")
    args = parser.parse_args(argv)

    client = AsyncOpenAI(base_url=args.base_url, api_key=args.token or "unused-on-loopback", max_retries=0)
    await show_refusal(client)
    data = args.file.read_bytes() if args.file else builtin_dataset()
    uploaded = await client.files.create(
        file=(args.file.name if args.file else "ragtune-demo.jsonl", data), purpose="fine-tune"
    )
    assert uploaded.id and uploaded.bytes == len(data), uploaded
    print(f"uploaded {uploaded.filename}: {uploaded.id}, {uploaded.bytes} bytes")

    job = await client.fine_tuning.jobs.create(
        model=args.model,
        training_file=uploaded.id,
        suffix="demo",
        method={
            "type": args.method,
            args.method: {"hyperparameters": {"n_epochs": 1, "max_steps": args.max_steps}},
        },
    )
    assert job.status in {"validating_files", "queued"}, job.status
    assert job.training_file == uploaded.id
    print(f"created {job.id}: {job.status}, model {job.model}")
    listed = [j.id async for j in client.fine_tuning.jobs.list(limit=10)]
    assert job.id in listed, "the new job is missing from the job list"

    status = await follow(client, job.id, args.until, args.timeout)
    assert status == args.until, f"job ended {status}, expected {args.until}"
    if status == "succeeded":
        done = await client.fine_tuning.jobs.retrieve(job.id)
        assert done.fine_tuned_model, "a succeeded job must name its fine-tuned model"
        checkpoints = (await client.fine_tuning.jobs.checkpoints.list(job.id)).data
        for cp in checkpoints:
            print(f"  checkpoint step {cp.step_number}: {cp.fine_tuned_model_checkpoint} {cp.metrics}")
        print(f"fine-tuned model: {done.fine_tuned_model} ({done.trained_tokens} tokens trained)")
    print(f"job {job.id} reached {status}")
    return 0


if __name__ == "__main__":
    from _errors import run  # clients/ is on sys.path when a client runs as a script

    run(
        main,
        "is the fine-tuning server running? start it with `python -m ragtune.servers.finetune serve --transport http`",
    )
