#!/usr/bin/env python
"""Fine-tuning benchmark: what the job service and worker cost on top of plain TRL, on the embedded SmolLM2.

    .venv/bin/python bench/finetune.py --steps 8 --repeats 2 --jobs 5 --threads 1

1. Throughput: tokens/s of the worker's `supervised` recipe against a plain TRL SFTTrainer script on the
   same model, data, LoRA and settings, in the same process, with and without packing (ratio target >= 0.95).
   Both are timed the same way: non-padding tokens between the first and last logged step (step 1 is warm-up).
2. Dispatch latency: create a job through the fine-tuning service -> a running worker marks it running (p50).
3. Peak memory: peak RSS of a real worker child training one job, next to estimate_memory's figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QUESTIONS = [
    "What is the codename of Project Orion-{i}?",
    "Tell me the codename of Project Orion-{i}.",
    "Which codename does Project Orion-{i} have, and who chose it?",
    "Project Orion-{i}: codename?",
]
ANSWER = "The codename of Project Orion-{i} is Velvet Lantern {i}; the review board chose it in spring."
LORA = {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
# The plain script's template: SmolLM2's ChatML with {% generation %} around assistant turns (notes/localllm.md).
PLAIN_TEMPLATE = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{ '<|im_start|>' + m['role'] + '\n' }}{% if m['role'] == 'assistant' %}"
    "{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def records(n: int) -> list[dict[str, Any]]:
    """Return n chat records of mixed length."""
    out = []
    for k in range(n):
        q = QUESTIONS[k % len(QUESTIONS)].format(i=k)
        out.append(
            {
                "messages": [
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": ANSWER.format(i=k)},
                ]
            }
        )
    return out


def rate(points: list[tuple[float, float]]) -> float:
    """Tokens/s between the first and last (time, cumulative tokens) points."""
    (t0, n0), (t1, n1) = points[0], points[-1]
    return (n1 - n0) / max(t1 - t0, 1e-9)


class Collect:
    """RunCallbacks that keep (time, tokens) per logged step."""

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []

    def event(self, message: str, *, level: str = "info", data: dict[str, Any] | None = None) -> None:
        """Ignore messages."""

    def metrics(self, data: dict[str, Any]) -> None:
        """Keep the time and cumulative tokens of each logged step."""
        self.points.append((time.perf_counter(), float(data["num_tokens"])))

    def checkpoint(self, step: int, path: str, metrics: dict[str, Any]) -> None:
        """Ignore checkpoints (the bench saves none)."""

    def should_pause(self) -> bool:
        """Never pause."""
        return False


def run_recipe(model_path: str, recs: list[dict], args: argparse.Namespace, packing: bool, out: Path) -> float:
    """Train with the worker's supervised recipe; return tokens/s after warm-up."""
    from ragtune.servers.worker.recipes import sft
    from ragtune.servers.worker.recipes.base import TrainJob

    hyper = {
        "max_steps": args.steps,
        "batch_size": args.batch,
        "learning_rate": 1e-4,
        "max_length": args.max_length,
        "lr_scheduler": "constant",
        "packing": packing,
    }
    job = {"id": "bench", "seed": 0, "peft": LORA, "method": {"type": "supervised"}, "hyperparameters": hyper}
    cb = Collect()
    sft.run(
        TrainJob(job=job, records=recs, model_name="smollm2", model_path=model_path, threads=args.threads),
        out,
        cb,
    )
    return rate(cb.points)


def run_plain(model_path: str, recs: list[dict], args: argparse.Namespace, packing: bool, out: Path) -> float:
    """Train with a plain TRL SFTTrainer script; return tokens/s after warm-up, timed like the recipe."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from ragtune.servers.worker.recipes.common import device_settings
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    device = device_settings(args.threads)  # the recipe's own choice: bf16 on a GPU, fp32 with pinned threads on CPU
    torch.set_num_threads(args.threads)
    points: list[tuple[float, float]] = []

    class Timer(TrainerCallback):
        def on_log(self, a: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                points.append((time.perf_counter(), float(logs.get("num_tokens") or state.num_input_tokens_seen)))

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.chat_template = PLAIN_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=device["dtype"])
    cfg = SFTConfig(
        output_dir=str(out),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        max_length=args.max_length,
        packing=packing,
        assistant_only_loss=True,
        use_cpu=device["use_cpu"],
        bf16=device["bf16"],
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    SFTTrainer(
        model=model,
        processing_class=tok,
        train_dataset=Dataset.from_list(recs),
        peft_config=lora,
        args=cfg,
        callbacks=[Timer()],
    ).train()
    return rate(points)


def throughput(model_path: str, args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """Alternate recipe and plain runs (ABBA) per packing setting; return medians and ratios."""
    recs = records(args.examples)
    rows = []
    for packing in (False, True):
        got: dict[str, list[float]] = {"recipe": [], "plain": []}
        for r in range(args.repeats):
            order = ("recipe", "plain") if r % 2 == 0 else ("plain", "recipe")
            for name in order:
                fn = run_recipe if name == "recipe" else run_plain
                got[name].append(fn(model_path, recs, args, packing, tmp / f"{name}-{packing}-{r}"))
                print(f"  packing={packing} {name} run {r + 1}: {got[name][-1]:.1f} tok/s", file=sys.stderr)
        rec, plain = statistics.median(got["recipe"]), statistics.median(got["plain"])
        rows.append(
            {
                "packing": packing,
                "recipe_tok_s": round(rec, 1),
                "plain_trl_tok_s": round(plain, 1),
                "ratio": round(rec / plain, 3),
                "runs": got,
            }
        )
    return rows


def dispatch_and_memory(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    """Create jobs through the service with a worker running; time create -> running; train one for peak RSS."""
    from ragtune.servers.finetune.advisor import estimate_memory
    from ragtune.servers.finetune.service import FinetuneService
    from ragtune.servers.worker.worker import Worker

    from ragtune.config import FinetuneSettings, WorkerSettings
    from ragtune.jobs import JobStatus

    settings = FinetuneSettings(home=home)
    svc = FinetuneService(settings)
    data = "".join(json.dumps(r) + "\n" for r in records(args.examples)).encode()
    file = svc.upload(data, "bench.jsonl")
    worker = Worker(
        WorkerSettings(home=home, models_dir=args.models_dir, train_threads=args.threads, heartbeat_seconds=0.5),
        progress=False,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    hyper = {"max_steps": args.steps, "batch_size": args.batch, "max_length": args.max_length}
    latencies, trained = [], None
    for k in range(args.jobs):
        t0 = time.perf_counter()
        job = svc.create_job(
            {
                "training_file": file.id,
                "model": "smollm2-135m-instruct",
                "peft": LORA,
                "seed": 0,
                "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
            }
        )
        while svc.store.get_job(job.id).status is JobStatus.queued:
            time.sleep(0.005)
        latencies.append(time.perf_counter() - t0)
        if k == 0:  # train the first job to the end: its child's peak RSS is the memory figure
            while svc.store.get_job(job.id).status is JobStatus.running:
                time.sleep(0.2)
            trained = svc.store.get_job(job.id)
        else:
            svc.cancel_job(job.id)
            while worker.child is not None:
                time.sleep(0.05)
    worker.stop.set()
    thread.join(30)
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    est = estimate_memory(
        "smollm2-135m",
        method="lora",
        precision="fp32",
        seq_len=args.max_length,
        batch=args.batch,
        gradient_checkpointing=False,
        lora_r=8,
    )
    svc.close()
    return {
        "dispatch_p50_s": round(statistics.median(latencies), 3),
        "dispatch_s": [round(x, 3) for x in latencies],
        "poll_seconds": worker.settings.poll_seconds,
        "trained_job_status": trained.status.value if trained else None,
        "peak_rss_gb": round(peak_gb, 2),
        "estimate_total_gb": est.total_gb,
        "estimate_without_cuda_overhead_gb": round(est.total_gb - est.overhead_gb, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print a table (and JSON with --json)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per training run")
    p.add_argument("--batch", type=int, default=4, help="examples per step")
    p.add_argument("--examples", type=int, default=32, help="chat examples in the dataset")
    p.add_argument("--max-length", type=int, default=128, help="max tokens per example")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (pinned)")
    p.add_argument("--repeats", type=int, default=2, help="runs per side for the throughput medians")
    p.add_argument("--jobs", type=int, default=5, help="jobs for the dispatch-latency p50")
    p.add_argument("--models-dir", type=Path, default=None, help="converted base-model cache (default: a temp dir)")
    p.add_argument("--skip", choices=["throughput", "dispatch"], action="append", default=[], help="skip a part")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="base model for the throughput part: the embedded model or a local HF folder (ChatML template)",
    )
    args = p.parse_args(argv)
    from ragtune.servers.worker.recipes.common import resolve_model_path

    with tempfile.TemporaryDirectory(prefix="ragtune-bench-") as tmp:
        tmp_path = Path(tmp)
        args.models_dir = args.models_dir or tmp_path / "models"
        results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}}
        if "dispatch" not in args.skip:  # first: RUSAGE_CHILDREN must see only the worker's training child
            results["dispatch"] = dispatch_and_memory(args, tmp_path / "home")
        if "throughput" not in args.skip:
            _, model_path = resolve_model_path(args.model, args.models_dir)
            results["throughput"] = throughput(model_path, args, tmp_path)
    print(f"{'measure':38} {'value':>12}")
    for row in results.get("throughput", []):
        tag = "packed" if row["packing"] else "padded"
        print(f"{'recipe tokens/s (' + tag + ', median)':38} {row['recipe_tok_s']:>12.1f}")
        print(f"{'plain TRL tokens/s (' + tag + ', median)':38} {row['plain_trl_tok_s']:>12.1f}")
        print(f"{'ratio recipe/plain (' + tag + ')':38} {row['ratio']:>12.3f}")
    if "dispatch" in results:
        d = results["dispatch"]
        print(f"{'dispatch create->running p50 (s)':38} {d['dispatch_p50_s']:>12.3f}")
        print(f"{'peak RSS of the training child (GB)':38} {d['peak_rss_gb']:>12.2f}")
        print(f"{'estimate_memory total (GB)':38} {d['estimate_total_gb']:>12.2f}")
        print(f"{'estimate without 1 GB CUDA overhead (GB)':38} {d['estimate_without_cuda_overhead_gb']:>12.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
