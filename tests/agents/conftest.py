"""Fixtures for the agent tests: apps on real loopback ports, a scripted chat model, a shared model cache."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import BaseMessage
from pydantic import Field

from ragtune.llm import LocalChatModel


def free_port() -> int:
    """Return a loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def serving(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """Run an ASGI app with uvicorn on a loopback port for the duration of the block; yield its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        with anyio.fail_after(60):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("server stopped before starting")
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with anyio.fail_after(30):
            await task


class ScriptedModel(GenericFakeChatModel):
    """A scripted 'remote' chat model for the tool-calling path; records what it was sent (tool results too)."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        return self  # the generic fake cannot bind tools; the script already holds the tool calls

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


@pytest.fixture(name="free_port")
def free_port_fixture():
    """Give tests the free-port finder."""
    return free_port


@pytest.fixture(name="serving")
def serving_fixture():
    """Give tests the uvicorn runner."""
    return serving


@pytest.fixture
async def finetune_stack() -> AsyncIterator[tuple[str, str]]:
    """A real fine-tuning server (MCP over HTTP, no worker) and the fine-tuning agent's fixed workflow before it."""
    from ragtune.agents.finetune.__main__ import make_app
    from ragtune.servers.finetune.app import build_app as finetune_app

    from ragtune.config import AgentSettings, FinetuneSettings

    fport, aport = free_port(), free_port()
    async with serving(finetune_app(FinetuneSettings(finetune_port=fport), port=fport), fport) as ft_url:
        settings = AgentSettings(finetune_url=f"{ft_url}/mcp", research_agent_url="http://127.0.0.1:9")
        async with serving(make_app(settings, f"http://127.0.0.1:{aport}", poll_seconds=0.2), aport) as url:
            yield url, f"{ft_url}/mcp"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the embedded model's fp32 copy, so the GGUF is converted once per test session."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def scripted_model():
    """Build a ScriptedModel that replies with the given messages in order."""
    return lambda messages: ScriptedModel(messages=iter(messages))


@pytest.fixture(scope="session")
def local_model(models_dir: Path) -> LocalChatModel:
    """The embedded SmolLM2 chat model, loaded at most once per session (short answers, one thread)."""
    return LocalChatModel(models_dir=models_dir, max_new_tokens=40, threads=1)
