"""Weighted reciprocal-rank fusion: ranks, not scores, so bm25 and cosine need no calibration."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

# Tuned on SciFact train queries (full corpus) and ko-welfare: k=10 beat the textbook 60 on both
# (docs/benchmarks/retrieval.md, section 2).
RRF_K = 10

Id = TypeVar("Id", bound=Hashable)


def rrf(rankings: Sequence[Sequence[Id]], weights: Sequence[float], k: int = RRF_K) -> list[tuple[Id, float]]:
    """Fuse best-first id lists: score(id) = sum of weight / (k + rank); return (id, score) best first."""
    scores: dict[Id, float] = {}
    first_seen: dict[Id, tuple[int, int]] = {}
    for which, (ranking, weight) in enumerate(zip(rankings, weights, strict=True)):
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
            first_seen.setdefault(item, (rank, which))
    return sorted(scores.items(), key=lambda kv: (-kv[1], first_seen[kv[0]]))
