"""The MCP tools through an in-memory client: structured results, ToolErrors, progress, resources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from ragtune.servers.retrieval.server import build_server

from ragtune.config import RetrievalSettings

from .conftest import FakeEmbedder

CONTRACT_TOOLS = {
    "retrieval_search",
    "retrieval_ingest_path",
    "retrieval_ingest_text",
    "retrieval_list_collections",
    "retrieval_create_collection",
    "retrieval_delete_collection",
    "retrieval_list_documents",
    "retrieval_get_document",
    "retrieval_delete_document",
    "retrieval_status",
    "retrieval_reembed",
    "retrieval_reembed_cancel",
}


async def call(client: Client, tool: str, /, **args: Any) -> dict[str, Any]:
    """Call a tool that must succeed and return its structured content."""
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def error_text(client: Client, tool: str, /, **args: Any) -> str:
    """Call a tool that must fail and return the message the model reads."""
    result = await client.call_tool(tool, args)
    assert result.is_error
    return " ".join(getattr(c, "text", "") for c in result.content)


async def test_tools_match_the_contract_and_read_tools_are_annotated(
    retrieval_settings: RetrievalSettings,
) -> None:
    async with Client(build_server(retrieval_settings, embedder=FakeEmbedder())) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == CONTRACT_TOOLS
    for name in (
        "retrieval_search",
        "retrieval_status",
        "retrieval_list_documents",
        "retrieval_get_document",
    ):
        assert tools[name].annotations and tools[name].annotations.read_only_hint, name
    assert tools["retrieval_delete_document"].annotations.destructive_hint
    assert all(t.description and t.output_schema for t in tools.values())


async def test_ingest_reports_progress_then_search_get_delete(
    retrieval_settings: RetrievalSettings, docs_dir: Path
) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with Client(build_server(retrieval_settings, embedder=FakeEmbedder())) as client:
        with anyio.fail_after(30):
            result = await client.call_tool(
                "retrieval_ingest_path", {"paths": [str(docs_dir)]}, progress_callback=on_progress
            )
        assert not result.is_error, result.content
        report = result.structured_content
        assert report["added"] == 2 and report["collection"] == "default"
        assert progress and progress[-1][:2] == (2, 2), progress

        found = await call(client, "retrieval_search", query="검색을 하려면?", mode="lexical", k=3)
        top = found["hits"][0]
        assert top["source"] == "ko.md" and top["heading_path"][0] == "검색 안내" and top["lexical_rank"] == 1
        assert set(found["coverage"]) == {"embedded", "total", "ratio"}

        doc = await call(client, "retrieval_get_document", doc_id=top["doc_id"])
        assert doc["text"][top["char_start"] : top["char_end"]] == top["text"]
        resource = await client.read_resource(doc["uri"])
        assert resource.contents[0].text == doc["text"]

        await call(client, "retrieval_delete_document", doc_id=top["doc_id"])
        after = await call(client, "retrieval_search", query="검색을 하려면?", mode="lexical")
        assert all(h["doc_id"] != top["doc_id"] for h in after["hits"])
        assert "unknown document" in await error_text(client, "retrieval_get_document", doc_id=top["doc_id"])


async def test_vectors_fill_in_the_background_and_hybrid_uses_them(
    retrieval_settings: RetrievalSettings,
) -> None:
    async with Client(build_server(retrieval_settings, embedder=FakeEmbedder())) as client:
        await call(
            client,
            "retrieval_ingest_text",
            text="Garlic and tomato sauce.",
            source="sauce",
            metadata={"year": 2024},
        )
        with anyio.fail_after(20):
            while (await call(client, "retrieval_status"))["pending_vectors"]:
                await anyio.sleep(0.05)
        found = await call(client, "retrieval_search", query="tomato sauce", filters={"year": {"gte": 2020}})
        assert found["signals"] == ["lexical", "vector"]
        assert found["coverage"] == {"embedded": 1, "total": 1, "ratio": 1.0}
        again = await call(
            client,
            "retrieval_ingest_text",
            text="Garlic and tomato sauce.",
            source="sauce",
            metadata={"year": 2024},
        )
        assert again["unchanged"] == 1 and "unchanged" in again["message"]


async def test_bad_input_gets_tool_errors_that_say_what_to_do(
    retrieval_settings: RetrievalSettings, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.md"
    outside.write_text("nope", encoding="utf-8")
    async with Client(build_server(retrieval_settings, embedder=FakeEmbedder())) as client:
        await call(client, "retrieval_ingest_text", text="some text", source="s")
        assert "query is empty" in await error_text(client, "retrieval_search", query=" ")
        assert "unknown collection 'zzz'" in await error_text(client, "retrieval_search", query="x", collection="zzz")
        assert "unknown filter operator" in await error_text(
            client, "retrieval_search", query="x", filters={"year": {"near": 1}}
        )
        assert "outside the allowed roots" in await error_text(client, "retrieval_ingest_path", paths=[str(outside)])
        assert "already exists" in await error_text(client, "retrieval_create_collection", name="default")
        status = await call(client, "retrieval_status")
        assert status["collections"][0]["documents"] == 1, "failed calls wrote nothing"


async def test_a_server_with_another_embedder_refuses_the_collection(
    retrieval_settings: RetrievalSettings,
) -> None:
    async with Client(build_server(retrieval_settings, embedder=FakeEmbedder())) as client:
        await call(client, "retrieval_ingest_text", text="made with the first model", source="a")
    async with Client(build_server(retrieval_settings, embedder=FakeEmbedder("other", 32))) as client:
        message = await error_text(client, "retrieval_search", query="first model", mode="vector")
        assert "embedder mismatch" in message and "RAGTUNE_EMBEDDER" in message
        hybrid = await call(client, "retrieval_search", query="first model")
        assert hybrid["signals"] == ["lexical"] and "embedder mismatch" in hybrid["skipped"]["vector"]
        lexical = await call(client, "retrieval_search", query="first model", mode="lexical")
        assert lexical["hits"]


async def test_collections_can_be_created_listed_and_deleted(retrieval_settings: RetrievalSettings) -> None:
    async with Client(build_server(retrieval_settings, embedder=FakeEmbedder())) as client:
        created = await call(client, "retrieval_create_collection", name="papers")
        assert created["embedder_model"] == "fake-hash-64" and created["dim"] == 64
        await call(client, "retrieval_ingest_text", text="a paper", source="p1", collection="papers")
        listed = await call(client, "retrieval_list_collections")
        assert [(c["name"], c["documents"]) for c in listed["collections"]] == [("papers", 1)]
        page = await call(client, "retrieval_list_documents", collection="papers")
        assert page["total"] == 1 and page["documents"][0]["source"] == "p1"
        deleted = await call(client, "retrieval_delete_collection", name="papers")
        assert deleted["documents"] == 1
        assert "unknown collection" in await error_text(client, "retrieval_list_documents", collection="papers")
