#!/usr/bin/env python
"""Talk to any A2A agent (ragtune's or another a2a-sdk agent): show its card, send or stream a message.

    python clients/a2a_cli.py http://127.0.0.1:8711 --card
    python clients/a2a_cli.py http://127.0.0.1:8711 "What is LoRA?"
    python clients/a2a_cli.py http://127.0.0.1:8711 --stream "LoRA는 무엇인가요?" --token "$RAGTUNE_API_TOKEN"
    python clients/a2a_cli.py http://127.0.0.1:8711 --context-id CTX --task-id TASK "yes"   # answer input-required

Prints the card's skills, each task status update as it arrives, and the answer. Exits non-zero when the
card lacks a name or skills, or when the task ends in a state other than --expect (default: completed or
input-required), or when the answer lacks --expect-text.
"""

from __future__ import annotations

import argparse
import os
import socket
import uuid
from urllib.parse import urlsplit, urlunsplit

import httpx
from a2a.client import A2ACardResolver, ClientConfig, create_client
from a2a.helpers import get_artifact_text, get_message_text
from a2a.types import AgentCard, Message, Part, Role, SendMessageRequest, StreamResponse, TaskState

DONE = {"completed", "input-required"}


def state_name(state: int) -> str:
    """Return a task state as the short name the spec uses (TASK_STATE_INPUT_REQUIRED -> input-required)."""
    return TaskState.Name(state).removeprefix("TASK_STATE_").lower().replace("_", "-")


def describe(card: AgentCard) -> str:
    """Return a short human summary of an agent card."""
    lines = [f"{card.name} {card.version}: {card.description}"]
    lines += [f"  interface {i.protocol_binding} {i.protocol_version} at {i.url}" for i in card.supported_interfaces]
    lines += [
        f"  skill {s.id}: {s.description}" + (f" (e.g. {s.examples[0]!r})" if s.examples else "") for s in card.skills
    ]
    if card.security_schemes:
        lines.append(f"  security: {', '.join(card.security_schemes)}")
    lines.append(f"  streaming: {card.capabilities.streaming}")
    return "\n".join(lines)


def reachable(card: AgentCard, base_url: str, always: bool) -> list[str]:
    """Point the card's interfaces at the host the user dialled when they advertise one we cannot reach.

    An agent bound to 0.0.0.0 may advertise http://0.0.0.0:PORT, and one inside compose advertises its
    service name (http://research:8712), which only resolves inside that network; a client must not dial
    either. With `always`, every interface is re-pointed (e.g. behind a proxy or a published port).
    """
    given = urlsplit(base_url)
    notes = []
    for interface in card.supported_interfaces:
        url = urlsplit(interface.url)
        if always or not _routable(url.hostname):
            fixed = urlunsplit((given.scheme, given.netloc, url.path, url.query, url.fragment))
            if fixed != interface.url:
                notes.append(f"  note: card advertises {interface.url}; using {fixed}")
                interface.url = fixed
    return notes


def _routable(host: str | None) -> bool:
    """Tell whether `host` names a machine this client can dial (not a wildcard, and it resolves)."""
    if not host or host in ("0.0.0.0", "::"):
        return False
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return True


class Progress:
    """Follows one task through the stream: its ids, state, status messages and answer text."""

    def __init__(self) -> None:
        self.task_id = self.context_id = ""
        self.state = "unknown"
        self.answer: list[str] = []

    def update(self, event: StreamResponse) -> None:
        """Record one event from the agent and print what changed."""
        kind = event.WhichOneof("payload")
        if kind == "message":  # an agent may answer with a bare message instead of a task
            self.state, self.context_id = "completed", event.message.context_id
            self.answer.append(get_message_text(event.message))
        elif kind == "task":
            task = event.task
            self.task_id, self.context_id = task.id, task.context_id
            self._status(state_name(task.status.state), get_message_text(task.status.message))
            self.answer += [get_artifact_text(a) for a in task.artifacts]
        elif kind == "status_update":
            update = event.status_update
            self.task_id, self.context_id = update.task_id, update.context_id
            self._status(state_name(update.status.state), get_message_text(update.status.message))
        elif kind == "artifact_update":
            text = get_artifact_text(event.artifact_update.artifact)
            print(f"  [artifact {event.artifact_update.artifact.name or ''}] {text[:120]}")
            self.answer.append(text)

    def _status(self, state: str, message: str) -> None:
        self.state = state
        print(f"  [{state}] {message}".rstrip())


async def main(argv: list[str] | None = None) -> int:
    """Resolve the card, optionally send one message, and check how the task ends."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the agent's base URL (its card is at /.well-known/agent-card.json)")
    parser.add_argument("message", nargs="?", help="text to send; omit to only show the card")
    parser.add_argument("--card", action="store_true", help="print the whole agent card as JSON")
    parser.add_argument("--stream", action="store_true", help="stream task updates as they happen")
    parser.add_argument("--token", default=os.environ.get("RAGTUNE_API_TOKEN"), help="bearer token")
    parser.add_argument("--context-id", default="", help="continue this conversation")
    parser.add_argument("--task-id", default="", help="answer this task (after input-required)")
    parser.add_argument("--expect", action="append", help="acceptable end states (default completed, input-required)")
    parser.add_argument("--expect-text", help="fail unless the answer contains this text")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the agent")
    parser.add_argument(
        "--use-given-url",
        action="store_true",
        help="dial the URL given here even when the card advertises another host",
    )
    args = parser.parse_intermixed_args(argv)  # the message may follow the options

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30.0, read=args.timeout)) as http:
        card = await A2ACardResolver(http, args.url.rstrip("/")).get_agent_card()
        assert card.name and card.skills, "the agent card has no name or no skills"
        notes = reachable(card, args.url.rstrip("/"), args.use_given_url)
        print("\n".join([describe(card), *notes]))
        if args.card:
            from google.protobuf.json_format import MessageToJson

            print(MessageToJson(card, ensure_ascii=False))  # Korean skill text stays readable
        if not args.message:
            return 0
        client = await create_client(card, client_config=ClientConfig(streaming=args.stream, httpx_client=http))
        message = Message(
            role=Role.ROLE_USER,
            message_id=str(uuid.uuid4()),
            parts=[Part(text=args.message)],
            context_id=args.context_id,
            task_id=args.task_id,
        )
        progress = Progress()
        print(f"> {args.message}")
        async for event in client.send_message(SendMessageRequest(message=message)):
            progress.update(event)
        await client.close()

    answer = "\n".join(part for part in progress.answer if part).strip()
    print(f"\n{answer}\n\ntask {progress.task_id or '-'} in context {progress.context_id}: {progress.state}")
    expected = set(args.expect or DONE)
    assert progress.state in expected, f"the task ended {progress.state}, expected one of {sorted(expected)}"
    assert not args.expect_text or args.expect_text in answer, f"the answer lacks {args.expect_text!r}"
    return 0


if __name__ == "__main__":
    from _errors import run  # clients/ is on sys.path when a client runs as a script

    run(main, "is the agent running? start it, e.g. `python -m ragtune.agents.coordinator`, or check the URL")
