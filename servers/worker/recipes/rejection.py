"""Rejection sampling: sample N answers per prompt, keep the best by the job's reward, then SFT on them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragtune.datasets import split_prompt_reference

from .base import (
    RecipeError,
    RunCallbacks,
    RunResult,
    TrainJob,
    config_from,
    require_format,
    resolve_learning_rate,
)
from .rewards import make_reward
from .sft import FULL_LR, LORA_LR, SFTJobConfig


@dataclass
class RejectionJobConfig(SFTJobConfig):
    """Options of the `rejection_sampling` recipe: sampling and reward, then the supervised options."""

    n_samples: int = 4
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 64
    reward: str = "reference_similarity"
    threshold: float = 0.0


def config(job: TrainJob) -> RejectionJobConfig:
    """Resolve the job's options into a RejectionJobConfig."""
    options = resolve_learning_rate(job.options, LORA_LR if job.peft else FULL_LR)
    return config_from(RejectionJobConfig, options, seed=options.get("seed", job.job.get("seed", 0)))


def sample(job: TrainJob, cfg: RejectionJobConfig, prompts: list[list[dict[str, Any]]]) -> list[list[str]]:
    """Generate cfg.n_samples answers per prompt with the base model (temperature sampling)."""
    import torch

    from .common import device_settings, load_model, load_tokenizer

    device = device_settings(job.threads)
    tok = load_tokenizer(job.model_path, training_template=False)
    model = load_model(job.model_path, device["dtype"]).to(device["device"]).eval()
    torch.manual_seed(cfg.seed)
    answers = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tok.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True).to(
                device["device"]
            )
            out = model.generate(
                **ids,
                do_sample=True,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                max_new_tokens=cfg.max_new_tokens,
                num_return_sequences=cfg.n_samples,
                pad_token_id=tok.pad_token_id,
            )
            start = ids["input_ids"].shape[1]
            answers.append([tok.decode(o[start:], skip_special_tokens=True).strip() for o in out])
    del model
    return answers


def run(job: TrainJob, out_dir: Path, callbacks: RunCallbacks) -> RunResult:
    """Sample, score and keep the best answer per prompt, write kept.jsonl, then fine-tune on it."""
    from .sft import train_chat

    require_format(job.records, "messages", "rejection_sampling", "chat records (prompt turns + reference)")
    cfg = config(job)
    reward = make_reward(cfg.reward)
    split = [split_prompt_reference(r) for r in job.records]
    prompts = [[{"role": m["role"], "content": m.get("content") or ""} for m in p] for p, _ in split]
    callbacks.event(
        f"sampling {cfg.n_samples} answers for each of {len(prompts)} prompts "
        f"(temperature {cfg.temperature}, up to {cfg.max_new_tokens} tokens)"
    )
    samples = sample(job, cfg, prompts)
    kept, best_scores = [], []
    for prompt, (_, ref), answers in zip(prompts, split, samples, strict=True):
        scored = sorted(((reward(a, ref), a) for a in answers if a), reverse=True)
        if scored:
            best_scores.append(scored[0][0])
        if scored and scored[0][0] >= cfg.threshold:
            kept.append(
                {
                    "messages": [*prompt, {"role": "assistant", "content": scored[0][1]}],
                    "reward": scored[0][0],
                }
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    kept_file = out_dir / "kept.jsonl"
    kept_file.write_text("".join(json.dumps(k, ensure_ascii=False) + "\n" for k in kept))
    mean = sum(best_scores) / len(best_scores) if best_scores else 0.0
    stats = {
        "prompts": len(prompts),
        "samples": sum(len(s) for s in samples),
        "kept": len(kept),
        "mean_best_reward": round(mean, 4),
        "reward": cfg.reward,
        "threshold": cfg.threshold,
    }
    callbacks.event(
        f"rejection sampling kept {len(kept)} of {len(prompts)} prompts (mean best {cfg.reward} {mean:.3f})",
        data=stats,
    )
    if not kept:
        raise RecipeError(
            f"no sampled answer reached the reward threshold {cfg.threshold}: lower `threshold`, "
            "raise `n_samples`, or pick another reward"
        )
    records = [{"messages": k["messages"]} for k in kept]
    result = train_chat(job, records, cfg, out_dir, callbacks)
    result.result_files.append(str(kept_file))
    result.extra["rejection_sampling"] = stats
    return result
