"""Helpers every engine shares: batching and L2 normalisation to the protocol's float32 contract."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Return float32 rows of unit length, so a dot product is the cosine."""
    out = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def batches(texts: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    """Yield consecutive slices of at most `size` texts."""
    for start in range(0, len(texts), max(1, size)):
        yield texts[start : start + size]


def embed_in_batches(
    texts: Sequence[str], size: int, dim: int, run: Callable[[Sequence[str]], np.ndarray]
) -> np.ndarray:
    """Embed `texts` batch by batch with `run` and stack the normalised rows (an empty input gives (0, dim))."""
    texts = list(texts)
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"embedders take strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
    return l2_normalise(np.concatenate([run(chunk) for chunk in batches(texts, size)], axis=0))
