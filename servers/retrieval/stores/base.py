"""The storage contract of the retrieval index: rows in, rows and rankings out, never an embedder call.

`Index` (index.py) keeps the orchestration: chunking, Kiwi analysis, content hashes, embedder calls, caches of
coverage, the pending/filler events. A `RetrievalStore` only persists and answers primitive queries, so SQLite
(stores/sqlite.py) and PostgreSQL (stores/postgres.py) return the same candidates and fusion/citations stay shared.
A collection's embedder (model id, dimension, languages) is plain data here; vectors come in as float32 arrays.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

HEAD_WEIGHT = 1.0  # bm25 weight of the title/heading column relative to the body, the same in every store
K1, B = 1.2, 0.75  # bm25 constants (FTS5's)
Ranking = list[
    tuple[int, float]
]  # (chunk id, score) best first; lexical: bm25 negated (lower is better), vector: cosine distance
Compiled = tuple[str, list[Any]]  # a filter compiled by the store that runs it (its own SQL dialect)
WriteOutcome = Literal["added", "replaced", "unchanged"]


@dataclass(frozen=True)
class CollectionRow:
    """A collection and the embedder its vectors were made with (None: created without one)."""

    name: str
    embedder_model: str | None
    dim: int | None
    languages: list[str] = field(default_factory=list)
    created_at: float = 0.0


@dataclass(frozen=True)
class DocumentRow:
    """A stored document; `pk` is the store's internal key, `doc_id` the public one."""

    pk: int
    doc_id: str
    collection: str
    source: str
    title: str
    content_hash: str
    text: str
    metadata: dict[str, Any]
    created_at: float
    updated_at: float
    n_chunks: int = 0


@dataclass(frozen=True)
class NewChunk:
    """One analysed chunk to write (the Kiwi/Snowball strings are made by the Index, outside the store)."""

    ordinal: int
    text: str
    heading_path: list[str]
    char_start: int
    char_end: int
    lex_head: str
    lex_body: str


@dataclass(frozen=True)
class ChunkSpan:
    """Where a chunk sits in its document, for citations and get_document."""

    ordinal: int
    heading_path: list[str]
    char_start: int
    char_end: int
    embedded: bool


@dataclass(frozen=True)
class PendingChunk:
    """A chunk waiting for its vector, with what the passage text is built from."""

    id: int
    collection: str
    text: str
    heading_path: list[str]
    title: str


@dataclass(frozen=True)
class HitRow:
    """What a search hit shows: the chunk, its span and its document."""

    id: int
    ordinal: int
    text: str
    heading_path: list[str]
    char_start: int
    char_end: int
    doc_id: str
    title: str
    source: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ExportedChunk:
    """A chunk with its stored vector (None when not embedded yet), for copy_index."""

    chunk: NewChunk
    vector: np.ndarray | None


@dataclass(frozen=True)
class ReembedRow:
    """A collection's latest re-embedding (servers/retrieval/reembed.py): the target embedder and the run's state.

    One row per collection (a new run replaces a finished one). `state`: running | done | cancelled | failed.
    """

    collection: str
    embedder: str  # the embedder id asked for (loads the target)
    from_model: str | None
    from_dim: int | None
    target_model: str
    target_dim: int
    target_languages: list[str]
    state: str = "running"
    error: str | None = None
    started_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None


@runtime_checkable
class RetrievalStore(Protocol):
    """Persistence of collections, documents, chunks, vectors and the lexical side of one index."""

    backend: str  # "sqlite" or "postgres"
    location: str  # the file, or the redacted URL, for status and messages

    def close(self) -> None:
        """Release connections; later calls fail."""

    def generation(self, collection: str | None = None) -> Hashable:
        """Return a key that changes on every committed write (by any process) to `collection` or, None, any."""

    # collections
    def get_collection(self, name: str) -> CollectionRow | None:
        """Return the collection, or None."""

    def collection_names(self) -> list[str]:
        """Return every collection name, sorted."""

    def create_collection(self, row: CollectionRow) -> bool:
        """Create a collection (and its vector storage for `row.dim`); False when it already existed."""

    def delete_collection(self, name: str) -> int:
        """Delete a collection with its documents, chunks and vectors; return the documents removed."""

    # documents
    def count_documents(self, collection: str) -> int:
        """Count a collection's documents."""

    def document_state(self, doc_id: str) -> tuple[str, int] | None:
        """Return (content hash, chunk count) of a stored document, or None."""

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
        """Add or atomically replace a document with its chunks ("unchanged" when the hash already matches).

        `vectors` (copy_index) are stored with the chunks when the collection has a dimension; `now` and
        `created_at` default to the current time (copy_index keeps the source's).
        """

    def get_document(self, doc_id: str) -> DocumentRow | None:
        """Return a document with its chunk count, or None."""

    def document_spans(self, pk: int) -> list[ChunkSpan]:
        """Return a document's chunk spans in order."""

    def list_documents(self, collection: str, offset: int, limit: int) -> list[DocumentRow]:
        """Return one page of a collection's documents, oldest first."""

    def delete_document(self, doc_id: str) -> DocumentRow | None:
        """Delete a document with its chunks and vectors in one transaction; return it, or None when absent."""

    # vectors
    def chunk_counts(self, collection: str | None = None) -> tuple[int, int]:
        """Return (chunks, chunks with a vector) of a collection, or of all."""

    def pending_count(self, model: str, dim: int) -> int:
        """Count chunks without a vector in collections made with (`model`, `dim`)."""

    def claim_pending(self, model: str, dim: int, limit: int) -> list[PendingChunk]:
        """Take up to `limit` chunks to embed; no other process gets them while the claim lasts."""

    def store_vectors(self, dim: int, items: Sequence[tuple[PendingChunk, np.ndarray]]) -> int:
        """Write vectors for chunks that still exist and still lack one; return how many were written."""

    # search
    def compile_filters(self, filters: dict[str, Any] | None) -> Compiled:
        """Compile metadata filters (filters.py's shape) to this store's SQL over documents `d`."""

    def lexical_ranking(self, terms: Sequence[str], collection: str, where: Compiled, depth: int) -> Ranking:
        """Return (chunk id, -bm25) best first over the analysed head/body terms, filters applied before the limit."""

    def vector_ranking(self, query: np.ndarray, collection: str, dim: int, where: Compiled, depth: int) -> Ranking:
        """Return (chunk id, cosine distance) best first, filters applied before the top-k."""

    def load_hits(self, ids: Sequence[int]) -> dict[int, HitRow]:
        """Fetch chunks and their documents by chunk id."""

    # copy
    def export_documents(self, collection: str) -> Any:
        """Yield (DocumentRow, list[ExportedChunk]) of a collection, for copy_index."""

    # reembed: new vectors are staged beside the live ones (keyed by chunk id, outside the live vector table, since
    # the target may have the same dimension) until reembed_switch swaps them in with the new embedder, atomically.
    # PostgreSQL: tables reembeds (collection pk, the ReembedRow fields) and reembed_vectors (chunk_id pk,
    # collection, embedding vector without a fixed dimension or a bytea); no HNSW index on the staging table.
    def reembed_begin(self, row: ReembedRow) -> ReembedRow:
        """Record a running reembed of `row.collection` and return the stored row. A running one with the same
        (target_model, target_dim) is kept as it is (resume, staged vectors kept); otherwise the row is replaced
        (state running, error and finished_at cleared) and staged vectors of another target are deleted."""

    def reembed_get(self, collection: str) -> ReembedRow | None:
        """Return the collection's latest reembed row, or None."""

    def reembed_running(self) -> list[ReembedRow]:
        """Return every row in state running, oldest first (the runner resumes them after a restart)."""

    def reembed_claim(self, collection: str, limit: int) -> list[PendingChunk]:
        """Return up to `limit` chunks of the collection without a staged vector, by chunk id (PostgreSQL with many
        replicas: claim with FOR UPDATE SKIP LOCKED, as claim_pending, so two processes do not embed one chunk)."""

    def reembed_store(self, collection: str, items: Sequence[tuple[PendingChunk, np.ndarray]]) -> int:
        """Upsert staged vectors for chunks that still exist (skip deleted ones), bump the row's updated_at, in one
        transaction; return how many were written. The live vectors and `embedded` flags are not touched."""

    def reembed_counts(self, collection: str) -> tuple[int, int]:
        """Return (chunks of the collection, of those the ones with a staged vector); staged rows of deleted chunks
        do not count."""

    def reembed_switch(self, collection: str) -> bool:
        """In one transaction, when the row is running and every chunk has a staged vector: delete the collection's
        live vectors (old dim), insert the staged ones into the live vectors of target_dim, set embedded = 1 on its
        chunks, set the collection's embedder_model/dim/languages to the target, delete the staged rows and mark the
        row done (updated_at = finished_at = now); invalidate caches of the collection. Else change nothing and
        return False."""

    def reembed_end(self, collection: str, state: str, error: str | None = None) -> None:
        """Mark a running row `state` (cancelled or failed) with `error` and finished_at, and delete its staged
        vectors; the live vectors and the collection's embedder stay as they are."""
