"""Protocol conformance of both MCP servers (issue #12): server version, tool metadata, resource-not-found codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client, MCPError
from mcp.server import MCPServer
from ragtune.servers.finetune.server import build_server as build_finetune
from ragtune.servers.retrieval.server import build_server as build_retrieval

from ragtune import __version__
from ragtune.config import FinetuneSettings, RetrievalSettings


def retrieval(home: Path) -> MCPServer:
    return build_retrieval(RetrievalSettings(home=home, embedder="none"), embedder=None)


def finetune(home: Path) -> MCPServer:
    return build_finetune(FinetuneSettings(home=home))


SERVERS = {
    "retrieval": (retrieval, "ragtune://documents/doc-missing", "unknown document 'doc-missing'"),
    "finetune": (finetune, "finetune://jobs/ftjob-missing", "no fine-tuning job with id 'ftjob-missing'"),
}


def empty_schemas(schema: Any, path: str = "$") -> list[str]:
    """Return the paths of `{}` sub-schemas (the Inspector's --strict flags them: a client learns nothing)."""
    if isinstance(schema, dict):
        found = [path] if schema == {} and path != "$" else []
        for key, value in schema.items():
            if key in ("properties", "$defs"):
                found += [p for name, sub in value.items() for p in empty_schemas(sub, f"{path}.{key}.{name}")]
            elif key in ("items", "additionalProperties") or isinstance(value, (dict, list)):
                found += empty_schemas(value, f"{path}.{key}")
        return found
    if isinstance(schema, list):
        return [p for i, sub in enumerate(schema) for p in empty_schemas(sub, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("name", SERVERS)
async def test_server_info_version_tool_titles_and_parameter_descriptions(name: str, tmp_path: Path):
    async with Client(SERVERS[name][0](tmp_path)) as client:
        assert client.server_info.version == __version__
        tools = (await client.list_tools()).tools
    assert tools
    for tool in tools:
        assert tool.title, f"{tool.name} has no title"
        undocumented = [p for p, s in tool.input_schema["properties"].items() if not s.get("description")]
        assert not undocumented, f"{tool.name}: parameters without a description: {undocumented}"
        assert not empty_schemas(tool.input_schema) + empty_schemas(tool.output_schema or {}), tool.name


@pytest.mark.parametrize(("mode", "code"), [("legacy", -32002), ("auto", -32602)])
@pytest.mark.parametrize("name", SERVERS)
async def test_reading_an_unknown_resource_id_is_resource_not_found_with_the_reason(
    name: str, mode: str, code: int, tmp_path: Path
):
    # 2025-era revisions define -32002; 2026-07-28 retired it for -32602 (SEP-2164).
    build, uri, reason = SERVERS[name]
    async with Client(build(tmp_path), mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.read_resource(uri)
    assert caught.value.error.code == code
    assert reason in caught.value.error.message


def test_empty_schemas_finds_an_untyped_item_schema():
    assert empty_schemas({"properties": {"a": {"type": "array", "items": {}}}}) == ["$.properties.a.items"]
