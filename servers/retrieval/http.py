"""HTTP plumbing for an MCP server: a static bearer-token verifier, `/health`, and the Starlette app.

Generic on purpose (the fine-tuning server mirrors it); it imports MCP, so it lives here, not in ragtune/.
"""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from ragtune.bearer import token_matches, verifier_token
from ragtune.config import CommonSettings


class StaticTokenVerifier(TokenVerifier):
    """Accept exactly one shared bearer token (RAGTUNE_API_TOKEN), compared in constant time."""

    def __init__(self, token: str, resource: str) -> None:
        self._token = token
        self._resource = resource

    async def verify_token(self, token: str) -> AccessToken | None:
        """Return an access token for the shared secret, None for anything else (the SDK answers 401)."""
        parsed = verifier_token(token)
        if parsed is None or not token_matches(parsed, self._token):
            return None
        return AccessToken(token=parsed, client_id="ragtune", scopes=[], resource=self._resource)


def public_url(host: str, port: int, path: str = "/mcp") -> str:
    """Return the URL clients use for this server (wildcard binds are reached through loopback)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}{path}"


def auth_options(token: str | None, host: str, port: int) -> dict[str, Any]:
    """Return MCPServer keyword arguments that require `token` on HTTP, or {} when no token is set."""
    if not token:
        return {}
    resource = public_url(host, port)
    return {
        "token_verifier": StaticTokenVerifier(token, resource),
        "auth": AuthSettings(
            issuer_url=AnyHttpUrl(public_url(host, port, "")),  # required by the SDK; advertised nowhere
            # No resource_server_url: a shared bearer token is not OAuth, so no protected-resource metadata that
            # would name an authorization server that does not exist (issue #12).
            resource_server_url=None,
            required_scopes=[],
            validate_token_resource=False,
        ),
    }


def add_health_route(mcp: MCPServer, name: str) -> None:
    """Register an unauthenticated GET /health for compose healthchecks and load balancers."""

    @mcp.custom_route("/health", methods=["GET"])
    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "server": name})


def http_app(mcp: MCPServer, host: str, settings: CommonSettings) -> Starlette:
    """Return the Starlette app serving streamable HTTP at /mcp plus the custom routes."""
    # On a loopback host the SDK turns on DNS-rebinding protection; other hosts (compose names) stay open.
    return mcp.streamable_http_app(host=host, **settings.mcp_session_limits())
