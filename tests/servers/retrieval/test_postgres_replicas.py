"""Two retrieval server processes on one PostgreSQL database: what one ingests, the other finds (real MCP over HTTP)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.servers.retrieval.test_transports import ROOT, free_port, server_env, wait_healthy


@contextmanager
def replica(tmp_path: Path, docs_dir: Path, name: str, database_url: str) -> Iterator[str]:
    """Run one `serve --transport http` process with its own RAGTUNE_HOME on the shared database."""
    port = free_port()
    env = server_env(
        tmp_path / name,
        docs_dir,
        RAGTUNE_DATABASE_URL=database_url,
        RAGTUNE_EMBEDDER="e5-small-packaged",
        RAGTUNE_LOG_LEVEL="WARNING",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragtune.servers.retrieval", "serve", "--transport", "http", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, timeout=90)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()


async def _call(base: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=90)) as http:
        async with Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
            result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    return result.structured_content or {}


@pytest.mark.slow
async def test_two_replicas_share_one_postgres_index(tmp_path: Path, docs_dir: Path, pg_url: str) -> None:
    with replica(tmp_path, docs_dir, "a", pg_url) as a, replica(tmp_path, docs_dir, "b", pg_url) as b:
        with anyio.fail_after(150):
            added = await _call(a, "retrieval_ingest_path", {"paths": [str(docs_dir)]})
            assert added["added"] == 2, added
            found = await _call(b, "retrieval_search", {"query": "벡터를 검색하는 방법", "mode": "lexical"})
            assert found["hits"][0]["source"].endswith("ko.md"), "B finds what A ingested"
            for _ in range(600):  # both fillers claim batches from one table until every chunk has its vector
                status = await _call(b, "retrieval_status", {})
                if status["coverage"]["embedded"] == status["coverage"]["total"] > 0:
                    break
                await anyio.sleep(0.2)
            assert status["coverage"]["embedded"] == status["coverage"]["total"] > 0, status
            assert "fills vectors" in status["vector_filler"], status["vector_filler"]
            dense = await _call(b, "retrieval_search", {"query": "How long do noodles cook?", "mode": "vector"})
            assert dense["hits"][0]["source"].endswith("en.md")
            doc_id = found["hits"][0]["doc_id"]
            await _call(b, "retrieval_delete_document", {"doc_id": doc_id})
            after = await _call(a, "retrieval_search", {"query": "벡터를 검색하는 방법", "mode": "hybrid"})
            assert doc_id not in {h["doc_id"] for h in after["hits"]}, "A no longer serves what B deleted"
            assert 0 < after["coverage"]["total"] < status["coverage"]["total"], "A's coverage counts are fresh"
