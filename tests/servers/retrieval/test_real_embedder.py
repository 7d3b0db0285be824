"""End to end with the real default embedder (multilingual e5-small, shipped in a PyPI wheel): no fakes."""

from __future__ import annotations

from pathlib import Path

import anyio
from mcp import Client
from ragtune.servers.retrieval.server import build_server

from ragtune.config import RetrievalSettings


async def test_default_embedder_fills_vectors_and_hybrid_search_uses_them(tmp_path: Path, docs_dir: Path) -> None:
    settings = RetrievalSettings(
        home=tmp_path / "home",
        retrieval_roots=[docs_dir],
        chunk_tokens=64,
        chunk_overlap=8,
        embed_batch_size=8,
    )  # default embedder: e5-small
    async with Client(build_server(settings)) as client:
        ingested = await client.call_tool("retrieval_ingest_path", {"paths": [str(docs_dir)]})
        assert not ingested.is_error, ingested.content
        with anyio.fail_after(240):
            while (status := (await client.call_tool("retrieval_status", {})).structured_content)["pending_vectors"]:
                await anyio.sleep(0.2)
        assert status["embedder_model"].startswith("multilingual-e5-small") and status["embedder_dim"] == 384
        assert status["coverage"]["embedded"] == status["coverage"]["total"] == 4

        # No shared words with the English pasta document: only the multilingual vectors can find it.
        dense = await client.call_tool("retrieval_search", {"query": "파스타 면 삶는 법", "mode": "vector", "k": 1})
        assert dense.structured_content["hits"][0]["source"] == "en.md"

        hybrid = (await client.call_tool("retrieval_search", {"query": "검색을 하려면?", "k": 2})).structured_content
        assert hybrid["signals"] == ["lexical", "vector"]
        top = hybrid["hits"][0]
        assert top["source"] == "ko.md" and top["lexical_rank"] is not None and top["vector_rank"] is not None
