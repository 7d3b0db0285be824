"""How long a reembed's atomic switch-over holds the index, and what staging costs searches, per collection size.

Per size N: a fresh index (SQLite file, or PostgreSQL with --database-url) gets N chunks with 384-dim vectors written
through the store (synthetic unit vectors: this measures storage, not an embedder; embedding throughput is the
filler's, docs/benchmarks/retrieval.md). Then a reembed is started, N new vectors are staged through
`store.reembed_store` in batches of 256 (the time per 1,000 staged vectors), vector search p50 is timed before and
while half the vectors are staged (the live vectors keep answering), and `store.reembed_switch` is timed: the one
transaction that deletes the old vectors, moves the staged ones in and records the new embedder.

    .venv/bin/python bench/reembed_switch.py --sizes 1000 5000 20000 [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from ragtune.servers.retrieval.index import Index
from ragtune.servers.retrieval.stores.base import NewChunk, PendingChunk, ReembedRow

DIM = 384
PER_DOC = 10


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Return n random unit vectors (float32)."""
    rows = rng.normal(size=(n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def fill(index: Index, n: int, rng: np.random.Generator) -> None:
    """Write n chunks with live vectors, PER_DOC chunks per document (one transaction each)."""
    from ragtune.servers.retrieval.stores.base import CollectionRow

    index.store.create_collection(CollectionRow("bench", "old-model", DIM, ["*"], time.time()))
    for d in range(0, n, PER_DOC):
        size = min(PER_DOC, n - d)
        chunks = [NewChunk(i, f"chunk {d + i}", [], 0, 10, f"doc{d}", f"word{(d + i) % 97} chunk") for i in range(size)]
        index.store.write_document(
            f"doc{d}", "bench", f"s{d}", f"doc {d}", "h", "text", {}, chunks, list(unit_rows(rng, size))
        )


def search_p50(index: Index, rng: np.random.Generator, runs: int = 20) -> float:
    """Median milliseconds of a 10-NN vector search over the collection's live vectors."""
    where = index.store.compile_filters(None)
    times = []
    for q in unit_rows(rng, runs):
        start = time.perf_counter()
        index.store.vector_ranking(q, "bench", DIM, where, 10)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def stage(index: Index, rng: np.random.Generator, limit: int) -> tuple[int, float]:
    """Stage up to `limit` new vectors in batches of 256; return (staged, seconds)."""
    done, start = 0, time.perf_counter()
    while done < limit:
        claimed: list[PendingChunk] = index.store.reembed_claim("bench", min(256, limit - done))
        if not claimed:
            break
        index.store.reembed_store("bench", list(zip(claimed, unit_rows(rng, len(claimed)), strict=True)))
        done += len(claimed)
    return done, time.perf_counter() - start


def run(n: int, database_url: str | None) -> dict[str, float]:
    """Measure one size on a fresh index."""
    rng = np.random.default_rng(n)
    with tempfile.TemporaryDirectory() as tmp:
        index = Index.open(Path(tmp) / "bench.db", None, database_url=database_url)
        try:
            if database_url:
                index.delete_collection("bench") if index.store.get_collection("bench") else None
            fill(index, n, rng)
            idle = search_p50(index, rng)
            now = time.time()
            index.store.reembed_begin(
                ReembedRow("bench", "new", "old-model", DIM, "new-model", DIM, ["*"], "running", None, now, now)
            )
            half, t_half = stage(index, rng, n // 2)
            during = search_p50(index, rng)
            rest, t_rest = stage(index, rng, n)
            start = time.perf_counter()
            switched = index.store.reembed_switch("bench")
            switch_ms = (time.perf_counter() - start) * 1000
            assert switched and index.store.get_collection("bench").embedder_model == "new-model"  # type: ignore[union-attr]
            after = search_p50(index, rng)
            if database_url:
                index.delete_collection("bench")
        finally:
            index.close()
    return {
        "n": n,
        "stage_s_per_1k": (t_half + t_rest) / max(half + rest, 1) * 1000,
        "search_idle_ms": idle,
        "search_during_ms": during,
        "switch_ms": switch_ms,
        "search_after_ms": after,
    }


def main() -> None:
    """Print one row per size."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--database-url", help="PostgreSQL URL instead of a temporary SQLite file")
    args = parser.parse_args()
    backend = "postgres" if args.database_url else "sqlite"
    print(f"backend {backend}, dim {DIM}")
    print("| chunks | stage s / 1k vectors | search p50 idle ms | during staging ms | switch ms | after ms |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        r = run(n, args.database_url)
        print(
            f"| {n:,} | {r['stage_s_per_1k']:.2f} | {r['search_idle_ms']:.1f} | {r['search_during_ms']:.1f} | "
            f"{r['switch_ms']:.0f} | {r['search_after_ms']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
