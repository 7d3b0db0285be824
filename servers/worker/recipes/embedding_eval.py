"""Retrieval evaluation of a tuned embedder against its base: nDCG@10 and Recall@100 on held-out queries.

Pure numpy arithmetic (the embedders are passed in), so every figure an `embedding` job reports can be checked by
hand. The corpus is every distinct positive and negative text of the job's file (plus a collection's chunks when
the job names one); a held-out query's relevant document is its own positive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NDCG_TOLERANCE = 0.01  # absolute: nDCG@10 must move more than this to count as better or worse
RECALL_TOLERANCE = 0.02
PRIMARY = ("ndcg@10", "recall@100")
TOLERANCE = {"ndcg@10": NDCG_TOLERANCE, "recall@100": RECALL_TOLERANCE}
MIN_QUERIES = 5  # fewer held-out queries than this: the verdict stays inconclusive
SAMPLES = 3


def text_key(text: str) -> str:
    """Whitespace-normalised text: two copies of one passage are one document."""
    return " ".join(text.split())


@dataclass
class RetrievalSet:
    """Held-out queries, the corpus they are ranked against, and each query's relevant document."""

    queries: list[str]
    corpus: list[str]
    relevant: list[int]  # index into corpus, one per query
    extra: int = 0  # corpus texts that came from a collection rather than the file
    keys: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(
        cls, held_out: Sequence[Mapping[str, Any]], others: Sequence[Mapping[str, Any]], chunks: Sequence[str] = ()
    ) -> RetrievalSet:
        """Corpus = every distinct positive/negative of held-out and training records, then collection chunks."""
        out = cls([], [], [])
        for rec in [*held_out, *others]:
            for key in ("positive", "negative"):
                if rec.get(key):
                    out.add(rec[key])
        before = len(out.corpus)
        for chunk in chunks:
            out.add(chunk)
        out.extra = len(out.corpus) - before
        for rec in held_out:
            out.queries.append(rec["query"])
            out.relevant.append(out.keys[text_key(rec["positive"])])
        return out

    def add(self, text: str) -> int:
        """Add a document once (by normalised text); return its index."""
        key = text_key(text)
        if key not in self.keys:
            self.keys[key] = len(self.corpus)
            self.corpus.append(text)
        return self.keys[key]


@dataclass
class Ranking:
    """One embedder's rankings of the held-out queries and the per-query scores."""

    ndcg: list[float]
    recall: list[float]
    top: list[int]  # the first-ranked document per query

    def metrics(self) -> dict[str, float]:
        """Mean nDCG@10 and Recall@100 over the queries."""
        return {"ndcg@10": float(np.mean(self.ndcg)), "recall@100": float(np.mean(self.recall))}


def ndcg_at_10(rank: int | None) -> float:
    """nDCG@10 of one query with a single relevant document at 0-based `rank` (None: not retrieved)."""
    return 1.0 / math.log2(rank + 2) if rank is not None and rank < 10 else 0.0


def rank(
    data: RetrievalSet,
    embed_queries: Callable[[Sequence[str]], np.ndarray],
    embed_passages: Callable[[Sequence[str]], np.ndarray],
) -> Ranking:
    """Rank the whole corpus for each held-out query by cosine similarity (exact, like the vector cache)."""
    docs = embed_passages(data.corpus)
    queries = embed_queries(data.queries)
    scores = queries @ docs.T
    ndcg, recall, top = [], [], []
    for row, relevant in zip(scores, data.relevant, strict=True):
        order = np.argsort(-row, kind="stable")
        position = int(np.flatnonzero(order == relevant)[0])
        ndcg.append(ndcg_at_10(position))
        recall.append(float(position < 100))
        top.append(int(order[0]))
    return Ranking(ndcg, recall, top)


def outcome(metric: str, base: float, tuned: float) -> str:
    """better / worse / same by the metric's absolute tolerance."""
    gap = TOLERANCE.get(metric, NDCG_TOLERANCE)
    return "better" if tuned - base > gap else "worse" if base - tuned > gap else "same"


def report(
    data: RetrievalSet, base: Ranking, tuned: Ranking, source: dict[str, Any], *, seconds: float | None = None
) -> dict[str, Any]:
    """The Evals-style comparison the chat recipes report, for retrieval (rows, counts, verdict, samples)."""
    b, t = base.metrics(), tuned.metrics()
    rows = [
        {
            "testing_criteria": name,
            "base": round(b[name], 6),
            "tuned": round(t[name], 6),
            "delta": round(t[name] - b[name], 6),
            "higher_is_better": True,
            "outcome": outcome(name, b[name], t[name]),
        }
        for name in PRIMARY
    ]
    passed = sum(x > y for x, y in zip(tuned.ndcg, base.ndcg, strict=True))
    failed = sum(x < y for x, y in zip(tuned.ndcg, base.ndcg, strict=True))
    samples = [
        {
            "prompt": q,
            "reference": data.corpus[r],
            "base": data.corpus[base.top[i]],
            "tuned": data.corpus[tuned.top[i]],
        }
        for i, (q, r) in enumerate(zip(data.queries, data.relevant, strict=True))
        if base.top[i] != tuned.top[i]
    ][:SAMPLES]
    out: dict[str, Any] = {
        "status": "completed",
        "reason": None,
        "data_source": {**source, "corpus": len(data.corpus), "collection_chunks": data.extra},
        "examples": len(data.queries),
        "per_testing_criteria_results": rows,
        "result_counts": {"total": len(data.queries), "passed": passed, "failed": failed, "errored": 0},
        "verdict": verdict(rows, len(data.queries)),
        "samples": samples,
    }
    if seconds is not None:
        out["seconds"] = round(seconds, 2)
    return out


def verdict(rows: list[dict[str, Any]], queries: int) -> str:
    """'worse' if a metric regressed, 'better' if nDCG@10 improved and nothing regressed, else 'inconclusive'."""
    if queries < MIN_QUERIES:
        return "inconclusive"
    outcomes = {r["testing_criteria"]: r["outcome"] for r in rows}
    if "worse" in outcomes.values():
        return "worse"
    return "better" if outcomes.get("ndcg@10") == "better" else "inconclusive"


def manifest_metrics(ev: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """{base: {ndcg@10, recall@100}, tuned: {...}} from a completed report (empty when it did not run)."""
    rows = {r["testing_criteria"]: r for r in ev.get("per_testing_criteria_results", [])}
    if not rows:
        return {}
    return {side: {name: rows[name][side] for name in PRIMARY if name in rows} for side in ("base", "tuned")}
