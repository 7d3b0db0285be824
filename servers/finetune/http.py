"""HTTP plumbing shared by /mcp and /v1: bearer-token checks and MCP transport security."""

from __future__ import annotations

from typing import Any

from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ragtune.bearer import header_ok, token_matches, verifier_token
from ragtune.config import LOOPBACK_HOSTS, FinetuneSettings

SCOPE = "finetune"


class StaticToken(TokenVerifier):
    """Accept exactly the configured RAGTUNE_API_TOKEN (compared in constant time)."""

    def __init__(self, token: str, resource: str) -> None:
        self.token = token
        self.resource = resource

    async def verify_token(self, token: str) -> AccessToken | None:
        """Return an access token for the one valid bearer token, else None (the SDK answers 401)."""
        parsed = verifier_token(token)
        if parsed is not None and token_matches(parsed, self.token):
            return AccessToken(token=parsed, client_id="ragtune", scopes=[SCOPE], resource=self.resource)
        return None


def public_url(host: str, port: int) -> str:
    """Return the base URL clients use (loopback when bound to all interfaces)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"


def mcp_auth_kwargs(settings: FinetuneSettings, base_url: str) -> dict[str, Any]:
    """Return MCPServer's token_verifier/auth arguments when a token is set, else nothing."""
    token = settings.token()
    if token is None:
        return {}
    resource = f"{base_url}/mcp"
    return {
        "token_verifier": StaticToken(token, resource),
        "auth": AuthSettings(
            issuer_url=AnyHttpUrl(base_url),  # required by the SDK; advertised nowhere
            # No resource_server_url: a shared bearer token is not OAuth, so no protected-resource metadata that
            # would name an authorization server that does not exist (issue #12).
            resource_server_url=None,
            required_scopes=[SCOPE],
            validate_token_resource=False,
        ),
    }


def transport_security(host: str) -> TransportSecuritySettings | None:
    """Keep the SDK's DNS-rebinding guard on loopback; beyond it the bearer token is the guard."""
    if host in LOOPBACK_HOSTS:
        return None  # the SDK enables its loopback allow-list itself
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


def bearer_ok(header: str | None, token: str | None) -> bool:
    """Return True when no token is required or `Authorization: Bearer <token>` matches it."""
    return header_ok(header, token)


class BearerGate:
    """ASGI middleware that checks the bearer token before anything reads the body (issue #12: an upload
    without a token was spooled to disk before its 401); it guards /v1 and the OpenAPI docs."""

    def __init__(self, app: ASGIApp, token: str | None, prefixes: tuple[str, ...]) -> None:
        self.app, self.token, self.prefixes = app, token, prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 401 at once for a guarded path without the token; pass everything else through."""
        path = scope.get("path", "")
        guarded = scope["type"] == "http" and self.token is not None and path.startswith(self.prefixes)
        if guarded and not header_ok(Headers(scope=scope).get("authorization"), self.token):
            message = (
                "missing or wrong bearer token: send Authorization: Bearer $RAGTUNE_API_TOKEN "
                "(the openai SDK sends its api_key)"
            )
            body = {
                "error": {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
            }
            response = JSONResponse(body, 401, headers={"WWW-Authenticate": "Bearer", "Connection": "close"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
