"""Hostile-input limits (issue #12): a query at the length limit, one far over it, and what a long query
costs searches running beside it. Lexical only (no embedder), one thread.

    OMP_NUM_THREADS=1 .venv/bin/python bench/limits.py --docs 3000

Prints JSON: seconds per search, the worst wait of short searches while long ones run, refusal time.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from ragtune.servers.retrieval.errors import BadQuery
from ragtune.servers.retrieval.index import Index
from ragtune.servers.retrieval.search import search

from ragtune.config import RetrievalSettings

REPO = Path(__file__).resolve().parents[1]


def build(home: Path, n_docs: int, vocab: list[str]) -> Index:
    """Index `n_docs` synthetic English documents of three paragraphs each, lexical only."""
    settings = RetrievalSettings(home=home, retrieval_roots=[home], embedder="none")
    index = Index.open(settings, None)
    rng = random.Random(0)
    for n in range(n_docs):
        paragraphs = [" ".join(rng.choices(vocab, k=60)) + "." for _ in range(3)]
        index.ingest_text("\n\n".join(paragraphs), source=f"doc-{n}", title=f"doc {n}")
    return index


def timed(fn: object, *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    """Measure and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=3000, help="synthetic documents to index")
    args = parser.parse_args()
    text = (REPO / "docs" / "guide" / "overview.md").read_text(encoding="utf-8")
    vocab = sorted({w.strip(".,:;()`*|") for w in text.split() if w.isascii() and w.strip(".,:;()`*|").isalpha()})
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        index = build(Path(tmp), args.docs, vocab)
        ingest_s = time.perf_counter() - start
        limit = index.config.max_query_chars
        long_query = " ".join(rng.choices(vocab, k=limit))[:limit]
        long_s = [timed(index.search, long_query, mode="lexical") for _ in range(5)]
        short_s = [timed(index.search, "retrieval server", mode="lexical") for _ in range(20)]
        waits: list[float] = []
        worker = threading.Thread(target=lambda: [search(index, long_query, mode="lexical") for _ in range(10)])
        worker.start()
        while worker.is_alive():
            waits.append(timed(index.search, "retrieval server", mode="lexical"))
        worker.join()
        start = time.perf_counter()
        try:
            search(index, "x " * 500_000)
        except BadQuery:
            refused_s = time.perf_counter() - start
        index.close()
    print(
        json.dumps(
            {
                "docs": args.docs,
                "ingest_s": round(ingest_s, 1),
                "query_limit_chars": limit,
                "long_query_median_s": round(statistics.median(long_s), 4),
                "short_query_median_s": round(statistics.median(short_s), 4),
                "short_query_worst_while_long_runs_s": round(max(waits), 4),
                "one_mb_query_refused_in_s": round(refused_s, 6),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
