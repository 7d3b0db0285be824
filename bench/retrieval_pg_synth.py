"""Synthetic chunks for the PostgreSQL scale bench: real analysed text, vectors made from real vectors.

Text: each synthetic chunk repeats one real chunk (chunked and Kiwi/Snowball-analysed by the real ingest path),
so lexical statistics are those of the corpora replicated N / templates times. Vectors: random-projected copies
of real e5-small vectors plus noise, v = normalise(Q_g b_j + NOISE * n / sqrt(d)) with Q_g one of `groups` random
orthogonal matrices, b_j a real vector and n Gaussian noise; queries are real query vectors under a random Q_g, so
each lands in a region shaped like the real embedding space. Ten chunks per synthetic document; each document has
metadata {tenant: t00..t99, lang: ko|en (its first chunk's language), year}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from ragtune.servers.retrieval.stores.base import NewChunk
from ragtune.servers.retrieval.stores.postgres import lexical_stats

NOISE = 0.3  # norm of the noise relative to the unit base vector (cosine to its base about 0.96)
CHUNKS_PER_DOC = 10
ROWS_PER_GROUP = 5_000  # one orthogonal projection per this many chunks


@dataclass(frozen=True)
class Template:
    """One real analysed chunk, with what PostgreSQL stores for it precomputed."""

    chunk: NewChunk
    lang: str
    terms: list[str]
    tf_json: str
    n_tokens: int


def make_template(text: str, heading_path: list[str], start: int, end: int, head: str, body: str) -> Template:
    """Precompute a template's term statistics the way stores/postgres.py computes them on write."""
    tf, n = lexical_stats(head, body)
    lang = "ko" if any("\uac00" <= ch <= "\ud7a3" for ch in text) else "en"
    chunk = NewChunk(0, text, list(heading_path), start, end, head, body)
    return Template(chunk, lang, sorted(tf), json.dumps(tf, ensure_ascii=False), n)


class Synth:
    """Deterministic synthetic corpus of `size` chunks over real templates and real base vectors."""

    def __init__(self, templates: list[Template], base: np.ndarray, size: int, seed: int) -> None:
        self.templates, self.size, self.seed = templates, size, seed
        self.base = (base / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.float32)
        self.dim = base.shape[1]
        self.groups = max(1, size // ROWS_PER_GROUP)
        rng = np.random.default_rng([seed, 1])
        self.projections = np.stack(
            [np.linalg.qr(rng.standard_normal((self.dim, self.dim)))[0] for _ in range(self.groups)]
        ).astype(np.float32)
        self.template_of = np.random.default_rng([seed, 2]).integers(len(templates), size=size)

    @property
    def docs(self) -> int:
        """Number of synthetic documents."""
        return (self.size + CHUNKS_PER_DOC - 1) // CHUNKS_PER_DOC

    def vectors(self, start: int, n: int) -> np.ndarray:
        """Vectors of chunks start..start+n (chunk i is the same in every call and every size)."""
        out = np.empty((n, self.dim), np.float32)
        for block in range(start // 10_000, (start + n - 1) // 10_000 + 1):
            lo, hi = max(start, block * 10_000), min(start + n, (block + 1) * 10_000)
            rng = np.random.default_rng([self.seed, 3, block])
            group = rng.integers(self.groups, size=10_000)
            which = rng.integers(len(self.base), size=10_000)
            noise = rng.standard_normal((10_000, self.dim), dtype=np.float32) * (NOISE / np.sqrt(self.dim))
            sel = slice(lo - block * 10_000, hi - block * 10_000)
            g, b, z = group[sel], which[sel], noise[sel]
            part = np.empty((hi - lo, self.dim), np.float32)
            for k in np.unique(g):
                rows = g == k
                part[rows] = self.base[b[rows]] @ self.projections[k].T
            part += z
            part /= np.linalg.norm(part, axis=1, keepdims=True)
            out[lo - start : hi - start] = part
        return out

    def queries(self, real: np.ndarray) -> np.ndarray:
        """Real query vectors, each under a random projection of the corpus's."""
        rng = np.random.default_rng([self.seed, 4])
        group = rng.integers(self.groups, size=len(real))
        out = np.stack([self.projections[g] @ q for g, q in zip(group, real, strict=True)])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    def doc_meta(self, doc: int) -> dict[str, Any]:
        """Metadata of synthetic document `doc` (the filters of the bench select on tenant and lang)."""
        first = self.templates[int(self.template_of[min(doc * CHUNKS_PER_DOC, self.size - 1)])]
        return {"tenant": f"t{doc % 100:02d}", "lang": first.lang, "year": 2000 + doc % 25}

    def doc_chunks(self, doc: int) -> range:
        """Chunk indexes of document `doc`."""
        return range(doc * CHUNKS_PER_DOC, min(self.size, (doc + 1) * CHUNKS_PER_DOC))

    def chunk(self, i: int) -> Template:
        """Template of chunk i."""
        return self.templates[int(self.template_of[i])]
