"""HNSW build parameters on PostgreSQL: recall@10 vs exact, per-query misses and build time by (m, ef_construction).

Sets stores/postgres.py's HNSW_M and HNSW_EF_CONSTRUCTION. Vectors are the 1M scale bench's synthetic recipe
(bench/retrieval_pg_synth.py: random-projected copies of real e5-small passage vectors plus noise), queries real
ko-welfare train queries under the same projections; exact top-10 by numpy over the same float32 vectors. Each build
goes into one bare table (no store around it), so the figures are pgvector's alone. The per-query histogram tells a
graph that strands queries (some find 0 of 10 at every ef_search) from one that only needs a wider search.

    OMP_NUM_THREADS=1 .venv/bin/python bench/pg_hnsw_build.py --size 200000 --builds 16,64 16,128 24,128
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402 - the path above must come first
import psycopg  # noqa: E402
from pgvector.psycopg import register_vector  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.retrieval_data import data_dir, load_ko_welfare, load_scifact  # noqa: E402
from bench.retrieval_metrics import percentile  # noqa: E402
from bench.retrieval_pg_scale import _exact_top  # noqa: E402
from bench.retrieval_pg_server import fresh_database, postgres_server  # noqa: E402
from bench.retrieval_pg_synth import Synth  # noqa: E402

BATCH = 20_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Defaults finish in ~6 minutes on a 2-core box."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=200_000, help="synthetic vectors to index")
    p.add_argument("--builds", nargs="+", default=["16,64", "16,128"], help="m,ef_construction pairs to build")
    p.add_argument("--ef-search", type=int, nargs="+", default=[100, 400], help="hnsw.ef_search values to query at")
    p.add_argument("--queries", type=int, default=100, help="ko-welfare train queries to search with")
    p.add_argument("--base", type=int, default=1000, help="real passage vectors the synthetic ones are made from")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--data", help="folder holding ko-welfare/ and scifact/ (default <repo>/../shared/data)")
    p.add_argument("--database-url", help="PostgreSQL server (a scratch database is made, dropped; default embedded)")
    p.add_argument("--workdir", help="folder for the embedded server's data (default the system temp folder)")
    p.add_argument("--maintenance-mem", default="3GB", help="maintenance_work_mem for the builds")
    return p.parse_args(argv)


def real_vectors(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """(query vectors, base passage vectors) from e5-small: half ko-welfare, half SciFact passages."""
    from ragtune.config import RetrievalSettings
    from ragtune.embeddings import make_embedder

    root = data_dir(args.data)
    ko, sf = load_ko_welfare(root), load_scifact(root)
    embedder = make_embedder(RetrievalSettings(embed_threads=2))
    assert embedder is not None
    queries = np.asarray(embedder.embed_queries(list(ko.queries.values())[: args.queries]), np.float32)
    half = args.base // 2
    texts = [*list(ko.corpus.values())[-half:], *list(sf.corpus.values())[-(args.base - half) :]]
    base = np.concatenate(
        [np.asarray(embedder.embed_passages(texts[i : i + 32]), np.float32) for i in range(0, len(texts), 32)]
    )
    return queries, base


def load(conn: psycopg.Connection, synth: Synth) -> float:
    """COPY the synthetic vectors into table `v`; return seconds."""
    conn.execute("create extension if not exists vector")
    register_vector(conn)
    conn.execute(f"create table v(id int8, embedding vector({synth.dim}))")
    start = time.perf_counter()
    with conn.cursor() as cur, cur.copy("copy v(id, embedding) from stdin with (format binary)") as copy:
        copy.set_types(["int8", "vector"])
        for lo in range(0, synth.size, BATCH):
            for j, vec in enumerate(synth.vectors(lo, min(BATCH, synth.size - lo))):
                copy.write_row((lo + j + 1, vec))
    return time.perf_counter() - start


def measure(conn: psycopg.Connection, qvecs: np.ndarray, exact: np.ndarray, ef: int) -> dict[str, object]:
    """recall@10, latency and the histogram of hits per query (0..10) at one ef_search."""
    hits, ms = [], []
    for q, truth in zip(qvecs, exact, strict=True):
        start = time.perf_counter()
        with conn.transaction():
            conn.execute(f"set local hnsw.ef_search = {int(ef)}")
            got = conn.execute("select id from v order by embedding <=> %s limit 10", (q,)).fetchall()
        ms.append((time.perf_counter() - start) * 1000)
        hits.append(len({r[0] for r in got} & set(truth.tolist())))
    return {
        "recall": statistics.fmean(hits) / 10,
        "p50": percentile(ms, 50),
        "stranded": sum(h == 0 for h in hits),
        "hist": np.bincount(hits, minlength=11).tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    """Load once, then build and query each (m, ef_construction)."""
    args = parse_args(argv)
    console = Console()
    builds = [tuple(int(x) for x in b.split(",")) for b in args.builds]
    queries, base = real_vectors(args)
    synth = Synth([None], base, args.size, args.seed)  # type: ignore[list-item] - vectors only, no templates
    qvecs = synth.queries(queries)
    exact = _exact_top(synth, qvecs, console)
    table = Table(title=f"HNSW builds, {args.size:,} synthetic vectors, {len(qvecs)} queries")
    for col in ("m", "ef_construction", "build s", "index MB", "ef_search", "recall@10", "p50 ms", "queries 0/10",
                "hits per query 0..10"):  # fmt: skip
        table.add_column(col)
    with postgres_server(args.database_url, args.workdir) as (server, how), fresh_database(server, "hnsw") as url:
        console.print(how)
        with psycopg.connect(url, autocommit=True) as conn:
            console.print(f"COPY {args.size:,} vectors: {load(conn, synth):.0f} s")
            conn.execute(f"set maintenance_work_mem = '{args.maintenance_mem}'")
            conn.execute("set max_parallel_maintenance_workers = 1")
            for m, efc in builds:
                conn.execute("drop index if exists v_hnsw")
                start = time.perf_counter()
                conn.execute(
                    f"create index v_hnsw on v using hnsw (embedding vector_cosine_ops) "
                    f"with (m = {m}, ef_construction = {efc})"
                )
                built = time.perf_counter() - start
                mb = conn.execute("select pg_relation_size('v_hnsw')").fetchone()[0] / 2**20
                for ef in args.ef_search:
                    r = measure(conn, qvecs, exact, ef)
                    row = (m, efc, f"{built:.0f}", f"{mb:.0f}", ef, f"{r['recall']:.3f}", f"{r['p50']:.1f}",
                           r["stranded"], " ".join(map(str, r["hist"])))  # fmt: skip
                    table.add_row(*map(str, row))
                    console.print(" | ".join(map(str, row)))
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
