"""Delegate to another agent over A2A (HTTP, a2a-sdk client): stream its status updates, read its answer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
from a2a.client import A2AClientError, Client, ClientConfig, create_client
from a2a.helpers import get_artifact_text, get_message_text
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)

TERMINAL = {
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_CANCELED,
    TaskState.TASK_STATE_REJECTED,
}


CARD_PATH = "/.well-known/agent-card.json"


class PeerUnavailable(RuntimeError):
    """Raised when a peer does not answer its agent card within the wait."""


@dataclass
class PeerEvent:
    """One thing a peer said: a status (with its text), or its answer artifact."""

    kind: str  # "status" | "answer"
    state: int
    text: str
    task_id: str
    context_id: str

    @property
    def state_name(self) -> str:
        """Return the state without the TASK_STATE_ prefix, lower case (e.g. 'input_required')."""
        return TaskState.Name(self.state).removeprefix("TASK_STATE_").lower()


class A2APeer:
    """A client for one agent at `url`; reuses one HTTP connection pool for every call."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 900.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30.0, read=timeout))
        self._client: Client | None = None

    async def client(self) -> Client:
        """Return the a2a-sdk client, reading the peer's card on first use."""
        if self._client is None:
            self._client = await create_client(
                self.url, client_config=ClientConfig(streaming=True, httpx_client=self._http)
            )
        return self._client

    async def wait_ready(self, timeout: float, on_wait: Callable[[], None] | None = None, poll: float = 0.5) -> None:
        """Wait (at most `timeout` s) until the peer serves its card; call `on_wait` once if it is not up yet."""
        loop = asyncio.get_running_loop()
        deadline, waited = loop.time() + timeout, False
        while True:
            try:
                await self.client()
                return
            except (httpx.HTTPError, A2AClientError, OSError) as e:
                left = deadline - loop.time()
                if left <= 0:
                    raise PeerUnavailable(
                        f"{self.url} did not answer its agent card within {timeout:g} s ({type(e).__name__}): "
                        f"is it running? (RAGTUNE_PEER_WAIT_SECONDS sets the wait)"
                    ) from e
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                await asyncio.sleep(min(poll, left))

    async def answers(self) -> bool:
        """Tell whether the peer serves its agent card right now (readiness of whoever depends on it)."""
        try:
            return (await self._http.get(f"{self.url}{CARD_PATH}", timeout=2.0)).status_code == 200
        except httpx.HTTPError:
            return False

    async def stream(
        self, text: str, *, context_id: str | None = None, task_id: str | None = None
    ) -> AsyncIterator[PeerEvent]:
        """Send `text` (continuing `task_id` when it waits for input) and yield the peer's events as they come."""
        msg = Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[Part(text=text)])
        if context_id:
            msg.context_id = context_id
        if task_id:
            msg.task_id = task_id
        client = await self.client()
        async for ev in client.send_message(SendMessageRequest(message=msg)):
            for out in _events(ev):
                yield out

    async def ask(self, text: str, *, context_id: str | None = None, task_id: str | None = None) -> PeerEvent:
        """Send `text` and return the last event: the answer, or the final/input-required status."""
        last: PeerEvent | None = None
        answer: PeerEvent | None = None
        async for ev in self.stream(text, context_id=context_id, task_id=task_id):
            last = ev
            if ev.kind == "answer":
                answer = ev
        if last is None:
            raise RuntimeError(f"{self.url} answered nothing")
        if answer is not None and last.state == TaskState.TASK_STATE_COMPLETED:
            return PeerEvent("answer", last.state, answer.text, last.task_id, last.context_id)
        return last

    async def get_task(self, task_id: str) -> Task:
        """Return the peer's task."""
        return await (await self.client()).get_task(GetTaskRequest(id=task_id))

    async def cancel(self, task_id: str) -> Task:
        """Cancel the peer's task."""
        return await (await self.client()).cancel_task(CancelTaskRequest(id=task_id))

    async def aclose(self) -> None:
        """Close the client and its HTTP pool."""
        if self._client is not None:
            await self._client.close()
        await self._http.aclose()


def _events(ev: StreamResponse) -> list[PeerEvent]:
    kind = ev.WhichOneof("payload")
    if kind == "task":
        t = ev.task
        msg = get_message_text(t.status.message) if t.HasField("status") and t.status.HasField("message") else ""
        out = [PeerEvent("status", t.status.state, msg, t.id, t.context_id)]
        out += [PeerEvent("answer", t.status.state, get_artifact_text(a), t.id, t.context_id) for a in t.artifacts]
        return out
    if kind == "status_update":
        u = ev.status_update
        msg = get_message_text(u.status.message) if u.status.HasField("message") else ""
        return [PeerEvent("status", u.status.state, msg, u.task_id, u.context_id)]
    if kind == "artifact_update":
        u = ev.artifact_update
        return [
            PeerEvent("answer", TaskState.TASK_STATE_WORKING, get_artifact_text(u.artifact), u.task_id, u.context_id)
        ]
    if kind == "message":
        m = ev.message
        return [PeerEvent("answer", TaskState.TASK_STATE_COMPLETED, get_message_text(m), m.task_id, m.context_id)]
    return []
