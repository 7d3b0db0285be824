"""MCP tools by URL: direct calls for the fixed workflows, LangChain tools for a tool-calling model."""

from __future__ import annotations

import json
import warnings
from typing import Any

import httpx2
from langchain_core.tools import BaseTool
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.dispatcher import ProgressFnT

# What call_tool accepts: an async (progress, total, message) callback.
ProgressFn = ProgressFnT


class ToolFailed(RuntimeError):
    """Raised when an MCP tool answers with an error; the message is the tool's own explanation."""


class McpTools:
    """Calls tools on one MCP server over streamable HTTP, with the bearer token when one is set."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 600.0) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout

    def _http(self) -> httpx2.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=self.timeout))

    async def call(self, name: str, progress: ProgressFn | None = None, **arguments: Any) -> Any:
        """Call tool `name` and return its structured result (or its text), raising ToolFailed on a tool error."""
        async with self._http() as http, Client(streamable_http_client(self.url, http_client=http)) as client:
            result = await client.call_tool(name, arguments, progress_callback=progress)
        text = "\n".join(getattr(c, "text", "") for c in result.content or [])
        if result.is_error:
            raise ToolFailed(f"{name}: {text or 'failed'}")
        if result.structured_content is not None:
            data = result.structured_content
            # A tool returning a list or a scalar is wrapped as {"result": ...} in structured output.
            return data["result"] if set(data) == {"result"} else data
        try:
            return json.loads(text)
        except ValueError:
            return text

    async def langchain_tools(self) -> list[BaseTool]:
        """Return the server's tools as LangChain tools for `create_agent` (via langchain[mcp]'s MCPAdapter)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # langchain.mcp is beta and says so on import
            from fastmcp import Client as FastClient
            from fastmcp.client.transports import StreamableHttpTransport
            from langchain.mcp import MCPAdapter

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        adapter = MCPAdapter(FastClient(StreamableHttpTransport(self.url, headers=headers)))
        async with adapter:
            return await adapter.list_tools()
