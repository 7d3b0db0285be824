"""The PostgreSQL + pgvector backend of the retrieval index, for many replicas and millions of chunks.

Selected by `RAGTUNE_DATABASE_URL=postgresql://...`: `Index.open(settings, embedder)` (IndexConfig.database_url)
calls `stores.open_store`, which opens `PostgresStore.open(url)`; a benchmark can also build
`Index(PostgresStore.open(url), IndexConfig(db_path=Path("unused"), database_url=url), embedder)`.

Layout (migrated through `ragtune.pg.migrate(conn, "index", MIGRATIONS)`): the same collections / documents /
chunks tables as SQLite, plus
- lexical side: per chunk `lex_terms text[]` (GIN, for matching) and `lex_tf jsonb` (term -> head-weighted
  frequency) built from the Kiwi/Snowball strings the Index makes; per collection the chunk count and token total
  (on the collection row) and each term's document frequency (`lex_df`). Ranking is FTS5's bm25 in SQL with the
  same k1/b and head weight, over per-collection statistics (SQLite's FTS5 uses one set for the whole file: the
  two agree exactly for an index with one collection). From MIN_ROWS chunks, when the query's terms match more
  than MATCH_BUDGET chunks, unfiltered queries take the impact-ordered postings (`lex_post`,
  stores/postgres_lexical.py): each term's best postings pick the candidates bm25 scores (filtered: when the
  filter keeps enough of them; a filter keeping at most FILTER_BUDGET chunks has all of them scored; past both, the
  rarest terms pick candidates among the filtered chunks).
- vectors: one `vec_<dim>` table per dimension (chunk id, collection, `vector(dim)`) with an HNSW index
  (`vector_cosine_ops`), like SQLite's vec0 tables. Why per dimension, not a column per dimension: an HNSW index
  needs one fixed dimension, collections with different embedders can share one database, and a collection's
  vectors stay one indexed table whatever else exists. Below EXACT_BELOW vectors in a collection, or when a filter
  keeps under SELECTIVE of its documents, the search is exact (a scan of the few rows); otherwise HNSW with
  `hnsw.iterative_scan = relaxed_order` (filtered KNN keeps scanning until k rows pass), exact again if that
  still returns fewer than k.
- many replicas: every write is one transaction that first locks its collection row (writers of one collection
  take turns; statistics stay exact), and bumps the row's `generation` from a global sequence, which is the cache
  key for coverage (no in-process vector cache here: pgvector answers KNN). The vector filler claims batches with
  `SELECT ... FOR UPDATE SKIP LOCKED` and a lease (`claimed_until`, `claimed_by`), so no chunk is embedded twice
  while a claim lasts; a crashed filler's claims expire, and a process takes its own back at once (a failed batch).
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ragtune.servers.retrieval.stores.postgres_lexical as postings
from ragtune.servers.retrieval.filters import normalise
from ragtune.servers.retrieval.stores.base import (
    HEAD_WEIGHT,
    K1,
    B,
    ChunkSpan,
    CollectionRow,
    Compiled,
    DocumentRow,
    ExportedChunk,
    HitRow,
    NewChunk,
    PendingChunk,
    Ranking,
    WriteOutcome,
)
from ragtune.servers.retrieval.stores.postgres_reembed import MIGRATION as REEMBED_MIGRATION
from ragtune.servers.retrieval.stores.postgres_reembed import PostgresReembed

from ragtune import pg

COMPONENT = "index"
MIGRATIONS: list[pg.Migration] = [
    """
    create sequence retrieval_generation;
    create table collections (
      name text primary key,
      embedder_model text,
      dim integer,
      languages jsonb not null default '[]',
      created_at double precision not null,
      generation bigint not null default 0,
      n_chunks bigint not null default 0,
      n_embedded bigint not null default 0,
      n_tokens bigint not null default 0
    );
    create table documents (
      id bigserial primary key,
      doc_id text not null unique,
      collection text not null references collections(name) on delete cascade,
      source text not null,
      title text not null,
      content_hash text not null,
      text text not null,
      metadata jsonb not null default '{}',
      created_at double precision not null,
      updated_at double precision not null,
      unique (collection, source)
    );
    create table chunks (
      id bigserial primary key,
      doc_id bigint not null references documents(id) on delete cascade,
      collection text not null,
      ordinal integer not null,
      text text not null,
      heading_path jsonb not null default '[]',
      char_start integer not null,
      char_end integer not null,
      lex_head text not null,
      lex_body text not null,
      lex_terms text[] not null,
      lex_tf jsonb not null,
      n_tokens integer not null,
      embedded boolean not null default false,
      claimed_until double precision
    );
    create index chunks_doc on chunks(doc_id, ordinal);
    create index chunks_collection on chunks(collection, id);
    create index chunks_pending on chunks(id) where not embedded;
    create index chunks_terms on chunks using gin (lex_terms);
    create table lex_df (
      collection text not null references collections(name) on delete cascade,
      term text not null,
      df integer not null,
      primary key (collection, term)
    );
    create table fillers (
      host text not null,
      pid integer not null,
      at double precision not null,
      embedding boolean not null,
      pending bigint not null,
      primary key (host, pid)
    );
    """,
    # Reembed (stores/postgres_reembed.py): the latest run per collection and its staged vectors.
    REEMBED_MIGRATION,
    # Who holds a filler claim: a process takes its own unexpired claims back (a failed batch is retried at once).
    "alter table chunks add column claimed_by text;",
    # bm25 reads each query term's frequency from lex_tf for every candidate: keep the lexical columns inline and
    # uncompressed (decompressing them was 3/4 of that time) and move the long texts out of line instead, so a
    # candidate costs one heap page of ~2 rows (a whole-page row made the heap reads dominate at 100k chunks).
    """
    alter table chunks set (toast_tuple_target = 4096);
    alter table chunks alter column text set storage external, alter column lex_head set storage external,
      alter column lex_body set storage external, alter column heading_path set storage external,
      alter column lex_tf set storage main, alter column lex_terms set storage main;
    """,
    # Impact-ordered postings (stores/postgres_lexical.py): term ids on lex_df, lex_post backfilled from lex_tf.
    postings.MIGRATION,
    # Equality filters on metadata: containment through this index instead of a scan of every document.
    "create index documents_metadata on documents using gin (metadata jsonb_path_ops);",
]

TOKEN = re.compile(r"[^\W_]+")  # what FTS5's unicode61 tokenizer keeps: runs of letters and digits
# Vectors in a collection under which KNN is an exact scan: ~26 ms p50 at 10k (384 dims, a loaded 2-core box) with
# recall 1, where HNSW was not faster and missed neighbours (docs/benchmarks/pg_exact_threshold.md).
EXACT_BELOW = 10_000
# hnsw.ef_search floor (2 x depth above it). At 1M synthetic chunks recall@10 vs exact was 0.916 / 0.934 / 0.945 / 0.963
# at 40 / 100 / 200 / 400, p50 1.8 ms at 100 and 8.4 ms at 400 (docs/benchmarks/retrieval.md, PostgreSQL backend):
# 400 is the lowest measured value that meets the 0.95 recall target.
EF_SEARCH = 400
SELECTIVE = 0.1  # a filter keeping under this share of a collection's documents is answered exactly
MIN_ROWS = 20_000  # as lexical.py: from this many chunks, a query whose terms match many chunks takes a shortcut
FILTER_BUDGET = 20_000  # filtered lexical queries score every chunk of a filter that keeps at most this many
MATCH_BUDGET = 3_000  # matches (sum of df) up to which every matching chunk is scored (bounds the bm25 work)
CANDIDATES = 300  # filtered queries: chunks the rare terms pick before every term scores them (lexical.py's)
CLAIM_SECONDS = 600.0  # how long a filler's claim on a batch lasts (a crashed filler's batch is retried after)
RANGE = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
MAX_CONTAINS = 16  # eq/in filters with at most this many values also test containment (the metadata GIN index)
MAX_HNSW_DIM = 2000  # pgvector's HNSW limit for vector(D); wider collections are searched exactly
# HNSW build parameters. pgvector's default ef_construction (64) left queries stranded: on the 1M synthetic corpus
# recall@10 stayed at ~0.95 for every ef_search (100-400); at 200k some queries found 0 or 6-7 of their 10 neighbours
# however wide the search. 128 links the graph (200k: 0.972 -> 0.997 at ef 100; 1M: 0.973 at ef 400) for ~1.4x the
# build time; m 24 built slower and recalled no more (bench/pg_hnsw_build.py, docs/benchmarks/retrieval.md).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128


def hnsw_index_sql(table: str, *, if_not_exists: bool = False) -> str:
    """The statement building a vector table's HNSW index (the store's and the bench's bulk load build the same)."""
    guard = "if not exists " if if_not_exists else ""
    return (
        f"create index {guard}{table}_hnsw on {table} using hnsw (embedding vector_cosine_ops) "
        f"with (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
    )


def vec_table(dim: int) -> str:
    """Name the vector table of `dim`-dimensional vectors."""
    if not 1 <= int(dim) <= 16000:
        raise ValueError(f"embedding dimension {dim} is out of range")
    return f"vec_{int(dim)}"


def tokens(text: str) -> list[str]:
    """Split an analysed lexical string like FTS5's unicode61 does (lowercase runs of letters and digits)."""
    return TOKEN.findall(text.lower())


def lexical_stats(head: str, body: str) -> tuple[dict[str, float], int]:
    """Return a chunk's head-weighted term frequencies and its token count (FTS5: all columns)."""
    h, b = tokens(head), tokens(body)
    tf: dict[str, float] = {}
    for t in h:
        tf[t] = tf.get(t, 0.0) + HEAD_WEIGHT
    for t in b:
        tf[t] = tf.get(t, 0.0) + 1.0
    return tf, len(h) + len(b)


class PostgresStore(PostgresReembed):
    """RetrievalStore over one PostgreSQL database (pgvector); safe for many processes on many machines."""

    backend = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        self.location = pg.redact(url)
        self.closed = False
        self._local = threading.local()
        self._conns: list[Any] = []
        self._conns_lock = threading.Lock()
        self._tables: set[int] = set()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # this store's filler claims

    @classmethod
    def open(cls, url: str) -> PostgresStore:
        """Connect, create pgvector if needed and migrate the index schema; clear errors when impossible."""
        store = cls(url)
        pg.migrate(store._conn(), COMPONENT, MIGRATIONS)
        return store

    def _conn(self) -> Any:
        """Return this thread's connection (autocommit; writes open explicit transactions)."""
        if self.closed:
            raise RuntimeError("the retrieval store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            # Plans per call: psycopg prepares a statement run 5 times, and PostgreSQL then may keep a generic plan
            # that ignores the filter's and the query's values (a 50 % filter took 0.9 s instead of 10 ms at 200k).
            conn = pg.connect(self.url, options="-c plan_cache_mode=force_custom_plan")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection this store opened."""
        self.closed = True
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    def generation(self, collection: str | None = None) -> Hashable:
        """Return the collection's generation (any write bumps it from one sequence) or, None, the newest one."""
        conn = self._conn()
        if collection is not None:
            row = conn.execute("select generation from collections where name = %s", (collection,)).fetchone()
            return (collection, row[0] if row else None)
        return tuple(conn.execute("select coalesce(max(generation), 0), count(*) from collections").fetchone())

    def _bump(self, conn: Any, name: str, chunks: int = 0, embedded: int = 0, n_tokens: int = 0) -> None:
        conn.execute(
            "update collections set generation = nextval('retrieval_generation'), n_chunks = n_chunks + %s, "
            "n_embedded = n_embedded + %s, n_tokens = n_tokens + %s where name = %s",
            (chunks, embedded, n_tokens, name),
        )

    def _ensure_vec_table(self, conn: Any, dim: int) -> str:
        """Create the vector table of `dim` with its HNSW index if missing (under the migration lock)."""
        name = vec_table(dim)
        if dim in self._tables:
            return name
        exists = conn.execute("select to_regclass(%s)", (name,)).fetchone()[0]
        if exists is None:
            with conn.transaction():
                conn.execute("select pg_advisory_xact_lock(%s)", (pg.MIGRATION_LOCK,))
                conn.execute(
                    f"create table if not exists {name} (chunk_id bigint primary key references chunks(id) "
                    f"on delete cascade, collection text not null, embedding vector({int(dim)}) not null)"
                )
                conn.execute(f"create index if not exists {name}_collection on {name}(collection)")
                if dim <= MAX_HNSW_DIM:
                    conn.execute(hnsw_index_sql(name, if_not_exists=True))
        self._tables.add(dim)
        return name

    # -- collections ------------------------------------------------------------------------------

    def get_collection(self, name: str) -> CollectionRow | None:
        """Return the collection, or None."""
        row = (
            self._conn()
            .execute(
                "select name, embedder_model, dim, languages, created_at from collections where name = %s", (name,)
            )
            .fetchone()
        )
        return CollectionRow(row[0], row[1], row[2], list(row[3]), row[4]) if row else None

    def collection_names(self) -> list[str]:
        """Return every collection name, sorted (byte order, as SQLite)."""
        return [r[0] for r in self._conn().execute('select name from collections order by name collate "C"')]

    def create_collection(self, row: CollectionRow) -> bool:
        """Create the collection row (and the vector table of its dimension); False when it exists."""
        conn = self._conn()
        if row.dim is not None:
            self._ensure_vec_table(conn, row.dim)
        with conn.transaction():
            cur = conn.execute(
                "insert into collections(name, embedder_model, dim, languages, created_at, generation) "
                "values (%s, %s, %s, %s, %s, nextval('retrieval_generation')) on conflict (name) do nothing",
                (row.name, row.embedder_model, row.dim, json.dumps(sorted(row.languages)), row.created_at),
            )
            return cur.rowcount == 1

    def delete_collection(self, name: str) -> int:
        """Delete a collection; documents, chunks, vectors and term statistics go with it (cascades)."""
        conn = self._conn()
        with conn.transaction():
            if conn.execute("select 1 from collections where name = %s for update", (name,)).fetchone() is None:
                return 0
            removed = conn.execute("select count(*) from documents where collection = %s", (name,)).fetchone()[0]
            postings.delete_collection_postings(conn, name)
            conn.execute("delete from collections where name = %s", (name,))
        return int(removed)

    # -- documents --------------------------------------------------------------------------------

    def count_documents(self, collection: str) -> int:
        """Count a collection's documents."""
        return int(
            self._conn().execute("select count(*) from documents where collection = %s", (collection,)).fetchone()[0]
        )

    def document_state(self, doc_id: str) -> tuple[str, int] | None:
        """Return (content hash, chunk count) of a stored document, or None."""
        row = (
            self._conn()
            .execute(
                "select d.content_hash, (select count(*) from chunks c where c.doc_id = d.id) from documents d "
                "where d.doc_id = %s",
                (doc_id,),
            )
            .fetchone()
        )
        return (row[0], int(row[1])) if row else None

    def write_document(
        self,
        doc_id: str,
        collection: str,
        source: str,
        title: str,
        content_hash: str,
        text: str,
        metadata: dict[str, Any],
        chunks: Sequence[NewChunk],
        vectors: Sequence[np.ndarray | None] | None = None,
        *,
        now: float | None = None,
        created_at: float | None = None,
    ) -> WriteOutcome:
        """Add or replace a document with its chunks, term statistics and vectors in one transaction."""
        now = time.time() if now is None else now
        stats = [lexical_stats(c.lex_head, c.lex_body) for c in chunks]
        df: Counter[str] = Counter()
        for tf, _ in stats:
            df.update(tf.keys())
        conn = self._conn()
        dim_row = conn.execute("select dim from collections where name = %s", (collection,)).fetchone()
        if dim_row is None:
            raise KeyError(f"unknown collection {collection!r}")
        dim = dim_row[0]
        if dim is not None and vectors is not None:
            self._ensure_vec_table(conn, dim)
        with conn.transaction():
            # The collection row first: writers of one collection take turns, so its statistics stay exact.
            conn.execute("select 1 from collections where name = %s for update", (collection,))
            old = conn.execute(
                "select id, content_hash from documents where doc_id = %s for update", (doc_id,)
            ).fetchone()
            if old is not None and old[1] == content_hash:
                return "unchanged"
            removed = (0, 0, 0)
            if old is not None:
                removed = self._delete_chunks(conn, old[0], collection)
                conn.execute(
                    "update documents set title = %s, content_hash = %s, text = %s, metadata = %s, updated_at = %s "
                    "where id = %s",
                    (title, content_hash, text, json.dumps(metadata, ensure_ascii=False), now, old[0]),
                )
                pk = old[0]
            else:
                pk = conn.execute(
                    "insert into documents(doc_id, collection, source, title, content_hash, text, metadata, "
                    "created_at, updated_at) values (%s, %s, %s, %s, %s, %s, %s, %s, %s) returning id",
                    (
                        doc_id,
                        collection,
                        source,
                        title,
                        content_hash,
                        text,
                        json.dumps(metadata, ensure_ascii=False),
                        created_at or now,
                        now,
                    ),
                ).fetchone()[0]
            has = [vectors is not None and vectors[i] is not None and dim is not None for i in range(len(chunks))]
            ids = self._insert_chunks(conn, pk, collection, chunks, stats, has)
            if any(has):
                assert vectors is not None and dim is not None
                rows = []
                for cid, vec, ok in zip(ids, vectors, has, strict=True):
                    if ok:
                        v = np.asarray(vec, dtype=np.float32).reshape(-1)
                        if v.shape != (dim,):
                            raise ValueError(f"vector of shape {v.shape} for a collection of dimension {dim}")
                        rows.append((cid, collection, v))
                with conn.cursor() as cur:
                    cur.executemany(
                        f"insert into {vec_table(dim)}(chunk_id, collection, embedding) values (%s, %s, %s)", rows
                    )
            term_ids = postings.add_terms(conn, collection, df)
            written = [(cid, tf, n) for cid, (tf, n) in zip(ids, stats, strict=True)]
            postings.insert_postings(conn, collection, term_ids, written)
            self._bump(
                conn,
                collection,
                chunks=len(chunks) - removed[0],
                embedded=sum(has) - removed[1],
                n_tokens=sum(n for _, n in stats) - removed[2],
            )
        return "replaced" if old is not None else "added"

    def _insert_chunks(
        self,
        conn: Any,
        pk: int,
        collection: str,
        chunks: Sequence[NewChunk],
        stats: Sequence[tuple[dict[str, float], int]],
        embedded: Sequence[bool],
    ) -> list[int]:
        if not chunks:
            return []
        rows = [
            (
                pk,
                collection,
                c.ordinal,
                c.text,
                json.dumps(list(c.heading_path), ensure_ascii=False),
                c.char_start,
                c.char_end,
                c.lex_head,
                c.lex_body,
                sorted(tf),
                json.dumps(tf, ensure_ascii=False),
                n,
                e,
            )
            for c, (tf, n), e in zip(chunks, stats, embedded, strict=True)
        ]
        ids: list[int] = []
        with conn.cursor() as cur:
            cur.executemany(
                "insert into chunks(doc_id, collection, ordinal, text, heading_path, char_start, char_end, lex_head, "
                "lex_body, lex_terms, lex_tf, n_tokens, embedded) values "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) returning id",
                rows,
                returning=True,
            )
            while True:
                ids.append(cur.fetchone()[0])
                if not cur.nextset():
                    break
        return ids

    def _delete_chunks(self, conn: Any, pk: int, collection: str) -> tuple[int, int, int]:
        """Delete a document's chunks (vectors cascade) and take back their statistics; return what went."""
        n, embedded, n_tokens = conn.execute(
            "select count(*), count(*) filter (where embedded), coalesce(sum(n_tokens), 0) from chunks "
            "where doc_id = %s",
            (pk,),
        ).fetchone()
        postings.take_back_df(conn, collection, postings.delete_postings(conn, collection, pk))
        conn.execute("delete from chunks where doc_id = %s", (pk,))
        return int(n), int(embedded), int(n_tokens)

    _DOC_SELECT = (
        "select d.id, d.doc_id, d.collection, d.source, d.title, d.content_hash, d.text, d.metadata, d.created_at, "
        "d.updated_at, (select count(*) from chunks c where c.doc_id = d.id) from documents d"
    )

    def get_document(self, doc_id: str) -> DocumentRow | None:
        """Return a document with its chunk count, or None."""
        row = self._conn().execute(f"{self._DOC_SELECT} where d.doc_id = %s", (doc_id,)).fetchone()
        return _doc_row(row) if row else None

    def document_spans(self, pk: int) -> list[ChunkSpan]:
        """Return a document's chunk spans in order."""
        rows = self._conn().execute(
            "select ordinal, heading_path, char_start, char_end, embedded from chunks where doc_id = %s "
            "order by ordinal",
            (pk,),
        )
        return [ChunkSpan(r[0], list(r[1]), r[2], r[3], bool(r[4])) for r in rows]

    def list_documents(self, collection: str, offset: int, limit: int) -> list[DocumentRow]:
        """Return one page of a collection's documents, oldest first."""
        rows = self._conn().execute(
            f"{self._DOC_SELECT} where d.collection = %s order by d.id limit %s offset %s", (collection, limit, offset)
        )
        return [_doc_row(r) for r in rows]

    def delete_document(self, doc_id: str) -> DocumentRow | None:
        """Delete a document with its chunks, vectors and term statistics in one transaction."""
        conn = self._conn()
        row = conn.execute(f"{self._DOC_SELECT} where d.doc_id = %s", (doc_id,)).fetchone()
        if row is None:
            return None
        with conn.transaction():
            conn.execute("select 1 from collections where name = %s for update", (row[2],))
            if conn.execute("select 1 from documents where id = %s for update", (row[0],)).fetchone() is None:
                return None  # another process deleted it meanwhile
            n, embedded, n_tokens = self._delete_chunks(conn, row[0], row[2])
            conn.execute("delete from documents where id = %s", (row[0],))
            self._bump(conn, row[2], chunks=-n, embedded=-embedded, n_tokens=-n_tokens)
        return _doc_row(row)

    # -- vectors ----------------------------------------------------------------------------------

    def chunk_counts(self, collection: str | None = None) -> tuple[int, int]:
        """Return (chunks, chunks with a vector), kept on the collection rows by every write."""
        sql = "select coalesce(sum(n_chunks), 0), coalesce(sum(n_embedded), 0) from collections"
        args: tuple[Any, ...] = ()
        if collection is not None:
            sql, args = sql + " where name = %s", (collection,)
        total, embedded = self._conn().execute(sql, args).fetchone()
        return int(total), int(embedded)

    def pending_count(self, model: str, dim: int) -> int:
        """Count chunks without a vector in collections made with (`model`, `dim`)."""
        return int(
            self._conn()
            .execute(
                "select coalesce(sum(n_chunks - n_embedded), 0) from collections where embedder_model = %s "
                "and dim = %s",
                (model, dim),
            )
            .fetchone()[0]
        )

    def claim_pending(self, model: str, dim: int, limit: int) -> list[PendingChunk]:
        """Lease up to `limit` unembedded chunks (SKIP LOCKED: concurrent fillers take different chunks)."""
        conn = self._conn()
        with conn.transaction():
            rows = conn.execute(
                "with picked as (select c.id from chunks c join collections k on k.name = c.collection "
                "where not c.embedded and k.embedder_model = %s and k.dim = %s "
                "and (c.claimed_until is null or c.claimed_until < extract(epoch from clock_timestamp()) "
                "or c.claimed_by = %s) order by c.id limit %s for update of c skip locked) "
                "update chunks c set claimed_until = extract(epoch from clock_timestamp()) + %s, claimed_by = %s "
                "from picked where c.id = picked.id returning c.id, c.collection, c.text, c.heading_path, c.doc_id",
                (model, dim, self.owner, limit, CLAIM_SECONDS, self.owner),
            ).fetchall()
            titles = dict(
                conn.execute(
                    "select id, title from documents where id = any(%s)", (sorted({r[4] for r in rows}),)
                ).fetchall()
            )
        rows.sort(key=lambda r: r[0])
        return [PendingChunk(r[0], r[1], r[2], list(r[3]), titles.get(r[4], "")) for r in rows]

    def store_vectors(self, dim: int, items: Sequence[tuple[PendingChunk, np.ndarray]]) -> int:
        """Write vectors for chunks that still exist and still lack one; release their claims."""
        if not items:
            return 0
        conn = self._conn()
        table = self._ensure_vec_table(conn, dim)
        written: Counter[str] = Counter()
        with conn.transaction():
            for name in sorted({c.collection for c, _ in items}):
                conn.execute("select 1 from collections where name = %s for update", (name,))
            ids = [c.id for c, _ in items]
            alive = {
                r[0]
                for r in conn.execute(
                    "select id from chunks where id = any(%s) and not embedded for update", (ids,)
                ).fetchall()
            }
            rows = [
                (c.id, c.collection, np.asarray(v, dtype=np.float32).reshape(-1)) for c, v in items if c.id in alive
            ]
            if rows:
                with conn.cursor() as cur:
                    cur.executemany(f"insert into {table}(chunk_id, collection, embedding) values (%s, %s, %s)", rows)
                conn.execute(
                    "update chunks set embedded = true, claimed_until = null, claimed_by = null where id = any(%s)",
                    ([r[0] for r in rows],),
                )
                written.update(r[1] for r in rows)
            for name, n in sorted(written.items()):
                self._bump(conn, name, embedded=n)
        return sum(written.values())

    # -- search -----------------------------------------------------------------------------------

    def compile_filters(self, filters: dict[str, Any] | None) -> Compiled:
        """Compile filters to jsonb SQL over documents `d`; ranges compare like with like (numbers, strings)."""
        clauses: list[str] = []
        params: list[Any] = []
        for name, op, value in normalise(filters):
            negated = op in ("ne", "nin")
            if op in ("eq", "ne", "in", "nin"):
                values = value if op in ("in", "nin") else [value]
                quantifier = f"{'<>' if negated else '='} {'all' if negated else 'any'}"
                if name == "doc_id":
                    clauses.append(f"d.doc_id {quantifier}(%s::text[])")
                    params.append([str(v) for v in values])
                else:  # jsonb equality: 5 = 5.0, "5" <> 5, a missing field matches nothing (SQL NULL, as SQLite)
                    clause = f"(d.metadata -> %s) {quantifier}(%s::jsonb[])"
                    if not negated and 0 < len(values) <= MAX_CONTAINS:
                        # Containment too, which the GIN index on metadata answers (a tenant's few documents without
                        # reading every document's metadata); the equality keeps the semantics ({"a": [5]} @> ...).
                        clause = "(" + " or ".join(["d.metadata @> %s::jsonb"] * len(values)) + f") and {clause}"
                        params += [json.dumps({name: v}) for v in values]
                    clauses.append(clause)
                    params += [name, [json.dumps(v) for v in values]]
                continue
            sym = RANGE[op]
            if name == "doc_id":
                clauses.append(f'd.doc_id collate "C" {sym} %s')
                params.append(str(value))
            elif isinstance(value, int | float) and not isinstance(value, bool):
                clauses.append(
                    "(case when jsonb_typeof(d.metadata -> %s) = 'number' then (d.metadata -> %s)::numeric end) "
                    f"{sym} %s"
                )
                params += [name, name, value]
            else:  # strings (ISO dates) in byte order, as SQLite's BINARY collation
                kind, cast = ("boolean", "::boolean") if isinstance(value, bool) else ("string", ' collate "C"')
                clauses.append(
                    f"(case when jsonb_typeof(d.metadata -> %s) = '{kind}' then (d.metadata ->> %s){cast} end) {sym} %s"
                )
                params += [name, name, value if isinstance(value, bool) else str(value)]
        if not clauses:
            return "true", []
        return " and ".join(f"({c})" for c in clauses), params

    def lexical_ranking(self, terms: Sequence[str], collection: str, where: Compiled, depth: int) -> Ranking:
        """Return (chunk id, -bm25) best first: FTS5's bm25 formula over this collection's statistics."""
        words = list(dict.fromkeys(t for term in terms for t in tokens(term)))
        if not words:
            return []
        conn = self._conn()
        row = conn.execute(
            "select k.n_chunks, k.n_tokens, (select coalesce(jsonb_object_agg(term, jsonb_build_array(df, id)), '{}') "
            "from lex_df where collection = k.name and term = any(%s) and df > 0) from collections k where k.name = %s",
            (words, collection),
        ).fetchone()
        if row is None or not row[0]:
            return []
        n_rows, n_tokens = int(row[0]), int(row[1])
        df, term_id = {k: int(v[0]) for k, v in row[2].items()}, {k: int(v[1]) for k, v in row[2].items()}
        words = [w for w in words if df.get(w)]
        if not words:
            return []
        idf = {w: max(math.log((n_rows - df[w] + 0.5) / (df[w] + 0.5)), 1e-6) for w in words}
        norm = (K1 * (1 - B), K1 * B / (n_tokens / n_rows if n_tokens else 1.0))
        clause, params = where
        docs = "" if clause == "true" else " join documents d on d.id = c.doc_id"
        match = f"where c.collection = %s and c.lex_terms && %s::text[] and {clause}"
        full = _bm25(words, idf, norm)
        large = n_rows >= MIN_ROWS and sum(df[w] for w in words) > MATCH_BUDGET
        if large:
            # Impact order (stores/postgres_lexical.py): each term's best postings, index-only, pick the chunks that
            # bm25 then scores exactly. Taken unless they are fewer than `depth`, or a filter kept too few of them.
            want = max(postings.RESCORE, depth)
            args = [*full.weights, [term_id[w] for w in words], [idf[w] for w in words], postings.POSTINGS]
            if clause == "true":
                args.append(want)
            else:
                args += [want * postings.FILTERED_WIDEN, *params, want]
            sql = postings.impact_sql(full.expr, full.lateral, clause)
            rows = self._rows(conn, sql, [*args, *full.args, depth])
            if len(rows) >= depth and (clause == "true" or rows[0][2] >= want // 2):
                return [(r[0], float(r[1])) for r in rows]
        if large and clause != "true":
            # A selective filter (a tenant's documents): its chunks, found through the metadata and doc_id indexes,
            # are few enough to score every one that holds a query term; the term index would read the whole corpus.
            top = self._filter_first(conn, full, collection, words, where, depth)
            if top is not None:
                return top
        if large and clause != "true" and len(words) > 1:
            # Filtered: the rarest terms (together in at most MATCH_BUDGET chunks, and at least enough for the
            # candidates) pick CANDIDATES chunks that pass the filter, then every term scores them (lexical.py's two
            # stages on FTS5); when they pick fewer than `depth`: one full query.
            rare: list[str] = []
            for w in sorted(words, key=lambda w: (df[w], w)):
                if rare and sum(df[r] for r in rare) + df[w] > MATCH_BUDGET and sum(df[r] for r in rare) >= depth:
                    break
                rare.append(w)
            if len(rare) < len(words):
                first = _bm25(rare, idf, norm)
                inner = (
                    f"select c.id, c.lex_tf, c.n_tokens, {first.expr} as s from chunks c{docs} {first.lateral} "
                    f"{match} order by s, c.id limit %s"
                )
                sql = f"select c.id, {full.expr} as s from ({inner}) c {full.lateral} order by s, c.id limit %s"
                args = [*full.weights, *first.weights, *first.args, collection, rare, *params, max(CANDIDATES, depth)]
                top = self._ranked(conn, sql, [*args, *full.args, depth])
                if len(top) >= depth:
                    return top
        sql = f"select c.id, {full.expr} as s from chunks c{docs} {full.lateral} {match} order by s, c.id limit %s"
        return self._ranked(conn, sql, [*full.weights, *full.args, collection, words, *params, depth])

    def _filter_first(
        self, conn: Any, full: _Bm25, collection: str, words: list[str], where: Compiled, depth: int
    ) -> Ranking | None:
        """bm25 over the chunks a filter keeps, when it keeps at most FILTER_BUDGET of them; None when it keeps more."""
        clause, params = where
        kept = "select c.id from documents d join chunks c on c.doc_id = d.id where d.collection = %s and " + clause
        n = conn.execute(f"select count(*) from ({kept} limit %s) k", (collection, *params, FILTER_BUDGET + 1))
        if n.fetchone()[0] > FILTER_BUDGET:
            return None
        sql = (
            f"with k as materialized ({kept}) select c.id, {full.expr} as s from k join chunks c on c.id = k.id "
            f"{full.lateral} where c.lex_terms && %s::text[] order by s, c.id limit %s"
        )
        rows = conn.execute(sql, [collection, *params, *full.weights, *full.args, words, depth])
        return [(r[0], float(r[1])) for r in rows]

    def _ranked(self, conn: Any, sql: str, args: Sequence[Any]) -> Ranking:
        """Run a lexical ranking with the term index forced: the planner underrates the per-row array overlap."""
        return [(r[0], float(r[1])) for r in self._rows(conn, sql, args)]

    def _rows(self, conn: Any, sql: str, args: Sequence[Any]) -> list[Any]:
        """Run a lexical query with sequential scans off (the store chose the indexes); return its rows."""
        with conn.transaction():
            conn.execute("set local enable_seqscan = off")
            return list(conn.execute(sql, args))

    def vector_ranking(self, query: np.ndarray, collection: str, dim: int, where: Compiled, depth: int) -> Ranking:
        """Return (chunk id, cosine distance) best first: exact when small or selective, else HNSW."""
        conn = self._conn()
        table = self._ensure_vec_table(conn, dim)
        vec = np.asarray(query, dtype=np.float32).reshape(-1)
        clause, params = where
        n_vectors = conn.execute("select n_embedded from collections where name = %s", (collection,)).fetchone()
        if n_vectors is None or not n_vectors[0]:
            return []
        join = "" if clause == "true" else " join chunks c on c.id = v.chunk_id join documents d on d.id = c.doc_id"
        exact = n_vectors[0] < EXACT_BELOW or dim > MAX_HNSW_DIM
        if not exact and clause != "true":
            # Counted up to the threshold only: the documents a filter keeps come from the metadata index, and the
            # total from the collection's key index, instead of testing the filter on every document (36 ms at 100k).
            total = conn.execute("select count(*) from documents where collection = %s", (collection,)).fetchone()[0]
            limit = math.ceil(SELECTIVE * total)
            kept = conn.execute(
                f"select count(*) from (select 1 from documents d where d.collection = %s and {clause} limit %s) k",
                (collection, *params, limit),
            ).fetchone()[0]
            exact = kept < limit
        if not exact:
            with conn.transaction():
                conn.execute("set local hnsw.iterative_scan = relaxed_order")
                # The store chose the index: walk HNSW and look chunks/documents up by key (no scan-and-sort).
                conn.execute("set local enable_seqscan = off")
                conn.execute("set local enable_sort = off")
                conn.execute(f"set local hnsw.ef_search = {min(1000, max(EF_SEARCH, 2 * depth))}")
                rows = conn.execute(
                    f"select v.chunk_id, v.embedding <=> %s as dist from {table} v{join} "
                    f"where v.collection = %s and {clause} order by v.embedding <=> %s limit %s",
                    (vec, collection, *params, vec, depth),
                ).fetchall()
            if len(rows) >= min(depth, n_vectors[0]):
                rows.sort(key=lambda r: (r[1], r[0]))  # relaxed order: re-sort the few rows
                return [(r[0], float(r[1])) for r in rows]
        rows = conn.execute(
            f"select v.chunk_id, v.embedding <=> %s as dist from {table} v{join} "
            f"where v.collection = %s and {clause} order by (v.embedding <=> %s) + 0, v.chunk_id limit %s",
            (vec, collection, *params, vec, depth),
        ).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    def load_hits(self, ids: Sequence[int]) -> dict[int, HitRow]:
        """Fetch chunks and their documents by chunk id."""
        if not ids:
            return {}
        rows = self._conn().execute(
            "select c.id, c.ordinal, c.text, c.heading_path, c.char_start, c.char_end, d.doc_id, d.title, d.source, "
            "d.metadata from chunks c join documents d on d.id = c.doc_id where c.id = any(%s)",
            (list(ids),),
        )
        return {r[0]: HitRow(r[0], r[1], r[2], list(r[3]), r[4], r[5], r[6], r[7], r[8], dict(r[9])) for r in rows}

    # -- copy -------------------------------------------------------------------------------------

    def export_documents(self, collection: str) -> Iterator[tuple[DocumentRow, list[ExportedChunk]]]:
        """Yield each document of a collection with its chunks and stored vectors (document order)."""
        conn = self._conn()
        dim = conn.execute("select dim from collections where name = %s", (collection,)).fetchone()
        dim = dim[0] if dim else None
        pks = [r[0] for r in conn.execute("select id from documents where collection = %s order by id", (collection,))]
        for pk in pks:
            row = conn.execute(f"{self._DOC_SELECT} where d.id = %s", (pk,)).fetchone()
            if row is None:
                continue
            chunks = conn.execute(
                "select id, ordinal, text, heading_path, char_start, char_end, lex_head, lex_body from chunks "
                "where doc_id = %s order by ordinal",
                (pk,),
            ).fetchall()
            vectors: dict[int, np.ndarray] = {}
            if dim is not None and chunks and conn.execute("select to_regclass(%s)", (vec_table(dim),)).fetchone()[0]:
                for cid, emb in conn.execute(
                    f"select chunk_id, embedding from {vec_table(dim)} where chunk_id = any(%s)",
                    ([c[0] for c in chunks],),
                ):
                    vectors[cid] = np.asarray(emb, dtype=np.float32)
            yield (
                _doc_row(row),
                [
                    ExportedChunk(NewChunk(c[1], c[2], list(c[3]), c[4], c[5], c[6], c[7]), vectors.get(c[0]))
                    for c in chunks
                ],
            )

    # -- heartbeat of the vector filler (a row, not a file: replicas run on several machines) ---------

    def beat(self, host: str, pid: int, *, embedding: bool, pending: int) -> None:
        """Record that the filler of process (`host`, `pid`) is alive (no generation bump: caches stay valid)."""
        self._conn().execute(
            "insert into fillers(host, pid, at, embedding, pending) values (%s, %s, %s, %s, %s) "
            "on conflict (host, pid) do update set at = excluded.at, embedding = excluded.embedding, "
            "pending = excluded.pending",
            (host, pid, time.time(), embedding, pending),
        )

    def clear_beat(self, host: str, pid: int) -> None:
        """Remove a filler's heartbeat row."""
        self._conn().execute("delete from fillers where host = %s and pid = %s", (host, pid))

    def read_beat(self, stale_seconds: float) -> dict[str, Any] | None:
        """Return the freshest filler heartbeat (embedding ones first), or None when none is fresh."""
        row = (
            self._conn()
            .execute(
                "select host, pid, at, embedding, pending from fillers where at > %s order by embedding desc, at desc "
                "limit 1",
                (time.time() - stale_seconds,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return {"host": row[0], "pid": row[1], "at": row[2], "embedding": row[3], "pending": row[4]}


@dataclass(frozen=True)
class _Bm25:
    """SQL scoring chunks `c` by bm25 over some terms: a lateral reading each term frequency once, the sum."""

    lateral: str
    args: list[Any]
    expr: str
    weights: list[float]


def _bm25(words: Sequence[str], idf: dict[str, float], norm: tuple[float, float]) -> _Bm25:
    """bm25 per term: idf * f (k1 + 1) / (f + k1 (1 - b + b |D| / avgdl)), f the head-weighted frequency."""
    # OFFSET 0 keeps the lateral from being flattened, which would read each frequency from the jsonb twice.
    cols = ", ".join(f"coalesce((c.lex_tf -> %s)::float8, 0) as t{i}" for i in range(len(words)))
    return _Bm25(
        lateral=f"cross join lateral (select {cols}, %s + %s * c.n_tokens as norm offset 0) f",
        args=[*words, *norm],
        expr="-(" + " + ".join(f"%s * f.t{i} / (f.t{i} + f.norm)" for i in range(len(words))) + ")",
        weights=[idf[w] * (K1 + 1) for w in words],
    )


def _doc_row(row: Any) -> DocumentRow:
    return DocumentRow(
        pk=row[0],
        doc_id=row[1],
        collection=row[2],
        source=row[3],
        title=row[4],
        content_hash=row[5],
        text=row[6],
        metadata=dict(row[7]),
        created_at=row[8],
        updated_at=row[9],
        n_chunks=int(row[10]),
    )
