"""Shared training plumbing: the base model (GGUF converted once), devices, LoRA, callbacks, outputs.

torch, transformers and peft are imported inside functions so importing this module stays cheap.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from ragtune.models import SMOLLM2, BaseModelRef, resolve_base_model

from .base import RecipeError, RunCallbacks, RunResult, TrainingOptions

log = logging.getLogger(__name__)

SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml_training_template(default_system: str | None) -> str:
    """Return a ChatML template whose {% generation %} marks only assistant turns with weight != 0."""
    system = (
        (
            "{% if loop.first and m['role'] != 'system' %}"
            "{{ '<|im_start|>system\n" + default_system + "<|im_end|>\n' }}"
            "{% endif %}"
        )
        if default_system
        else ""
    )
    return (
        "{% for m in messages %}" + system + "{{ '<|im_start|>' + m['role'] + '\n' }}"
        "{% if m['role'] == 'assistant' and (m['weight'] is not defined or m['weight'] is none"
        " or m['weight'] != 0) %}"
        "{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
        "{% else %}{{ m['content'] + '<|im_end|>\n' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


# ---------------------------------------------------------------------------------------------- device
def device_settings(threads: int = 0) -> dict[str, Any]:
    """Pick GPU (bf16 when supported) or CPU (fp32, pinned threads) and return TrainingArguments fields."""
    import torch

    if torch.cuda.is_available():
        bf16 = torch.cuda.is_bf16_supported()
        return {
            "use_cpu": False,
            "bf16": bf16,
            "fp16": False,
            "dtype": torch.bfloat16 if bf16 else torch.float16,
            "device": "cuda",
        }
    torch.set_num_threads(threads or os.cpu_count() or 1)
    return {"use_cpu": True, "bf16": False, "fp16": False, "dtype": torch.float32, "device": "cpu"}


# ---------------------------------------------------------------------------------------------- base model
def resolve_model_path(name: str | None, models_dir: Path) -> tuple[BaseModelRef, str]:
    """Resolve a job's base model to a loadable folder or hub id, converting the embedded GGUF once."""
    try:
        ref = resolve_base_model(name)
    except ValueError as e:  # UnknownModel
        raise RecipeError(str(e)) from e
    if ref.kind == "embedded":
        return ref, str(convert_embedded(Path(ref.path), models_dir))
    return ref, ref.path


def convert_embedded(gguf: Path, models_dir: Path) -> Path:
    """Dequantize the embedded GGUF into an fp32 HF folder under models_dir, once, under a file lock."""
    from filelock import FileLock

    target = models_dir / f"{SMOLLM2}-fp32"
    if (target / ".complete").exists():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(models_dir / f"{SMOLLM2}.lock"), timeout=900):
        if (target / ".complete").exists():
            return target
        log.info("converting %s to an fp32 folder in %s (once; about a minute)", gguf.name, target)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tmp = models_dir / f".{SMOLLM2}-fp32.partial-{os.getpid()}"
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        clear_quantization(model)
        save_weights(model, tmp)
        tok.save_pretrained(tmp)
        (tmp / ".complete").write_text(str(time.time()))
        if target.exists():
            import shutil

            shutil.rmtree(target)
        tmp.rename(target)
    return target


def save_weights(model: Any, folder: Path) -> None:
    """Write config and weights from any rank: save_pretrained writes nothing off rank 0 (transformers 5)."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})  # tied weights stored once
    missing = [n for n in ("config.json", "model.safetensors") if not (folder / n).is_file()]
    if missing:
        raise RecipeError(f"converting the embedded model wrote no {', '.join(missing)} in {folder}; check disk space")


def clear_quantization(model: Any) -> None:
    """Drop the GGUF quantization markers transformers leaves on a dequantized model (else no train/save)."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def load_tokenizer(path: str, *, training_template: bool = True) -> Any:
    """Load the tokenizer, swapping in a weighted assistant-only training template for ChatML models."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    template = tok.chat_template or ""
    if training_template and "<|im_start|>" in template:
        tok.inference_chat_template = template
        tok.chat_template = chatml_training_template(SMOLLM2_SYSTEM if SMOLLM2_SYSTEM in template else None)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, dtype: Any) -> Any:
    """Load a causal LM for training in the given dtype."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if getattr(model, "hf_quantizer", None) is not None:
        clear_quantization(model)
    return model


def lora_config(peft: dict[str, Any] | None) -> Any:
    """Turn the job's `peft` dict into a peft.LoraConfig, or None for full fine-tuning."""
    if not peft:
        return None
    if peft.get("type", "lora") != "lora":
        raise RecipeError(f"peft type {peft.get('type')!r} is not supported: use 'lora' or null for full fine-tuning")
    from peft import LoraConfig

    return LoraConfig(
        r=int(peft.get("r", 8)),
        lora_alpha=int(peft.get("alpha", peft.get("lora_alpha", 16))),
        lora_dropout=float(peft.get("dropout", 0.0)),
        target_modules=peft.get("target_modules") or "all-linear",
        modules_to_save=peft.get("modules_to_save"),
        task_type="CAUSAL_LM",
    )


# ---------------------------------------------------------------------------------------------- callbacks
def job_callback(callbacks: RunCallbacks, out_dir: Path) -> Any:
    """Return a TrainerCallback that streams metrics and checkpoints and honours pause requests."""
    from transformers import TrainerCallback

    metrics_file = out_dir / "metrics.jsonl"

    class JobCallback(TrainerCallback):
        """Stream Trainer logs to the job (metrics.jsonl + events) and stop cleanly when paused."""

        def __init__(self) -> None:
            self.last_time = time.monotonic()
            self.last_tokens = 0.0
            self.last_loss: float | None = None
            self.pause_requested = False
            self.steps_run = 0  # optimizer steps this process ran (each rank counts its own)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.last_time = time.monotonic()
            self.last_tokens = float(state.num_input_tokens_seen or 0)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            logs = logs or {}
            if "loss" not in logs or not state.is_world_process_zero:  # one metrics stream, from rank 0
                return
            now, tokens = time.monotonic(), float(logs.get("num_tokens") or state.num_input_tokens_seen or 0)
            rate = (tokens - self.last_tokens) / max(now - self.last_time, 1e-6) if tokens else None
            self.last_time, self.last_tokens = now, tokens
            self.last_loss = float(logs["loss"])
            row = {
                "step": state.global_step,
                "total_steps": state.max_steps,
                "train_loss": self.last_loss,
                "learning_rate": logs.get("learning_rate"),
                "epoch": logs.get("epoch"),
                "tokens_per_second": round(rate, 2) if rate is not None else None,
                "num_tokens": int(tokens),
            }
            row.update({k: v for k, v in logs.items() if k.startswith(("rewards/", "mean_token_accuracy"))})
            with metrics_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            callbacks.metrics(row)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.steps_run += 1
            if any_rank(callbacks.should_pause(), args):
                self.pause_requested = True
                control.should_save = True
                control.should_training_stop = True

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if not state.is_world_process_zero:
                return
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            callbacks.checkpoint(
                state.global_step, str(path), {"step": state.global_step, "train_loss": self.last_loss}
            )

    return JobCallback()


def any_rank(flag: bool, args: Any) -> bool:
    """Return True on every rank when any rank's flag is set, so all ranks stop at the same step (else DDP hangs)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return flag
    import torch

    device = args.device if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def world_size() -> int:
    """Return how many data-parallel processes train together (torchrun and Ray Train set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def training_args(cls: type, out_dir: Path, device: dict[str, Any], cfg: Any, *, peft: bool, **extra: Any) -> Any:
    """Build an SFTConfig/DPOConfig with the settings every recipe shares (CPU-safe, checkpoints, logging)."""
    # 0 = auto: a resume point every 50 LoRA steps (small) or 200 full steps (a full copy each), newest 3 kept.
    save_steps = int(cfg.save_steps or 0) or (50 if peft else 200)
    return cls(
        output_dir=str(out_dir / "checkpoints"),
        max_steps=int(cfg.max_steps or -1),
        num_train_epochs=float(cfg.n_epochs),
        # OpenAI's batch_size is the global batch: split over the data-parallel processes
        per_device_train_batch_size=cfg.split_batch(world_size())[0],
        gradient_accumulation_steps=cfg.split_batch(world_size())[1],
        learning_rate=float(cfg.learning_rate),
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=int(cfg.warmup_steps),
        logging_steps=1,
        save_strategy="steps" if save_steps > 0 else "no",
        save_steps=max(save_steps, 1),
        save_total_limit=cfg.save_total_limit or (None if cfg.save_steps else 3),
        seed=int(cfg.seed),
        data_seed=int(cfg.seed),
        use_cpu=device["use_cpu"],
        bf16=device["bf16"],
        fp16=device["fp16"],
        gradient_checkpointing=False,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        max_length=int(cfg.max_length),
        include_num_input_tokens_seen="non_padding",
        **extra,
    )


def last_checkpoint(out_dir: Path) -> str | None:
    """Return the newest complete checkpoint folder under out_dir/checkpoints, if any."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = out_dir / "checkpoints"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def train_resuming(trainer: Any, out_dir: Path, callbacks: RunCallbacks) -> None:
    """Train, continuing from the newest checkpoint a lost or paused attempt left behind."""
    resume = last_checkpoint(out_dir)
    if resume:
        callbacks.event(f"resuming from {Path(resume).name}")
    trainer.train(resume_from_checkpoint=resume)


def finish(trainer: Any, tok: Any, cb: Any, cfg: TrainingOptions, out_dir: Path, *, peft: bool) -> RunResult:
    """Save the trained weights (unless paused) and summarise the run."""
    state = trainer.state
    tokens = int(state.num_input_tokens_seen or 0)  # summed over the data-parallel processes
    if cb.pause_requested or not trainer.is_world_process_zero():  # only rank 0 saves the weights
        return RunResult(
            model_path="",
            trained_tokens=tokens,
            steps=state.global_step,
            final_loss=cb.last_loss,
            paused=cb.pause_requested,
            extra={"steps_run": cb.steps_run},
        )
    model_path, merged = save_outputs(trainer, tok, out_dir, merge=cfg.merge, peft=peft)
    return RunResult(
        model_path=model_path,
        merged_path=merged,
        trained_tokens=tokens,
        steps=state.global_step,
        final_loss=cb.last_loss,
        extra={"steps_run": cb.steps_run},
    )


def save_outputs(trainer: Any, tok: Any, out_dir: Path, *, merge: bool, peft: bool) -> tuple[str, str | None]:
    """Save the adapter (or full weights) and, when asked, a merged model; return their paths."""
    target = out_dir / ("adapter" if peft else "model")
    tok.chat_template = getattr(tok, "inference_chat_template", tok.chat_template)
    trainer.model.save_pretrained(str(target))
    tok.save_pretrained(str(target))
    merged = None
    if merge and peft:
        merged_dir = out_dir / "merged"
        trainer.model.merge_and_unload().save_pretrained(str(merged_dir))
        tok.save_pretrained(str(merged_dir))
        merged = str(merged_dir)
    return str(target), merged
