#!/usr/bin/env python
"""Let any OpenAI-compatible chat model use ragtune's MCP tools through the openai SDK's function calling.

    OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_API_KEY=ollama \\
      python clients/openai_toolcalling.py --model qwen2.5:7b "What is LoRA?"

The loop: list the MCP server's tools, hand their names, descriptions and JSON schemas to the model as
`tools`, call each tool the model picks over MCP, append the result as a `tool` message, and ask again
until the model answers in text. Exits non-zero when the model answers without calling a tool (or not
the one named by --expect-tool), when a tool call fails, or when the final answer is empty.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from openai import AsyncOpenAI


def openai_tools(mcp_tools: list[Any]) -> list[dict[str, Any]]:
    """Turn MCP tool definitions into the `tools` list of a chat-completions request."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description or "", "parameters": t.input_schema},
        }
        for t in mcp_tools
    ]


def result_text(result: Any) -> str:
    """Return a tool result as the text a model reads: structured output as JSON, else the text parts."""
    if result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return "\n".join(getattr(part, "text", "") for part in result.content or [])


async def ask(mcp: Client, llm: AsyncOpenAI, model: str, question: str, max_rounds: int) -> tuple[str, list[str]]:
    """Run the function-calling loop; return the final answer and the tools called."""
    tools = openai_tools((await mcp.list_tools()).tools)
    print(f"{len(tools)} MCP tools offered to {model}: {', '.join(t['function']['name'] for t in tools)}")
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Use the tools to answer. Cite what the tools returned."},
        {"role": "user", "content": question},
    ]
    called: list[str] = []
    for _ in range(max_rounds):
        reply = (await llm.chat.completions.create(model=model, messages=messages, tools=tools)).choices[0].message
        if not reply.tool_calls:
            return reply.content or "", called
        messages.append(reply.model_dump(exclude_none=True))
        for call in reply.tool_calls:
            arguments = json.loads(call.function.arguments or "{}")
            print(f"-> {call.function.name}({json.dumps(arguments, ensure_ascii=False)})")
            result = await mcp.call_tool(call.function.name, arguments)
            text = result_text(result)
            assert not result.is_error, f"{call.function.name} failed: {text}"
            print(f"<- {text[:300]}{'...' if len(text) > 300 else ''}")
            called.append(call.function.name)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": text})
    raise AssertionError(f"no final answer after {max_rounds} rounds of tool calls")


async def main(argv: list[str] | None = None) -> int:
    """Connect to the MCP server and the chat endpoint, run the loop, and check the outcome."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question", nargs="?", default="What is LoRA?", help="what to ask the model")
    parser.add_argument("--mcp-url", default="http://127.0.0.1:8701/mcp", help="MCP server (streamable HTTP)")
    parser.add_argument("--token", default=os.environ.get("RAGTUNE_API_TOKEN"), help="MCP bearer token")
    parser.add_argument("--model", default=os.environ.get("RAGTUNE_CHAT_MODEL", "gpt-4o-mini"), help="chat model")
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"), help="OpenAI-compatible endpoint")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="key for that endpoint")
    parser.add_argument("--expect-tool", help="fail unless the model calls this tool")
    parser.add_argument("--max-rounds", type=int, default=4, help="most model turns before giving up")
    args = parser.parse_intermixed_args(argv)  # the message may follow the options

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    llm = AsyncOpenAI(base_url=args.base_url, api_key=args.api_key or "not-needed", max_retries=0)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
        Client(streamable_http_client(args.mcp_url, http_client=http)) as mcp,
    ):
        answer, called = await ask(mcp, llm, args.model, args.question, args.max_rounds)
    print(f"\nanswer: {answer}")
    assert called, "the model answered without calling any tool"
    assert not args.expect_tool or args.expect_tool in called, f"expected a call to {args.expect_tool}, got {called}"
    assert answer.strip(), "the final answer is empty"
    return 0


if __name__ == "__main__":
    from _errors import run  # clients/ is on sys.path when a client runs as a script

    run(
        main,
        "is the retrieval server (or the chat endpoint) running? start it: "
        "`python -m ragtune.servers.retrieval serve --transport http`",
    )
