"""What a job asks to run on: `x_ragtune.resources`, its data-parallel layout, and the memory check that sizes it.

Keys (all optional): `cpus`, `gpus` (a number or "auto"), `memory_gb` (host RAM), `processes` (data-parallel
processes on one machine, e.g. 2 for DDP over gloo on CPUs; defaults to `gpus` when that is 2 or more) and
`num_workers` (Ray Train workers across the cluster's nodes, each one process with at most one GPU). Under
`RAGTUNE_DISPATCH=ray` a job without a GPU count is sized by `advisor.estimate_memory` against
`RAGTUNE_RAY_GPU_MEMORY_GB`, and one that cannot fit on the GPUs it asked for is refused at creation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from .advisor import MemoryEstimate, estimate_memory

KEYS = ("cpus", "gpus", "memory_gb", "processes", "num_workers")
USABLE = 0.9  # share of a GPU's memory a run may plan on (the rest: fragmentation, NCCL buffers)
MAX_MICRO_BATCH = 8  # TrainingOptions.per_device_batch_size's cap
Layout = Literal["single", "torchrun", "ray_train"]


def parse_resources(value: Any) -> dict[str, float] | None:
    """Validate `x_ragtune.resources`; raise ValueError saying what to write instead."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(KEYS):
        extra = sorted(set(value) - set(KEYS)) if isinstance(value, dict) else None
        hint = " ('nodes': use num_workers, the number of Ray Train workers)" if extra and "nodes" in extra else ""
        raise ValueError(
            f"resources takes {{{', '.join(KEYS)}}}{f', not {extra}' if extra else ''}{hint}; "
            "e.g. {'gpus': 2} for data parallel over two GPUs, {'processes': 2} for two CPU processes, "
            "{'num_workers': 4, 'gpus': 1} for four Ray Train workers with a GPU each"
        )
    out: dict[str, float] = {}
    for key, raw in value.items():
        if key == "gpus" and raw == "auto":
            continue  # the same as leaving it out: the memory estimate decides (Ray) or no GPU is asked for
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0 or raw > 4096:
            raise ValueError(
                f"resources.{key} must be a number from 0 to 4096{' or auto' * (key == 'gpus')}, got {raw!r}"
            )
        out[key] = float(raw)
    for key in ("processes", "num_workers"):
        if key in out and (out[key] < 1 or out[key] != int(out[key])):
            raise ValueError(f"resources.{key} must be a whole number of at least 1, got {out[key]:g}")
    gpus = out.get("gpus", 0.0)
    if gpus > 1 and gpus != int(gpus):
        raise ValueError(f"resources.gpus above 1 must be whole (one training process per GPU), got {gpus:g}")
    if "num_workers" in out:
        if out.get("processes", 1) > 1:
            raise ValueError("resources.num_workers runs one process per Ray Train worker: drop processes")
        if gpus > 1:
            raise ValueError(
                "with resources.num_workers, gpus is per worker and Ray Train gives each worker one GPU: "
                f"use num_workers={int(out['num_workers'] * gpus)} and gpus=1 instead of gpus={gpus:g}"
            )
    elif gpus > 1 and out.get("processes", gpus) != gpus:
        raise ValueError(
            f"resources.processes ({out['processes']:g}) must equal gpus ({gpus:g}): one training process per GPU"
        )
    return out


@dataclass(frozen=True)
class Parallel:
    """How many training processes a job runs and who starts them."""

    layout: Layout
    world_size: int
    gpus_per_process: float

    @property
    def distributed(self) -> bool:
        """True when more than one process trains (DDP)."""
        return self.world_size > 1


def parallel(resources: dict[str, float] | None) -> Parallel:
    """Return the job's data-parallel layout: one process, torchrun on one machine, or Ray Train workers."""
    want = resources or {}
    gpus = want.get("gpus", 0.0)
    if "num_workers" in want:
        return Parallel("ray_train", int(want["num_workers"]), min(gpus, 1.0))
    procs = int(want.get("processes") or (gpus if gpus >= 2 else 1))
    if procs > 1:
        return Parallel("torchrun", procs, 1.0 if gpus else 0.0)
    return Parallel("single", 1, gpus)


# ------------------------------------------------------------------------------------------------ memory plan
def micro_batch(hyper: dict[str, Any], world_size: int = 1) -> int:
    """Return the per-process micro-batch a job trains with (OpenAI batch_size split over the processes, cap 8)."""
    batch = max(1, int(hyper.get("batch_size") or 1))
    return max(1, min(math.ceil(batch / max(world_size, 1)), MAX_MICRO_BATCH))


def job_estimate(
    model: str, peft: dict[str, Any] | None, hyper: dict[str, Any], method: str, world_size: int = 1
) -> MemoryEstimate:
    """Estimate one GPU's memory for a job as the recipes run it: bf16, no gradient checkpointing, its micro-batch."""
    micro = micro_batch(hyper, world_size) * (2 if method == "dpo" else 1)  # DPO: chosen + rejected in one batch
    return estimate_memory(
        model,
        method="lora" if peft else "full",
        precision="bf16",
        seq_len=int(hyper.get("max_length") or 512),
        batch=micro,
        gradient_checkpointing=False,
        lora_r=int((peft or {}).get("r", 16)),
    )


@dataclass(frozen=True)
class Plan:
    """The resources a job will ask Ray for, and the sentence that explains the choice (for the job's events)."""

    resources: dict[str, float] | None
    note: str | None


def plan_resources(
    resources: dict[str, float] | None,
    *,
    model: str,
    peft: dict[str, Any] | None,
    hyper: dict[str, Any],
    method: str,
    gpu_memory_gb: float | None,
) -> Plan:
    """Fill in the GPU count and host memory from the memory estimate; raise ValueError when the job cannot fit."""
    want = dict(resources or {})
    if want.get("gpus") == 0:
        return Plan(resources, None)  # a CPU job by request: nothing to size
    layout = parallel(want)
    try:
        est = job_estimate(model, peft, hyper, method, layout.world_size)
    except ValueError as e:  # a hub model whose size its name does not tell
        return Plan(resources, f"no GPU memory estimate ({e}); resources as asked")
    micro = micro_batch(hyper, layout.world_size) * (2 if method == "dpo" else 1)
    kind = f"{'LoRA' if peft else 'full'} bf16, max_length {hyper.get('max_length')}, micro-batch {micro}"
    head = f"memory estimate {est.total_gb:g} GB per GPU for {model} ({kind})"
    if not gpu_memory_gb:
        return Plan(resources, f"{head}; RAGTUNE_RAY_GPU_MEMORY_GB is not set, so no GPU is requested automatically")
    usable = round(gpu_memory_gb * USABLE, 2)
    if est.total_gb > usable:
        fixes = ("" if peft else "LoRA (peft), ") + "a smaller max_length or batch_size, "
        fixes += "more GPUs (each then takes a smaller micro-batch) " if micro > 1 else ""
        raise ValueError(
            f"{model} needs about {est.total_gb:g} GB per GPU ({kind}) but the cluster's GPUs have "
            f"{gpu_memory_gb:g} GB ({usable:g} GB usable, RAGTUNE_RAY_GPU_MEMORY_GB); data parallel keeps a full "
            f"copy of the model on every GPU: try {fixes}or a smaller model"
        )
    picked = "gpus" not in want
    if picked:
        want["gpus"] = 1.0
    if "memory_gb" not in want and layout.layout != "ray_train":
        # host RAM for the entrypoint: every process on the node loads the weights before moving them to its GPU
        want["memory_gb"] = float(math.ceil(est.weights_gb * layout.world_size + 4))
    how = "picked gpus=1 (no GPU count given)" if picked else f"gpus={want['gpus']:g} as asked"
    memory = f", host memory_gb={want['memory_gb']:g}" if "memory_gb" in want else ""
    return Plan(
        want, f"{head} fits a {gpu_memory_gb:g} GB GPU ({usable:g} GB usable, RAGTUNE_RAY_GPU_MEMORY_GB): {how}{memory}"
    )
