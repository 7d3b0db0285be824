"""Direct preference optimisation: chosen/rejected pairs, LoRA, the base with the adapter off as reference."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import (
    RunCallbacks,
    RunResult,
    TrainingOptions,
    TrainJob,
    config_from,
    require_format,
    resolve_learning_rate,
    write_json,
)

LORA_LR = 5e-5
DEFAULT_LORA = {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0}


@dataclass
class DPOJobConfig(TrainingOptions):
    """Options of the `dpo` recipe."""

    beta: float = 0.1
    loss_type: str = "sigmoid"


def config(job: TrainJob) -> DPOJobConfig:
    """Resolve the job's options into a DPOJobConfig."""
    options = resolve_learning_rate(job.options, LORA_LR)
    return config_from(DPOJobConfig, options, seed=options.get("seed", job.job.get("seed", 0)))


def _turns(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m.get("content") or ""} for m in messages]


def pairs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return TRL's conversational preference rows (prompt/chosen/rejected message lists)."""
    return [
        {"prompt": _turns(r["prompt"]), "chosen": _turns(r["chosen"]), "rejected": _turns(r["rejected"])}
        for r in records
    ]


def run(job: TrainJob, out_dir: Path, callbacks: RunCallbacks) -> RunResult:
    """Train the `dpo` recipe on the job's preference records."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from .common import device_settings, job_callback, load_model, load_tokenizer, lora_config, training_args
    from .evaluate import train_and_evaluate

    require_format(job.records, "chosen", "dpo", "preference records with prompt/chosen/rejected")
    cfg = config(job)
    peft = job.peft
    if not peft:
        callbacks.event("dpo trains a LoRA adapter (the base model is the reference); using r=8", level="warn")
        peft = DEFAULT_LORA
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        out_dir / "config.json",
        {"recipe": "dpo", "base_model": job.model_name, "peft": peft, **dataclasses.asdict(cfg)},
    )
    device = device_settings(job.threads)
    tok = load_tokenizer(job.model_path, training_template=False)
    model = load_model(job.model_path, device["dtype"])
    args = training_args(DPOConfig, out_dir, device, cfg, peft=True, beta=float(cfg.beta), loss_type=[cfg.loss_type])
    cb = job_callback(callbacks, out_dir)
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        processing_class=tok,
        args=args,
        train_dataset=Dataset.from_list(pairs(job.records)),
        peft_config=lora_config(peft),
        callbacks=[cb],
    )
    return train_and_evaluate(
        trainer, tok, cb, job, cfg, out_dir, callbacks, kind="preference", peft=True, train_examples=len(job.records)
    )
