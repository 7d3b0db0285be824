"""OpenAI's chat-completion wire format: the request body, and the response, chunk and error bodies we send."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .engine import ChatParams, Completion, Delta, ServingError

ROLES = {"system", "developer", "user", "assistant", "tool"}


class ChatRequest(BaseModel):
    """Body of `POST /v1/chat/completions`; fields OpenAI defines that we do not use are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    logprobs: bool | None = None


class ModelCard(BaseModel):
    """OpenAI's model object, plus `x_ragtune` (kind: base|lora|full, and the job that made a tuned model)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    root: str
    parent: str | None = None
    x_ragtune: dict[str, Any]


class ModelList(BaseModel):
    """`GET /v1/models`: base models, then tuned ones, newest first."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ModelDeleted(BaseModel):
    """`DELETE /v1/models/{id}`."""

    id: str
    object: Literal["model"] = "model"
    deleted: bool


class ChatCompletionBody(BaseModel):
    """OpenAI's `chat.completion` object (the streamed form is `chat.completion.chunk` events)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, int]
    system_fingerprint: str | None = None


def to_params(req: ChatRequest, limit: int) -> ChatParams:
    """Check what OpenAI's schema cannot express and turn the request into engine parameters."""
    if (req.n or 1) != 1:
        raise ServingError(400, f"n={req.n} is not supported: ragtune returns one choice per request (n=1)", param="n")
    if req.logprobs:
        raise ServingError(
            400, "logprobs are not supported by ragtune's serving; leave logprobs unset", param="logprobs"
        )
    wanted = req.max_completion_tokens or req.max_tokens or limit
    if wanted > limit:
        raise ServingError(
            400,
            f"max_tokens={wanted} is above this server's limit of {limit} (RAGTUNE_SERVING_MAX_TOKENS); ask for less",
            param="max_completion_tokens" if req.max_completion_tokens else "max_tokens",
        )
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > 4 or any(not s for s in stop):
        raise ServingError(400, "stop takes up to 4 non-empty strings", param="stop")
    tools = _tools(req)
    return ChatParams(
        messages=[_message(m, i) for i, m in enumerate(req.messages)],
        max_tokens=wanted,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        stop=stop,
        seed=req.seed,
        tools=tools,
        tool_choice=req.tool_choice if tools else None,
        raw=req.model_dump(exclude_none=True),
    )


def _message(m: dict[str, Any], i: int) -> dict[str, Any]:
    role = m.get("role")
    if role not in ROLES:
        raise ServingError(400, f"messages[{i}].role must be one of {sorted(ROLES)}, not {role!r}", param="messages")
    content = m.get("content")
    if isinstance(content, list):  # content parts: only text is understood here
        if any(p.get("type") != "text" for p in content if isinstance(p, dict)):
            raise ServingError(400, f"messages[{i}]: only text content parts are supported", param="messages")
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content is None and not m.get("tool_calls"):
        raise ServingError(400, f"messages[{i}] has no content", param="messages")
    out = {**m, "role": "system" if role == "developer" else role, "content": content or ""}
    return out


def _tools(req: ChatRequest) -> list[dict[str, Any]] | None:
    if not req.tools or req.tool_choice == "none":
        return None
    names = set()
    for i, t in enumerate(req.tools):
        fn = t.get("function") if t.get("type") == "function" else None
        if not isinstance(fn, dict) or not fn.get("name"):
            shape = "{'type': 'function', 'function': {'name': ..., 'parameters': {...}}}"
            raise ServingError(400, f"tools[{i}] must be {shape}", param="tools")
        names.add(fn["name"])
    choice = req.tool_choice
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name not in names:
            raise ServingError(400, f"tool_choice names {name!r}, which is not in tools", param="tool_choice")
    return req.tools


def new_id() -> str:
    """Return a chat completion id."""
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(prompt: int, completion: int) -> dict[str, int]:
    """Return OpenAI's usage object."""
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(cid: str, model: str, c: Completion) -> dict[str, Any]:
    """Return a `chat.completion` object."""
    message: dict[str, Any] = {"role": "assistant", "content": None if c.tool_calls else c.text, "refusal": None}
    if c.tool_calls:
        message["tool_calls"] = c.tool_calls
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": c.finish_reason, "logprobs": None}],
        "usage": usage(c.prompt_tokens, c.completion_tokens),
        "system_fingerprint": None,
    }


def chunk_body(cid: str, model: str, created: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    """Return a `chat.completion.chunk` object with one choice."""
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def delta_fields(d: Delta) -> dict[str, Any]:
    """Return the `delta` object of a streamed piece."""
    if d.tool_calls:
        return {"tool_calls": [{"index": i, **call} for i, call in enumerate(d.tool_calls)]}
    return {"content": d.text} if d.text else {}


def sse(data: dict[str, Any] | str) -> str:
    """Return one server-sent event line pair."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def error_body(e: ServingError) -> dict[str, Any]:
    """Return OpenAI's error object for a refusal."""
    return {"error": {"message": e.message, "type": e.type, "param": e.param, "code": e.code}}
