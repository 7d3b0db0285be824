"""Any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, vLLM, Ollama, llama.cpp, TEI...) via the openai SDK."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ragtune.embedders.base import embed_in_batches


class EmbeddingEndpointError(RuntimeError):
    """Raised when the embeddings endpoint fails or answers with vectors of the wrong shape."""


class OpenAIEmbedder:
    """Remote embedder; the dimension is given up front or learned from the first answer."""

    languages = frozenset({"*"})

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None,
        api_key: str | None,
        dim: int | None = None,
        batch_size: int = 64,
        timeout: float = 60.0,
    ) -> None:
        self.model = model
        self.model_id = f"openai:{model}"
        self._dim = dim
        self.base_url = base_url
        self._api_key = api_key
        self.batch_size = batch_size
        self.timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """Vector size; asks the endpoint once (one short input) when it was not configured."""
        if self._dim is None:
            self._dim = int(self._call(["dimension probe"]).shape[1])
        return self._dim

    def _openai(self) -> Any:
        with self._lock:
            if self._client is None:
                from openai import OpenAI

                # Local servers (vLLM, llama.cpp) need no key, but the SDK refuses an empty one.
                self._client = OpenAI(base_url=self.base_url, api_key=self._api_key or "unused", timeout=self.timeout)
            return self._client

    def _call(self, texts: Sequence[str]) -> np.ndarray:
        from openai import OpenAIError

        try:
            reply = self._openai().embeddings.create(model=self.model, input=list(texts), encoding_format="float")
        except OpenAIError as e:
            where = self.base_url or "the OpenAI API"
            raise EmbeddingEndpointError(
                f"embeddings request to {where} for model {self.model!r} failed: {e}; "
                "check RAGTUNE_EMBED_BASE_URL / RAGTUNE_EMBED_API_KEY and the model name"
            ) from e
        rows = sorted(reply.data, key=lambda d: d.index)
        if len(rows) != len(texts):
            raise EmbeddingEndpointError(f"endpoint returned {len(rows)} vectors for {len(texts)} inputs")
        out = np.asarray([r.embedding for r in rows], dtype=np.float32)
        if self._dim is not None and out.shape[1] != self._dim:
            raise EmbeddingEndpointError(
                f"endpoint returned {out.shape[1]}-dim vectors, expected {self._dim}: "
                "fix the ':<dim>' in RAGTUNE_EMBEDDER"
            )
        self._dim = out.shape[1]
        return out

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed search queries (sent as-is: remote models apply their own conventions)."""
        return embed_in_batches(texts, self.batch_size, self._dim or 0, self._call)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Embed document chunks."""
        return embed_in_batches(texts, self.batch_size, self._dim or 0, self._call)
