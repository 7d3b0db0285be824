"""Fixtures for the fine-tuning service: settings under tmp_path, datasets, and a live uvicorn server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from ragtune.servers.finetune.app import build_app
from ragtune.servers.finetune.service import FinetuneService

from ragtune.config import FinetuneSettings


def jsonl(rows: list[dict]) -> str:
    """Return rows as JSONL text."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


CHAT = jsonl(
    [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} + {i}?"},
                {"role": "assistant", "content": f"{i} + {i} = {2 * i}."},
            ]
        }
        for i in range(12)
    ]
)
PREFERENCE = jsonl(
    [
        {
            "input": {"messages": [{"role": "user", "content": f"Add {i} and 1."}]},
            "preferred_output": [{"role": "assistant", "content": f"{i + 1}"}],
            "non_preferred_output": [{"role": "assistant", "content": "No idea."}],
        }
        for i in range(12)
    ]
)
TEXT = jsonl([{"text": f"Retrieval fetches passage {i}; fine-tuning changes weights."} for i in range(12)])
BAD = CHAT + '{"messages": [{"role": "user", "content": "hi"}]}\n{oops\n'


@pytest.fixture
def settings(tmp_path: Path, isolated_env: Path) -> FinetuneSettings:
    """Settings with HOME under tmp_path and tmp_path/data as the only folder uploads may read."""
    data = tmp_path / "data"
    data.mkdir()
    return FinetuneSettings(home=isolated_env, finetune_roots=[data])


@pytest.fixture
def service(settings: FinetuneSettings) -> Iterator[FinetuneService]:
    """A service over a fresh job store."""
    svc = FinetuneService(settings)
    yield svc
    svc.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def serve() -> Iterator[Callable[[FinetuneSettings], str]]:
    """Start the HTTP app (REST + MCP) under uvicorn on a free loopback port; return its base URL."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(settings: FinetuneSettings) -> str:
        port = _free_port()
        app = build_app(settings, host="127.0.0.1", port=port)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:  # uvicorn exposes a flag, not an awaitable, for a thread-hosted server
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start within 20 s")
            time.sleep(0.02)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)
