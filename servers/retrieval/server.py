"""The retrieval MCP server: every tool lives in build_server() (add a tool here, plus a test)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field
from ragtune.servers.not_found import resource_not_found
from ragtune.servers.retrieval.errors import RetrievalError, UnknownDocument
from ragtune.servers.retrieval.filler import VectorFiller
from ragtune.servers.retrieval.http import add_health_route, auth_options, http_app
from ragtune.servers.retrieval.index import Index, Progress
from ragtune.servers.retrieval.ingest import ingest_paths, summarize
from ragtune.servers.retrieval.models import (
    CollectionInfo,
    DocumentDetail,
    DocumentPage,
    IngestReport,
    ReembedInfo,
    SearchMode,
    SearchResult,
    Status,
)
from ragtune.servers.retrieval.reembed import ReembedRunner, cancel_reembed, reembed_info, start_reembed
from ragtune.servers.retrieval.search import search
from starlette.applications import Starlette

from ragtune import __version__
from ragtune.config import RetrievalSettings
from ragtune.embeddings import Embedder, make_embedder

NAME = "ragtune-retrieval"
INSTRUCTIONS = (
    "Search the user's documents (Korean and English) with retrieval_search and cite hits by title, source and "
    "char span. Add documents with retrieval_ingest_path or retrieval_ingest_text; new documents are searchable "
    "lexically at once, their vectors fill in the background (see coverage)."
)
READ = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
DELETE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)
T = TypeVar("T")
_USE_SETTINGS: Any = object()


class CollectionList(BaseModel):
    """Every collection with its counts."""

    default_collection: str
    collections: list[CollectionInfo]


class Deleted(BaseModel):
    """What a delete removed."""

    deleted: str
    documents: int
    message: str


@dataclass
class State:
    """Objects the lifespan opens once per process."""

    index: Index


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking index work on a worker thread; turn domain errors into ToolErrors the model can read."""
    try:
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
    except RetrievalError as e:
        raise ToolError(str(e)) from e


def _progress(ctx: Context[State]) -> Progress:
    """Return a callback that sends MCP progress notifications from the worker thread."""

    def report(done: float, total: float | None, message: str) -> None:
        anyio.from_thread.run(ctx.report_progress, done, total, message)

    return report


def build_server(settings: RetrievalSettings, *, embedder: Embedder | None = _USE_SETTINGS) -> MCPServer:
    """Build the MCP server; the index opens once in the lifespan, with a background vector filler."""

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[State]:
        chosen = make_embedder(settings) if embedder is _USE_SETTINGS else embedder
        index = await anyio.to_thread.run_sync(lambda: Index.open(settings, chosen))
        filler = VectorFiller(index).start()
        reembeds = ReembedRunner(index).start()  # resumes any reembed a restart interrupted
        try:
            yield State(index=index)
        finally:
            await anyio.to_thread.run_sync(reembeds.stop)
            await anyio.to_thread.run_sync(filler.stop)
            index.close()

    mcp = MCPServer(
        NAME,
        title="ragtune retrieval",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        **auth_options(settings.token(), settings.retrieval_host, settings.retrieval_port),
    )
    add_health_route(mcp, NAME)
    _add_search_tools(mcp)
    _add_ingest_tools(mcp)
    _add_manage_tools(mcp)
    return mcp


def build_app(
    settings: RetrievalSettings, *, embedder: Embedder | None = _USE_SETTINGS, host: str | None = None
) -> Starlette:
    """Build the HTTP app: streamable MCP at /mcp (bearer token when RAGTUNE_API_TOKEN is set), /health open."""
    return http_app(build_server(settings, embedder=embedder), host or settings.retrieval_host, settings)


def _index(ctx: Context[State]) -> Index:
    return ctx.request_context.lifespan_context.index


Collection = Annotated[str | None, Field(description="Collection name; omit for the default collection.")]
DocId = Annotated[str, Field(description="Document id, as in search hits and retrieval_list_documents.")]
EMBEDDER_IDS = (
    "Embedder id: e5-small (multilingual), minilm (English), openai:<model>[:<dim>], a tuned ft:e5-small:... "
    "(the fine_tuned_model of an embedding job), or none (lexical only)."
)
EmbedderId = Annotated[str | None, Field(description=EMBEDDER_IDS + " Omit for this server's default.")]
Force = Annotated[bool, Field(description="Use a tuned embedder even though its evaluation verdict was 'worse'.")]


def _reembed_now(index: Index, collection: str) -> ReembedInfo:
    """Return the collection's reembed as it is now."""
    info = reembed_info(index, collection)
    assert info is not None
    return info


def _add_search_tools(mcp: MCPServer) -> None:
    @mcp.tool(title="Search documents", annotations=READ)
    async def retrieval_search(
        query: Annotated[str, Field(description="The question or keywords, in Korean or English.")],
        ctx: Context[State],
        collection: Collection = None,
        k: Annotated[int, Field(ge=1, le=100, description="How many hits to return.")] = 5,
        mode: Annotated[SearchMode, Field(description="hybrid (bm25 + vectors, fused), lexical or vector.")] = "hybrid",
        filters: Annotated[
            dict[str, Any] | None,
            Field(
                description='Metadata filters, ANDed: {"source": "a.md"}, {"year": {"gte": 2020}}, '
                '{"lang": {"in": ["ko", "en"]}}; operators eq ne gt gte lt lte in nin.'
            ),
        ] = None,
        weight: Annotated[float, Field(ge=0.0, le=1.0, description="Vector share in hybrid fusion.")] = 0.5,
    ) -> SearchResult:
        """Search a collection; each hit has its text, title, source, heading path, char span and ranks."""
        return await _run(
            search, _index(ctx), query, collection=collection, k=k, mode=mode, filters=filters, weight=weight
        )

    @mcp.tool(title="Index status", annotations=READ)
    async def retrieval_status(ctx: Context[State]) -> Status:
        """Show the embedder, collections with counts, and how many chunks still wait for vectors."""
        return await _run(_index(ctx).status)


def _add_ingest_tools(mcp: MCPServer) -> None:
    @mcp.tool(title="Ingest files or folders", annotations=WRITE)
    async def retrieval_ingest_path(
        paths: Annotated[list[str], Field(min_length=1, description="Files or folders under the allowed roots.")],
        ctx: Context[State],
        collection: Collection = None,
        text_field: Annotated[str, Field(description="Field holding the text in .json/.jsonl records.")] = "text",
    ) -> IngestReport:
        """Ingest .md .txt .html .pdf .docx .json .jsonl files or folders; unchanged files are skipped."""
        return await _run(
            ingest_paths,
            _index(ctx),
            paths,
            collection=collection,
            text_field=text_field,
            progress=_progress(ctx),
        )

    @mcp.tool(title="Ingest text", annotations=WRITE)
    async def retrieval_ingest_text(
        text: Annotated[str, Field(min_length=1, description="The document text (markdown headings are used).")],
        ctx: Context[State],
        collection: Collection = None,
        source: Annotated[
            str | None,
            Field(description="Stable name of the document; ingesting the same source again replaces it."),
        ] = None,
        title: Annotated[str | None, Field(description="Title; default the first line.")] = None,
        metadata: Annotated[
            dict[str, Any] | None,
            Field(description='Filterable metadata, e.g. {"year": 2024, "lang": "ko"}.'),
        ] = None,
    ) -> IngestReport:
        """Ingest raw text as one document with optional metadata; the same content again is a no-op."""
        index = _index(ctx)

        def ingest() -> IngestReport:
            report = index.ingest_text(text, collection=collection, source=source, title=title, metadata=metadata)
            return summarize(index, index.resolve_collection(collection), [report], [])

        return await _run(ingest)


def _add_manage_tools(mcp: MCPServer) -> None:
    @mcp.tool(title="List collections", annotations=READ)
    async def retrieval_list_collections(ctx: Context[State]) -> CollectionList:
        """List collections with their embedder, document and chunk counts and vector coverage."""
        index = _index(ctx)
        return CollectionList(
            default_collection=index.config.default_collection, collections=await _run(index.list_collections)
        )

    @mcp.tool(title="Create a collection", annotations=WRITE)
    async def retrieval_create_collection(
        name: Annotated[str, Field(description="1-64 letters, digits, '_', '.', '-'.")],
        ctx: Context[State],
        embedder: EmbedderId = None,
        force: Force = False,
    ) -> CollectionInfo:
        """Create an empty collection with its own embedder (default: this server's); search and ingest use it."""
        return await _run(_index(ctx).create_collection, name, embedder=embedder, force=force)

    @mcp.tool(title="Re-embed a collection", annotations=WRITE)
    async def retrieval_reembed(
        embedder: Annotated[str, Field(description=EMBEDDER_IDS)],
        ctx: Context[State],
        collection: Collection = None,
        force: Force = False,
        wait: Annotated[
            bool, Field(description="Wait for the switch-over, sending progress; false returns at once.")
        ] = False,
    ) -> ReembedInfo:
        """Re-embed a collection with another embedder in the background; old vectors answer until the switch.

        Call again with the same embedder to see its progress (coverage of the new vectors).
        """
        index = _index(ctx)
        info = await _run(start_reembed, index, collection, embedder, force=force)
        while wait and info.state == "running":
            await ctx.report_progress(info.coverage.embedded, info.coverage.total, info.message)
            await anyio.sleep(0.5)
            info = await _run(_reembed_now, index, info.collection)
        return info

    @mcp.tool(title="Cancel a re-embed", annotations=DELETE)
    async def retrieval_reembed_cancel(ctx: Context[State], collection: Collection = None) -> ReembedInfo:
        """Cancel a running re-embed: its new vectors are dropped, the collection keeps its embedder."""
        return await _run(cancel_reembed, _index(ctx), collection)

    @mcp.tool(title="Delete a collection", annotations=DELETE)
    async def retrieval_delete_collection(
        name: Annotated[str, Field(description="Name of the collection to delete.")], ctx: Context[State]
    ) -> Deleted:
        """Delete a collection with all its documents and vectors (cannot be undone)."""
        removed = await _run(_index(ctx).delete_collection, name)
        return Deleted(deleted=name, documents=removed, message=f"deleted collection {name!r} ({removed} documents)")

    @mcp.tool(title="List documents", annotations=READ)
    async def retrieval_list_documents(
        ctx: Context[State],
        collection: Collection = None,
        offset: Annotated[int, Field(ge=0, description="Documents to skip (next_offset of the previous page).")] = 0,
        limit: Annotated[int, Field(ge=1, le=200, description="Documents per page.")] = 20,
    ) -> DocumentPage:
        """List a collection's documents a page at a time (pass next_offset to continue)."""
        return await _run(_index(ctx).list_documents, collection, offset, limit)

    @mcp.tool(title="Get a document", annotations=READ)
    async def retrieval_get_document(doc_id: DocId, ctx: Context[State]) -> DocumentDetail:
        """Get a document's full text, metadata and the char spans of its chunks."""
        return await _run(_index(ctx).get_document, doc_id)

    @mcp.tool(title="Delete a document", annotations=DELETE)
    async def retrieval_delete_document(doc_id: DocId, ctx: Context[State]) -> Deleted:
        """Delete one document from the lexical and vector indexes."""
        info = await _run(_index(ctx).delete_document, doc_id)
        return Deleted(deleted=doc_id, documents=1, message=f"deleted {info.title!r} ({info.source})")

    @mcp.resource(
        "ragtune://documents/{doc_id}",
        name="document",
        mime_type="text/plain",
        description="Full text of an ingested document.",
    )
    async def document_text(doc_id: str, ctx: Context[State]) -> str:
        """Return the document text; an unknown id is resource-not-found with the reason."""
        index = _index(ctx)
        try:
            return (await anyio.to_thread.run_sync(index.get_document, doc_id)).text
        except UnknownDocument as e:
            raise resource_not_found(ctx, f"ragtune://documents/{doc_id}", str(e)) from e
