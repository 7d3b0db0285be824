"""The serving core that the /v1 routes and the MCP tool share: model catalog, engine, and the queue bound."""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import anyio
from ragtune.servers.finetune.service import FinetuneService

from ragtune.config import FinetuneSettings
from ragtune.promotion import demote

from . import protocol
from .catalog import Catalog
from .engine import Completion, Engine, ServedModel, ServingError

_BY_SERVICE: weakref.WeakKeyDictionary[FinetuneService, Serving] = weakref.WeakKeyDictionary()


def make_engine(settings: FinetuneSettings) -> Engine:
    """Build the engine RAGTUNE_SERVING_ENGINE names."""
    if settings.serving_engine == "vllm":
        from .vllm import VLLMEngine

        return VLLMEngine(settings)
    from .embedded import TransformersEngine

    return TransformersEngine(settings)


def get_serving(service: FinetuneService) -> Serving:
    """Return the one Serving of a fine-tuning service (REST routes and MCP tools share its engine and queue)."""
    if service not in _BY_SERVICE:
        _BY_SERVICE[service] = Serving(service)
    return _BY_SERVICE[service]


class Gate:
    """Count chat requests running or waiting; refuse with 429 beyond the bound instead of queueing forever."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def enter(self) -> None:
        """Take a place or raise 429 (only the event loop calls this, so a plain counter is safe)."""
        if self.active >= self.limit:
            raise ServingError(
                429,
                f"{self.limit} chat requests are already running or waiting (RAGTUNE_SERVING_MAX_QUEUE); "
                "retry in a few seconds",
                code="rate_limit_exceeded",
                type="requests",
            )
        self.active += 1

    def leave(self) -> None:
        """Give the place back."""
        self.active -= 1


class Serving:
    """Models and chat completions over one fine-tuning service and one engine."""

    def __init__(self, service: FinetuneService, engine: Engine | None = None) -> None:
        self.service = service
        self.engine = engine or make_engine(service.settings)
        self.max_tokens = service.settings.serving_max_tokens
        self.gate = Gate(service.settings.serving_max_queue)

    async def catalog(self) -> Catalog:
        """Return the catalog over the engine's current base models."""
        return Catalog(self.service, await self.engine.base_models())

    async def models(self) -> list[dict[str, Any]]:
        """Return OpenAI's model objects: base models, then tuned ones, newest first."""
        catalog = await self.catalog()
        return [m.card() for m in await anyio.to_thread.run_sync(catalog.all)]

    async def model(self, model_id: str) -> ServedModel:
        """Return one model or raise 404 model_not_found."""
        catalog = await self.catalog()
        return await anyio.to_thread.run_sync(catalog.get, model_id)

    async def delete(self, model_id: str) -> dict[str, Any]:
        """Delete a tuned model's weights, unload it, and stop the agents using it."""
        catalog = await self.catalog()
        model = await anyio.to_thread.run_sync(catalog.delete, model_id)
        await self.engine.unload(model.id)
        with self.service._lock:  # the job store's connection is shared with the service's other calls
            demote(self.service.store, model.id)
            self.service.store.add_event(str(model.job_id), f"model {model.id} deleted: its weights were removed")
        return {"id": model.id, "object": "model", "deleted": True}

    async def _resolve(self, model_id: str) -> ServedModel:
        model = await self.model(model_id)
        why = await self.engine.supports(model)
        if why:
            raise ServingError(400, why, param="model", code="model_not_supported")
        return model

    async def complete(self, req: protocol.ChatRequest) -> tuple[ServedModel, Completion]:
        """Answer one chat request whole (waiting its turn, or 429 when the queue is full)."""
        params = protocol.to_params(req, self.max_tokens)
        model = await self._resolve(req.model)
        self.gate.enter()
        try:
            return model, await self.engine.complete(model, params)
        finally:
            self.gate.leave()

    async def chat(self, req: protocol.ChatRequest) -> dict[str, Any]:
        """Return a `chat.completion` object."""
        model, done = await self.complete(req)
        return protocol.completion_body(protocol.new_id(), model.id, done)

    async def chat_stream(self, req: protocol.ChatRequest) -> AsyncIterator[str]:
        """Start a streamed answer and return its SSE lines; errors before the first token raise here, not in-stream."""
        params = protocol.to_params(req, self.max_tokens)
        model = await self._resolve(req.model)
        self.gate.enter()
        try:
            pieces = aiter(self.engine.stream(model, params))
            await anext(pieces)  # the prompt was accepted (or this raises a clear error)
        except BaseException:
            self.gate.leave()
            raise
        usage_wanted = bool((req.stream_options or {}).get("include_usage"))
        return self._events(model.id, pieces, usage_wanted)

    async def _events(self, model_id: str, pieces: AsyncIterator[Any], usage_wanted: bool) -> AsyncIterator[str]:
        cid, created = protocol.new_id(), int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            body = protocol.chunk_body(cid, model_id, created, delta, finish)
            return protocol.sse(body | ({"usage": None} if usage_wanted else {}))

        try:
            yield chunk({"role": "assistant", "content": ""})
            async for piece in pieces:
                fields = protocol.delta_fields(piece)
                if fields and not piece.finish_reason:
                    yield chunk(fields)
                if piece.finish_reason:
                    if fields:
                        yield chunk(fields)
                    yield chunk({}, piece.finish_reason)
                    if usage_wanted:
                        used = protocol.usage(piece.prompt_tokens or 0, piece.completion_tokens or 0)
                        body = protocol.chunk_body(cid, model_id, created, {}, None) | {"choices": [], "usage": used}
                        yield protocol.sse(body)
        except ServingError as e:
            yield protocol.sse(protocol.error_body(e))
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]  # engines stream from async generators; the protocol says AsyncIterator
            self.gate.leave()
        yield protocol.sse("[DONE]")

    async def close(self) -> None:
        """Release the engine and forget this Serving."""
        await self.engine.close()
        _BY_SERVICE.pop(self.service, None)
