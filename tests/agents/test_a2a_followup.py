"""A follow-up to an input-required task resumes the graph and lands in the task's history, whether it is sent
with a plain (non-streaming) SendMessage or streamed: the fine-tuning agent's launch confirmation over real A2A."""

from __future__ import annotations

import json
import uuid

import anyio
import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.helpers import get_artifact_text, get_message_text
from a2a.types import GetTaskRequest, Message, Part, Role, SendMessageRequest, StreamResponse, TaskState

PAIRS = "\n".join(json.dumps({"question": f"What is fact {i}?", "answer": f"Fact {i} is LoRA."}) for i in range(12))


def message(text: str, context_id: str = "", task_id: str = "") -> SendMessageRequest:
    msg = Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[Part(text=text)])
    if context_id:
        msg.context_id, msg.task_id = context_id, task_id
    return SendMessageRequest(message=msg)


async def send(url: str, request: SendMessageRequest, streaming: bool) -> list[StreamResponse]:
    """Send one message with a fresh a2a-sdk client and return every StreamResponse it yields."""
    async with httpx.AsyncClient(timeout=60) as http:
        client = await create_client(url, client_config=ClientConfig(streaming=streaming, httpx_client=http))
        with anyio.fail_after(60):
            events = [ev async for ev in client.send_message(request)]
        await client.close()
    return events


async def get_task(url: str, task_id: str):
    async with httpx.AsyncClient(timeout=30) as http:
        client = await create_client(url, client_config=ClientConfig(httpx_client=http))
        task = await client.get_task(GetTaskRequest(id=task_id))
        await client.close()
    return task


@pytest.mark.parametrize("streaming", [False, True], ids=["send", "stream"])
async def test_a_follow_up_to_an_input_required_task_resumes_it(finetune_stack, streaming):
    url, _ = finetune_stack
    first = await send(url, message(f"Instruction-tune the model on these pairs for 3 steps:\n{PAIRS}"), streaming)
    # A new task: the stream starts with the Task; a plain send returns it as its one event.
    assert first[0].WhichOneof("payload") == "task"
    asked = first[-1].task if first[-1].HasField("task") else first[-1].status_update
    assert asked.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert "12 examples for 3 steps" in get_message_text(asked.status.message)
    task_id, context_id = first[0].task.id, first[0].task.context_id

    reply = message("no", context_id, task_id)
    events = await send(url, reply, streaming)
    if streaming:  # the follow-up stream runs the graph on the same task: working ... completed, with the answer
        kinds = [ev.WhichOneof("payload") for ev in events]
        assert kinds[0] == "status_update" and events[0].status_update.status.state == TaskState.TASK_STATE_WORKING
        assert "artifact_update" in kinds
        assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
        assert {getattr(ev, kind).task_id for ev, kind in zip(events, kinds, strict=True)} == {task_id}
    else:  # the plain send answers once, with the task after the graph resumed (it used to stay input-required)
        assert len(events) == 1 and events[0].task.id == task_id
        assert events[0].task.status.state == TaskState.TASK_STATE_COMPLETED

    task = await get_task(url, task_id)
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert "Not launched" in get_artifact_text(task.artifacts[-1])
    user_turns = [get_message_text(m) for m in task.history if m.role == Role.ROLE_USER]
    assert user_turns[-1] == "no" and reply.message.message_id in {m.message_id for m in task.history}
    assert len(user_turns) == 2 and user_turns[0].startswith("Instruction-tune")
