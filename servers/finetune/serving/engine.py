"""The engine interface every serving back end implements, and the request/result shapes it speaks.

Routes and the MCP tool speak only these types; an engine (embedded transformers+PEFT, or a vLLM server) turns
them into tokens. Errors are `ServingError`s carrying OpenAI's status, code and param.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ragtune.servers.finetune.schemas import ServiceError

ModelKind = Literal["base", "lora", "full"]


class ServingError(ServiceError):
    """A chat or model request refused, with the HTTP status and OpenAI error fields to report."""


@dataclass(frozen=True)
class ServedModel:
    """A model the service can answer with: a base model, or a tuned one (LoRA adapter or full weights)."""

    id: str
    kind: ModelKind
    created: int
    base: str  # the base model's name (itself for a base model)
    path: str | None = None  # adapter or weights folder for tuned models
    job_id: str | None = None

    def card(self) -> dict[str, Any]:
        """Return OpenAI's model object (plus ragtune's kind, base and job)."""
        owner = "ragtune" if self.kind == "base" else "org-ragtune"
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": owner,
            "root": self.base,
            "parent": None if self.kind == "base" else self.base,
            "x_ragtune": {"kind": self.kind, "job_id": self.job_id},
        }


@dataclass
class ChatParams:
    """What a chat completion asks the engine for (validated; n is always 1)."""

    messages: list[dict[str, Any]]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    raw: dict[str, Any] = field(default_factory=dict)  # the request body, for engines that forward it


@dataclass
class Completion:
    """One finished answer: text or tool calls, why it stopped, and token counts."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    tool_calls: list[dict[str, Any]] | None = None


@dataclass
class Delta:
    """One streamed piece: new text, or (last) the finish reason and token counts."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: list[dict[str, Any]] | None = None


class Engine(Protocol):
    """A serving back end: answers chat for base and tuned models, keeps some loaded, unloads on request."""

    name: str

    async def base_models(self) -> list[str]:
        """Return the base model names this engine can answer with."""

    async def supports(self, model: ServedModel) -> str | None:
        """Return None when the engine can serve `model`, else why not (one actionable line)."""

    async def complete(self, model: ServedModel, params: ChatParams) -> Completion:
        """Generate one whole answer."""

    def stream(self, model: ServedModel, params: ChatParams) -> AsyncIterator[Delta]:
        """Generate an answer piece by piece; the last Delta carries finish_reason and usage."""

    def loaded(self) -> list[str]:
        """Return the tuned models kept loaded, least recently used first."""

    async def unload(self, model_id: str) -> None:
        """Drop a tuned model from memory (no-op when it is not loaded)."""

    async def close(self) -> None:
        """Release threads, clients and weights."""
