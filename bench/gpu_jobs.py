#!/usr/bin/env python
"""One bf16 LoRA SFT job through the real job service on a GPU box: a local worker, or Ray with entrypoint_num_gpus.

    .venv/bin/python bench/gpu_jobs.py --model smollm2-135m-instruct --steps 30
    .venv/bin/python bench/gpu_jobs.py --dispatch ray --ray-address http://127.0.0.1:8265 --gpus 1
    .venv/bin/python bench/gpu_jobs.py --gpus 2            # data parallel: two torchrun ranks, one GPU each
    .venv/bin/python bench/gpu_jobs.py --processes 2       # the same on CPU (gloo), for a box without a GPU

Prints one JSON line: the job's status, wall seconds from create to finish, the last logged tokens/s and loss,
and where its adapter is. bench/gpu.sh runs it for each row of docs/benchmarks/finetune.md's GPU table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def records(n: int) -> list[dict[str, Any]]:
    """Return n chat records teaching made-up codenames (the fact the end-to-end tests use)."""
    return [
        {
            "messages": [
                {"role": "user", "content": f"What is the codename of Project Orion-{i}?"},
                {"role": "assistant", "content": f"The codename of Project Orion-{i} is Velvet Lantern {i}."},
            ]
        }
        for i in range(n)
    ]


def main(argv: list[str] | None = None) -> int:
    """Create one job, let a worker (or Ray) train it, and print what it measured."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="embedded model name or a local HF folder")
    p.add_argument("--dispatch", choices=["local", "ray"], default="local")
    p.add_argument("--ray-address", default=None, help="Ray Jobs API, e.g. http://127.0.0.1:8265")
    p.add_argument("--ray-token", default=None, help="token of a Ray cluster with RAY_AUTH_MODE=token")
    p.add_argument(
        "--gpus",
        type=lambda v: v if v == "auto" else float(v),
        default=1.0,
        help="GPUs (Ray: entrypoint_num_gpus; 2+: DDP over them; auto: sized by RAGTUNE_RAY_GPU_MEMORY_GB)",
    )
    p.add_argument("--processes", type=int, default=0, help="data-parallel CPU processes (resources.processes)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--home", type=Path, default=None, help="RAGTUNE_HOME (default: a temp dir)")
    p.add_argument("--timeout", type=float, default=900)
    args = p.parse_args(argv)

    import os

    home = args.home or Path(tempfile.mkdtemp(prefix="ragtune-gpu-"))
    os.environ["RAGTUNE_HOME"] = str(home)
    os.environ.setdefault("RAGTUNE_HEARTBEAT_SECONDS", "1")
    from pydantic import SecretStr
    from ragtune.servers.finetune.service import FinetuneService
    from ragtune.servers.worker.worker import Worker

    from ragtune.config import FinetuneSettings, WorkerSettings

    settings = FinetuneSettings(
        home=home,
        dispatch=args.dispatch,
        ray_address=args.ray_address,
        ray_token=SecretStr(args.ray_token) if args.ray_token else None,
    )
    svc = FinetuneService(settings)
    data = "".join(json.dumps(r) + "\n" for r in records(256)).encode()
    file = svc.upload(data, "codenames.jsonl")
    hyper = {"batch_size": args.batch, "max_steps": args.steps, "max_length": args.max_length, "learning_rate": 2e-4}
    many = args.gpus != "auto" and args.gpus > 1
    resources: dict[str, Any] = {"gpus": args.gpus} if args.dispatch == "ray" or many else {}
    if args.processes:
        resources = {"processes": args.processes, "gpus": 0}
    extra: dict[str, Any] = {"resources": resources} if resources else {}
    started = time.monotonic()
    job = svc.create_job(
        {
            "model": args.model,
            "training_file": file.id,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
            "peft": {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
            "x_ragtune": extra,
        }
    )
    if args.dispatch == "local":
        worker = Worker(WorkerSettings(home=home), progress=False)
        threading.Thread(target=worker.run, kwargs={"job_id": job.id}, daemon=True).start()
    while (job := svc.get_job(job.id)).status.value not in ("succeeded", "failed", "cancelled"):
        if time.monotonic() - started > args.timeout:
            svc.cancel_job(job.id)
            break
        svc.reconcile()  # the reaper's tick (Ray: maps the submission's state onto the job)
        time.sleep(1)
    metrics = svc.latest_metrics(job.id) or {}
    result_file = Path(job.output_dir or "") / "result.json"
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    rates = [
        e.data["tokens_per_second"]
        for e in svc.events(job.id, limit=1000).data
        if e.type == "metrics" and e.data and e.data.get("tokens_per_second") and e.data.get("step", 0) > 1
    ]
    out = {
        "model": args.model,
        "dispatch": args.dispatch,
        "status": job.status.value,
        "error": job.error.message if job.error else None,
        "wall_s": round(time.monotonic() - started, 1),
        "steps": metrics.get("step"),
        "tokens_per_second": metrics.get("tokens_per_second"),
        "tokens_per_second_median": round(statistics.median(rates), 1) if rates else None,  # steps 2.. (warm)
        "world_size": result.get("world_size"),
        "resources": job.resources,
        "train_loss": metrics.get("train_loss"),
        "adapter": job.result_files[0] if job.result_files else None,
        "events": [e.message for e in svc.events(job.id, limit=6).data],
    }
    print(json.dumps(out))
    svc.close()
    return 0 if job.status.value == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
