"""The retrieval index: chunking, analysis, hashes, embedder calls and coverage over a RetrievalStore.

The store (stores/sqlite.py by default, stores/postgres.py when RAGTUNE_DATABASE_URL names PostgreSQL) writes
every document in one transaction, so the background vector filler (ragtune.servers.retrieval.filler)
interleaves with ingest and search without half-written state. The store never calls the embedder.
The index stores and never calls up: `search.search(index, ...)` and `ingest.ingest_paths(index, ...)` are the
public API over it (tests/test_conventions.py keeps this module from importing them).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

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
    UnusableEmbedder,
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
from ragtune.servers.retrieval.reembed import describe_run
from ragtune.servers.retrieval.stores import open_store
from ragtune.servers.retrieval.stores.base import (
    CollectionRow,
    DocumentRow,
    NewChunk,
    PendingChunk,
    RetrievalStore,
)
from ragtune.servers.retrieval.stores.sqlite import SqliteStore
from ragtune.servers.retrieval.vector_cache import VectorCache

from ragtune.config import RetrievalSettings
from ragtune.db import Connection
from ragtune.embeddings import (
    Embedder,
    EmbedderRegistry,
    UnknownEmbedder,
    check_verdict,
    detect_language,
)

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
    database_url: str | None = None  # RAGTUNE_DATABASE_URL: PostgreSQL instead of the file at db_path

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
            database_url=settings.database(),
        )


class Index:
    """Hybrid Korean/English index: orchestration over a RetrievalStore (SQLite file or PostgreSQL)."""

    def __init__(
        self,
        store: RetrievalStore | Connection,
        config: IndexConfig,
        embedder: Embedder | None,
        embedders: EmbedderRegistry | None = None,
    ) -> None:
        if not hasattr(store, "backend"):  # a bare SQLite connection (tests share one between indexes)
            store = SqliteStore(store, config.db_path, config.vector_cache_mb)
        self.store = store
        self.config = config
        self.embedder = embedder  # the default for new collections; each collection uses its own (embedders)
        self.embedders = embedders or EmbedderRegistry(embedder)
        self.lock = threading.RLock()
        self.reembed_wake = threading.Event()  # set when a reembed starts; reembed.ReembedRunner waits on it
        self.pending = threading.Event()  # set when chunks wait for vectors; the filler waits on it
        self.embedding = False
        self.closed = False
        self._coverage: dict[tuple[Any, ...], Coverage] = {}

    @property
    def conn(self) -> Connection:
        """The SQLite write connection (SQLite backend only: tests and bench/ read the file through it)."""
        conn = getattr(self.store, "conn", None)
        if conn is None or self.store.backend != "sqlite":
            raise AttributeError(f"the {self.store.backend} store has no SQLite connection")
        return conn

    @property
    def vectors(self) -> VectorCache | None:
        """The in-memory vector matrices of the SQLite backend (None on PostgreSQL, which searches in SQL)."""
        return getattr(self.store, "vectors", None)

    @property
    def beat_target(self) -> Any:
        """Where the vector filler's heartbeat lives: a row of the store (PostgreSQL) or a file beside the index."""
        return self.store if hasattr(self.store, "read_beat") else self.config.db_path

    def generation(self, collection: str | None = None) -> Hashable:
        """Return a key that changes on every committed write, by this process or another one."""
        return self.store.generation(collection)

    @classmethod
    def open(
        cls, target: RetrievalSettings | IndexConfig | Path | str, embedder: Embedder | None, **overrides: Any
    ) -> Index:
        """Open (creating and migrating) the index at `target`; `overrides` replace IndexConfig fields.

        With `database_url` set (RAGTUNE_DATABASE_URL) the index lives in PostgreSQL, else in the SQLite file.
        """
        if isinstance(target, RetrievalSettings):
            config = IndexConfig.from_settings(target)
        elif isinstance(target, IndexConfig):
            config = target
        else:
            config = IndexConfig(db_path=Path(target))
        config = replace(config, **overrides)
        store = open_store(config.db_path, config.database_url, config.vector_cache_mb)
        settings = target if isinstance(target, RetrievalSettings) else None
        index = cls(store, config, embedder, EmbedderRegistry(embedder, settings))
        if index.pending_count():
            index.pending.set()
        return index

    def close(self) -> None:
        """Close the store; later calls fail."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self.store.close()

    # -- collections ------------------------------------------------------------------------------

    def create_collection(
        self, name: str, *, embedder: str | None = None, force: bool = False, exist_ok: bool = False
    ) -> CollectionInfo:
        """Create a collection recording its embedder (model id, dimension, languages): `embedder`, else the default.

        A tuned embedder whose evaluation verdict is `worse` is refused unless `force`.
        """
        if not COLLECTION_NAME.match(name):
            raise IngestError(f"bad collection name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
        e = self.embedder if embedder is None else self.load_embedder(embedder, force=force)
        row = CollectionRow(
            name=name,
            embedder_model=e.model_id if e else None,
            dim=e.dim if e else None,
            languages=sorted(e.languages) if e else [],
            created_at=time.time(),
        )
        with self.lock:
            if not self.store.create_collection(row):
                if not exist_ok:
                    raise CollectionExists(f"collection {name!r} already exists: ingest into it, or delete it first")
                old = self.require_collection(name)
                if embedder is not None and (old.embedder_model, old.dim) != (row.embedder_model, row.dim):
                    raise CollectionExists(
                        f"collection {name!r} already exists with embedder {old.embedder_model}: re-embed it "
                        f"(retrieval_reembed) to switch to {row.embedder_model}"
                    )
            return self.collection_info(name)

    def load_embedder(self, spec: str, *, force: bool = False) -> Embedder | None:
        """Load the embedder an id names (None for `none`); unknown ids and tuned ones that scored worse are refused."""
        try:
            check_verdict(spec, self.embedders.settings, force=force)
            return self.embedders.resolve(spec)
        except (UnknownEmbedder, RuntimeError) as e:
            raise UnusableEmbedder(str(e)) from e

    def list_collections(self) -> list[CollectionInfo]:
        """Return every collection with its document and chunk counts."""
        with self.lock:
            return [self.collection_info(n) for n in self.store.collection_names()]

    def collection_info(self, name: str) -> CollectionInfo:
        """Describe one collection; raise UnknownCollection if it does not exist."""
        with self.lock:
            row = self.require_collection(name)
            docs = self.store.count_documents(name)
            coverage = self.coverage(name)
            run = self.store.reembed_get(name)
            return CollectionInfo(
                name=name,
                embedder_model=row.embedder_model,
                dim=row.dim,
                languages=list(row.languages),
                documents=docs,
                chunks=coverage.total,
                coverage=coverage,
                embedder_problem=self.embedder_problem(row),
                reembed=describe_run(self, run) if run is not None else None,
            )

    def delete_collection(self, name: str) -> int:
        """Delete a collection with all its documents, chunks and vectors; return the documents removed."""
        with self.lock:
            self.require_collection(name)
            return self.store.delete_collection(name)

    def resolve_collection(self, name: str | None) -> str:
        """Return `name`, or the default collection when None or empty."""
        return name or self.config.default_collection

    def require_collection(self, name: str) -> CollectionRow:
        """Return the collection row, or raise UnknownCollection listing the existing ones."""
        row = self.store.get_collection(name)
        if row is None:
            names = self.store.collection_names()
            raise UnknownCollection(
                f"unknown collection {name!r}; existing: {', '.join(names) or 'none'}. "
                "Ingest documents into it first, or pick an existing collection."
            )
        return row

    def embedder_problem(self, row: CollectionRow) -> str | None:
        """Explain why this process cannot make vectors with the collection's own embedder, or None."""
        problem = self.embedders.problem(row.embedder_model, row.dim)
        if problem is None:
            return None
        e = self.embedder
        default = f"{e.model_id} (dim {e.dim})" if e else "none"
        return (
            f"embedder mismatch: collection {row.name!r} was built with {row.embedder_model} (dim {row.dim}) but "
            f"{problem}; this server's default embedder is {default}. Search with mode='lexical', re-embed the "
            "collection with an embedder this server loads (retrieval_reembed), or serve it where RAGTUNE_EMBEDDER "
            "loads the recorded one."
        )

    def collection_embedder(self, row: CollectionRow) -> Embedder | None:
        """Return the embedder of the collection's vectors (None: lexical only); EmbedderMismatch if unloadable."""
        if row.embedder_model is None:
            return None
        problem = self.embedder_problem(row)
        if problem is None:
            try:
                return self.embedders.for_model(row.embedder_model, row.dim)
            except (UnknownEmbedder, RuntimeError) as e:
                problem = f"embedder mismatch: collection {row.name!r} needs {row.embedder_model}: {e}"
        raise EmbedderMismatch(problem)

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
        """Return the collection to ingest into, creating it with the default embedder when it does not exist.

        A collection whose embedder this process cannot load still takes documents: they are searchable
        lexically at once, and a process that loads the embedder fills their vectors (embedder_problem says why).
        """
        name = self.resolve_collection(collection)
        with self.lock:
            if self.store.get_collection(name) is None:
                self.create_collection(name, exist_ok=True)
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
        state = self.store.document_state(doc_id)
        if state is not None and state[0] == content_hash:
            return DocReport(doc_id=doc_id, source=doc.source, title=doc.title, status="unchanged", chunks=state[1])
        chunks = self._chunk_rows(doc)
        with self.lock:
            # The store re-reads the hash inside its transaction: another ingest of the source may have landed.
            status = self.store.write_document(
                doc_id, name, doc.source, doc.title, content_hash, doc.text, meta, chunks
            )
        if status != "unchanged":
            self.pending.set()
        return DocReport(doc_id=doc_id, source=doc.source, title=doc.title, status=status, chunks=len(chunks))

    def _chunk_rows(self, doc: LoadedDoc) -> list[NewChunk]:
        """Chunk the text and analyse each chunk (Kiwi runs here, outside the write lock)."""
        analyzer = get_analyzer()
        out = []
        for c in chunk_text(doc.text, self.config.chunk_tokens, self.config.chunk_overlap):
            text = doc.text[c.start : c.end]
            head = analyzer.lexical(" ".join((doc.title, *c.headings)))
            out.append(NewChunk(c.ordinal, text, list(c.headings), c.start, c.end, head, analyzer.lexical(text)))
        return out

    # -- vectors ----------------------------------------------------------------------------------

    def coverage(self, collection: str | None = None) -> Coverage:
        """Count chunks with vectors against all chunks (of one collection, or all); cached until a write."""
        with self.lock:
            key = (collection, self.store.generation(collection))
            if key not in self._coverage:
                total, embedded = self.store.chunk_counts(collection)
                if len(self._coverage) > 64:
                    self._coverage.clear()
                self._coverage[key] = Coverage.of(embedded, total)
            return self._coverage[key]

    def pending_count(self) -> int:
        """Count chunks still waiting for vectors that this process can make (each collection's own embedder)."""
        return sum(self.store.pending_count(model, dim) for model, dim in self.fillable())

    def fillable(self) -> list[tuple[str, int]]:
        """Return the (model id, dim) of every collection's embedder this process can load, without loading it."""
        pairs = set()
        for name in self.store.collection_names():
            row = self.store.get_collection(name)
            if row is not None and row.embedder_model is not None and row.dim is not None:
                if self.embedders.problem(row.embedder_model, row.dim) is None:
                    pairs.add((row.embedder_model, row.dim))
        return sorted(pairs)

    def embed_pending(
        self, limit: int | None = None, progress: Progress | None = None, stop: threading.Event | None = None
    ) -> int:
        """Embed chunks that have no vector yet with their collection's embedder, in batches; return how many."""
        pairs = self.fillable()
        pending = sum(self.store.pending_count(model, dim) for model, dim in pairs)
        total = pending if limit is None else min(limit, pending)
        done = 0
        for model, dim in pairs:
            e = self.embedders.for_model(model, dim)
            while (limit is None or done < limit) and not (stop and stop.is_set()) and not self.closed:
                size = self.config.embed_batch if limit is None else min(self.config.embed_batch, limit - done)
                batch = self.store.claim_pending(model, dim, size)
                if not batch:
                    break
                texts = [passage_text(c.text, c.title, c.heading_path) for c in batch]
                vectors = np.asarray(e.embed_passages(texts), dtype=np.float32)
                self._store_vectors(batch, vectors, e)
                done += len(batch)
                if progress:
                    progress(done, max(total, done), f"embedded {done}/{max(total, done)} chunks")
        return done

    def _store_vectors(self, batch: Sequence[PendingChunk], vectors: np.ndarray, e: Embedder) -> None:
        """Write vectors for chunks that still exist and still lack one (ingest may have replaced them)."""
        if vectors.shape != (len(batch), e.dim):
            raise EmbedderMismatch(f"embedder returned shape {vectors.shape}, expected ({len(batch)}, {e.dim})")
        with self.lock:
            if self.closed:
                return
            self.store.store_vectors(e.dim, list(zip(batch, vectors, strict=True)))

    # -- search and read --------------------------------------------------------------------------

    def list_documents(self, collection: str | None = None, offset: int = 0, limit: int = 20) -> DocumentPage:
        """Return one page of a collection's documents, oldest first."""
        if not 0 <= offset <= MAX_OFFSET or not 1 <= limit <= MAX_OFFSET:  # SQLite integers are 64-bit
            raise BadQuery(f"offset must be 0..{MAX_OFFSET:,} and limit 1..{MAX_OFFSET:,}: pass next_offset")
        name = self.resolve_collection(collection)
        with self.lock:
            self.require_collection(name)
            total = self.store.count_documents(name)
            rows = self.store.list_documents(name, offset, limit)
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
            row = self.store.get_document(doc_id)
            if row is None:
                raise UnknownDocument(f"unknown document {doc_id!r}: list documents to find its id")
            chunks = self.store.document_spans(row.pk)
        spans = [
            ChunkInfo(
                chunk_id=f"{doc_id}:{c.ordinal}",
                ordinal=c.ordinal,
                heading_path=c.heading_path,
                char_start=c.char_start,
                char_end=c.char_end,
                has_vector=c.embedded,
            )
            for c in chunks
        ]
        return DocumentDetail(**_doc_info(row).model_dump(), text=row.text, chunk_spans=spans)

    def delete_document(self, doc_id: str) -> DocumentInfo:
        """Delete a document from the tables, lexical index and vectors in one transaction; return it."""
        with self.lock:
            row = self.store.delete_document(doc_id)
        if row is None:
            raise UnknownDocument(f"unknown document {doc_id!r}: list documents to find its id")
        return _doc_info(row)

    def status(self) -> Status:
        """Describe the embedder, collections and vector backlog."""
        e = self.embedder
        beat = heartbeat.read(self.beat_target)
        return Status(
            db_path=self.store.location,
            embedder_model=e.model_id if e else None,
            embedder_dim=e.dim if e else None,
            default_collection=self.config.default_collection,
            collections=self.list_collections(),
            coverage=self.coverage(),
            pending_vectors=self.pending_count(),
            embedding=self.embedding or bool(beat and beat.get("embedding")),
            vector_filler=heartbeat.describe(beat, self.embedder is not None or bool(self.fillable())),
        )


def _doc_info(row: DocumentRow) -> DocumentInfo:
    return DocumentInfo(
        doc_id=row.doc_id,
        collection=row.collection,
        source=row.source,
        title=row.title,
        chunks=row.n_chunks,
        chars=len(row.text),
        content_hash=row.content_hash,
        metadata=row.metadata,
        updated_at=row.updated_at,
        uri=document_uri(row.doc_id),
    )


def _first_line(text: str) -> str:
    """Use the first non-empty line (without markdown '#') as a title, cut to 80 characters."""
    for line in text.splitlines():
        if line.strip():
            return line.strip().lstrip("#").strip()[:80]
    return "untitled"
