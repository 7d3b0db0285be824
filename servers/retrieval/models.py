"""Typed results of the index API; the MCP tools return these as structured output."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

SearchMode = Literal["hybrid", "lexical", "vector"]


class Coverage(BaseModel):
    """How many chunks already have vectors: search can use vectors only for those."""

    embedded: int = Field(description="Chunks with a vector.")
    total: int = Field(description="All chunks.")
    ratio: float = Field(description="embedded / total (1.0 when there are no chunks).")

    @classmethod
    def of(cls, embedded: int, total: int) -> Coverage:
        """Build a coverage with its ratio."""
        return cls(embedded=embedded, total=total, ratio=round(embedded / total, 4) if total else 1.0)


ReembedState = Literal["running", "done", "cancelled", "failed"]


class ReembedInfo(BaseModel):
    """A collection's re-embedding with another embedder: the old vectors answer searches until the switch."""

    collection: str
    embedder: str = Field(description="The embedder id asked for (e5-small, minilm, openai:<model>, ft:e5-small:...).")
    from_model: str | None = Field(description="Model id of the vectors being replaced (None: there were none).")
    from_dim: int | None
    target_model: str = Field(description="Model id the collection records after the switch.")
    target_dim: int
    state: ReembedState = Field(description="running, done (switched), cancelled or failed (see error).")
    coverage: Coverage = Field(description="Chunks that already have a vector from the new embedder.")
    error: str | None = None
    started_at: float
    updated_at: float
    finished_at: float | None = None
    message: str = Field(description="What is happening, in one sentence.")


class CollectionInfo(BaseModel):
    """A collection and the embedder its vectors were made with."""

    name: str
    embedder_model: str | None = Field(description="Embedder model id its vectors are made with (None: lexical only).")
    dim: int | None = Field(description="Vector dimension of that embedder.")
    languages: list[str] = Field(description="Languages the recorded embedder covers ('*' = multilingual).")
    documents: int
    chunks: int
    coverage: Coverage
    embedder_problem: str | None = Field(
        default=None, description="Why this process cannot make vectors for the collection (None: it can)."
    )
    reembed: ReembedInfo | None = Field(default=None, description="The latest re-embedding with another embedder.")


class DocumentInfo(BaseModel):
    """One document: identity, origin, size."""

    doc_id: str
    collection: str
    source: str
    title: str
    chunks: int
    chars: int
    content_hash: str
    metadata: dict[str, Any]
    updated_at: float
    uri: str = Field(description="MCP resource URI of the full text.")


class ChunkInfo(BaseModel):
    """Where one chunk lies in its document."""

    chunk_id: str
    ordinal: int
    heading_path: list[str]
    char_start: int
    char_end: int
    has_vector: bool


class DocumentDetail(DocumentInfo):
    """A document with its text and the spans of its chunks."""

    text: str
    chunk_spans: list[ChunkInfo]


class DocumentPage(BaseModel):
    """One page of documents in a collection."""

    collection: str
    total: int
    offset: int
    documents: list[DocumentInfo]
    next_offset: int | None = Field(description="Pass as offset for the next page; None at the end.")


class DocReport(BaseModel):
    """What ingest did with one document."""

    doc_id: str
    source: str
    title: str
    status: Literal["added", "replaced", "unchanged"]
    chunks: int


class FileError(BaseModel):
    """A file that was skipped, and why."""

    path: str
    error: str


class IngestReport(BaseModel):
    """Summary of one ingest call."""

    collection: str
    added: int
    replaced: int
    unchanged: int
    chunks: int = Field(description="Chunks written by this call.")
    documents: list[DocReport]
    errors: list[FileError] = Field(default_factory=list)
    coverage: Coverage = Field(description="Vector coverage of the collection after this call.")
    message: str


class Hit(BaseModel):
    """One ranked chunk, with what ranked it and where it lies in its document."""

    chunk_id: str
    doc_id: str
    title: str
    source: str
    heading_path: list[str]
    text: str
    char_start: int = Field(description="Start offset of the chunk in the document text.")
    char_end: int = Field(description="End offset (exclusive) of the chunk in the document text.")
    score: float = Field(description="Fused RRF score (hybrid), -bm25 (lexical) or cosine similarity (vector).")
    lexical_rank: int | None = Field(description="Rank in the lexical (bm25) list, 1-based; None if absent.")
    vector_rank: int | None = Field(description="Rank in the vector list, 1-based; None if absent.")
    metadata: dict[str, Any]


class SearchResult(BaseModel):
    """Ranked hits plus which signals produced them and why any was skipped."""

    query: str
    collection: str
    mode: SearchMode
    query_language: str
    signals: list[Literal["lexical", "vector"]] = Field(description="Signals that ranked these hits.")
    skipped: dict[str, str] = Field(description="Signal -> why it was not used.")
    weight: float = Field(description="Share of the vector signal in the fusion.")
    coverage: Coverage
    hits: list[Hit]


class Status(BaseModel):
    """Health of the index: embedder, collections, vector backlog."""

    db_path: str
    embedder_model: str | None
    embedder_dim: int | None
    default_collection: str
    collections: list[CollectionInfo]
    coverage: Coverage
    pending_vectors: int = Field(description="Chunks this server's embedder still has to embed.")
    embedding: bool = Field(description="Whether a server is filling vectors now (this one or another process).")
    vector_filler: str = Field(default="", description="Who fills missing vectors, in one sentence.")
