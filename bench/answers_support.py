"""Parts of bench/answers.py: a retrieval server on loopback, a wait for its vectors, and the scripted reader that
stands in for an OpenAI-compatible model."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr
from ragtune.agents.mcp_tools import McpTools
from ragtune.servers.retrieval.server import build_app

from ragtune.config import RetrievalSettings
from ragtune.embeddings import Embedder

NUMBERED = re.compile(r"^\[(\d+)\] (.+)$", re.M)


@asynccontextmanager
async def mcp_server(settings: RetrievalSettings, embedder: Embedder | None) -> AsyncIterator[str]:
    """Serve the retrieval server on a free loopback port for the block; yield its MCP URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(settings, embedder=embedder)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the retrieval server stopped before starting")
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        await task


async def wait_for_vectors(tools: McpTools, timeout: float = 1800.0) -> None:
    """Wait until the background embedding has given every chunk a vector (hybrid search needs them)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        status = await tools.call("retrieval_status")
        if status["pending_vectors"] == 0 and not status["embedding"]:
            return
        await asyncio.sleep(1.0)
    raise TimeoutError("vectors still pending after the timeout")


def corrupt(sentence: str, span: tuple[int, int]) -> str:
    """Change the fact at `span`: shift its digits (8702 -> 9813), or misspell it when it has none."""
    a, b = span
    fact = sentence[a:b]
    if any(c.isdigit() for c in fact):
        wrong = "".join(str((int(c) + 1) % 10) if c.isdigit() else c for c in fact)
    else:
        wrong = fact + "x"
    return sentence[:a] + wrong + sentence[b:]


class ScriptedReader(BaseChatModel):
    """A scripted stand-in for an OpenAI-compatible model: it answers by copying the given sentence that holds the
    expected fact (told per question), or corrupts that fact when told to; it says it does not know otherwise."""

    supports_tool_calling: bool = False  # the research agent runs its fixed workflow, as for a plain chat model
    _expect: str | None = PrivateAttr(default=None)
    _corrupt: bool = PrivateAttr(default=False)

    @property
    def _llm_type(self) -> str:
        return "scripted-reader"

    def expect(self, pattern: str | None, corrupt: bool = False) -> None:
        """Set the fact the next answer should copy (None: the question has no answer), and whether to break it."""
        self._expect, self._corrupt = pattern, corrupt

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        prompt = messages[-1].text
        reply = "I do not know from these sentences."
        for number, sentence in NUMBERED.findall(prompt):
            m = re.search(self._expect, sentence, re.I) if self._expect else None
            if m:
                said = corrupt(sentence, m.span()) if self._corrupt else sentence
                reply = f"{said} [{number}]"
                break
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])
