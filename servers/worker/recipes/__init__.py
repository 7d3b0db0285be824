"""The training recipes a job's `method.type` names: where a job actually gets trained.

Each module holds a config dataclass and `run(job, out_dir, callbacks) -> RunResult`; torch, transformers,
trl and peft are imported only inside those functions, so this registry is cheap to import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import cpt, dpo, embedding, rejection, sft
from .base import RecipeError, RunCallbacks, RunResult, TrainJob


@dataclass(frozen=True)
class Recipe:
    """A registered recipe: what data it trains on and the function that trains it."""

    name: str
    data_format: str  # canonical record format from ragtune.datasets: chat | text | preference | pairs
    config: type
    run: Callable[[TrainJob, Path, RunCallbacks], RunResult]
    description: str
    # (base name, models dir) -> (canonical name, path) when the base is not a causal LM (embedding: e5-small)
    resolve_model: Callable[[str | None, Path], tuple[str, str]] | None = None


RECIPES: dict[str, Recipe] = {
    "supervised": Recipe(
        "supervised",
        "chat",
        sft.SFTJobConfig,
        sft.run,
        "instruction tuning on chat records, loss on assistant turns only; LoRA or full",
    ),
    "cpt": Recipe(
        "cpt",
        "text",
        cpt.CPTJobConfig,
        cpt.run,
        "continued pretraining on raw text with packing; full or LoRA",
    ),
    "dpo": Recipe(
        "dpo",
        "preference",
        dpo.DPOJobConfig,
        dpo.run,
        "direct preference optimisation on chosen/rejected pairs with LoRA",
    ),
    "rejection_sampling": Recipe(
        "rejection_sampling",
        "chat",
        rejection.RejectionJobConfig,
        rejection.run,
        "sample N answers per prompt, keep the best by a reward, then SFT on them",
    ),
    "embedding": Recipe(
        "embedding",
        "pairs",
        embedding.EmbeddingJobConfig,
        embedding.run,
        "tune the e5-small retriever on query/positive(/negative) pairs; exports an embedder ft:e5-small:...",
        embedding.resolve_model,
    ),
}


def get_recipe(method_type: str) -> Recipe:
    """Return the recipe for a job's method type, or raise RecipeError listing the known ones."""
    try:
        return RECIPES[method_type]
    except KeyError:
        raise RecipeError(f"unknown method type {method_type!r}; use one of {', '.join(RECIPES)}") from None


__all__ = ["RECIPES", "Recipe", "RecipeError", "RunCallbacks", "RunResult", "TrainJob", "get_recipe"]
