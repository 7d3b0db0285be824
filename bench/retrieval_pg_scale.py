"""Scale section of the PostgreSQL bench: real ingest, a synthetic corpus of N chunks, latency, recall, builds.

1. Real ingest (chunking, Kiwi/Snowball analysis, store write; no vectors) of real documents on both backends:
   chunks/s, and the analysed chunks become the synthetic corpus's text templates (bench/retrieval_pg_synth.py).
2. Per size: a fresh PostgreSQL database loaded by COPY with HNSW/GIN built afterwards (bench/retrieval_pg_load.py),
   and, for the SQLite sizes, a fresh SQLite file written through its store. Then, on each: HNSW recall@10 against
   exact search (numpy over the same vectors), `search()` p50/p95 per mode with 1 and 8 concurrent clients (query
   vectors precomputed; the e5-small query embedding is timed apart; CPU per search = client process + PostgreSQL
   server processes, so it stays comparable when the box is shared), and incremental `write_document` with
   vectors at that size (chunks/s). On PostgreSQL also: how often the fast lexical path (impact-ordered postings)
   finds the exact bm25 top-10 (the same queries with the shortcut switched off), and what the exact query costs.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from ragtune.servers.retrieval.index import Index
from ragtune.servers.retrieval.korean import get_analyzer
from ragtune.servers.retrieval.search import search
from ragtune.servers.retrieval.stores.base import NewChunk
from rich.console import Console
from rich.progress import track
from rich.table import Table

from bench.retrieval_cache import engine_tag
from bench.retrieval_data import data_dir, load_ko_welfare, load_scifact
from bench.retrieval_metrics import percentile
from bench.retrieval_pg_load import COLLECTION, pg_load, sqlite_load
from bench.retrieval_pg_server import fresh_database
from bench.retrieval_pg_synth import CHUNKS_PER_DOC, NOISE, Synth, Template, make_template
from ragtune.config import RetrievalSettings
from ragtune.embeddings import make_embedder

# (label, mode, filters): the filtered rows select 1% of documents (tenant) and about half (language).
MODES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("lexical", "lexical", None),
    ("vector", "vector", None),
    ("hybrid", "hybrid", None),
    ("filtered hybrid, tenant (1%)", "hybrid", {"tenant": "t07"}),
    ("filtered vector, lang=ko", "vector", {"lang": "ko"}),
    ("filtered lexical, lang=ko", "lexical", {"lang": "ko"}),
]
TARGET_P95_MS = 100.0
EF_SEARCH = (40, 100, 200, 400)  # pgvector's default, the store's floor, and above
TARGET_RECALL = 0.95
NOTE = (
    "synthetic: text = real analysed chunks of ko-welfare + SciFact repeated; vectors = random-projected copies of "
    f"real e5-small vectors plus noise (norm {NOISE}); queries = real train queries (vectors projected likewise)"
)


class PrecomputedQueries:
    """The real embedder's identity with query vectors computed before timing (passages are never embedded)."""

    def __init__(self, inner: Any, vectors: dict[str, np.ndarray]) -> None:
        self.model_id, self.dim, self.languages = inner.model_id, inner.dim, inner.languages
        self.vectors = vectors

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Return the precomputed vectors of known queries."""
        return np.stack([self.vectors[t] for t in texts])

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Never called: every synthetic chunk is stored with its vector."""
        raise RuntimeError("the scale bench stores every vector itself")


def run_scale(
    args: argparse.Namespace, url: str, console: Console, save: Callable[[], None], results: dict[str, Any]
) -> dict[str, Any]:
    """Run the scale section; results are saved after every step (a long 1M run keeps what it finished)."""
    out: dict[str, Any] = {"note": NOTE, "ingest": [], "sizes": []}
    results["scale"] = out
    root = data_dir(args.data)
    ko, sf = load_ko_welfare(root), load_scifact(root)
    half = min(len(ko.corpus), args.real_docs // 2)
    docs = [*list(ko.corpus.items())[:half], *list(sf.corpus.items())[: args.real_docs - half]]
    templates: list[Template] = []
    get_analyzer().terms("워밍업 warm up")  # load Kiwi before timing the first backend
    for backend in ("sqlite", "postgres"):
        with open_index(backend, url, None) as index:
            index.create_collection("real")
            row, chunks = _time_real_ingest(index, docs, sf.titles, backend, console)
            out["ingest"].append(row)
            if backend == "postgres":
                templates = [make_template(*c) for c in chunks]
        save()
    embedder = make_embedder(RetrievalSettings(embedder=args.embedder, embed_threads=1))
    assert embedder is not None
    queries = [*list(ko.queries.values())[:100], *list(sf.queries.values())[:100]]
    real_q = np.asarray(embedder.embed_queries(queries), dtype=np.float32)
    out["query_embed"] = _time_query_embed(embedder, queries)
    base = _base_vectors(args, embedder, ko, sf, console)
    out["base_vectors"] = len(base)
    pg_sizes = {int(s) for s in args.sizes.split(",") if s.strip()}
    sqlite_sizes = {int(s) for s in args.sqlite_sizes.split(",") if s.strip()}
    for size in sorted(pg_sizes | sqlite_sizes):
        synth = Synth(templates, base, size, args.seed)
        qvecs = synth.queries(real_q)
        wrapped = PrecomputedQueries(embedder, dict(zip(queries, qvecs, strict=True)))
        exact = _exact_top(synth, qvecs[: args.recall_queries], console)
        backends = [b for b, sizes in (("sqlite", sqlite_sizes), ("postgres", pg_sizes)) if size in sizes]
        for backend in backends:
            entry: dict[str, Any] = {"size": size, "backend": backend, "templates": len(templates)}
            out["sizes"].append(entry)
            with open_index(backend, url, wrapped) as index:
                index.create_collection(COLLECTION)
                console.print(f"[bold]{backend} {size:,} chunks[/bold]: loading")
                if backend == "postgres":
                    entry["load"] = pg_load(index.store.url, synth, args, console)
                else:
                    entry["load"] = sqlite_load(index, synth, console)
                    entry["load"]["db_mb"] = Path(index.config.db_path).stat().st_size / 2**20
                console.print(f"{backend} {size:,}: {entry['load']}")
                save()
                entry["recall"] = _recall(index, qvecs[: args.recall_queries], exact)
                console.print(f"{backend} {size:,}: recall {entry['recall']}")
                if backend == "postgres" and args.lexical_exact_queries:
                    entry["lexical_vs_exact"] = _lexical_vs_exact(index, queries, args.lexical_exact_queries)
                    console.print(f"{backend} {size:,}: lexical vs exact {entry['lexical_vs_exact']}")
                    save()
                entry["search"] = []
                for clients in (int(c) for c in args.clients.split(",")):
                    for label, mode, filters in MODES:
                        row = _time_search(index, queries, mode, filters, clients, args.searches, args.max_seconds)
                        entry["search"].append({"what": label, "clients": clients, **row})
                        console.print(f"{backend} {size:,} {label} x{clients}: {row}")
                        save()
                entry["write"] = _time_writes(index, synth, size, console)
                save()
        _print(out, console)
    return out


@contextlib.contextmanager
def open_index(backend: str, server_url: str, embedder: Any) -> Iterator[Index]:
    """Open a fresh index of one backend (SQLite file in a temp folder, or a fresh PostgreSQL database)."""
    with tempfile.TemporaryDirectory(prefix="ragtune-scale-") as tmp:
        if backend == "sqlite":
            index = Index.open(Path(tmp) / "scale.db", embedder)
            try:
                yield index
            finally:
                index.close()
            return
        with fresh_database(server_url, "scale") as url:
            index = Index.open(Path(tmp) / "unused.db", embedder, database_url=url)
            try:
                yield index
            finally:
                index.close()


def _time_real_ingest(
    index: Index, docs: list[tuple[str, str]], titles: dict[str, str], backend: str, console: Console
) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """Ingest real documents through Index.ingest_text; return chunks/s and the stored analysed chunks."""
    start, cpu = time.perf_counter(), time.process_time()
    n = 0
    for doc_id, text in track(docs, description=f"{backend}: ingest real docs", console=console):
        n += index.ingest_text(text, collection="real", source=doc_id, title=titles.get(doc_id)).chunks
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    chunks: list[tuple[Any, ...]] = []
    if backend == "postgres":
        conn = index.store._conn()  # noqa: SLF001 - the bench reads the stored analysed text back
        chunks = [
            (r[0], list(r[1]), r[2], r[3], r[4], r[5])
            for r in conn.execute(
                "select text, heading_path, char_start, char_end, lex_head, lex_body from chunks order by id"
            )
        ]
    row = {"backend": backend, "docs": len(docs), "chunks": n, "chunks_per_s": n / wall, "chunks_per_cpu_s": n / cpu}
    console.print(f"{backend}: real ingest {row}")
    return row, chunks


def _time_query_embed(embedder: Any, queries: list[str]) -> dict[str, float]:
    ms = []
    for q in queries[:60]:
        start = time.perf_counter()
        embedder.embed_queries([q])
        ms.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95)}


def _base_vectors(args: argparse.Namespace, embedder: Any, ko: Any, sf: Any, console: Console) -> np.ndarray:
    """Real e5-small vectors: cached corpus passages (from the quality run), topped up with train-query vectors."""
    vecs: list[np.ndarray] = []
    path = Path(args.cache) / f"passages-{engine_tag(args.embedder)}.npz" if args.cache else None
    if path is not None and path.exists():
        with np.load(path) as data:
            vecs = [data[k] for k in sorted(data.files)]
    want = max(0, 1000 - len(vecs))
    if want:  # no cache: embed corpus documents (passages, as an index holds; the timed queries are not among them)
        extra = [*list(ko.corpus.values())[-want // 2 :], *list(sf.corpus.values())[-(want - want // 2) :]]
        batches = range(0, len(extra), 32)
        for lo in track(batches, description="base passages", console=console):
            vecs += list(np.asarray(embedder.embed_passages(extra[lo : lo + 32]), dtype=np.float32))
    console.print(f"base vectors: {len(vecs)} real e5-small vectors ({path if path and path.exists() else 'passages'})")
    return np.stack(vecs).astype(np.float32)


def _exact_top(synth: Synth, qvecs: np.ndarray, console: Console, k: int = 10) -> np.ndarray:
    """Exact top-k chunk ids (1-based, as loaded) of each query by brute force over all synthetic vectors."""
    best_s = np.full((len(qvecs), k), -np.inf, np.float32)
    best_i = np.zeros((len(qvecs), k), np.int64)
    for lo in track(range(0, synth.size, 50_000), description="exact top-10", console=console):
        v = synth.vectors(lo, min(50_000, synth.size - lo))
        s = qvecs @ v.T
        s_all = np.concatenate([best_s, s], axis=1)
        i_all = np.concatenate([best_i, np.arange(lo + 1, lo + 1 + len(v))[None, :].repeat(len(qvecs), 0)], axis=1)
        top = np.argpartition(-s_all, k, axis=1)[:, :k]
        best_s = np.take_along_axis(s_all, top, 1)
        best_i = np.take_along_axis(i_all, top, 1)
    return best_i


def _recall(index: Index, qvecs: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    """recall@10 of the store's vector ranking vs exact: at depth 10 (mode=vector, k=10) and 100 (hybrid's)."""
    out: dict[str, float] = {}
    nofilter = index.store.compile_filters(None)  # each store's own "no filter" ("1" on SQLite, "true" on PostgreSQL)
    for depth in (10, 100):
        hits, ms = [], []
        for q, truth in zip(qvecs, exact, strict=True):
            start = time.perf_counter()
            got = index.store.vector_ranking(q, COLLECTION, len(q), nofilter, depth)
            ms.append((time.perf_counter() - start) * 1000)
            hits.append(len({c for c, _ in got[:10]} & set(truth.tolist())) / 10)
        out[f"recall@10 depth {depth}"] = statistics.fmean(hits)
        out[f"knn p50 ms depth {depth}"] = percentile(ms, 50)
    if index.store.backend == "postgres":
        out.update(_recall_by_ef(index, qvecs, exact))
    return out


def _lexical_vs_exact(index: Index, queries: list[str], n: int) -> dict[str, float]:
    """recall@10 of the fast lexical path against exact bm25 (MIN_ROWS out of reach: every match scored)."""
    from ragtune.servers.retrieval.stores import postgres as pgstore

    chosen = [*queries[: n // 2], *queries[len(queries) // 2 : len(queries) // 2 + n - n // 2]]  # ko and en

    def run() -> tuple[list[list[int]], list[list[float]], list[float]]:
        ids, scores, ms = [], [], []
        for q in chosen:
            start = time.perf_counter()
            hits = search(index, q, collection=COLLECTION, k=10, mode="lexical").hits
            ms.append((time.perf_counter() - start) * 1000)
            ids.append([h.chunk_id for h in hits])
            scores.append([round(h.score, 6) for h in hits])
        return ids, scores, ms

    fast, fast_s, ms_fast = run()
    saved = pgstore.MIN_ROWS
    pgstore.MIN_ROWS = 1 << 62
    try:
        exact, exact_s, ms_exact = run()
    finally:
        pgstore.MIN_ROWS = saved
    overlap = [len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(fast, exact, strict=True)]
    # The synthetic corpus repeats each text ~N/1,361 times: copies tie on bm25 and either backend may return any of
    # them, so also count a hit as found when its score is one of the exact top-10's (a multiset match).
    scored = [sum((Counter(a) & Counter(b)).values()) / max(1, len(b)) for a, b in zip(fast_s, exact_s, strict=True)]
    return {
        "queries": len(chosen),
        "recall@10": statistics.fmean(overlap),
        "score recall@10": statistics.fmean(scored),
        "same top-10": statistics.fmean(a == b for a, b in zip(fast, exact, strict=True)),
        "fast p50 ms": percentile(ms_fast, 50),
        "exact p50 ms": percentile(ms_exact, 50),
        "exact p95 ms": percentile(ms_exact, 95),
    }


def _recall_by_ef(index: Index, qvecs: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    """recall@10 and p50 of the bare HNSW query at several hnsw.ef_search values (what the store's floor buys)."""
    conn = index.store._conn()  # noqa: SLF001 - the bench times pgvector's own knob
    out: dict[str, float] = {}
    for ef in EF_SEARCH:
        hits, ms = [], []
        for q, truth in zip(qvecs, exact, strict=True):
            start = time.perf_counter()
            with conn.transaction():
                conn.execute(f"set local hnsw.ef_search = {ef}")
                got = conn.execute(
                    f"select chunk_id from vec_{len(q)} where collection = %s order by embedding <=> %s limit 10",
                    (COLLECTION, q),
                ).fetchall()
            ms.append((time.perf_counter() - start) * 1000)
            hits.append(len({r[0] for r in got} & set(truth.tolist())) / 10)
        out[f"ef_search {ef} recall@10"] = statistics.fmean(hits)
        out[f"ef_search {ef} p50 ms"] = percentile(ms, 50)
    return out


def _time_search(
    index: Index,
    queries: list[str],
    mode: str,
    filters: dict[str, Any] | None,
    clients: int,
    n: int,
    budget_s: float,
) -> dict[str, Any]:
    """Latency of `search()` (k=10) with `clients` threads issuing searches concurrently, at most `budget_s`."""
    search(index, queries[0], collection=COLLECTION, k=10, mode=mode, filters=filters)  # warm
    deadline = time.perf_counter() + budget_s
    lock = threading.Lock()
    ms: list[float] = []
    counter = iter(range(n))
    returned: list[int] = []

    def client() -> None:
        while time.perf_counter() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            start = time.perf_counter()
            hits = search(
                index, queries[i % len(queries)], collection=COLLECTION, k=10, mode=mode, filters=filters
            ).hits
            with lock:
                ms.append((time.perf_counter() - start) * 1000)
                returned.append(len(hits))

    server = _server_process(index)
    start, cpu = time.perf_counter(), time.process_time() + _tree_cpu(server)
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    wall, cpu = time.perf_counter() - start, time.process_time() + _tree_cpu(server) - cpu
    return {
        "cpu_ms_per_search": cpu * 1000 / max(1, len(ms)),
        "searches": len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "qps": len(ms) / wall,
        "mean_hits": statistics.fmean(returned) if returned else 0.0,
    }


def _server_process(index: Index) -> Any:
    """The PostgreSQL postmaster serving this index (None on SQLite), to count the server's CPU time too."""
    if index.store.backend != "postgres":
        return None
    import psutil

    backend = index.store._conn().execute("select pg_backend_pid()").fetchone()[0]  # noqa: SLF001
    try:
        return psutil.Process(psutil.Process(backend).ppid())
    except psutil.Error:
        return None  # a server on another machine: client CPU only


def _tree_cpu(proc: Any) -> float:
    """CPU seconds of the postmaster, its reaped children and its live children (backends, parallel workers)."""
    if proc is None:
        return 0.0
    import psutil

    t = proc.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            continue
    return total


def _time_writes(index: Index, synth: Synth, size: int, console: Console, docs: int = 100) -> dict[str, float]:
    """Incremental ingest at this size: `docs` new documents of 10 chunks with vectors via store.write_document."""
    vecs = synth.vectors(0, docs * CHUNKS_PER_DOC)
    start = time.perf_counter()
    for d in range(docs):
        chunks = []
        for j in range(CHUNKS_PER_DOC):
            c = synth.chunk(d * CHUNKS_PER_DOC + j).chunk
            chunks.append(NewChunk(j, c.text, c.heading_path, c.char_start, c.char_end, c.lex_head, c.lex_body))
        index.store.write_document(
            f"new{d}", COLLECTION, f"new/{d}", f"new {d}", "y", "", {"tenant": "new"}, chunks,
            list(vecs[d * CHUNKS_PER_DOC : (d + 1) * CHUNKS_PER_DOC]),
        )  # fmt: skip
    wall = time.perf_counter() - start
    row = {"chunks": docs * CHUNKS_PER_DOC, "chunks_per_s": docs * CHUNKS_PER_DOC / wall}
    console.print(f"incremental write_document at {size:,}: {row}")
    return row


def _print(out: dict[str, Any], console: Console) -> None:
    """Tables: ingest, loads/builds/recall, and latency per size, backend, mode and client count."""
    console.print(f"[dim]{out['note']}[/dim]")
    for r in out["ingest"]:
        console.print(
            f"real ingest ({r['backend']}): {r['docs']} docs, {r['chunks']} chunks, {r['chunks_per_s']:.1f} chunks/s"
            f" wall, {r['chunks_per_cpu_s']:.1f} chunks/CPU-s (chunking + Kiwi/Snowball + store write, no vectors)"
        )
    qe = out.get("query_embed", {})
    if qe:
        console.print(f"e5-small query embedding (1 thread): p50 {qe['p50_ms']:.1f} ms, p95 {qe['p95_ms']:.1f} ms")
    load = Table(title="Load, index builds, HNSW recall@10 vs exact")
    for col in ("chunks", "backend", "load chunks/s", "GIN s", "HNSW s", "DB MB", "recall@10 (k=10)",
                "recall@10 (depth 100)", "write_document chunks/s"):  # fmt: skip
        load.add_column(col, justify="right")
    lat = Table(title="search() latency, k=10 (query vectors precomputed: add the embedding line above end to end)")
    for col in ("chunks", "backend", "what", "clients", "n", "p50 ms", "p95 ms", "qps", "CPU ms/search", "p95<100"):
        lat.add_column(col, justify="right")
    for e in out["sizes"]:
        ld, rc, wr = e.get("load", {}), e.get("recall", {}), e.get("write", {})
        load.add_row(
            f"{e['size']:,}",
            e["backend"],
            f"{ld.get('load_chunks_per_s', float('nan')):.0f}",
            f"{ld['gin_build_s']:.0f}" if "gin_build_s" in ld else "-",
            f"{ld['hnsw_build_s']:.0f}" if "hnsw_build_s" in ld else "-",
            f"{ld.get('db_mb', float('nan')):.0f}",
            f"{rc.get('recall@10 depth 10', float('nan')):.3f}",
            f"{rc.get('recall@10 depth 100', float('nan')):.3f}",
            f"{wr.get('chunks_per_s', float('nan')):.0f}",
        )
        for s in e.get("search", []):
            lat.add_row(
                f"{e['size']:,}",
                e["backend"],
                s["what"],
                str(s["clients"]),
                str(s["searches"]),
                f"{s['p50_ms']:.1f}",
                f"{s['p95_ms']:.1f}",
                f"{s['qps']:.1f}",
                f"{s['cpu_ms_per_search']:.1f}" if "cpu_ms_per_search" in s else "-",
                "yes" if s["p95_ms"] < TARGET_P95_MS else "NO",
            )
    console.print(load)
    console.print(lat)
