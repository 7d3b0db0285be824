"""What every recipe shares without importing torch: the callbacks protocol, the result, option parsing."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ragtune.jobs import EventLevel


class RecipeError(ValueError):
    """A job's data or options cannot be trained as asked; the message tells the user what to change."""


class RunCallbacks(Protocol):
    """How a recipe reports progress to whoever runs it (the job store in the worker, a list in tests)."""

    def event(self, message: str, *, level: EventLevel = "info", data: dict[str, Any] | None = None) -> None:
        """Record a human-readable message."""

    def metrics(self, data: dict[str, Any]) -> None:
        """Record one metrics row (step, train_loss, learning_rate, tokens_per_second, epoch, total_steps)."""

    def checkpoint(self, step: int, path: str, metrics: dict[str, Any]) -> None:
        """Record a saved checkpoint the job can resume from."""

    def should_pause(self) -> bool:
        """Return True when training should save a checkpoint and stop (the job was paused)."""


@dataclass
class RunResult:
    """What a finished recipe produced: the trained weights, where they are, how much it trained."""

    model_path: str
    trained_tokens: int
    steps: int
    final_loss: float | None
    paused: bool = False
    merged_path: str | None = None
    result_files: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dict."""
        return dataclasses.asdict(self)


def job_options(job: dict[str, Any]) -> dict[str, Any]:
    """Flatten a job's method options, method hyperparameters and resolved hyperparameters (later wins)."""
    method = job.get("method") or {}
    kind = method.get("type", "supervised")
    section = method.get(kind) or {}
    merged: dict[str, Any] = {k: v for k, v in section.items() if k != "hyperparameters"}
    merged.update(section.get("hyperparameters") or {})
    merged.update(job.get("hyperparameters") or {})
    return {k: v for k, v in merged.items() if v != "auto" and v is not None}


def config_from(cls: type, options: dict[str, Any], **fixed: Any) -> Any:
    """Build a recipe config dataclass from options, coercing types and ignoring unknown keys."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in fixed:
            values[f.name] = fixed[f.name]
        elif f.name in options:
            values[f.name] = _coerce(f.name, options[f.name], f.type)
    return cls(**values)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    kind = str(annotation)
    try:
        if kind.startswith("int") and not isinstance(value, bool):
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("bool") and isinstance(value, str):
            return value.strip().lower() in {"1", "true", "yes", "on"}
    except (TypeError, ValueError) as e:
        raise RecipeError(f"option {name}={value!r} must be a {kind}") from e
    return value


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically so a reader never sees half a file."""
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")  # data-parallel ranks may write the same file
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


@dataclass
class TrainJob:
    """Everything a recipe needs: the job (as a dict), its canonical records and the base model's folder."""

    job: dict[str, Any]
    records: list[dict[str, Any]]
    model_name: str
    model_path: str
    threads: int = 0
    validation_records: list[dict[str, Any]] = field(default_factory=list)
    eval_source: dict[str, Any] = field(default_factory=dict)  # where validation_records came from (evaluation)

    @property
    def options(self) -> dict[str, Any]:
        """Return the job's flattened options (see job_options)."""
        return job_options(self.job)

    @property
    def peft(self) -> dict[str, Any] | None:
        """Return the job's LoRA settings, or None for full fine-tuning."""
        return self.job.get("peft")


@dataclass
class TrainingOptions:
    """Optimizer and schedule options every recipe shares (OpenAI hyperparameters plus ragtune's)."""

    learning_rate: float = 2e-4
    n_epochs: float = 1.0
    batch_size: int = 4
    max_steps: int = 0
    max_length: int = 512
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    save_steps: int = 0  # 0 = auto (see common.training_args); negative = never checkpoint except on pause
    save_total_limit: int = 0
    seed: int = 0
    merge: bool = False

    @property
    def per_device_batch_size(self) -> int:
        """Return the micro-batch size (at most 8 per step; the rest is gradient accumulation)."""
        return self.split_batch(1)[0]

    @property
    def gradient_accumulation_steps(self) -> int:
        """Return how many micro-batches make one optimizer step of `batch_size` examples."""
        return self.split_batch(1)[1]

    def split_batch(self, world_size: int) -> tuple[int, int]:
        """Return (micro-batch, accumulation) so micro x accumulation x world_size ~ batch_size (micro <= 8)."""
        world = max(1, int(world_size))
        micro = max(1, min(-(-int(self.batch_size) // world), 8))
        return micro, max(1, -(-int(self.batch_size) // (micro * world)))


def resolve_learning_rate(options: dict[str, Any], base: float) -> dict[str, Any]:
    """Return options with `learning_rate` set: explicit, or the recipe's base times the multiplier."""
    if "learning_rate" in options:
        return options
    mult = float(options.get("learning_rate_multiplier", 1.0))
    return {**options, "learning_rate": base * mult}


def require_format(records: list[dict[str, Any]], key: str, method: str, hint: str) -> None:
    """Raise RecipeError unless every record has `key` (the canonical shape this method trains on)."""
    if not records:
        raise RecipeError(f"the training file has no records: {method} needs at least one ({hint})")
    bad = next((i for i, r in enumerate(records, 1) if key not in r), None)
    if bad is not None:
        raise RecipeError(f"record {bad} has no {key!r}: method {method} trains on {hint}")
