"""A2A serving helper over real HTTP with the a2a-sdk client: card, send, stream, get, cancel, list, follow-up,
input-required, persistence across a restart, bearer token and bad input."""

from __future__ import annotations

import asyncio
import operator
import uuid
from typing import Annotated, TypedDict

import anyio
import httpx
import pytest
from a2a.client import A2AClientError
from a2a.types import ListTasksRequest, TaskState
from a2a.utils.errors import InvalidParamsError, TaskNotFoundError
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from ragtune.agents.a2a_app import AgentSpec, build_app, serve, skill
from ragtune.agents.a2a_peer import A2APeer

from ragtune.config import AgentSettings, InsecureBindError


class EchoState(TypedDict, total=False):
    request: str
    turns: Annotated[int, operator.add]
    answer: str


async def echo_graph(saver: BaseCheckpointSaver):
    """A graph exercising every path of the helper: status, interrupt, slow work, per-context memory."""

    async def work(state: EchoState) -> EchoState:
        get_stream_writer()({"status": f"working on {state['request']}"})
        if state["request"] == "slow":
            await asyncio.sleep(60)
        reply = interrupt({"question": "really?"}) if state["request"] == "confirm" else ""
        return {"turns": 1, "answer": f"echo {state['request']} {reply}".strip()}

    async def finish(state: EchoState) -> EchoState:
        return {"answer": f"{state['answer']} (turn {state['turns']})"}

    g = StateGraph(EchoState)
    g.add_node("work", work)
    g.add_node("finish", finish)
    g.add_edge(START, "work")
    g.add_edge("work", "finish")
    g.add_edge("finish", END)
    return g.compile(checkpointer=saver)


def echo_app(port: int, token: str | None = None):
    spec = AgentSpec("ragtune-echo", "echoes", [skill("echo", "Echo", "echoes", ["test"], ["hello"])], echo_graph)
    settings = AgentSettings(api_token=token) if token else AgentSettings()
    return build_app(spec, settings, f"http://127.0.0.1:{port}")


async def aget(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as h:
        return await h.get(url)


async def apost(url: str, **kw) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as h:
        return await h.post(url, **kw)


async def collect(peer: A2APeer, text: str, **kw) -> list:
    with anyio.fail_after(30):
        return [ev async for ev in peer.stream(text, **kw)]


async def test_card_send_stream_get_list_and_follow_up(free_port, serving):
    port = free_port()
    async with serving(echo_app(port), port) as url:
        card = (await aget(f"{url}/.well-known/agent-card.json")).json()
        assert card["name"] == "ragtune-echo" and card["skills"][0]["examples"] == ["hello"]
        assert "securitySchemes" not in card  # no token, no scheme
        peer = A2APeer(url)
        context = uuid.uuid4().hex
        events = await collect(peer, "hi", context_id=context)
        assert any(e.kind == "status" and e.text == "working on hi" for e in events)
        assert events[-1].state_name == "completed"
        assert [e.text for e in events if e.kind == "answer"] == ["echo hi (turn 1)"]
        task = await peer.get_task(events[-1].task_id)
        assert task.status.state == TaskState.TASK_STATE_COMPLETED and task.context_id == context
        # A follow-up in the same context continues the same LangGraph thread.
        again = await peer.ask("more", context_id=context)
        assert again.text == "echo more (turn 2)"
        other = await peer.ask("hi")
        assert other.text == "echo hi (turn 1)"
        listed = await (await peer.client()).list_tasks(ListTasksRequest(context_id=context))
        assert {t.id for t in listed.tasks} == {events[-1].task_id, again.task_id}
        await peer.aclose()


async def test_input_required_then_resume_on_the_same_task(free_port, serving, caplog):
    port = free_port()
    async with serving(echo_app(port), port) as url:
        peer = A2APeer(url)
        first = await peer.ask("confirm")
        assert first.state_name == "input_required" and first.text == "really?"
        done = await peer.ask("yes", context_id=first.context_id, task_id=first.task_id)
        assert done.state_name == "completed" and done.text == "echo confirm yes (turn 1)"
        assert done.task_id == first.task_id
        await peer.aclose()
    # Regression for issue #12: every confirmation logged "ERROR ... Task ... already exists".
    assert "already exists" not in caplog.text and not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_cancel_a_running_task(free_port, serving):
    port = free_port()
    async with serving(echo_app(port), port) as url:
        peer, seen = A2APeer(url), asyncio.Event()
        task_ids: list[str] = []

        async def run() -> None:
            async for ev in peer.stream("slow"):
                task_ids.append(ev.task_id)
                if ev.text == "working on slow":
                    seen.set()

        runner = asyncio.create_task(run())
        with anyio.fail_after(20):
            await seen.wait()
        other = A2APeer(url)
        canceled = await other.cancel(task_ids[0])
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        with anyio.fail_after(20):
            await runner
        assert (await other.get_task(task_ids[0])).status.state == TaskState.TASK_STATE_CANCELED
        await peer.aclose()
        await other.aclose()


async def test_tasks_survive_a_restart(free_port, serving):
    port = free_port()
    async with serving(echo_app(port), port) as url:
        peer = A2APeer(url)
        done = await peer.ask("remember me")
        await peer.aclose()
    async with serving(echo_app(port), port) as url:  # a new app on the same SQLite files
        peer = A2APeer(url)
        task = await peer.get_task(done.task_id)
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert "echo remember me" in task.artifacts[0].parts[0].text
        again = await peer.ask("and now", context_id=done.context_id)
        assert again.text == "echo and now (turn 2)"  # the checkpointer kept the thread too
        await peer.aclose()


async def test_bad_input_gets_clear_errors(free_port, serving):
    port = free_port()
    async with serving(echo_app(port), port) as url:
        peer = A2APeer(url)
        with pytest.raises(InvalidParamsError, match="empty message"):
            await collect(peer, "   ")
        with pytest.raises(TaskNotFoundError):
            await peer.get_task("no-such-task")
        await peer.aclose()


async def test_bearer_token_guards_rpc_but_not_the_card(free_port, serving):
    port = free_port()
    async with serving(echo_app(port, token="s3cret"), port) as url:
        card = (await aget(f"{url}/.well-known/agent-card.json")).json()
        assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
        for token, message in [(None, "missing bearer token"), ("wrong", "wrong bearer token")]:
            r = await apost(
                f"{url}/",
                json={"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}},
                headers={"A2A-Version": "1.0", **({"Authorization": f"Bearer {token}"} if token else {})},
            )
            assert r.status_code == 401 and message in r.json()["error"]
            peer = A2APeer(url, token)
            with pytest.raises(A2AClientError, match="401"):
                await collect(peer, "hi")
            await peer.aclose()
        peer = A2APeer(url, "s3cret")
        assert (await peer.ask("hi")).text == "echo hi (turn 1)"
        await peer.aclose()


def test_refuses_to_bind_beyond_loopback_without_a_token():
    with pytest.raises(InsecureBindError, match="RAGTUNE_API_TOKEN"):
        serve(echo_app(1), "0.0.0.0", 1, AgentSettings())


async def test_a2a_0_3_clients_are_served_too(free_port, serving):
    port = free_port()
    async with serving(echo_app(port), port) as url:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "message/send",
            "params": {
                "message": {
                    "kind": "message",
                    "messageId": "m1",
                    "role": "user",
                    "parts": [{"kind": "text", "text": "old"}],
                }
            },
        }
        r = await apost(f"{url}/", json=body)  # no A2A-Version header: a 0.3 client
        result = r.json()["result"]
        assert result["status"]["state"] == "completed"
        assert result["artifacts"][0]["parts"][0]["text"] == "echo old (turn 1)"
        card = (await aget(f"{url}/.well-known/agent-card.json")).json()
        assert {"0.3", "1.0"} <= {i["protocolVersion"] for i in card["supportedInterfaces"]}
