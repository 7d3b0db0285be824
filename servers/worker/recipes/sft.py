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
        messages = [{"role": m["role"], "content": m.get("content") or "",
                     "weight": None if m.get("weight") is None else int(m["weight"])} for m in rec["messages"]]
        if any(m["role"] == "assistant" and m["weight"] != 0 for m in messages):
            kept.append({"messages": messages})
    return kept


def run(job: TrainJob, out_dir: Path, callbacks: RunCallbacks) -> RunResult:
    """Train the `supervised` recipe on the job's chat records."""
    require_format(job.records, "messages", "supervised", "chat records with a 'messages' list")
    cfg = config(job)
    records = trainable_records(job.records)
    if not records:
        raise RecipeError("no record has an assistant turn with weight 1: nothing to learn; "
                          "add assistant answers or set their weight to 1")
    if len(records) < len(job.records):
        callbacks.event(f"skipped {len(job.records) - len(records)} records without a trained assistant turn",
                        level="warn")
    return train_chat(job, records, cfg, out_dir, callbacks)


def train_chat(job: TrainJob, records: list[dict[str, Any]], cfg: SFTJobConfig, out_dir: Path,
               callbacks: RunCallbacks) -> RunResult:
    """Run TRL's SFTTrainer with assistant-only loss on chat records (shared with rejection sampling)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from .common import (
        device_settings,
        job_callback,
        last_checkpoint,
        load_model,
        load_tokenizer,
        lora_config,
        training_args,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", {"recipe": "supervised", "base_model": job.model_name,
                                         "peft": job.peft, **dataclasses.asdict(cfg)})
    device = device_settings(job.threads)
    tok = load_tokenizer(job.model_path)
    model = load_model(job.model_path, device["dtype"])
    args = training_args(SFTConfig, out_dir, device, cfg, peft=job.peft is not None, assistant_only_loss=True,
                         packing=cfg.packing, pad_token=tok.pad_token, eos_token=tok.eos_token)
    cb = job_callback(callbacks, out_dir)
    valid = trainable_records(job.validation_records)
    trainer = SFTTrainer(model=model, processing_class=tok, train_dataset=Dataset.from_list(records),
                         eval_dataset=Dataset.from_list(valid) if valid else None,
                         peft_config=lora_config(job.peft), args=args, callbacks=[cb])
    resume = last_checkpoint(out_dir)
    if resume:
        callbacks.event(f"resuming from {Path(resume).name}")
    trainer.train(resume_from_checkpoint=resume)
    if valid and not cb.pause_requested:
        scores = trainer.evaluate()
        callbacks.event(f"validation loss {scores.get('eval_loss', float('nan')):.4f} on {len(valid)} examples",
                        data={"valid_loss": scores.get("eval_loss"),
                              "valid_mean_token_accuracy": scores.get("eval_mean_token_accuracy")})
    return finish(trainer, tok, cb, cfg, out_dir, peft=job.peft is not None)


def finish(trainer: Any, tok: Any, cb: Any, cfg: TrainingOptions, out_dir: Path, *, peft: bool) -> RunResult:
    """Save the trained weights (unless paused) and summarise the run."""
    from .common import save_outputs

    state = trainer.state
    tokens = int(state.num_input_tokens_seen or 0)
    if cb.pause_requested:
        return RunResult(model_path="", trained_tokens=tokens, steps=state.global_step,
                         final_loss=cb.last_loss, paused=True)
    model_path, merged = save_outputs(trainer, tok, out_dir, merge=cfg.merge, peft=peft)
    return RunResult(model_path=model_path, merged_path=merged, trained_tokens=tokens, steps=state.global_step,
                     final_loss=cb.last_loss)
