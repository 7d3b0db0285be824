"""Serve the agent card the way A2A 1.0 wants it: the pure 1.0 shape with caching headers, 0.3 shape on request.

a2a-sdk 1.3 merges the 0.3 fields (`url`, `preferredTransport`, `protocolVersion`, `security`) into every card
that lists a 0.3 interface, and a 1.0 card carrying them fails the TCK's CARD-STRUCT-001 (issue #12). Here the
well-known path serves the 1.0 card; a 0.3 client gets the merged shape at the 0.3 path `/.well-known/agent.json`,
or at the well-known path when it sends `A2A-Version: 0.3`.
"""

from __future__ import annotations

import hashlib
import json
import time
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.types import AgentCard
from google.protobuf.json_format import MessageToDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CARD_PATH = "/.well-known/agent-card.json"
LEGACY_CARD_PATH = "/.well-known/agent.json"
CACHE_CONTROL = "public, max-age=300"


def card_shapes(card: AgentCard) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the card as pure 1.0 JSON and as the SDK's 0.3-compatible superset."""
    return MessageToDict(card), agent_card_to_dict(card)


def _etag(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return f'W/"{hashlib.sha256(canonical).hexdigest()[:32]}"'


def _fresh(request: Request, etag: str, modified: float) -> bool:
    """Tell whether the client's cached copy is current (If-None-Match wins over If-Modified-Since)."""
    if match := request.headers.get("if-none-match"):
        return any(
            tag.strip().removeprefix("W/") == etag.removeprefix("W/") or tag.strip() == "*" for tag in match.split(",")
        )
    if since := request.headers.get("if-modified-since"):
        try:
            return parsedate_to_datetime(since).timestamp() >= int(modified)
        except (TypeError, ValueError):
            return False
    return False


def card_routes(card: AgentCard) -> list[Route]:
    """Return the card routes: 1.0 at the well-known path, 0.3 at the legacy path; ETag, Last-Modified, 304s."""
    modern, legacy = card_shapes(card)
    modified = time.time()  # the card is built once per process, so it changes only on a restart

    def respond(request: Request, body: dict[str, Any]) -> Response:
        etag = _etag(body)
        headers = {
            "ETag": etag,
            "Cache-Control": CACHE_CONTROL,
            "Last-Modified": formatdate(modified, usegmt=True),
            "Vary": "A2A-Version",
        }
        if _fresh(request, etag, modified):
            return Response(status_code=304, headers=headers)
        return JSONResponse(body, headers=headers)

    async def well_known(request: Request) -> Response:
        wants_legacy = request.headers.get("a2a-version", "").strip().startswith("0.")
        return respond(request, legacy if wants_legacy else modern)

    async def legacy_path(request: Request) -> Response:
        return respond(request, legacy)

    return [Route(CARD_PATH, well_known, methods=["GET"]), Route(LEGACY_CARD_PATH, legacy_path, methods=["GET"])]
