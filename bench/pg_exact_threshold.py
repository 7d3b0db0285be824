"""Where exact KNN stops paying on PostgreSQL: exact scan vs HNSW latency and recall@10 by collection size.

Sets stores/postgres.py's EXACT_BELOW and EF_SEARCH. Clustered synthetic unit vectors (384 dims, e5-small's width:
2,000 random centres plus noise, as real embeddings cluster by topic; pure Gaussian noise is HNSW's worst case and no
embedder's output), queries near stored points, in the store's own vec_384 table, one collection; HNSW with pgvector's
defaults (m=16, ef_construction=64). Queries are the store's SQL, timed from Python (one client).

    .venv/bin/python bench/pg_exact_threshold.py --url postgresql://... [--sizes 5000 20000 50000]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import numpy as np
import psycopg

from ragtune import pg

DIM = 384


def main() -> None:
    """Load each size into a fresh database, then time exact and HNSW top-10 on the same queries."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="a PostgreSQL server (a database per size is created, dropped)")
    p.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000, 50_000])
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--ef", type=int, nargs="+", default=[40, 100], help="hnsw.ef_search values to compare")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    print(
        f"| vectors | ef_search | exact p50 ms | exact p95 ms | HNSW p50 ms | HNSW p95 ms | recall@{args.k} | build s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    centres = rng.standard_normal((2_000, DIM)).astype(np.float32)
    for n in args.sizes:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f'create database "{name}"')
        base, _, query = args.url.partition("?")
        url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
        try:
            conn = pg.connect(url)
            conn.execute(
                f"create table vec_{DIM} (chunk_id bigint primary key, collection text, embedding vector({DIM}))"
            )
            data = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
            data /= np.linalg.norm(data, axis=1, keepdims=True)
            with conn.cursor() as cur, cur.copy(f"copy vec_{DIM} from stdin with (format binary)") as copy:
                copy.set_types(["int8", "text", "vector"])
                for i, v in enumerate(data):
                    copy.write_row((i + 1, "c", v))
            start = time.perf_counter()
            conn.execute(f"create index on vec_{DIM} using hnsw (embedding vector_cosine_ops)")
            build = time.perf_counter() - start
            conn.execute("vacuum analyze")
            queries = data[rng.integers(0, n, args.queries)] + 0.3 * rng.standard_normal((args.queries, DIM))
            queries = queries.astype(np.float32)
            exact_ms, truths = [], []
            for q in queries:
                start = time.perf_counter()
                truths.append(
                    conn.execute(
                        f"select chunk_id from vec_{DIM} where collection = 'c' order by (embedding <=> %s) + 0, "
                        "chunk_id limit %s",
                        (q, args.k),
                    ).fetchall()
                )
                exact_ms.append(1000 * (time.perf_counter() - start))
            for ef in args.ef:
                hnsw_ms, recall = [], []
                for q, truth in zip(queries, truths, strict=True):
                    start = time.perf_counter()
                    with conn.transaction():
                        conn.execute("set local hnsw.iterative_scan = relaxed_order")
                        conn.execute(f"set local hnsw.ef_search = {int(ef)}")
                        conn.execute("set local enable_seqscan = off")
                        got = conn.execute(
                            f"select chunk_id from vec_{DIM} where collection = 'c' order by embedding <=> %s limit %s",
                            (q, args.k),
                        ).fetchall()
                    hnsw_ms.append(1000 * (time.perf_counter() - start))
                    recall.append(len({r[0] for r in truth} & {r[0] for r in got}) / args.k)
                print(
                    f"| {n:,} | {ef} | {statistics.median(exact_ms):.1f} | {np.percentile(exact_ms, 95):.1f} | "
                    f"{statistics.median(hnsw_ms):.1f} | {np.percentile(hnsw_ms, 95):.1f} | {np.mean(recall):.3f} | "
                    f"{build:.1f} |",
                    flush=True,
                )
            conn.close()
        finally:
            with psycopg.connect(args.url, autocommit=True) as admin:
                admin.execute(f'drop database if exists "{name}" with (force)')


if __name__ == "__main__":
    main()
