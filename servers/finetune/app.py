"""The HTTP app: MCP at /mcp, the OpenAI-compatible REST API at /v1, and an open /health, in one process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from ragtune.servers.finetune.api import build_router, install_error_handlers
from ragtune.servers.finetune.http import BearerGate, public_url, transport_security
from ragtune.servers.finetune.reaper import Reaper
from ragtune.servers.finetune.server import build_server
from ragtune.servers.finetune.service import FinetuneService
from ragtune.servers.finetune.serving.routes import build_serving_router, install_serving_errors
from ragtune.servers.finetune.serving.service import get_serving

from ragtune.config import FinetuneSettings, check_bind


def build_app(
    settings: FinetuneSettings,
    *,
    service: FinetuneService | None = None,
    host: str | None = None,
    port: int | None = None,
) -> FastAPI:
    """Build the FastAPI app; its lifespan runs the MCP session manager (required when mounting MCP)."""
    host = host or settings.finetune_host
    port = port or settings.finetune_port
    check_bind(host, settings)  # also here, for anyone serving the app with their own uvicorn command
    svc = service or FinetuneService(settings)
    mcp = build_server(settings, service=svc, base_url=public_url(host, port))
    serving = get_serving(svc)  # /v1/models and /v1/chat/completions; shares its engine with finetune_chat
    mcp_app = mcp.streamable_http_app(
        transport_security=transport_security(host), host=host, **settings.mcp_session_limits()
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        reaper = Reaper(svc.reconcile, settings.reaper_seconds).start()  # no job stays running with its worker dead
        try:
            async with mcp.session_manager.run():
                yield
        finally:
            reaper.stop()
        await serving.close()
        if service is None:
            svc.close()

    app = FastAPI(
        title="ragtune fine-tuning",
        version="0.1.0",
        lifespan=lifespan,
        description="OpenAI-compatible fine-tuning jobs (/v1) and MCP tools (/mcp).",
    )
    install_error_handlers(app)
    app.add_middleware(BearerGate, token=settings.token(), prefixes=("/v1", "/docs", "/redoc", "/openapi.json"))
    app.include_router(build_router(svc, settings.token()), prefix="/v1")
    install_serving_errors(app)
    app.include_router(build_serving_router(serving), prefix="/v1")

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        """Report liveness without a token (for compose healthchecks)."""
        return {"status": "ok", "dispatch": svc.dispatcher.name}

    app.mount("/", mcp_app)  # /mcp and the OAuth protected-resource metadata
    return app
