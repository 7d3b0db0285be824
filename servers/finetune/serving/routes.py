"""OpenAI's /v1/models and /v1/chat/completions on the fine-tuning service (same base URL, same bearer token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from . import protocol
from .engine import ServingError
from .service import Serving


def install_serving_errors(app: FastAPI) -> None:
    """Answer serving refusals in OpenAI's error shape (429 with Retry-After)."""

    @app.exception_handler(ServingError)
    async def _serving(_: Request, e: ServingError) -> JSONResponse:
        headers = {"Retry-After": "2"} if e.status == 429 else None
        return JSONResponse(protocol.error_body(e), e.status, headers=headers)


def build_serving_router(serving: Serving) -> APIRouter:
    """Build the model and chat routes (app.py's BearerGate checks the token on all of /v1 first)."""
    router = APIRouter()

    @router.get("/models")
    async def list_models() -> protocol.ModelList:
        """List base models and every succeeded job's tuned model."""
        return protocol.ModelList(data=[protocol.ModelCard(**card) for card in await serving.models()])

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str) -> protocol.ModelCard:
        """Return one model object."""
        return protocol.ModelCard(**(await serving.model(model_id)).card())

    @router.delete("/models/{model_id:path}")
    async def delete_model(model_id: str) -> protocol.ModelDeleted:
        """Delete a tuned model (its weights and listing); base models cannot be deleted."""
        return protocol.ModelDeleted(**await serving.delete(model_id))

    @router.post(
        "/chat/completions",
        response_model=None,
        responses={200: {"model": protocol.ChatCompletionBody, "content": {"text/event-stream": {}}}},
    )
    async def chat_completions(body: protocol.ChatRequest) -> dict[str, Any] | StreamingResponse:
        """Answer with a base or tuned model; `stream: true` sends SSE chunks ending with `data: [DONE]`."""
        if not body.stream:
            return await serving.chat(body)
        events = await serving.chat_stream(body)
        return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return router
