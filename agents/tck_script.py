"""The A2A TCK's scripted scenarios (its scenarios/*.feature), chosen by messageId prefix; conformance runs only.

On with RAGTUNE_A2A_TCK_MODE=true. A message whose id has no scripted prefix goes to the agent's real graph.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from a2a.helpers import new_task_from_user_message
from a2a.server.agent_execution import RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from a2a.types import Part
from a2a.utils.errors import A2AError
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Value

# The TCK's streaming timeout (TCK_STREAMING_TIMEOUT, 2 s); the resubscribe scenario stays working for twice that.
STREAMING_TIMEOUT_S = 2.0
Step = Callable[[TaskUpdater], Awaitable[None]]


def _text(text: str) -> list[Part]:
    return [Part(text=text)]


FILE = [Part(raw=b"tck", media_type="text/plain", filename="output.txt")]
FILE_URL = [Part(url="https://example.com/output.txt", media_type="text/plain", filename="output.txt")]
DATA = [Part(data=json_format.Parse('{"key": "value", "count": 42}', Value()))]


def _artifact(parts: list[Part], *, work: bool = True) -> Step:
    async def step(updater: TaskUpdater) -> None:
        if work:
            await updater.start_work()
        await updater.add_artifact(parts)
        await updater.complete()

    return step


async def _complete_with_message(updater: TaskUpdater) -> None:
    await updater.complete(updater.new_agent_message(_text("Hello from TCK")))


async def _chunked(updater: TaskUpdater) -> None:
    await updater.start_work()
    await updater.add_artifact(_text("chunk-1 "), artifact_id="chunked", append=True)
    await updater.add_artifact(_text("chunk-2"), artifact_id="chunked", append=True, last_chunk=True)
    await updater.complete()


async def _long_running(updater: TaskUpdater) -> None:
    await updater.start_work()
    await asyncio.sleep(2 * STREAMING_TIMEOUT_S)
    await updater.complete()


async def _input_required(updater: TaskUpdater) -> None:
    await updater.requires_input(updater.new_agent_message(_text("What else do you need?")))


async def _complete(updater: TaskUpdater) -> None:
    await updater.complete()


# Longest prefixes first: "tck-artifact-file-url" must win over "tck-artifact-file".
SCRIPTS: dict[str, Step] = {
    "tck-stream-artifact-chunked": _chunked,
    "tck-stream-artifact-text": _artifact(_text("Streamed text content")),
    "tck-stream-artifact-file": _artifact(FILE),
    "tck-stream-ordering-001": _artifact(_text("Ordered output")),
    "tck-stream-001": _artifact(_text("Stream hello from TCK")),
    "tck-stream-002": _complete,
    "tck-stream-003": _artifact(_text("Stream task lifecycle")),
    "test-resubscribe-message-id": _long_running,
    "tck-artifact-file-url": _artifact(FILE_URL, work=False),
    "tck-artifact-file": _artifact(FILE, work=False),
    "tck-artifact-text": _artifact(_text("Generated text content"), work=False),
    "tck-artifact-data": _artifact(DATA, work=False),
    "tck-complete-task": _complete_with_message,
    "tck-input-required": _input_required,
}


async def run_tck_script(context: RequestContext, event_queue: EventQueue) -> bool:
    """Play the TCK scenario the messageId names; return False when it names none (the graph answers)."""
    message_id = context.message.message_id if context.message else ""
    if message_id.startswith("tck-message-response"):
        reply = TaskUpdater(event_queue, context.task_id or "", context.context_id or "")
        await event_queue.enqueue_event(reply.new_agent_message(_text("Direct message response")))
        return True
    if message_id.startswith("tck-reject-task"):
        raise A2AError("rejected")
    step = next((s for prefix, s in SCRIPTS.items() if message_id.startswith(prefix)), None)
    if step is None or context.message is None:
        return False
    task = context.current_task
    if task is None:  # a new task must be enqueued first; a follow-up's must not (it would drop the user's message)
        task = new_task_from_user_message(context.message)
        await event_queue.enqueue_event(task)
    await step(TaskUpdater(event_queue, task.id, task.context_id))
    return True
