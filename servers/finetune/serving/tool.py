"""The `finetune_chat` MCP tool: try a base or tuned model from any MCP client."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field
from ragtune.servers.finetune.service import FinetuneService

from . import protocol
from .engine import ServingError
from .service import get_serving


class ChatTurn(BaseModel):
    """One message of the conversation."""

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=20_000)


class ChatReply(BaseModel):
    """The model's answer with the model that wrote it and the tokens it used."""

    model: str
    reply: str
    finish_reason: str
    usage: dict[str, int]


def register_chat_tool(mcp: MCPServer, service: FinetuneService) -> None:
    """Add `finetune_chat` to the fine-tuning MCP server."""

    @mcp.tool(title="Chat with a model", annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def finetune_chat(
        model: Annotated[
            str,
            Field(description="A base model (smollm2-135m-instruct) or a tuned model's name (ft:..., from a job)"),
        ],
        messages: Annotated[
            list[ChatTurn], Field(min_length=1, description="The conversation, e.g. [{role: user, content: ...}]")
        ],
        max_tokens: Annotated[int, Field(ge=1, le=2048, description="Longest reply, in tokens")] = 128,
        temperature: Annotated[float, Field(ge=0, le=2, description="0 = deterministic")] = 0.0,
    ) -> ChatReply:
        """Send messages to a base or fine-tuned model and return its reply, e.g. to check what a job taught it.

        Use finetune_get_job for a succeeded job's fine_tuned_model name. The first call to a model loads it
        (seconds on CPU).
        """
        serving = get_serving(service)
        request = protocol.ChatRequest(
            model=model,
            messages=[t.model_dump() for t in messages],
            max_tokens=min(max_tokens, serving.max_tokens),  # a tool caller cannot see the server's limit
            temperature=temperature,
        )
        try:
            served, done = await serving.complete(request)
        except ServingError as e:
            raise ToolError(e.message) from e
        return ChatReply(
            model=served.id,
            reply=done.text,
            finish_reason=done.finish_reason,
            usage=protocol.usage(done.prompt_tokens, done.completion_tokens),
        )
