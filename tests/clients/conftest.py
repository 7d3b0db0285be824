"""Fixtures for the example clients: real servers on loopback, a scripted OpenAI-compatible chat endpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "clients-test-token"


def free_port() -> int:
    """Return a port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_client(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run clients/<script> as a user would, returning its exit status and output."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "clients" / script), *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def serve(args: list[str], env: dict[str, str], ready_url: str, deadline_s: float = 120) -> Iterator[None]:
    """Start `python <args>` and wait until `ready_url` answers; stop it afterwards."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        end = time.monotonic() + deadline_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
            try:
                httpx.get(ready_url, timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > end:
                    raise TimeoutError(f"{ready_url} did not answer within {deadline_s}s") from None
                time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextmanager
def in_thread(app: Any, port: int) -> Iterator[None]:
    """Serve an ASGI app with uvicorn in a background thread on loopback."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > end:
            raise RuntimeError("the in-thread server did not start")
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def server_env(home: Path) -> dict[str, str]:
    """Environment for a ragtune server under test: its own home, a token, lexical-only retrieval."""
    return {
        "RAGTUNE_HOME": str(home),
        "RAGTUNE_API_TOKEN": TOKEN,
        "RAGTUNE_EMBEDDER": "none",
        "RAGTUNE_RETRIEVAL_ROOTS": str(ROOT / "docs"),
        "RAGTUNE_FINETUNE_ROOTS": str(home),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture(scope="module")
def finetune_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real fine-tuning server (MCP at /mcp, REST at /v1) with a token, on loopback."""
    port = free_port()
    env = server_env(tmp_path_factory.mktemp("finetune-home"))
    with serve(
        ["-m", "ragtune.servers.finetune", "serve", "--transport", "http", "--port", str(port)],
        env,
        f"http://127.0.0.1:{port}/health",
    ):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def retrieval_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real retrieval server with a token, on loopback, holding docs/ (lexical index)."""
    port = free_port()
    env = server_env(tmp_path_factory.mktemp("retrieval-home"))
    with serve(
        ["-m", "ragtune.servers.retrieval", "serve", "--transport", "http", "--port", str(port)],
        env,
        f"http://127.0.0.1:{port}/health",
    ):
        import anyio

        anyio.run(_ingest_docs, f"http://127.0.0.1:{port}/mcp")
        yield f"http://127.0.0.1:{port}"


async def _ingest_docs(mcp_url: str) -> None:
    """Ingest the project's docs through the server's own MCP tool."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=httpx2.Timeout(30.0, read=300.0)
        ) as http,
        Client(streamable_http_client(mcp_url, http_client=http)) as client,
    ):
        result = await client.call_tool("retrieval_ingest_path", {"paths": [str(ROOT / "docs")]})
        assert not result.is_error, result.content


# ---- a scripted OpenAI-compatible chat endpoint -------------------------------------------------------

Responder = Callable[[dict[str, Any]], dict[str, Any]]


def tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """An assistant message that calls one tool."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
        ],
    }


def text(content: str) -> dict[str, Any]:
    """An assistant message with a final answer."""
    return {"role": "assistant", "content": content}


@dataclass
class ScriptedChat:
    """A chat-completions endpoint that answers with `responder(request)` and records every request."""

    responder: Responder
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        message = self.responder(body)
        return JSONResponse(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "scripted"),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


@pytest.fixture
def scripted_chat() -> Iterator[Callable[[Responder], ScriptedChat]]:
    """Start scripted chat endpoints on loopback: `scripted_chat(responder)` returns one with its `url`."""
    stack: list[Any] = []

    def start(responder: Responder) -> ScriptedChat:
        chat = ScriptedChat(responder)
        app = Starlette(routes=[Route("/v1/chat/completions", chat.completions, methods=["POST"])])
        port = free_port()
        ctx = in_thread(app, port)
        ctx.__enter__()
        stack.append(ctx)
        chat.url = f"http://127.0.0.1:{port}/v1"
        return chat

    yield start
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)
