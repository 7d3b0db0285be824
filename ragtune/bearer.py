"""The one bearer-token parser every HTTP surface uses (REST /v1, MCP /mcp, A2A), so they all agree.

Regression for issue #12: `Authorization: Bearer  tok` (two spaces) passed REST but not MCP.
"""

from __future__ import annotations

import hmac


def bearer_token(header: str | None) -> str | None:
    """Return the token of an `Authorization: Bearer <token>` header (scheme case-insensitive, spaces trimmed)."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    token = rest.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def token_matches(candidate: str | None, token: str) -> bool:
    """Compare a presented token with the configured one in constant time."""
    return candidate is not None and hmac.compare_digest(candidate.encode(), token.encode())


def header_ok(header: str | None, token: str | None) -> bool:
    """Return True when no token is required or the header carries it."""
    return token is None or token_matches(bearer_token(header), token)


def verifier_token(tail: str) -> str | None:
    """Parse what the MCP SDK hands a TokenVerifier (the header after its first 7 chars) with the same rule."""
    return bearer_token("Bearer " + tail)
