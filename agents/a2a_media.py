"""Media types on the A2A wire: which message parts an agent reads, and the HTTP Content-Type of requests/replies.

a2a-sdk 1.3 checks none of these (issue #12): a part it cannot read reached the graph as an empty message, a
JSON-RPC body sent as text/plain got -32700, and REST replies are always `application/a2a+json`, which 1.0.0
clients (and the TCK) do not expect.
"""

from __future__ import annotations

import json

from a2a.types import Message
from a2a.utils.constants import A2A_JSON_MEDIA_TYPE
from a2a.utils.errors import ContentTypeNotSupportedError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

JSON_TYPES = ("application/json", A2A_JSON_MEDIA_TYPE)
CONTENT_TYPE_NOT_SUPPORTED = -32005


def check_media_types(message: Message | None, accepted: list[str]) -> None:
    """Raise ContentTypeNotSupportedError (-32005) for a part this agent cannot read; it reads text parts only."""
    for part in message.parts if message else []:
        kind = part.WhichOneof("content")
        media = part.media_type or ("text/plain" if kind == "text" else "")
        if kind != "text" or _bare(media) not in accepted:
            raise ContentTypeNotSupportedError(
                f"unsupported {kind or 'empty'} part of media type {media or 'unknown'!r}: "
                f"this agent reads text parts of {', '.join(accepted)}"
            )


def _bare(media_type: str) -> str:
    return media_type.split(";")[0].strip().lower()


class WireMediaTypes:
    """ASGI middleware: 415 for a POST body that is not JSON (with -32005 on JSON-RPC); REST replies labelled
    application/json unless Accept asks for application/a2a+json (spec 1.0.0 names the first, 1.0.1 prefers it).
    """

    def __init__(self, app: ASGIApp, jsonrpc_path: str = "/", rest_prefix: str = "/rest") -> None:
        self.app, self.jsonrpc_path, self.rest_prefix = app, jsonrpc_path, rest_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        rest = scope["path"].startswith(self.rest_prefix)
        sent = _bare(headers.get("content-type", ""))
        if scope["method"] == "POST" and (rest or scope["path"] == self.jsonrpc_path) and sent not in JSON_TYPES:
            await _refuse(send, sent, rest)
            return
        if rest and A2A_JSON_MEDIA_TYPE not in headers.get("accept", ""):
            send = _plain_json(send)
        await self.app(scope, receive, send)


async def _refuse(send: Send, sent: str, rest: bool) -> None:
    """Answer 415 with the binding's error shape: AIP-193 for REST, a JSON-RPC error (-32005) otherwise."""
    message = f"Content-Type {sent or 'missing'!r} is not supported: send the request body as application/json"
    if rest:
        info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "CONTENT_TYPE_NOT_SUPPORTED"}
        error = {"code": 415, "status": "INVALID_ARGUMENT", "message": message, "details": [info]}
        body = json.dumps({"error": error}).encode()
    else:
        error = {"code": CONTENT_TYPE_NOT_SUPPORTED, "message": message}
        body = json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 415, "headers": head})
    await send({"type": "http.response.body", "body": body})


def _plain_json(send: Send) -> Send:
    """Wrap `send` so an application/a2a+json reply goes out labelled application/json."""

    async def relabel(message: AsgiMessage) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                (k, b"application/json")
                if k == b"content-type" and v.startswith(A2A_JSON_MEDIA_TYPE.encode())
                else (k, v)
                for k, v in message["headers"]
            ]
        await send(message)

    return relabel
