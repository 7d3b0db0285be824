"""Scale section: ingest throughput on real documents, then lexical and vector search latency at growing sizes.

Real ingest (Kiwi analysis, chunking, FTS5 writes) is timed on real documents. Larger sizes replicate those
analysed chunks straight into the index tables (Kiwi on 100k chunks would take most of an hour on one core)
with random unit vectors, as the brief allows for latency; queries are real train queries.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from ragtune.servers.retrieval.index import Index
from ragtune.servers.retrieval.korean import get_analyzer
from ragtune.servers.retrieval.models import SearchMode
from ragtune.servers.retrieval.schema import ensure_vec_table, vec_table
from ragtune.servers.retrieval.search import search
from rich.console import Console
from rich.progress import track
from rich.table import Table

from bench.retrieval_data import data_dir, load_ko_welfare, load_scifact
from bench.retrieval_metrics import percentile
from ragtune.config import RetrievalSettings
from ragtune.db import transaction
from ragtune.embeddings import make_embedder

COLLECTION = "bench"
MODES: tuple[SearchMode, ...] = ("lexical", "vector")
# The lexical query of ragtune.servers.retrieval.search with the join order forced (FTS5 first), for comparison.
FTS_DRIVEN = (
    "select c.id, bm25(chunks_fts, 1.0, 1.0) as s from chunks_fts cross join chunks c on c.id = chunks_fts.rowid "
    "cross join documents d on d.id = c.doc_id where chunks_fts match ? and c.collection = ? order by s limit ?"
)


def run_scale(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Time real ingest, then grow the index to each size and time searches in both modes."""
    root = data_dir(args.data)
    ko, sf = load_ko_welfare(root), load_scifact(root)
    half = args.ingest_docs // 2
    docs = [*list(ko.corpus.items())[:half], *list(sf.corpus.items())[: args.ingest_docs - half]]
    queries = [*list(ko.queries.values())[:100], *list(sf.queries.values())[:100]]
    embedder = make_embedder(RetrievalSettings(embedder=args.embedder, embed_threads=1))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        index = Index.open(Path(tmp) / "scale.db", embedder)
        index.create_collection(COLLECTION)
        ingest = _time_ingest(index, docs, sf.titles, console)
        templates = index.conn.execute(
            "select text, heading_path, char_start, char_end, lex_head, lex_body from chunks"
        ).fetchall()
        rng = np.random.default_rng(args.seed)
        for size in sorted(int(s) for s in args.sizes.split(",")):
            load_s = _grow(index, templates, size, rng, console)
            for mode in MODES:
                timing = _time_searches(index, queries, mode, args.searches, args.max_seconds)
                rows.append({"size": size, "mode": mode, "grow_s": load_s, **timing})
            rows += _time_parts(index, queries, size, args.searches, args.max_seconds)
        index.close()
    _print(ingest, rows, console)
    return {"ingest": ingest, "search": rows}


def _time_ingest(
    index: Index, docs: list[tuple[str, str]], titles: dict[str, str], console: Console
) -> dict[str, float]:
    start, cpu = time.perf_counter(), time.process_time()
    chunks = 0
    for doc_id, text in track(docs, description="ingest real docs", console=console):
        chunks += index.ingest_text(text, collection=COLLECTION, source=doc_id, title=titles.get(doc_id)).chunks
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "docs": len(docs),
        "chunks": chunks,
        "chunks_per_s": chunks / wall,
        "chunks_per_cpu_s": chunks / cpu,
    }


def _grow(index: Index, templates: list[Any], size: int, rng: np.random.Generator, console: Console) -> float:
    """Add replicated chunks (one document per 10) with random unit vectors until the index holds `size`."""
    have = index.conn.execute("select count(*) from chunks").fetchone()[0]
    start = time.perf_counter()
    table = ensure_vec_table(index.conn, index.embedder.dim if index.embedder else 384)
    for base in track(range(have, size, 1000), description=f"grow to {size} chunks", console=console):
        n = min(1000, size - base)
        vecs = rng.standard_normal((n, 384)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        with index.lock, transaction(index.conn):
            # The existing real chunks already carry vectors only if embedded; give them random ones too.
            _vectorise_missing(index, table, rng)
            for j in range(0, n, 10):
                pk = index.conn.execute(
                    "insert into documents(doc_id, collection, source, title, content_hash, text, metadata,"
                    " created_at, updated_at) values (?,?,?,?,?,?,?,?,?)",
                    (
                        f"syn{base + j}",
                        COLLECTION,
                        f"synthetic/{base + j}",
                        f"syn {base + j}",
                        "x",
                        "",
                        "{}",
                        0,
                        0,
                    ),
                ).lastrowid
                for i in range(j, min(j + 10, n)):
                    t = templates[int(rng.integers(len(templates)))]
                    cid = index.conn.execute(
                        "insert into chunks(doc_id, collection, ordinal, text, heading_path, char_start, char_end,"
                        " lex_head, lex_body, embedded) values (?,?,?,?,?,?,?,?,?,1)",
                        (pk, COLLECTION, i - j, *t),
                    ).lastrowid
                    index.conn.execute(
                        f"insert into {table}(chunk_id, embedding, collection) values (?,?,?)",
                        (cid, vecs[i].tobytes(), COLLECTION),
                    )
    return time.perf_counter() - start


def _vectorise_missing(index: Index, table: str, rng: np.random.Generator) -> None:
    ids = [r[0] for r in index.conn.execute("select id from chunks where embedded = 0")]
    for cid in ids:
        vec = rng.standard_normal(384).astype(np.float32)
        index.conn.execute(
            f"insert into {table}(chunk_id, embedding, collection) values (?,?,?)",
            (cid, (vec / np.linalg.norm(vec)).tobytes(), COLLECTION),
        )
        index.conn.execute("update chunks set embedded = 1 where id = ?", (cid,))


def _time_searches(index: Index, queries: list[str], mode: SearchMode, n: int, budget_s: float) -> dict[str, float]:
    """Time `index.search` end to end (analysis or query embedding included), at most `budget_s` seconds."""
    search(index, queries[0], collection=COLLECTION, k=10, mode=mode)
    return _timed(
        lambda i: search(index, queries[i % len(queries)], collection=COLLECTION, k=10, mode=mode),
        n,
        budget_s,
    )


def _time_parts(index: Index, queries: list[str], size: int, n: int, budget_s: float) -> list[dict[str, Any]]:
    """Split the costs: query embedding, the vec0 KNN alone, and FTS5 with the FTS table driving the join."""
    embedder = index.embedder
    assert embedder is not None
    vectors = embedder.embed_queries(queries[:50])
    fts = [get_analyzer().fts_query(q) for q in queries]
    parts = {
        "embed query": lambda i: embedder.embed_queries([queries[i % len(queries)]]),
        "vec0 KNN only": lambda i: index.conn.execute(
            f"select chunk_id, distance from {vec_table(384)} where embedding match ? and k = 10 "
            "and collection = ? order by distance",
            (vectors[i % len(vectors)].tobytes(), COLLECTION),
        ).fetchall(),
        "FTS5 driving join": lambda i: index.conn.execute(FTS_DRIVEN, (fts[i % len(fts)], COLLECTION, 10)).fetchall(),
    }
    matrix, ids = _load_matrix(index)
    parts["numpy KNN (in memory)"] = lambda i: _numpy_knn(matrix, ids, vectors[i % len(vectors)])
    index.conn.execute("create virtual table if not exists bench_vocab using fts5vocab(chunks_fts, 'row')")
    pruned = [_prune_common(index, q, size) for q in queries]
    parts["FTS5, terms in >5% dropped"] = lambda i: index.conn.execute(
        FTS_DRIVEN, (pruned[i % len(pruned)], COLLECTION, 10)
    ).fetchall()
    return [{"size": size, "mode": name, "grow_s": 0.0, **_timed(run, n, budget_s)} for name, run in parts.items()]


def _load_matrix(index: Index) -> tuple[np.ndarray, np.ndarray]:
    """Read every vector into one float32 matrix (what an in-memory KNN cache would hold)."""
    rows = index.conn.execute(f"select chunk_id, embedding from {vec_table(384)}").fetchall()
    matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(-1, 384)
    return matrix, np.array([r[0] for r in rows])


def _numpy_knn(matrix: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int = 10) -> np.ndarray:
    scores = matrix @ query
    top = np.argpartition(-scores, k)[:k]
    return ids[top[np.argsort(-scores[top])]]


def _prune_common(index: Index, query: str, size: int) -> str:
    """Drop query terms found in more than 5% of chunks (low idf, most of the bm25 work); keep the rarest one."""
    terms = list(dict.fromkeys(get_analyzer().terms(query)))
    sql = "select doc from bench_vocab where term = ?"
    df = {t: (index.conn.execute(sql, (t,)).fetchone() or (0,))[0] for t in terms}
    keep = [t for t in terms if df[t] <= 0.05 * size] or sorted(terms, key=lambda t: df[t])[:1]
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in keep)


def _timed(run: Any, n: int, budget_s: float) -> dict[str, float]:
    """Wall and CPU milliseconds per call (CPU time shows the cost when the box is shared)."""
    wall: list[float] = []
    cpu: list[float] = []
    deadline = time.perf_counter() + budget_s
    for i in range(n):
        start, cpu_start = time.perf_counter(), time.process_time()
        run(i)
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - cpu_start) * 1000)
        if start > deadline:
            break
    return {
        "p50_ms": percentile(wall, 50),
        "p95_ms": percentile(wall, 95),
        "cpu_p50_ms": percentile(cpu, 50),
        "cpu_p95_ms": percentile(cpu, 95),
        "searches": len(wall),
    }


def _print(ingest: dict[str, float], rows: list[dict[str, Any]], console: Console) -> None:
    console.print(
        f"ingest (chunk + Kiwi + FTS5, no vectors): {ingest['docs']} docs, {ingest['chunks']} chunks, "
        f"{ingest['chunks_per_s']:.1f} chunks/s wall, {ingest['chunks_per_cpu_s']:.1f} chunks/CPU-s"
    )
    table = Table(title="Search latency, k=10, one thread (lexical/vector = Index.search end to end)")
    for col in (
        "chunks",
        "what is timed",
        "n",
        "p50 ms",
        "p95 ms",
        "CPU p50",
        "CPU p95",
        "p95 < 50 ms",
        "grow s",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            f"{r['size']:,}",
            r["mode"],
            str(r["searches"]),
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['cpu_p50_ms']:.1f}",
            f"{r['cpu_p95_ms']:.1f}",
            "yes" if r["p95_ms"] < 50 else "NO",
            f"{r['grow_s']:.0f}" if r["grow_s"] else "",
        )
    console.print(table)
