"""Continued pretraining: raw text, packed into full-length sequences, loss on every token."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .base import (
    RecipeError,
    RunCallbacks,
    RunResult,
    TrainingOptions,
    TrainJob,
    config_from,
    resolve_learning_rate,
    write_json,
)

LORA_LR = 2e-4
FULL_LR = 5e-5


@dataclass
class CPTJobConfig(TrainingOptions):
    """Options of the `cpt` recipe (full fine-tuning when the job's peft is null, else LoRA)."""

    packing: bool = True


def config(job: TrainJob) -> CPTJobConfig:
    """Resolve the job's options into a CPTJobConfig."""
    options = resolve_learning_rate(job.options, LORA_LR if job.peft else FULL_LR)
    return config_from(CPTJobConfig, options, seed=options.get("seed", job.job.get("seed", 0)))


def texts(records: list[dict]) -> list[dict[str, str]]:
    """Return `text` records; chat records are flattened (turn contents joined by blank lines)."""
    out = []
    for rec in records:
        if "text" in rec:
            text = rec["text"]
        elif "messages" in rec:
            text = "\n\n".join(m.get("content") or "" for m in rec["messages"])
        else:
            raise RecipeError("cpt trains on text records ({'text': ...}); this file holds neither text nor chat")
        if text.strip():
            out.append({"text": text})
    if not out:
        raise RecipeError("the training file has no non-empty text: cpt needs raw text records")
    return out


def run(job: TrainJob, out_dir: Path, callbacks: RunCallbacks) -> RunResult:
    """Train the `cpt` recipe on the job's text records."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from .common import device_settings, job_callback, load_model, load_tokenizer, lora_config, training_args
    from .evaluate import train_and_evaluate

    cfg = config(job)
    rows = texts(job.records)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        out_dir / "config.json",
        {"recipe": "cpt", "base_model": job.model_name, "peft": job.peft, **dataclasses.asdict(cfg)},
    )
    device = device_settings(job.threads)
    tok = load_tokenizer(job.model_path, training_template=False)
    model = load_model(job.model_path, device["dtype"])
    args = training_args(
        SFTConfig,
        out_dir,
        device,
        cfg,
        peft=job.peft is not None,
        packing=cfg.packing,
        dataset_text_field="text",
        pad_token=tok.pad_token,
        eos_token=tok.eos_token,
    )
    cb = job_callback(callbacks, out_dir)
    trainer = SFTTrainer(
        model=model,
        processing_class=tok,
        train_dataset=Dataset.from_list(rows),
        peft_config=lora_config(job.peft),
        args=args,
        callbacks=[cb],
    )
    return train_and_evaluate(
        trainer, tok, cb, job, cfg, out_dir, callbacks, kind="text", peft=job.peft is not None, train_examples=len(rows)
    )
