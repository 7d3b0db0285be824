"""Loading a synthetic corpus: PostgreSQL by COPY then index builds (timed apart), SQLite through its store.

PostgreSQL: the HNSW, GIN and postings indexes of a fresh index are dropped, documents / chunks / vectors / term
statistics are COPYed into the store's own tables (what stores/postgres.py would have written, computed the same
way) in the transaction that truncated them (with wal_level=minimal, as bench/retrieval_pg_server.py sets, nothing
of it goes through the WAL), the impact-ordered postings are derived from the chunks by the migration's own
backfill statement, and the three indexes are rebuilt with the given maintenance settings, so the build times are
those of a bulk load or migration. SQLite: `SqliteStore.write_document` per document (one transaction each, FTS5
and vec0 maintained).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import numpy as np
from ragtune.servers.retrieval.index import Index
from ragtune.servers.retrieval.stores.base import NewChunk
from ragtune.servers.retrieval.stores.postgres import HNSW_EF_CONSTRUCTION, HNSW_M, hnsw_index_sql, vec_table
from ragtune.servers.retrieval.stores.postgres_lexical import BACKFILL
from rich.console import Console
from rich.progress import track

from bench.retrieval_pg_synth import CHUNKS_PER_DOC, Synth
from ragtune import pg

COLLECTION = "bench"
BATCH = 20_000


def _esc(value: str) -> str:
    """Escape a value for COPY's text format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def _array(items: list[str]) -> str:
    """A text[] literal."""
    return "{" + ",".join('"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in items) + "}"


def pg_load(url: str, synth: Synth, args: Any, console: Console) -> dict[str, float]:
    """COPY the synthetic corpus into the (fresh) database at `url`, then build GIN and HNSW; return timings."""
    conn = pg.connect(url)
    dim = synth.dim
    table = vec_table(dim)
    conn.execute(f"drop index if exists {table}_hnsw")
    conn.execute("drop index if exists chunks_terms")
    conn.execute("drop index if exists lex_post_order")
    rows = [
        "\t".join(
            (
                _esc(t.chunk.text),
                _esc(json.dumps(t.chunk.heading_path, ensure_ascii=False)),
                str(t.chunk.char_start),
                str(t.chunk.char_end),
                _esc(t.chunk.lex_head),
                _esc(t.chunk.lex_body),
                _esc(_array(t.terms)),
                _esc(t.tf_json),
                str(t.n_tokens),
            )
        )
        for t in synth.templates
    ]
    start = time.perf_counter()
    with conn.transaction():
        conn.execute(f"truncate documents, chunks, lex_df, lex_post, {table} cascade")  # empty: skips the WAL
        with conn.cursor() as cur:
            with cur.copy(
                "copy documents(id, doc_id, collection, source, title, content_hash, text, metadata, created_at,"
                " updated_at) from stdin"
            ) as copy:
                for d in range(synth.docs):
                    meta = _esc(json.dumps(synth.doc_meta(d)))
                    copy.write(f"{d + 1}\tsyn{d}\t{COLLECTION}\tsynthetic/{d}\tsyn {d}\tx\t\t{meta}\t0\t0\n")
            with cur.copy(
                "copy chunks(id, doc_id, collection, ordinal, text, heading_path, char_start, char_end, lex_head,"
                " lex_body, lex_terms, lex_tf, n_tokens, embedded) from stdin"
            ) as copy:
                for lo in track(range(0, synth.size, BATCH), description="COPY chunks", console=console):
                    lines = [
                        f"{i + 1}\t{i // CHUNKS_PER_DOC + 1}\t{COLLECTION}\t{i % CHUNKS_PER_DOC}\t"
                        f"{rows[synth.template_of[i]]}\tt\n"
                        for i in range(lo, min(synth.size, lo + BATCH))
                    ]
                    copy.write("".join(lines))
            with cur.copy(f"copy {table}(chunk_id, collection, embedding) from stdin with (format binary)") as copy:
                copy.set_types(["int8", "text", "vector"])
                for lo in track(range(0, synth.size, BATCH), description="COPY vectors", console=console):
                    vecs = synth.vectors(lo, min(BATCH, synth.size - lo))
                    for j, v in enumerate(vecs):
                        copy.write_row((lo + j + 1, COLLECTION, v))
            df: Counter[str] = Counter()
            counts = np.bincount(synth.template_of, minlength=len(synth.templates))
            for t, n in zip(synth.templates, counts, strict=True):
                for term in t.terms:
                    df[term] += int(n)
            with cur.copy("copy lex_df(collection, term, df) from stdin") as copy:
                for term, n in df.items():
                    copy.write(f"{COLLECTION}\t{_esc(term)}\t{n}\n")
        n_tokens = int(sum(synth.templates[int(i)].n_tokens for i in synth.template_of))
        conn.execute(
            "update collections set n_chunks = %s, n_embedded = %s, n_tokens = %s, "
            "generation = nextval('retrieval_generation') where name = %s",
            (synth.size, synth.size, n_tokens, COLLECTION),
        )
        conn.execute("select setval('documents_id_seq', %s)", (synth.docs,))
        conn.execute("select setval('chunks_id_seq', %s)", (synth.size,))
        copy_s = time.perf_counter() - start
        conn.execute("update collections set lex_ref_len = %s where name = %s", (n_tokens / synth.size, COLLECTION))
        start = time.perf_counter()
        conn.execute("analyze collections, chunks, lex_df")  # as the migration does before the same statement
        conn.execute(BACKFILL)
        postings_s = time.perf_counter() - start
    n_postings = conn.execute("select count(*) from lex_post").fetchone()[0]
    conn.execute(f"set maintenance_work_mem = '{args.maintenance_mem}'")
    conn.execute(f"set max_parallel_maintenance_workers = {int(args.pg_workers)}")
    start = time.perf_counter()
    conn.execute("create index chunks_terms on chunks using gin (lex_terms)")
    gin_s = time.perf_counter() - start
    start = time.perf_counter()
    conn.execute("create index lex_post_order on lex_post(term, impact desc, chunk_id)")
    post_index_s = time.perf_counter() - start
    console.print(
        f"COPY {synth.size:,} chunks {copy_s:.0f} s, GIN {gin_s:.0f} s, {n_postings:,} postings {postings_s:.0f} s + "
        f"index {post_index_s:.0f} s; building HNSW ..."
    )
    start = time.perf_counter()
    conn.execute(hnsw_index_sql(table))
    hnsw_s = time.perf_counter() - start
    start = time.perf_counter()
    conn.execute("vacuum analyze")
    analyze_s = time.perf_counter() - start
    size_mb = conn.execute("select pg_database_size(current_database())").fetchone()[0] / 2**20
    hnsw_mb = conn.execute("select pg_relation_size(%s)", (f"{table}_hnsw",)).fetchone()[0] / 2**20
    post_mb = conn.execute("select pg_total_relation_size('lex_post')").fetchone()[0] / 2**20
    conn.close()
    return {
        "load_s": copy_s,
        "load_chunks_per_s": synth.size / copy_s,
        "gin_build_s": gin_s,
        "postings": n_postings,
        "postings_backfill_s": postings_s,
        "postings_index_s": post_index_s,
        "postings_mb": post_mb,
        "hnsw_build_s": hnsw_s,
        "hnsw_params": f"m {HNSW_M}, ef_construction {HNSW_EF_CONSTRUCTION}",
        "vacuum_analyze_s": analyze_s,
        "db_mb": size_mb,
        "hnsw_mb": hnsw_mb,
    }


def sqlite_load(index: Index, synth: Synth, console: Console) -> dict[str, float]:
    """Write the synthetic corpus through SqliteStore.write_document (one transaction per document)."""
    store = index.store
    start = time.perf_counter()
    for lo in track(range(0, synth.docs, 1000), description="SQLite write_document", console=console):
        hi = min(synth.docs, lo + 1000)
        first, last = lo * CHUNKS_PER_DOC, min(synth.size, hi * CHUNKS_PER_DOC)
        vecs = synth.vectors(first, last - first)
        for d in range(lo, hi):
            idx = synth.doc_chunks(d)
            chunks = [_chunk(synth, i) for i in idx]
            store.write_document(
                f"syn{d}",
                COLLECTION,
                f"synthetic/{d}",
                f"syn {d}",
                "x",
                "",
                synth.doc_meta(d),
                chunks,
                [vecs[i - first] for i in idx],
                now=0.0,
            )
    load_s = time.perf_counter() - start
    return {"load_s": load_s, "load_chunks_per_s": synth.size / load_s}


def _chunk(synth: Synth, i: int) -> NewChunk:
    c = synth.chunk(i).chunk
    return NewChunk(i % CHUNKS_PER_DOC, c.text, c.heading_path, c.char_start, c.char_end, c.lex_head, c.lex_body)
