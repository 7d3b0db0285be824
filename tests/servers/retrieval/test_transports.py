"""Real transports: a stdio subprocess (as Claude Desktop runs it) and streamable HTTP with a bearer token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "test-token-123"


def server_env(tmp_path: Path, docs_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a child server: RAGTUNE_* only (stdio children inherit almost nothing)."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "RAGTUNE_HOME": str(tmp_path / "home"),
        "RAGTUNE_RETRIEVAL_ROOTS": str(docs_dir),
        "RAGTUNE_EMBEDDER": "none",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


async def test_stdio_round_trip_ingest_and_search(tmp_path: Path, docs_dir: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "ragtune.servers.retrieval", "serve", "--transport", "stdio"],
        env=server_env(tmp_path, docs_dir),
        cwd=str(ROOT),
    )
    with anyio.fail_after(90):
        async with Client(params) as client:
            ingested = await client.call_tool("retrieval_ingest_path", {"paths": [str(docs_dir / "ko.md")]})
            assert not ingested.is_error, ingested.content
            found = await client.call_tool("retrieval_search", {"query": "벡터를 검색하는 방법"})
            assert not found.is_error, found.content
    hits = found.structured_content["hits"]
    assert hits and hits[0]["source"] == "ko.md"
    assert found.structured_content["skipped"]["vector"].startswith("no embedder")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server(tmp_path: Path, docs_dir: Path) -> Iterator[str]:
    """Run `serve --transport http` with RAGTUNE_API_TOKEN in a subprocess; yield its base URL."""
    port = free_port()
    env = server_env(tmp_path, docs_dir, RAGTUNE_API_TOKEN=TOKEN, RAGTUNE_LOG_LEVEL="WARNING")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ragtune.servers.retrieval",
            "serve",
            "--transport",
            "http",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
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


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Poll /health until the server answers (bounded); fail with its stderr if it died."""
    with httpx2.Client(timeout=2.0) as http:
        for _ in range(int(timeout / 0.1)):
            if proc.poll() is not None:
                raise AssertionError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                if http.get(f"{base}/health").status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            try:
                proc.wait(timeout=0.1)  # doubles as a bounded pause that also notices an early exit
            except subprocess.TimeoutExpired:
                continue
    raise AssertionError("server did not become healthy in time")


async def test_http_requires_the_bearer_token(http_server: str) -> None:
    async with httpx2.AsyncClient(timeout=10.0) as http:
        health = await http.get(f"{http_server}/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        anonymous = await http.post(
            f"{http_server}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"accept": "application/json, text/event-stream"},
        )
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
        # A shared bearer token is not OAuth: no metadata naming an authorization server that does not exist.
        assert "resource_metadata" not in anonymous.headers["www-authenticate"]
        assert (await http.get(f"{http_server}/.well-known/oauth-protected-resource/mcp")).status_code == 404
        wrong = await http.post(f"{http_server}/mcp", json={}, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401

    authed = httpx2.AsyncClient(headers={"authorization": f"Bearer {TOKEN}"}, timeout=httpx2.Timeout(30, read=60))
    async with authed:
        with anyio.fail_after(60):
            async with Client(streamable_http_client(f"{http_server}/mcp", http_client=authed)) as client:
                stored = await client.call_tool(
                    "retrieval_ingest_text", {"text": "HTTP로 넣은 문서입니다.", "source": "h"}
                )
                assert not stored.is_error, stored.content
                found = await client.call_tool("retrieval_search", {"query": "문서를", "mode": "lexical"})
    assert found.structured_content["hits"][0]["source"] == "h"


def test_http_refuses_a_public_bind_without_a_token_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ragtune.servers.retrieval.__main__ import main

    monkeypatch.setenv("RAGTUNE_EMBEDDER", "none")
    assert main(["serve", "--transport", "http", "--host", "0.0.0.0", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert "RAGTUNE_API_TOKEN" in err and "\n" not in err and "Traceback" not in err
