"""HTTP plumbing shared by /mcp and /v1: bearer-token checks and MCP transport security."""

from __future__ import annotations

import secrets
from typing import Any

from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl

from ragtune.config import LOOPBACK_HOSTS, FinetuneSettings

SCOPE = "finetune"


class StaticToken(TokenVerifier):
    """Accept exactly the configured RAGTUNE_API_TOKEN (compared in constant time)."""

    def __init__(self, token: str, resource: str) -> None:
        self.token = token
        self.resource = resource

    async def verify_token(self, token: str) -> AccessToken | None:
        """Return an access token for the one valid bearer token, else None (the SDK answers 401)."""
        if secrets.compare_digest(token.encode(), self.token.encode()):
            return AccessToken(token=token, client_id="ragtune", scopes=[SCOPE], resource=self.resource)
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
            issuer_url=AnyHttpUrl(base_url),
            resource_server_url=AnyHttpUrl(resource),
            required_scopes=[SCOPE],
            validate_token_resource=True,
        ),
    }


def transport_security(host: str) -> TransportSecuritySettings | None:
    """Keep the SDK's DNS-rebinding guard on loopback; beyond it the bearer token is the guard."""
    if host in LOOPBACK_HOSTS:
        return None  # the SDK enables its loopback allow-list itself
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


def bearer_ok(header: str | None, token: str | None) -> bool:
    """Return True when no token is required or `Authorization: Bearer <token>` matches it."""
    if token is None:
        return True
    if not header or not header.lower().startswith("bearer "):
        return False
    return secrets.compare_digest(header[7:].strip().encode(), token.encode())
