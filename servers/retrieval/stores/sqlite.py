"""The SQLite backend of the retrieval index: one file, FTS5 bm25 over analysed terms, sqlite-vec vec0 per dimension.

One write connection guarded by `lock` (every document lands in one transaction) and per-thread read
connections for lexical search (WAL: readers never wait for the writer). Vector KNN is answered from the
in-memory matrices of vector_cache.py when a collection fits its budget, else by vec0.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ragtune.servers.retrieval.filters import compile_filters
from ragtune.servers.retrieval.korean import or_query
from ragtune.servers.retrieval.lexical import exact_top, split_terms
from ragtune.servers.retrieval.schema import MIGRATIONS, ensure_vec_table, vec_table
from ragtune.servers.retrieval.stores.base import (
    HEAD_WEIGHT,
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
from ragtune.servers.retrieval.stores.sqlite_reembed import SqliteReembed
from ragtune.servers.retrieval.vector_cache import VectorCache

from ragtune.db import Connection, connect, migrate, transaction

_DOC_SELECT = "select d.*, (select count(*) from chunks c where c.doc_id = d.id) as n_chunks from documents d"


class SqliteStore(SqliteReembed):
    """RetrievalStore over one SQLite file (or ':memory:')."""

    backend = "sqlite"

    def __init__(self, conn: Connection, db_path: Path | str, vector_cache_mb: float = 256.0) -> None:
        self.conn = conn
        self.db_path = Path(db_path) if str(db_path) != ":memory:" else Path(":memory:")
        self.location = str(db_path)
        self.lock = threading.RLock()
        self.vectors = VectorCache(vector_cache_mb)
        self.closed = False
        self._local = threading.local()  # per-thread read connections (see reader())
        self._readers: list[Connection] = []
        self._readers_lock = threading.Lock()
        # What the current write transaction does to vectors, applied to the cache after it commits.
        self._added: dict[str, list[tuple[int, np.ndarray]]] = {}
        self._removed: list[int] = []
        self._dropped: set[str] = set()

    @classmethod
    def open(cls, db_path: Path | str, vector_cache_mb: float = 256.0) -> SqliteStore:
        """Open (creating and migrating) the index file."""
        conn = connect(db_path)
        migrate(conn, MIGRATIONS)
        return cls(conn, db_path, vector_cache_mb)

    def close(self) -> None:
        """Close every connection."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.vectors.clear()
            self.conn.close()
            with self._readers_lock:
                for reader in self._readers:
                    reader.close()

    def generation(self, collection: str | None = None) -> tuple[int, int]:
        """This connection's total changes, then data_version (which moves when another connection commits)."""
        with self.lock:
            return self.conn.total_changes, self.conn.execute("pragma data_version").fetchone()[0]

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """Run one write transaction, then bring the in-memory vector matrices up to date."""
        with self.lock:
            before = self.generation()
            self._added, self._removed, self._dropped = {}, [], set()
            with transaction(self.conn) as conn:
                yield conn
            self.vectors.after_write(before, self.generation(), self._added, self._removed, self._dropped)

    @contextlib.contextmanager
    def reader(self) -> Iterator[Connection]:
        """Yield a read-only connection of this thread's own, used without the lock.

        WAL lets readers run beside each other and beside the writer, so one long search no longer stalls the
        others (issue #12: a 360 KB query held the lock for 5.8 s). An in-memory index has one connection only.
        """
        if self.location == ":memory:":
            with self.lock:
                yield self.conn
            return
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.db_path, vec=False)
            conn.execute("pragma query_only = on")
            self._local.conn = conn
            with self._readers_lock:  # not self.lock: a reader must never wait for the writer
                self._readers.append(conn)
        yield conn

    # -- collections ------------------------------------------------------------------------------

    def get_collection(self, name: str) -> CollectionRow | None:
        """Return the collection, or None."""
        with self.lock:
            row = self.conn.execute("select * from collections where name = ?", (name,)).fetchone()
        if row is None:
            return None
        return CollectionRow(
            row["name"], row["embedder_model"], row["dim"], json.loads(row["languages"]), row["created_at"]
        )

    def collection_names(self) -> list[str]:
        """Return every collection name, sorted."""
        with self.lock:
            return [r[0] for r in self.conn.execute("select name from collections order by name")]

    def create_collection(self, row: CollectionRow) -> bool:
        """Create the collection row (and the vec0 table of its dimension); False when it exists."""
        with self.lock, self._write():
            if self.conn.execute("select 1 from collections where name = ?", (row.name,)).fetchone():
                return False
            if row.dim is not None:
                ensure_vec_table(self.conn, row.dim)
            self.conn.execute(
                "insert into collections(name, embedder_model, dim, languages, created_at) values (?,?,?,?,?)",
                (row.name, row.embedder_model, row.dim, json.dumps(sorted(row.languages)), row.created_at),
            )
        return True

    def delete_collection(self, name: str) -> int:
        """Delete a collection with its documents, chunks and vectors; return the documents removed."""
        with self.lock:
            row = self.get_collection(name)
            if row is None:
                return 0
            with self._write():
                if row.dim is not None:
                    self.conn.execute(
                        f"delete from {vec_table(row.dim)} where chunk_id in "
                        "(select id from chunks where collection = ?)",
                        (name,),
                    )
                self._dropped.add(name)
                self.conn.execute("delete from chunks where collection = ?", (name,))
                removed = self.conn.execute("delete from documents where collection = ?", (name,)).rowcount
                self.conn.execute("delete from collections where name = ?", (name,))
                self.reembed_forget(name)
            return removed

    # -- documents --------------------------------------------------------------------------------

    def count_documents(self, collection: str) -> int:
        """Count a collection's documents."""
        with self.lock:
            return self.conn.execute("select count(*) from documents where collection = ?", (collection,)).fetchone()[0]

    def document_state(self, doc_id: str) -> tuple[str, int] | None:
        """Return (content hash, chunk count) of a stored document, or None."""
        with self.lock:
            old = self.conn.execute("select id, content_hash from documents where doc_id = ?", (doc_id,)).fetchone()
            if old is None:
                return None
            n = self.conn.execute("select count(*) from chunks where doc_id = ?", (old["id"],)).fetchone()[0]
        return old["content_hash"], n

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
        """Add or replace a document and its chunks in one transaction (re-checking the hash inside it)."""
        import time

        now = time.time() if now is None else now
        meta = json.dumps(metadata, ensure_ascii=False)
        with self.lock, self._write():
            old = self.conn.execute("select id, content_hash from documents where doc_id = ?", (doc_id,)).fetchone()
            if old is not None and old["content_hash"] == content_hash:
                return "unchanged"
            row = self.conn.execute("select dim from collections where name = ?", (collection,)).fetchone()
            dim = row["dim"] if row else None
            if old is not None:
                self._delete_chunks(old["id"], dim)
                self.conn.execute(
                    "update documents set title=?, content_hash=?, text=?, metadata=?, updated_at=? where id=?",
                    (title, content_hash, text, meta, now, old["id"]),
                )
                pk = old["id"]
            else:
                pk = self.conn.execute(
                    "insert into documents(doc_id, collection, source, title, content_hash, text, metadata,"
                    " created_at, updated_at) values (?,?,?,?,?,?,?,?,?)",
                    (doc_id, collection, source, title, content_hash, text, meta, created_at or now, now),
                ).lastrowid
            for i, c in enumerate(chunks):
                vec = vectors[i] if vectors is not None else None
                cid = self.conn.execute(
                    "insert into chunks(doc_id, collection, ordinal, text, heading_path, char_start, char_end,"
                    " lex_head, lex_body, embedded) values (?,?,?,?,?,?,?,?,?,?)",
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
                        int(vec is not None and dim is not None),
                    ),
                ).lastrowid
                if vec is not None and dim is not None:
                    self._insert_vector(dim, cid, collection, np.asarray(vec, dtype=np.float32))
        return "replaced" if old is not None else "added"

    def _insert_vector(self, dim: int, cid: int, collection: str, vec: np.ndarray) -> None:
        if vec.shape != (dim,):
            raise ValueError(f"vector of shape {vec.shape} for a collection of dimension {dim}")
        table = ensure_vec_table(self.conn, dim)
        self.conn.execute(
            f"insert into {table}(chunk_id, embedding, collection) values (?,?,?)", (cid, vec.tobytes(), collection)
        )
        self._added.setdefault(collection, []).append((cid, vec))

    def _delete_chunks(self, pk: int, dim: int | None) -> None:
        """Delete a document's chunks from FTS (trigger), vec0 and the chunk table (inside a transaction)."""
        if dim is not None:
            self._removed += [
                r[0] for r in self.conn.execute("select id from chunks where doc_id = ? and embedded = 1", (pk,))
            ]
            self.conn.execute(
                f"delete from {vec_table(dim)} where chunk_id in (select id from chunks where doc_id = ?)",
                (pk,),
            )
        self.conn.execute("delete from chunks where doc_id = ?", (pk,))

    def get_document(self, doc_id: str) -> DocumentRow | None:
        """Return a document with its chunk count, or None."""
        with self.lock:
            row = self.conn.execute(f"{_DOC_SELECT} where d.doc_id = ?", (doc_id,)).fetchone()
        return _doc_row(row) if row is not None else None

    def document_spans(self, pk: int) -> list[ChunkSpan]:
        """Return a document's chunk spans in order."""
        with self.lock:
            rows = self.conn.execute(
                "select ordinal, heading_path, char_start, char_end, embedded from chunks where doc_id = ? "
                "order by ordinal",
                (pk,),
            ).fetchall()
        return [
            ChunkSpan(r["ordinal"], json.loads(r["heading_path"]), r["char_start"], r["char_end"], bool(r["embedded"]))
            for r in rows
        ]

    def list_documents(self, collection: str, offset: int, limit: int) -> list[DocumentRow]:
        """Return one page of a collection's documents, oldest first."""
        with self.lock:
            rows = self.conn.execute(
                f"{_DOC_SELECT} where d.collection = ? order by d.id limit ? offset ?", (collection, limit, offset)
            ).fetchall()
        return [_doc_row(r) for r in rows]

    def delete_document(self, doc_id: str) -> DocumentRow | None:
        """Delete a document from the tables, FTS and vec0 in one transaction; return what was deleted."""
        with self.lock:
            row = self.conn.execute(f"{_DOC_SELECT} where d.doc_id = ?", (doc_id,)).fetchone()
            if row is None:
                return None
            dim = self.conn.execute("select dim from collections where name = ?", (row["collection"],)).fetchone()
            with self._write():
                self._delete_chunks(row["id"], dim[0] if dim else None)
                self.conn.execute("delete from documents where id = ?", (row["id"],))
        return _doc_row(row)

    # -- vectors ----------------------------------------------------------------------------------

    def chunk_counts(self, collection: str | None = None) -> tuple[int, int]:
        """Return (chunks, chunks with a vector) of a collection, or of all."""
        sql = "select count(*), coalesce(sum(embedded), 0) from chunks"
        args: tuple[Any, ...] = ()
        if collection is not None:
            sql, args = sql + " where collection = ?", (collection,)
        with self.lock:
            total, embedded = self.conn.execute(sql, args).fetchone()
        return int(total), int(embedded)

    def pending_count(self, model: str, dim: int) -> int:
        """Count chunks without a vector in collections made with (`model`, `dim`)."""
        with self.lock:
            return self.conn.execute(
                "select count(*) from chunks c join collections k on k.name = c.collection "
                "where c.embedded = 0 and k.embedder_model = ? and k.dim = ?",
                (model, dim),
            ).fetchone()[0]

    def claim_pending(self, model: str, dim: int, limit: int) -> list[PendingChunk]:
        """Return the oldest chunks still lacking a vector (one file, one writer: store_vectors re-checks)."""
        with self.lock:
            rows = self.conn.execute(
                "select c.id, c.text, c.heading_path, c.collection, d.title from chunks c "
                "join collections k on k.name = c.collection join documents d on d.id = c.doc_id "
                "where c.embedded = 0 and k.embedder_model = ? and k.dim = ? order by c.id limit ?",
                (model, dim, limit),
            ).fetchall()
        return [
            PendingChunk(r["id"], r["collection"], r["text"], json.loads(r["heading_path"]), r["title"]) for r in rows
        ]

    def store_vectors(self, dim: int, items: Sequence[tuple[PendingChunk, np.ndarray]]) -> int:
        """Write vectors for chunks that still exist and still lack one (ingest may have replaced them)."""
        written = 0
        with self.lock:
            if self.closed:
                return 0
            with self._write():
                for chunk, vec in items:
                    current = self.conn.execute("select embedded from chunks where id = ?", (chunk.id,)).fetchone()
                    if current is None or current[0]:
                        continue
                    self._insert_vector(dim, chunk.id, chunk.collection, np.asarray(vec, dtype=np.float32))
                    self.conn.execute("update chunks set embedded = 1 where id = ?", (chunk.id,))
                    written += 1
        return written

    # -- search -----------------------------------------------------------------------------------

    def compile_filters(self, filters: dict[str, Any] | None) -> Compiled:
        """Compile filters to SQLite json_extract SQL over documents `d`."""
        return compile_filters(filters)

    def lexical_ranking(self, terms: Sequence[str], collection: str, where: Compiled, depth: int) -> Ranking:
        """Return (chunk id, bm25) best first (FTS5's sign); filters apply before the limit (see lexical.py)."""
        # Hand-written SQL: the hot path (two-stage FTS5 bm25, see lexical.py) needs exact query plans.
        # CROSS JOIN pins the FTS match as the outer loop; otherwise SQLite walks the collection's chunks first.
        clause, params = where
        docs = "" if clause == "1" else " cross join documents d on d.id = c.doc_id"
        sql = (
            f"select c.id, bm25(chunks_fts, {HEAD_WEIGHT}, 1.0) as s from chunks_fts "
            f"cross join chunks c on c.id = chunks_fts.rowid{docs} "
            f"where chunks_fts match ? and c.collection = ? and {clause} order by s, c.id limit ?"
        )
        with self.reader() as conn:  # a thread's own connection: a long query does not stall other searches

            def rank(words: Sequence[str], limit: int) -> Ranking:
                return [(r[0], r[1]) for r in conn.execute(sql, (or_query(words), collection, *params, limit))]

            split = split_terms(conn, list(terms))
            if split is not None:
                top = exact_top(conn, split, rank, depth, (HEAD_WEIGHT, 1.0))
                if top is not None:
                    return top
            return rank(list(terms), depth)

    def vector_ranking(self, query: np.ndarray, collection: str, dim: int, where: Compiled, depth: int) -> Ranking:
        """Return (chunk id, cosine distance) best first: the in-memory matrix when it fits, else vec0."""
        clause, params = where
        vec = np.asarray(query, dtype=np.float32).reshape(-1)
        # Documents first: the filter is evaluated once per document, not once per chunk.
        allowed_sql = (
            f"select c.id from documents d cross join chunks c on c.doc_id = d.id where d.collection = ? and {clause}"
        )
        with self.lock:
            allowed = None
            if clause != "1":
                allowed = [r[0] for r in self.conn.execute(allowed_sql, (collection, *params))]
            cached = self.vectors.knn(self.conn, self.generation(), collection, dim, vec, depth, allowed)
            if cached is not None:
                return cached
            sql = (
                f"select chunk_id, distance from {vec_table(dim)} where embedding match ? and k = ? and collection = ?"
            )
            args: list[Any] = [vec.tobytes(), depth, collection]
            if clause != "1":
                sql += f" and chunk_id in ({allowed_sql})"
                args += [collection, *params]
            return [(r[0], r[1]) for r in self.conn.execute(sql + " order by distance", args)]

    def load_hits(self, ids: Sequence[int]) -> dict[int, HitRow]:
        """Fetch chunks and their documents by chunk id."""
        if not ids:
            return {}
        with self.lock:
            rows = self.conn.execute(
                "select c.id, c.ordinal, c.text, c.heading_path, c.char_start, c.char_end, d.doc_id, d.title, "
                "d.source, d.metadata from chunks c join documents d on d.id = c.doc_id "
                f"where c.id in ({', '.join('?' * len(ids))})",
                list(ids),
            ).fetchall()
        return {
            r["id"]: HitRow(
                r["id"],
                r["ordinal"],
                r["text"],
                json.loads(r["heading_path"]),
                r["char_start"],
                r["char_end"],
                r["doc_id"],
                r["title"],
                r["source"],
                json.loads(r["metadata"]),
            )
            for r in rows
        }

    # -- copy -------------------------------------------------------------------------------------

    def export_documents(self, collection: str) -> Iterator[tuple[DocumentRow, list[ExportedChunk]]]:
        """Yield each document of a collection with its chunks and stored vectors (document order)."""
        with self.lock:
            dim = self.conn.execute("select dim from collections where name = ?", (collection,)).fetchone()
            pks = [
                r[0]
                for r in self.conn.execute("select id from documents where collection = ? order by id", (collection,))
            ]
        dim = dim[0] if dim else None
        for pk in pks:
            with self.lock:
                row = self.conn.execute(f"{_DOC_SELECT} where d.id = ?", (pk,)).fetchone()
                if row is None:
                    continue
                chunks = self.conn.execute(
                    "select id, ordinal, text, heading_path, char_start, char_end, lex_head, lex_body, embedded "
                    "from chunks where doc_id = ? order by ordinal",
                    (pk,),
                ).fetchall()
                vectors: dict[int, np.ndarray] = {}
                if dim is not None and chunks:
                    marks = ", ".join("?" * len(chunks))
                    for cid, blob in self.conn.execute(
                        f"select chunk_id, embedding from {vec_table(dim)} where chunk_id in ({marks})",
                        [c["id"] for c in chunks],
                    ):
                        vectors[cid] = np.frombuffer(blob, dtype=np.float32).copy()
            yield (
                _doc_row(row),
                [
                    ExportedChunk(
                        NewChunk(
                            c["ordinal"],
                            c["text"],
                            json.loads(c["heading_path"]),
                            c["char_start"],
                            c["char_end"],
                            c["lex_head"],
                            c["lex_body"],
                        ),
                        vectors.get(c["id"]),
                    )
                    for c in chunks
                ],
            )


def _doc_row(row: Any) -> DocumentRow:
    return DocumentRow(
        pk=row["id"],
        doc_id=row["doc_id"],
        collection=row["collection"],
        source=row["source"],
        title=row["title"],
        content_hash=row["content_hash"],
        text=row["text"],
        metadata=json.loads(row["metadata"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        n_chunks=row["n_chunks"],
    )
