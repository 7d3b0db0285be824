"""The coordinator's calls to its peers: wait for a peer still starting, relay its status, fail honestly with its
reason, and remember the peer tasks in flight so that cancelling the coordinator's task cancels them (issue #9)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from a2a.client import A2AClientError
from ragtune.agents.a2a_app import TaskFailed
from ragtune.agents.a2a_peer import A2APeer, PeerEvent, PeerUnavailable

log = logging.getLogger(__name__)
ENDED_BADLY = ("failed", "rejected", "canceled")


@dataclass
class PeerCalls:
    """Peer tasks in flight, by the coordinator task that started them."""

    wait_seconds: float = 120.0
    inflight: dict[str, dict[str, A2APeer]] = field(default_factory=dict)

    async def relay(
        self,
        peer: A2APeer,
        name: str,
        text: str,
        *,
        owner: str,
        context_id: str,
        status: Callable[[str], None],
        task_id: str | None = None,
    ) -> PeerEvent:
        """Stream a peer's answer, relaying its working statuses; raise TaskFailed with its reason if it fails."""
        try:
            await peer.wait_ready(self.wait_seconds, on_wait=lambda: status(f"waiting for the {name} agent"))
        except PeerUnavailable as e:
            raise TaskFailed(f"the {name} agent is not answering: {e}") from e
        answer, last = None, None
        try:
            async for ev in peer.stream(text, context_id=context_id, task_id=task_id):
                self.inflight.setdefault(owner, {})[ev.task_id] = peer
                last = ev
                if ev.kind == "answer":
                    answer = ev
                elif ev.text and ev.state_name == "working":
                    status(f"[{name}] {ev.text}")
        except (httpx.HTTPError, A2AClientError) as e:
            raise TaskFailed(f"the {name} agent at {peer.url} failed: {type(e).__name__}: {e}") from e
        finally:
            self.inflight.pop(owner, None)
        if last is None:
            raise TaskFailed(f"the {name} agent answered nothing")
        if last.state_name in ENDED_BADLY:
            raise TaskFailed(f"the {name} agent's task {last.state_name}: {last.text or 'it gave no reason'}")
        if last.state_name not in ("completed", "input_required"):
            raise TaskFailed(f"the {name} agent stopped answering while its task was {last.state_name}")
        if answer is not None and last.state_name == "completed":
            return PeerEvent("answer", last.state, answer.text, last.task_id, last.context_id)
        return last

    async def cancel(self, owner: str, waiting: tuple[A2APeer, str] | None = None) -> None:
        """Cancel every peer task the coordinator task `owner` runs (and the one waiting for the user's input)."""
        tasks = dict(self.inflight.pop(owner, {}))
        if waiting is not None:
            tasks.setdefault(waiting[1], waiting[0])
        for task_id, peer in tasks.items():
            try:
                await peer.cancel(task_id)
            except Exception as e:  # already finished, or gone: nothing left to stop
                log.info("peer task %s at %s not canceled: %s", task_id, peer.url, e)
