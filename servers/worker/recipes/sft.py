"""Supervised instruction tuning: chat records, loss on assistant turns only (weight 0 turns carry none)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import (
    RecipeError,
    RunCallbacks,
    RunResult,
    TrainingOptions,
    TrainJob,
    config_from,
    require_format,
    resolve_learning_rate,
    write_json,
)

LORA_LR = 2e-4
FULL_LR = 2e-5


@dataclass
class SFTJobConfig(TrainingOptions):
    """Options of the `supervised` recipe (LoRA by default; full fine-tuning when the job's peft is null)."""

    packing: bool = False


def config(job: TrainJob) -> SFTJobConfig:
    """Resolve the job's options into an SFTJobConfig."""
    options = resolve_learning_rate(job.options, LORA_LR if job.peft else FULL_LR)
    return config_from(SFTJobConfig, options, seed=options.get("seed", job.job.get("seed", 0)))


def trainable_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep records with at least one weighted assistant turn, normalising `weight` on every message."""
    kept = []
    for rec in records:
        messages = [
            {
                "role": m["role"],
                "content": m.get("content") or "",
                "weight": None if m.get("weight") is None else int(m["weight"]),
            }
            for m in rec["messages"]
        ]
        if any(m["role"] == "assistant" and m["weight"] != 0 for m in messages):
            kept.append({"messages": messages})
    return kept


def run(job: TrainJob, out_dir: Path, callbacks: RunCallbacks) -> RunResult:
    """Train the `supervised` recipe on the job's chat records."""
    require_format(job.records, "messages", "supervised", "chat records with a 'messages' list")
    cfg = config(job)
    records = trainable_records(job.records)
    if not records:
        raise RecipeError(
            "no record has an assistant turn with weight 1: nothing to learn; "
            "add assistant answers or set their weight to 1"
        )
    if len(records) < len(job.records):
        callbacks.event(
            f"skipped {len(job.records) - len(records)} records without a trained assistant turn",
            level="warn",
        )
    return train_chat(job, records, cfg, out_dir, callbacks)


def train_chat(
    job: TrainJob, records: list[dict[str, Any]], cfg: SFTJobConfig, out_dir: Path, callbacks: RunCallbacks
) -> RunResult:
    """Run TRL's SFTTrainer with assistant-only loss on chat records (shared with rejection sampling)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from .common import device_settings, job_callback, load_model, load_tokenizer, lora_config, training_args
    from .evaluate import train_and_evaluate

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        out_dir / "config.json",
        {"recipe": "supervised", "base_model": job.model_name, "peft": job.peft, **dataclasses.asdict(cfg)},
    )
    device = device_settings(job.threads)
    tok = load_tokenizer(job.model_path)
    model = load_model(job.model_path, device["dtype"])
    args = training_args(
        SFTConfig,
        out_dir,
        device,
        cfg,
        peft=job.peft is not None,
        assistant_only_loss=True,
        packing=cfg.packing,
        pad_token=tok.pad_token,
        eos_token=tok.eos_token,
    )
    cb = job_callback(callbacks, out_dir)
    trainer = SFTTrainer(
        model=model,
        processing_class=tok,
        train_dataset=Dataset.from_list(records),
        peft_config=lora_config(job.peft),
        args=args,
        callbacks=[cb],
    )
    return train_and_evaluate(
        trainer,
        tok,
        cb,
        job,
        cfg,
        out_dir,
        callbacks,
        kind="chat",
        peft=job.peft is not None,
        train_examples=len(records),
    )
