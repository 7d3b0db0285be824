"""The retrieval index: collections, documents and chunks in SQLite, lexical (FTS5) and vector (vec0) search.

One connection guarded by a lock: every document is written in one transaction, and the background
vector filler (ragtune.servers.retrieval.filler) interleaves with ingest and search without half-written state.
The index stores and never calls up: `search.search(index, ...)` and `ingest.ingest_paths(index, ...)` are the
public API over it (tests/test_conventions.py keeps this module from importing them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ragtune.servers.retrieval import heartbeat
from ragtune.servers.retrieval.chunking import chunk_text, passage_text
from ragtune.servers.retrieval.errors import (
    BadQuery,
    CollectionExists,
    EmbedderMismatch,
    IngestError,
    UnknownCollection,
    UnknownDocument,
)
from ragtune.servers.retrieval.korean import get_analyzer
from ragtune.servers.retrieval.loaders import LoadedDoc
from ragtune.servers.retrieval.models import (
    ChunkInfo,
    CollectionInfo,
    Coverage,
    DocReport,
    DocumentDetail,
    DocumentInfo,
    DocumentPage,
    Status,
)
from ragtune.servers.retrieval.schema import MIGRATIONS, ensure_vec_table, vec_table
from ragtune.servers.retrieval.vector_cache import VectorCache

from ragtune.config import RetrievalSettings
from ragtune.db import Connection, connect, migrate, tables, transaction
from ragtune.embeddings import Embedder, detect_language

Progress = Callable[[float, float | None, str], None]
COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def document_uri(doc_id: str) -> str:
    """Return the MCP resource URI of a document."""
    return f"ragtune://documents/{doc_id}"


MAX_OFFSET = 2**62  # paging beyond this overflowed SQLite's 64-bit integers with an empty error (issue #12)


@dataclass(frozen=True)
class IndexConfig:
    """What the index needs from the settings, so benchmarks can open one without env vars."""

    db_path: Path
    roots: tuple[Path, ...] = field(default_factory=lambda: (Path.cwd(),))
    max_file_mb: float = 25.0
    chunk_tokens: int = 350
    chunk_overlap: int = 50
    default_collection: str = "default"
    embed_batch: int = 16
    vector_cache_mb: float = 256.0
    max_query_chars: int = 2000

    @classmethod
    def from_settings(cls, settings: RetrievalSettings) -> IndexConfig:
        """Take the retrieval settings read at the entry point."""
        return cls(
            db_path=settings.db_path(),
            roots=tuple(settings.retrieval_roots),
            max_file_mb=settings.retrieval_max_file_mb,
            chunk_tokens=settings.chunk_tokens,
            chunk_overlap=settings.chunk_overlap,
            default_collection=settings.retrieval_default_collection,
            embed_batch=settings.embed_batch_size,
            vector_cache_mb=settings.vector_cache_mb,
            max_query_chars=settings.retrieval_max_query_chars,
        )


class Index:
    """Hybrid Korean/English index over one SQLite file."""

    def __init__(self, conn: Connection, config: IndexConfig, embedder: Embedder | None) -> None:
        self.conn = conn
        self.tables = tables(conn)  # simple counts and rows; FTS5, vec0 and the joins stay hand-written SQL
        self.config = config
        self.embedder = embedder
        self.lock = threading.RLock()
        self.pending = threading.Event()  # set when chunks wait for vectors; the filler waits on it
        self.embedding = False
        self.closed = False
        self._coverage: dict[tuple[Any, ...], Coverage] = {}
        self.vectors = VectorCache(config.vector_cache_mb)
        self._local = threading.local()  # per-thread read connections (see reader())
        self._readers: list[Connection] = []
        self._readers_lock = threading.Lock()
        # What the current write transaction does to vectors, applied to the cache after it commits.
        self._added: dict[str, list[tuple[int, np.ndarray]]] = {}
        self._removed: list[int] = []
        self._dropped: set[str] = set()

    def generation(self) -> tuple[int, int]:
        """Return a key that changes on every write: this connection's total changes, then data_version.

        `data_version` changes when another connection (or process) commits; cached counts and vector matrices
        tagged with an older generation are recomputed.
        """
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
        """Yield a read-only connection of this thread's own, used without the index lock.

        WAL lets readers run beside each other and beside the writer, so one long search no longer stalls the
        others (issue #12: a 360 KB query held the lock for 5.8 s). An in-memory index has one connection only.
        """
        if str(self.config.db_path) == ":memory:":
            with self.lock:
                yield self.conn
            return
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.config.db_path, vec=False)
            conn.execute("pragma query_only = on")
            self._local.conn = conn
            with self._readers_lock:  # not self.lock: a reader must never wait for the writer
                self._readers.append(conn)
        yield conn

    @classmethod
    def open(
        cls, target: RetrievalSettings | IndexConfig | Path | str, embedder: Embedder | None, **overrides: Any
    ) -> Index:
        """Open (creating and migrating) the index at `target`; `overrides` replace IndexConfig fields."""
        if isinstance(target, RetrievalSettings):
            config = IndexConfig.from_settings(target)
        elif isinstance(target, IndexConfig):
            config = target
        else:
            config = IndexConfig(db_path=Path(target))
        config = replace(config, **overrides)
        conn = connect(config.db_path)
        migrate(conn, MIGRATIONS)
        index = cls(conn, config, embedder)
        if index.pending_count():
            index.pending.set()
        return index

    def close(self) -> None:
        """Close the connection; later calls fail."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self.vectors.clear()
                self.conn.close()
                with self._readers_lock:
                    for reader in self._readers:
                        reader.close()

    # -- collections ------------------------------------------------------------------------------

    def create_collection(self, name: str, *, exist_ok: bool = False) -> CollectionInfo:
        """Create a collection recording the current embedder (model id, dimension, languages)."""
        if not COLLECTION_NAME.match(name):
            raise IngestError(f"bad collection name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
        with self.lock:
            if self._collection_row(name) is not None:
                if exist_ok:
                    return self.collection_info(name)
                raise CollectionExists(f"collection {name!r} already exists: ingest into it, or delete it first")
            e = self.embedder
            with self._write():
                if e is not None:
                    ensure_vec_table(self.conn, e.dim)
                self.conn.execute(
                    "insert into collections(name, embedder_model, dim, languages, created_at) values (?,?,?,?,?)",
                    (
                        name,
                        e.model_id if e else None,
                        e.dim if e else None,
                        json.dumps(sorted(e.languages)) if e else "[]",
                        time.time(),
                    ),
                )
            return self.collection_info(name)

    def list_collections(self) -> list[CollectionInfo]:
        """Return every collection with its document and chunk counts."""
        with self.lock:
            names = [r[0] for r in self.conn.execute("select name from collections order by name")]
            return [self.collection_info(n) for n in names]

    def collection_info(self, name: str) -> CollectionInfo:
        """Describe one collection; raise UnknownCollection if it does not exist."""
        with self.lock:
            row = self.require_collection(name)
            docs = self.conn.execute("select count(*) from documents where collection = ?", (name,)).fetchone()[0]
            coverage = self.coverage(name)
            return CollectionInfo(
                name=name,
                embedder_model=row["embedder_model"],
                dim=row["dim"],
                languages=json.loads(row["languages"]),
                documents=docs,
                chunks=coverage.total,
                coverage=coverage,
            )

    def delete_collection(self, name: str) -> int:
        """Delete a collection with all its documents, chunks and vectors; return the documents removed."""
        with self.lock:
            row = self.require_collection(name)
            with self._write():
                if row["dim"] is not None:
                    self.conn.execute(
                        f"delete from {vec_table(row['dim'])} where chunk_id in "
                        "(select id from chunks where collection = ?)",
                        (name,),
                    )
                self._dropped.add(name)
                self.conn.execute("delete from chunks where collection = ?", (name,))
                removed = self.conn.execute("delete from documents where collection = ?", (name,)).rowcount
                self.conn.execute("delete from collections where name = ?", (name,))
            return removed

    def resolve_collection(self, name: str | None) -> str:
        """Return `name`, or the default collection when None or empty."""
        return name or self.config.default_collection

    def require_collection(self, name: str) -> Any:
        """Return the collection row, or raise UnknownCollection listing the existing ones."""
        row = self._collection_row(name)
        if row is None:
            names = [r[0] for r in self.conn.execute("select name from collections order by name")]
            raise UnknownCollection(
                f"unknown collection {name!r}; existing: {', '.join(names) or 'none'}. "
                "Ingest documents into it first, or pick an existing collection."
            )
        return row

    def _collection_row(self, name: str) -> Any:
        return self.conn.execute("select * from collections where name = ?", (name,)).fetchone()

    def embedder_problem(self, row: Any) -> str | None:
        """Explain why this index's embedder cannot make vectors for the collection `row`, or None."""
        e = self.embedder
        if row["embedder_model"] is None or e is None:
            return None
        if row["embedder_model"] != e.model_id or row["dim"] != e.dim:
            return (
                f"embedder mismatch: collection {row['name']!r} was built with {row['embedder_model']} "
                f"(dim {row['dim']}) but this server uses {e.model_id} (dim {e.dim}). Restart with "
                f"RAGTUNE_EMBEDDER set to the recorded embedder, search with mode='lexical', or ingest into a "
                "new collection."
            )
        return None

    # -- ingest -----------------------------------------------------------------------------------

    def ingest_text(
        self,
        text: str,
        *,
        collection: str | None = None,
        source: str | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> DocReport:
        """Ingest raw text as one document; the same source with the same content is a no-op."""
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        doc = LoadedDoc(source or f"text:{digest}", text, title or _first_line(text), dict(metadata or {}))
        return self.ingest_document(doc, collection=collection)

    def prepare_collection(self, collection: str | None) -> str:
        """Return the collection to ingest into, creating it; refuse one built with another embedder."""
        name = self.resolve_collection(collection)
        with self.lock:
            row = self._collection_row(name)
            if row is None:
                self.create_collection(name)
                row = self._collection_row(name)
            problem = self.embedder_problem(row)
        if problem:
            raise EmbedderMismatch(problem)
        return name

    def ingest_document(self, doc: LoadedDoc, *, collection: str | None = None) -> DocReport:
        """Chunk, analyse and write one document in one transaction (replacing an older version)."""
        if not doc.text.strip():
            raise IngestError(f"document {doc.source!r} has no text: nothing to index")
        name = self.prepare_collection(collection)
        meta = {
            "lang": detect_language(doc.text[:4000]),
            **doc.metadata,
            "source": doc.source,
            "title": doc.title,
        }
        content_hash = hashlib.sha256(
            json.dumps([doc.text, meta, self.config.chunk_tokens, self.config.chunk_overlap]).encode()
        ).hexdigest()
        doc_id = hashlib.sha1(f"{name}\0{doc.source}".encode()).hexdigest()[:16]
        with self.lock:
            old = self.conn.execute("select id, content_hash from documents where doc_id = ?", (doc_id,)).fetchone()
            n = (
                self.conn.execute("select count(*) from chunks where doc_id = ?", (old["id"],)).fetchone()[0]
                if old
                else 0
            )
        if old is not None and old["content_hash"] == content_hash:
            return DocReport(doc_id=doc_id, source=doc.source, title=doc.title, status="unchanged", chunks=n)
        rows = self._chunk_rows(doc)
        with self.lock, self._write():
            # Re-read under the write lock: another ingest of the same source may have landed meanwhile.
            old = self.conn.execute("select id, content_hash from documents where doc_id = ?", (doc_id,)).fetchone()
            if old is not None and old["content_hash"] == content_hash:
                return DocReport(
                    doc_id=doc_id, source=doc.source, title=doc.title, status="unchanged", chunks=len(rows)
                )
            row = self._collection_row(name)
            now = time.time()
            if old is not None:
                self._delete_chunks(old["id"], row["dim"])
                self.conn.execute(
                    "update documents set title=?, content_hash=?, text=?, metadata=?, updated_at=? where id=?",
                    (doc.title, content_hash, doc.text, json.dumps(meta, ensure_ascii=False), now, old["id"]),
                )
                pk = old["id"]
            else:
                pk = self.conn.execute(
                    "insert into documents(doc_id, collection, source, title, content_hash, text, metadata,"
                    " created_at, updated_at) values (?,?,?,?,?,?,?,?,?)",
                    (
                        doc_id,
                        name,
                        doc.source,
                        doc.title,
                        content_hash,
                        doc.text,
                        json.dumps(meta, ensure_ascii=False),
                        now,
                        now,
                    ),
                ).lastrowid
            self.conn.executemany(
                "insert into chunks(doc_id, collection, ordinal, text, heading_path, char_start, char_end,"
                " lex_head, lex_body) values (?,?,?,?,?,?,?,?,?)",
                [(pk, name, *r) for r in rows],
            )
        self.pending.set()
        status: Literal["added", "replaced"] = "replaced" if old is not None else "added"
        return DocReport(doc_id=doc_id, source=doc.source, title=doc.title, status=status, chunks=len(rows))

    def _chunk_rows(self, doc: LoadedDoc) -> list[tuple[Any, ...]]:
        """Chunk the text and analyse each chunk (Kiwi runs here, outside the write lock)."""
        analyzer = get_analyzer()
        out = []
        for c in chunk_text(doc.text, self.config.chunk_tokens, self.config.chunk_overlap):
            text = doc.text[c.start : c.end]
            head = analyzer.lexical(" ".join((doc.title, *c.headings)))
            out.append(
                (
                    c.ordinal,
                    text,
                    json.dumps(list(c.headings), ensure_ascii=False),
                    c.start,
                    c.end,
                    head,
                    analyzer.lexical(text),
                )
            )
        return out

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

    # -- vectors ----------------------------------------------------------------------------------

    def coverage(self, collection: str | None = None) -> Coverage:
        """Count chunks with vectors against all chunks (of one collection, or all); cached until a write."""
        sql = "select count(*), coalesce(sum(embedded), 0) from chunks"
        args: tuple[Any, ...] = ()
        if collection is not None:
            sql, args = sql + " where collection = ?", (collection,)
        with self.lock:
            key = (collection, *self.generation())
            if key not in self._coverage:
                total, embedded = self.conn.execute(sql, args).fetchone()
                if len(self._coverage) > 64:
                    self._coverage.clear()
                self._coverage[key] = Coverage.of(embedded, total)
            return self._coverage[key]

    def pending_count(self) -> int:
        """Count chunks this index's embedder still has to embed."""
        if self.embedder is None:
            return 0
        with self.lock:
            return self.conn.execute(
                "select count(*) from chunks c join collections k on k.name = c.collection "
                "where c.embedded = 0 and k.embedder_model = ? and k.dim = ?",
                (self.embedder.model_id, self.embedder.dim),
            ).fetchone()[0]

    def embed_pending(
        self, limit: int | None = None, progress: Progress | None = None, stop: threading.Event | None = None
    ) -> int:
        """Embed chunks that have no vector yet, in batches; return how many were embedded."""
        e = self.embedder
        if e is None:
            return 0
        total = self.pending_count() if limit is None else min(limit, self.pending_count())
        done = 0
        while (limit is None or done < limit) and not (stop and stop.is_set()) and not self.closed:
            size = self.config.embed_batch if limit is None else min(self.config.embed_batch, limit - done)
            with self.lock:
                batch = self.conn.execute(
                    "select c.id, c.text, c.heading_path, c.collection, d.title from chunks c "
                    "join collections k on k.name = c.collection join documents d on d.id = c.doc_id "
                    "where c.embedded = 0 and k.embedder_model = ? and k.dim = ? order by c.id limit ?",
                    (e.model_id, e.dim, size),
                ).fetchall()
            if not batch:
                break
            texts = [passage_text(r["text"], r["title"], json.loads(r["heading_path"])) for r in batch]
            vectors = np.asarray(e.embed_passages(texts), dtype=np.float32)
            self._store_vectors(batch, vectors)
            done += len(batch)
            if progress:
                progress(done, max(total, done), f"embedded {done}/{max(total, done)} chunks")
        return done

    def _store_vectors(self, batch: Sequence[Any], vectors: np.ndarray) -> None:
        """Write vectors for chunks that still exist and still lack one (ingest may have replaced them)."""
        e = self.embedder
        assert e is not None
        if vectors.shape != (len(batch), e.dim):
            raise EmbedderMismatch(f"embedder returned shape {vectors.shape}, expected ({len(batch)}, {e.dim})")
        with self.lock:
            if self.closed:
                return
            with self._write():
                table = ensure_vec_table(self.conn, e.dim)
                for row, vec in zip(batch, vectors, strict=True):
                    current = self.conn.execute("select embedded from chunks where id = ?", (row["id"],)).fetchone()
                    if current is None or current[0]:
                        continue
                    self.conn.execute(
                        f"insert into {table}(chunk_id, embedding, collection) values (?,?,?)",
                        (row["id"], vec.tobytes(), row["collection"]),
                    )
                    self._added.setdefault(row["collection"], []).append((row["id"], vec))
                    self.conn.execute("update chunks set embedded = 1 where id = ?", (row["id"],))

    # -- search and read --------------------------------------------------------------------------

    def list_documents(self, collection: str | None = None, offset: int = 0, limit: int = 20) -> DocumentPage:
        """Return one page of a collection's documents, oldest first."""
        if not 0 <= offset <= MAX_OFFSET or not 1 <= limit <= MAX_OFFSET:  # SQLite integers are 64-bit
            raise BadQuery(f"offset must be 0..{MAX_OFFSET:,} and limit 1..{MAX_OFFSET:,}: pass next_offset")
        name = self.resolve_collection(collection)
        with self.lock:
            self.require_collection(name)
            total = self.tables["documents"].count_where("collection = ?", [name])
            rows = self.conn.execute(
                f"{_DOC_SELECT} where d.collection = ? order by d.id limit ? offset ?", (name, limit, offset)
            ).fetchall()
        nxt = offset + len(rows) if offset + len(rows) < total else None
        return DocumentPage(
            collection=name,
            total=total,
            offset=offset,
            documents=[_doc_info(r) for r in rows],
            next_offset=nxt,
        )

    def get_document(self, doc_id: str) -> DocumentDetail:
        """Return a document with its text and chunk spans; raise UnknownDocument if absent."""
        with self.lock:
            row = self.conn.execute(f"{_DOC_SELECT} where d.doc_id = ?", (doc_id,)).fetchone()
            if row is None:
                raise UnknownDocument(f"unknown document {doc_id!r}: list documents to find its id")
            chunks = self.conn.execute(
                "select ordinal, heading_path, char_start, char_end, embedded from chunks where doc_id = ? "
                "order by ordinal",
                (row["id"],),
            ).fetchall()
        spans = [
            ChunkInfo(
                chunk_id=f"{doc_id}:{c['ordinal']}",
                ordinal=c["ordinal"],
                heading_path=json.loads(c["heading_path"]),
                char_start=c["char_start"],
                char_end=c["char_end"],
                has_vector=bool(c["embedded"]),
            )
            for c in chunks
        ]
        return DocumentDetail(**_doc_info(row).model_dump(), text=row["text"], chunk_spans=spans)

    def delete_document(self, doc_id: str) -> DocumentInfo:
        """Delete a document from the tables, FTS and vec0 in one transaction; return what was deleted."""
        with self.lock:
            row = self.conn.execute(f"{_DOC_SELECT} where d.doc_id = ?", (doc_id,)).fetchone()
            if row is None:
                raise UnknownDocument(f"unknown document {doc_id!r}: list documents to find its id")
            dim = self._collection_row(row["collection"])["dim"]
            with self._write():
                self._delete_chunks(row["id"], dim)
                self.conn.execute("delete from documents where id = ?", (row["id"],))
        return _doc_info(row)

    def status(self) -> Status:
        """Describe the embedder, collections and vector backlog."""
        e = self.embedder
        beat = heartbeat.read(self.config.db_path)
        return Status(
            db_path=str(self.config.db_path),
            embedder_model=e.model_id if e else None,
            embedder_dim=e.dim if e else None,
            default_collection=self.config.default_collection,
            collections=self.list_collections(),
            coverage=self.coverage(),
            pending_vectors=self.pending_count(),
            embedding=self.embedding or bool(beat and beat.get("embedding")),
            vector_filler=heartbeat.describe(beat, self.embedder is not None),
        )


_DOC_SELECT = "select d.*, (select count(*) from chunks c where c.doc_id = d.id) as n_chunks from documents d"


def _doc_info(row: Any) -> DocumentInfo:
    return DocumentInfo(
        doc_id=row["doc_id"],
        collection=row["collection"],
        source=row["source"],
        title=row["title"],
        chunks=row["n_chunks"],
        chars=len(row["text"]),
        content_hash=row["content_hash"],
        metadata=json.loads(row["metadata"]),
        updated_at=row["updated_at"],
        uri=document_uri(row["doc_id"]),
    )


def _first_line(text: str) -> str:
    """Use the first non-empty line (without markdown '#') as a title, cut to 80 characters."""
    for line in text.splitlines():
        if line.strip():
            return line.strip().lstrip("#").strip()[:80]
    return "untitled"
