"""The coordinator and its peers over real A2A (uvicorn on loopback, a2a-sdk clients): a failing peer fails the
coordinator's task with the peer's reason, cancelling the coordinator's task cancels the peer's, a peer that starts
late is waited for, and /health says whether the peers answer (issue #9)."""

from __future__ import annotations

import asyncio
from typing import TypedDict

import anyio
import httpx
from a2a.types import ListTasksRequest, TaskState
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from ragtune.agents.a2a_app import AgentSpec, build_app, skill
from ragtune.agents.a2a_peer import A2APeer
from ragtune.agents.coordinator.__main__ import make_app as coordinator_app

from ragtune.config import AgentSettings

EMPTY_INDEX = "the index is empty: ingest documents first"


class PeerState(TypedDict, total=False):
    request: str
    answer: str


def research_peer(port: int, behaviour: str):
    """A stand-in research agent served by the real A2A helper: answers, fails, or works for a long time."""

    async def build(saver: BaseCheckpointSaver):
        async def answer(state: PeerState) -> PeerState:
            get_stream_writer()({"status": "searching"})
            if behaviour == "fail":
                raise RuntimeError(EMPTY_INDEX)
            if behaviour == "slow":
                await asyncio.sleep(120)
            return {"answer": "LoRA trains small low-rank adapters [1]"}

        g = StateGraph(PeerState)
        g.add_node("answer", answer)
        g.add_edge(START, "answer")
        g.add_edge("answer", END)
        return g.compile(checkpointer=saver)

    spec = AgentSpec(
        "ragtune-research", "stand-in", [skill("ask", "Ask", "answers", ["rag"], ["What is LoRA?"])], build
    )
    return build_app(spec, AgentSettings(), f"http://127.0.0.1:{port}")


def coordinator(rport: int, cport: int, wait: float = 30.0):
    settings = AgentSettings(
        research_agent_url=f"http://127.0.0.1:{rport}",
        finetune_agent_url="http://127.0.0.1:9",
        peer_wait_seconds=wait,
    )
    return coordinator_app(settings, f"http://127.0.0.1:{cport}")


async def test_a_failing_peer_fails_the_coordinators_task_with_its_reason(free_port, serving):
    rport, cport = free_port(), free_port()
    async with serving(research_peer(rport, "fail"), rport), serving(coordinator(rport, cport), cport) as url:
        peer = A2APeer(url)
        with anyio.fail_after(30):
            last = await peer.ask("What is LoRA?")
        assert last.state_name == "failed"
        assert "research agent's task failed" in last.text and EMPTY_INDEX in last.text
        task = await peer.get_task(last.task_id)
        assert task.status.state == TaskState.TASK_STATE_FAILED and not task.artifacts  # no error text as answer
        await peer.aclose()


async def test_cancelling_the_coordinators_task_cancels_the_peers(free_port, serving):
    rport, cport = free_port(), free_port()
    async with serving(research_peer(rport, "slow"), rport) as rurl, serving(coordinator(rport, cport), cport) as url:
        client, relayed, ids = A2APeer(url), asyncio.Event(), []

        async def ask() -> None:
            async for ev in client.stream("What is LoRA?"):
                ids.append(ev.task_id)
                if ev.text == "[research] searching":
                    relayed.set()

        runner = asyncio.create_task(ask())
        with anyio.fail_after(30):
            await relayed.wait()
        research = A2APeer(rurl)
        listed = await (await research.client()).list_tasks(ListTasksRequest())
        (peer_task,) = listed.tasks
        assert peer_task.status.state == TaskState.TASK_STATE_WORKING
        canceller = A2APeer(url)
        canceled = await canceller.cancel(ids[0])
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        with anyio.fail_after(30):
            await runner
            while (await research.get_task(peer_task.id)).status.state != TaskState.TASK_STATE_CANCELED:
                await asyncio.sleep(0.1)
        for p in (client, research, canceller):
            await p.aclose()


async def test_a_peer_that_starts_late_is_waited_for(free_port, serving):
    rport, cport = free_port(), free_port()
    async with serving(coordinator(rport, cport), cport) as url:
        async with httpx.AsyncClient() as http:
            health = await http.get(f"{url}/health")
        assert health.status_code == 503 and health.json()["peers"] == {"research": False, "finetune": False}
        client, events, waiting = A2APeer(url), [], asyncio.Event()

        async def ask() -> None:
            async for ev in client.stream("What is LoRA?"):
                events.append(ev)
                if ev.text == "waiting for the research agent":
                    waiting.set()

        runner = asyncio.create_task(ask())
        with anyio.fail_after(30):
            await waiting.wait()
        async with serving(research_peer(rport, "answer"), rport):
            with anyio.fail_after(30):
                await runner
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"{url}/health")).json()["peers"]["research"] is True
        assert events[-1].state_name == "completed"
        assert [e.text for e in events if e.kind == "answer"] == ["LoRA trains small low-rank adapters [1]"]
        await client.aclose()


async def test_a_peer_that_never_starts_fails_the_task_after_the_wait(free_port, serving):
    rport, cport = free_port(), free_port()
    async with serving(coordinator(rport, cport, wait=1.0), cport) as url:
        client = A2APeer(url)
        with anyio.fail_after(30):
            last = await client.ask("What is LoRA?")
        assert last.state_name == "failed" and "research agent is not answering" in last.text
        assert "RAGTUNE_PEER_WAIT_SECONDS" in last.text
        await client.aclose()
