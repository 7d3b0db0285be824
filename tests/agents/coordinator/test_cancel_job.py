"""Cancelling a coordinator task over A2A reaches the real fine-tuning agent and, through it, the job it started on
the real fine-tuning server (no worker runs, so the job waits in the queue until it is cancelled) (issue #9)."""

from __future__ import annotations

import asyncio
import json

import anyio
import pytest
from a2a.types import ListTasksRequest, TaskState
from ragtune.agents.a2a_peer import A2APeer
from ragtune.agents.coordinator.__main__ import make_app as coordinator_app
from ragtune.agents.finetune.__main__ import make_app as finetune_agent_app
from ragtune.agents.mcp_tools import McpTools
from ragtune.servers.finetune.app import build_app as finetune_app

from ragtune.config import AgentSettings, FinetuneSettings

ROWS = "\n".join(
    json.dumps({"question": f"What is fact {i}?", "answer": f"Fact {i} is about LoRA."}) for i in range(12)
)


@pytest.fixture
async def stack(free_port, serving):
    """The real fine-tuning server, the fine-tuning agent in front of it, and the coordinator in front of both."""
    fport, aport, cport = free_port(), free_port(), free_port()
    async with serving(finetune_app(FinetuneSettings(finetune_port=fport), port=fport), fport) as ft_url:
        settings = AgentSettings(
            finetune_url=f"{ft_url}/mcp",
            research_agent_url="http://127.0.0.1:9",
            finetune_agent_url=f"http://127.0.0.1:{aport}",
        )
        async with serving(finetune_agent_app(settings, f"http://127.0.0.1:{aport}", poll_seconds=0.2), aport) as a:
            async with serving(coordinator_app(settings, f"http://127.0.0.1:{cport}"), cport) as url:
                peers = A2APeer(url), A2APeer(a), A2APeer(url)
                yield *peers, McpTools(f"{ft_url}/mcp")
                for p in peers:
                    await p.aclose()


async def wait_state(peer: A2APeer, task_id: str, state: int) -> None:
    with anyio.fail_after(30):
        while (await peer.get_task(task_id)).status.state != state:
            await asyncio.sleep(0.1)


async def test_cancel_while_asking_cancels_the_peer_task_waiting_for_input(stack):
    coordinator, agent, canceller, _ = stack
    with anyio.fail_after(60):
        asked = await coordinator.ask(f"Fine-tune on these pairs for 5 steps:\n{ROWS}")
    assert asked.state_name == "input_required" and "Reply “yes”" in asked.text
    (peer_task,) = (await (await agent.client()).list_tasks(ListTasksRequest())).tasks
    assert peer_task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert (await canceller.cancel(asked.task_id)).status.state == TaskState.TASK_STATE_CANCELED
    await wait_state(agent, peer_task.id, TaskState.TASK_STATE_CANCELED)


async def test_cancel_while_training_cancels_the_peer_task_and_its_job(stack):
    coordinator, agent, canceller, tools = stack
    with anyio.fail_after(60):
        asked = await coordinator.ask(f"Fine-tune on these pairs for 5 steps:\n{ROWS}")
    submitted, events = asyncio.Event(), []

    async def confirm() -> None:
        async for ev in coordinator.stream("yes", context_id=asked.context_id, task_id=asked.task_id):
            events.append(ev)
            if ev.text.startswith("[finetune] submitted job"):
                submitted.set()

    runner = asyncio.create_task(confirm())
    with anyio.fail_after(60):
        await submitted.wait()
    job_id = next(e.text for e in events if "submitted job" in e.text).split("submitted job ")[1].split()[0]
    assert (await canceller.cancel(asked.task_id)).status.state == TaskState.TASK_STATE_CANCELED
    with anyio.fail_after(30):
        await runner
        while (await tools.call("finetune_get_job", job_id=job_id))["job"]["status"] != "cancelled":
            await asyncio.sleep(0.1)
    (peer_task,) = (await (await agent.client()).list_tasks(ListTasksRequest())).tasks
    await wait_state(agent, peer_task.id, TaskState.TASK_STATE_CANCELED)
