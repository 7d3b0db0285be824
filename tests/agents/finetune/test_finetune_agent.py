"""The fine-tuning agent over A2A against the real fine-tuning MCP server: advice, validation, confirmation
(input-required), submission and cancellation of the job it launched."""

from __future__ import annotations

import json
import uuid

import anyio
import pytest
from a2a.types import TaskState
from langchain_core.messages import AIMessage, ToolMessage
from ragtune.agents.a2a_peer import A2APeer
from ragtune.agents.finetune.__main__ import make_app
from ragtune.agents.finetune.situation import is_yes, parse_situation, wants_training
from ragtune.agents.mcp_tools import McpTools
from ragtune.servers.finetune.app import build_app as finetune_app

from ragtune.config import AgentSettings, FinetuneSettings


def qa_jsonl(n: int) -> str:
    return "\n".join(
        json.dumps({"question": f"What is fact number {i}?", "answer": f"Fact {i} is about LoRA."}) for i in range(n)
    )


@pytest.fixture
async def stack(free_port, serving):
    """A real fine-tuning server (MCP over HTTP) and the fine-tuning agent in front of it."""
    fport, aport = free_port(), free_port()
    ft_settings = FinetuneSettings(finetune_port=fport)
    async with serving(finetune_app(ft_settings, port=fport), fport) as ft_url:
        settings = AgentSettings(finetune_url=f"{ft_url}/mcp", research_agent_url="http://127.0.0.1:9")
        async with serving(make_app(settings, f"http://127.0.0.1:{aport}", poll_seconds=0.2), aport) as url:
            peer = A2APeer(url)
            yield peer, McpTools(f"{ft_url}/mcp")
            await peer.aclose()


def test_situations_are_read_from_plain_text():
    s = parse_situation(
        "We have about 3,000 support conversations and want answers in our house style; the docs change every week."
    )
    assert s["goal"] == "style" and s["n_examples"] == 3000 and s["data_changes_often"]
    assert parse_situation("선호 쌍 2만 개가 있어요")["n_examples"] == 20000
    assert wants_training("Instruction-tune the model on these pairs", has_dataset=False)
    assert not wants_training("Should I fine-tune for this?", has_dataset=False)
    assert is_yes("Yes, go") and is_yes("네 시작하세요") and not is_yes("no thanks")


async def test_advice_for_a_described_situation(stack):
    peer, _ = stack
    with anyio.fail_after(60):
        done = await peer.ask(
            "Our product docs change every week and we have 3,000 support chats. Should we fine-tune?"
        )
    assert done.state_name == "completed"
    assert "prompting + retrieval (RAG) first" in done.text and "[mode:" in done.text


async def test_confirmation_then_submit_then_cancel(stack):
    peer, tools = stack
    context = uuid.uuid4().hex
    request = f"Instruction-tune the model on these pairs for 3 steps:\n{qa_jsonl(12)}"
    with anyio.fail_after(60):
        ask = await peer.ask(request, context_id=context)
    assert ask.state_name == "input_required"
    assert "12 examples for 3 steps" in ask.text and "yes" in ask.text
    with anyio.fail_after(60):
        declined = await peer.ask("no", context_id=context, task_id=ask.task_id)
    assert declined.state_name == "completed" and "Not launched" in declined.text
    assert (await tools.call("finetune_list_jobs"))["jobs"] == []  # nothing was submitted

    ask = await peer.ask(request, context_id=context)
    statuses: list[str] = []
    with anyio.fail_after(60):
        async for ev in peer.stream("yes", context_id=context, task_id=ask.task_id):
            statuses.append(ev.text)
            if "submitted job" in ev.text:
                break  # no worker runs here: the job stays queued; cancel the A2A task instead
    job_id = next(s for s in statuses if "submitted job" in s).split()[2]
    other = A2APeer(peer.url)
    canceled = await other.cancel(ask.task_id)
    await other.aclose()
    assert canceled.status.state == TaskState.TASK_STATE_CANCELED
    job = (await tools.call("finetune_get_job", job_id=job_id))["job"]
    assert job["status"] == "cancelled" and job["hyperparameters"]["max_steps"] == 3


async def test_a_bad_dataset_is_refused_and_nothing_launches(stack):
    peer, tools = stack
    with anyio.fail_after(60):
        # An empty answer is a bad record (a single good line is a valid, if tiny, dataset).
        done = await peer.ask('Train the model on this:\n{"question": "what is LoRA?", "answer": ""}')
    assert done.state_name == "completed" and "refused" in done.text
    assert (await tools.call("finetune_list_jobs"))["jobs"] == []


async def test_no_dataset_and_no_research_agent_says_what_is_missing(stack):
    peer, tools = stack
    with anyio.fail_after(60):
        done = await peer.ask("Launch a fine-tuning job for me")
    assert done.state_name == "completed"
    assert "I need training data" in done.text and "could not be reached" in done.text
    assert (await tools.call("finetune_list_jobs"))["jobs"] == []


async def test_tool_calling_model_uploads_then_launch_waits_for_yes(free_port, serving, scripted_model):
    fport, aport = free_port(), free_port()
    async with serving(finetune_app(FinetuneSettings(finetune_port=fport), port=fport), fport) as ft_url:
        tools = McpTools(f"{ft_url}/mcp")
        file = await tools.call("finetune_upload_dataset", content=qa_jsonl(12), filename="qa.jsonl")
        model = scripted_model(
            [
                AIMessage(
                    "",
                    tool_calls=[
                        {
                            "name": "finetune_recommend_method",
                            "id": "c1",
                            "args": {"goal": "task", "n_examples": 12},
                        }
                    ],
                ),
                AIMessage(
                    "",
                    tool_calls=[
                        {
                            "name": "finetune_launch",
                            "id": "c2",
                            "args": {"training_file": file["id"], "max_steps": 2},
                        }
                    ],
                ),
                AIMessage("Launched as requested."),
            ]
        )
        settings = AgentSettings(finetune_url=f"{ft_url}/mcp", research_agent_url="http://127.0.0.1:9")
        async with serving(make_app(settings, f"http://127.0.0.1:{aport}", model=model), aport) as url:
            peer = A2APeer(url)
            with anyio.fail_after(60):
                ask = await peer.ask(f"Train on {file['id']} for 2 steps")
            assert ask.state_name == "input_required" and f"Launch LoRA SFT on {file['id']}" in ask.text
            assert (await tools.call("finetune_list_jobs"))["jobs"] == []  # nothing before the yes
            with anyio.fail_after(60):
                done = await peer.ask("yes", context_id=ask.context_id, task_id=ask.task_id)
            await peer.aclose()
    assert done.state_name == "completed" and "[mode: tool-calling ScriptedModel]" in done.text
    results = [m.content for batch in model.seen for m in batch if isinstance(m, ToolMessage)]
    assert any("prompt" in str(r) or "lora" in str(r) for r in results)  # the real advisor answered
    assert any('"job_id": "ftjob-' in str(r) for r in results)
