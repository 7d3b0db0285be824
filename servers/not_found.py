"""The resources/read error for an unknown id, with the code the client's protocol revision defines."""

from __future__ import annotations

from typing import Any

from mcp import MCPError
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError

# Revisions up to 2025-11-25 define -32002 "Resource not found"; 2026-07-28 retired it for -32602 (SEP-2164),
# which is what the SDK's ResourceNotFoundError sends. Either way the client reads our message.
LEGACY_NOT_FOUND = -32002
RETIRED_IN = "2026-07-28"


def resource_not_found(ctx: Context[Any, Any], uri: str, message: str) -> Exception:
    """Return the error to raise for an unknown resource id, keeping `message` for the client."""
    version = ctx.protocol_version or RETIRED_IN
    if version < RETIRED_IN:  # protocol versions are ISO dates, so they compare as strings
        return MCPError(LEGACY_NOT_FOUND, message, {"uri": uri})
    return ResourceNotFoundError(message)
