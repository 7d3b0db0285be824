"""Ranking metrics (pytrec_eval conventions: linear gains) and small timing helpers."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains, as pytrec_eval computes it."""
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 100) -> float:
    """Share of the relevant docs found in the top k."""
    hits = {d for d in ranked[:k] if relevant.get(d, 0) > 0}
    total = sum(1 for g in relevant.values() if g > 0)
    return len(hits) / total if total else 0.0


def evaluate(runs: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Mean nDCG@10 and Recall@100 over the queries of `qrels`."""
    qids = list(qrels)
    return {
        "ndcg@10": statistics.fmean(ndcg_at(runs.get(q, []), qrels[q]) for q in qids),
        "recall@100": statistics.fmean(recall_at(runs.get(q, []), qrels[q]) for q in qids),
    }


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p50, p95) of a list of timings."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))]
