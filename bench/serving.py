"""Serving speed of /v1/chat/completions: tokens/s and time to first token, base model vs base + LoRA adapter
(target: adapter >= 0.8x base), adapter swap time, and p50/p95 latency under 1/4/16 concurrent streams.

Everything goes through the real HTTP API with the official openai SDK (AsyncOpenAI, streamed, usage on).
With `--engine transformers` (default) it starts the fine-tuning service in-process on a scratch RAGTUNE_HOME,
on the embedded SmolLM2-135M, with a LoRA adapter of the size the worker trains (r=8 on q/v, random weights:
the same compute as a trained one; `--adapter DIR` uses yours). With `--engine vllm --url URL` the service
forwards to a vLLM OpenAI server (started with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) and
`--adapter DIR` (readable by vLLM) and `--base NAME` (the model vLLM serves) are required.

    OMP_NUM_THREADS=1 .venv/bin/python bench/serving.py --threads 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:1] = [str(ROOT)]

PROMPT = "Write a short story about a lighthouse keeper and a cat."
LORA = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    p = argparse.ArgumentParser(prog="bench/serving.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=["transformers", "vllm"], default="transformers")
    p.add_argument("--url", help="vLLM's OpenAI base URL (e.g. http://127.0.0.1:8000/v1) with --engine vllm")
    p.add_argument("--base", default="smollm2-135m-instruct", help="base model name")
    p.add_argument("--adapter", help="LoRA adapter folder (default: a random r=8 q/v adapter on the embedded base)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for generation (pinned)")
    p.add_argument("--tokens", type=int, default=64, help="tokens generated per speed run")
    p.add_argument("--runs", type=int, default=3, help="speed runs per model (after one warm-up)")
    p.add_argument("--stream-tokens", type=int, default=32, help="tokens per request in the concurrency runs")
    p.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    p.add_argument("--levels", default="1,4,16", help="concurrent streams")
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p.parse_args(argv)


def random_adapter(base_dir: Path, out: Path, seed: int) -> Path:
    """Save an untrained LoRA adapter with non-zero weights (same shapes and compute as a trained one)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(**LORA, init_lora_weights=False, task_type="CAUSAL_LM"))
    peft.save_pretrained(out)
    return out


def register(store: Any, base: str, adapter: Path, name: str) -> str:
    """Record a succeeded job whose weights are `adapter`, as the worker would; return its model name."""
    from ragtune.jobs import Job, JobStatus, fine_tuned_model_name, new_id

    job = Job(
        id=new_id("ftjob"),
        created_at=int(time.time()),
        model=base,
        status=JobStatus.succeeded,
        training_file="file-bench",
        user_provided_suffix=name,
        result_files=[str(adapter)],
        output_dir=str(adapter.parent),
    )
    job.fine_tuned_model = fine_tuned_model_name(job)
    store.create_job(job)
    return job.fine_tuned_model


def start_service(settings: Any) -> tuple[str, Any, Any]:
    """Serve the fine-tuning app on a free loopback port; return its URL, service and server."""
    import uvicorn
    from ragtune.servers.finetune.app import build_app
    from ragtune.servers.finetune.service import FinetuneService

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service = FinetuneService(settings)
    app = build_app(settings, service=service, host="127.0.0.1", port=port)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/v1", service, server


async def one(client: Any, model: str, tokens: int) -> dict[str, float]:
    """Stream one answer; return time to first token, total time and generated tokens."""
    started = time.perf_counter()
    first = None
    used = 0
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
        if chunk.usage:
            used = chunk.usage.completion_tokens
    ended = time.perf_counter()
    first = first or ended
    return {"ttft": first - started, "total": ended - started, "tokens": used, "decode": ended - first}


async def speed(client: Any, model: str, args: argparse.Namespace) -> dict[str, float]:
    """Median decode tokens/s and time to first token over `runs` streamed answers (after a warm-up)."""
    await one(client, model, 4)
    runs = [await one(client, model, args.tokens) for _ in range(args.runs)]
    return {
        "tokens_per_s": statistics.median((r["tokens"] - 1) / max(r["decode"], 1e-9) for r in runs if r["tokens"] > 1),
        "ttft_s": statistics.median(r["ttft"] for r in runs),
        "tokens": statistics.median(r["tokens"] for r in runs),
    }


async def swap(client: Any, first: str, second: str) -> dict[str, float]:
    """Time a 1-token answer when its adapter must be loaded (cold), switched to (warm) or is already active."""

    async def t(model: str) -> float:
        started = time.perf_counter()
        await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
        return time.perf_counter() - started

    cold = await t(second)  # second is not loaded yet
    same = statistics.median([await t(second) for _ in range(3)])
    switch = statistics.median([(await t(first), await t(second))[1] for _ in range(3)])
    return {"cold_load_s": cold - same, "hot_switch_s": switch - same, "same_adapter_s": same}


async def concurrency(client: Any, model: str, args: argparse.Namespace) -> list[dict[str, float]]:
    """p50/p95 latency of streamed answers with N at once (N = each level), `requests` answers per level."""
    rows = []
    for level in [int(x) for x in args.levels.split(",")]:
        times: list[float] = []
        ttfts: list[float] = []
        while len(times) < args.requests:
            batch = await asyncio.gather(*(one(client, model, args.stream_tokens) for _ in range(level)))
            times += [r["total"] for r in batch]
            ttfts += [r["ttft"] for r in batch]
        q = statistics.quantiles(times, n=20, method="inclusive")
        tq = statistics.quantiles(ttfts, n=20, method="inclusive")
        rows.append(
            {
                "streams": level,
                "p50_s": statistics.median(times),
                "p95_s": q[18],
                "ttft_p50_s": statistics.median(ttfts),
                "ttft_p95_s": tq[18],
                "n": len(times),
            }
        )
    return rows


async def measure(url: str, base: str, tuned: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement against the service at `url`."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(
        base_url=url, api_key=os.environ.get("RAGTUNE_API_TOKEN", "unused"), max_retries=0, timeout=900
    )
    base_speed = await speed(client, base, args)
    lora_speed = await speed(client, tuned[0], args)
    swaps = await swap(client, tuned[0], tuned[1])
    rows = await concurrency(client, tuned[0], args)
    return {"base": base_speed, "lora": lora_speed, "swap": swaps, "concurrency": rows}


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the tables."""
    b, lo = figures["base"], figures["lora"]
    print(f"\nengine={args.engine} threads={args.threads} tokens={args.tokens} runs={args.runs}")
    print("| model | decode tokens/s | time to first token |")
    print("| --- | --- | --- |")
    print(f"| base | {b['tokens_per_s']:.1f} | {b['ttft_s'] * 1000:.0f} ms |")
    print(f"| base + LoRA (r=8, q/v) | {lo['tokens_per_s']:.1f} | {lo['ttft_s'] * 1000:.0f} ms |")
    print(f"| ratio LoRA/base | {lo['tokens_per_s'] / b['tokens_per_s']:.2f}x (target >= 0.8x) | |")
    s = figures["swap"]
    print(
        f"\nadapter load (cold swap): {s['cold_load_s'] * 1000:.0f} ms; switch between loaded adapters: "
        f"{s['hot_switch_s'] * 1000:.0f} ms (1-token answer on the active adapter: {s['same_adapter_s'] * 1000:.0f} ms)"
    )
    print(f"\n| concurrent streams ({args.stream_tokens} tokens each) | p50 | p95 | TTFT p50 | TTFT p95 | answers |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in figures["concurrency"]:
        print(
            f"| {r['streams']} | {r['p50_s']:.2f} s | {r['p95_s']:.2f} s | {r['ttft_p50_s']:.2f} s | "
            f"{r['ttft_p95_s']:.2f} s | {r['n']} |"
        )


def main(argv: list[str] | None = None) -> int:
    """Set up the service and its models, measure, print."""
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the tables
    from ragtune.config import FinetuneSettings

    home = Path(tempfile.mkdtemp(prefix="ragtune-bench-serving-"))
    try:
        extra: dict[str, Any] = {}
        if args.engine == "vllm":
            if not (args.url and args.adapter):
                raise SystemExit("--engine vllm needs --url (vLLM's /v1) and --adapter (a folder vLLM can read)")
            extra = {"serving_engine": "vllm", "serving_vllm_url": args.url}
        settings = FinetuneSettings(
            home=home,
            models_dir=Path(os.environ.get("RAGTUNE_MODELS_DIR") or ROOT / ".ragtune" / "models"),
            serving_threads=args.threads,
            serving_max_queue=max(int(x) for x in args.levels.split(",")) + 1,
            serving_max_loaded=2,
            serving_max_tokens=max(args.tokens, args.stream_tokens),
            **extra,
        )
        adapters = []
        for i in range(2):
            target = home / "jobs" / f"bench-{i}" / "adapter"
            if args.adapter and args.engine == "vllm":
                adapters.append(Path(args.adapter))  # vLLM reads it where it is; two names, one adapter
            elif args.adapter:
                adapters.append(Path(shutil.copytree(args.adapter, target)))
            else:
                from ragtune.servers.worker.recipes.common import resolve_model_path

                _, base_dir = resolve_model_path(args.base, settings.models_path())
                adapters.append(random_adapter(Path(base_dir), target, seed=i))
        url, service, server = start_service(settings)
        tuned = [register(service.store, args.base, a, f"bench{i}") for i, a in enumerate(adapters)]
        figures = asyncio.run(measure(url, args.base, tuned, args))
        server.should_exit = True
    finally:
        shutil.rmtree(home, ignore_errors=True)
    report(figures, args)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, **figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
