"""After a job succeeds the fine-tuning agent shows the evaluation and asks before the agents use the tuned model;
a worse or diverged model is refused plainly unless the user overrides. The test plays the worker on the real job
store (a real training run is covered by the worker's tests); the agent, MCP server and promotion are real."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from ragtune.agents.a2a_peer import A2APeer
from ragtune.agents.finetune.__main__ import make_app
from ragtune.agents.mcp_tools import McpTools
from ragtune.servers.finetune.app import build_app as finetune_app

from ragtune.config import AgentSettings, FinetuneSettings
from ragtune.jobs import JobStatus, JobStore, fine_tuned_model_name

PAIRS = "\n".join(
    json.dumps({"question": f"What is fact {i}?", "answer": f"Fact {i} is about LoRA."}) for i in range(12)
)
BETTER = {
    "status": "completed",
    "examples": 5,
    "data_source": {"type": "held_out"},
    "per_testing_criteria_results": [
        {"testing_criteria": "loss", "base": 2.5, "tuned": 1.25, "delta": -1.25, "outcome": "better"},
        {"testing_criteria": "token_f1", "base": 0.1, "tuned": 0.6, "delta": 0.5, "outcome": "better"},
    ],
    "verdict": "better",
    "summary": "tuned beats base on loss and token F1",
    "samples": [{"prompt": "What is fact 3?", "reference": "Fact 3 is about LoRA.", "base": "?", "tuned": "LoRA."}],
}
WORSE = {**BETTER, "verdict": "worse", "summary": "tuned is worse on loss"}


@pytest.fixture
async def stack(free_port, serving):
    """The real fine-tuning server, its job store, and the fine-tuning agent in front of it."""
    fport, aport = free_port(), free_port()
    ft_settings = FinetuneSettings(finetune_port=fport)
    async with serving(finetune_app(ft_settings, port=fport), fport) as ft_url:
        settings = AgentSettings(finetune_url=f"{ft_url}/mcp", research_agent_url="http://127.0.0.1:9")
        async with serving(make_app(settings, f"http://127.0.0.1:{aport}", poll_seconds=0.1), aport) as url:
            peer, store = A2APeer(url), JobStore(ft_settings.db_path())
            yield peer, McpTools(f"{ft_url}/mcp"), store
            store.close()
            await peer.aclose()


def finish_job(store: JobStore, job_id: str, losses: list[float], evaluation: dict, warnings: list[dict]) -> str:
    """Do what the worker does at the end of a job: metrics events, the evaluation, success."""
    job = store.lease_next("test-worker", 30, job_id=job_id)
    assert job is not None and job.validation_file  # the held-out pairs are the job's validation file
    assert len(Path(store.get_file(job.validation_file).path).read_text().splitlines()) == 2
    for step, loss in enumerate(losses, start=1):
        store.add_event(job_id, f"step {step}", type="metrics", data={"step": step, "train_loss": loss})
    store.update_job(job_id, evaluation={**evaluation, "job_id": job_id}, warnings=warnings)
    model = fine_tuned_model_name(store.get_job(job_id))
    store.transition(job_id, JobStatus.succeeded, fine_tuned_model=model, message="job succeeded")
    return model


async def train_until_asked(stack: Any, losses: list[float], evaluation: dict, warnings: list[dict]) -> Any:
    """Launch a job through the agent, finish it as the worker would, and return the agent's promotion question."""
    peer, _, store = stack
    context = uuid.uuid4().hex
    with anyio.fail_after(60):
        ask = await peer.ask(f"Instruction-tune the model on these pairs for 3 steps:\n{PAIRS}", context_id=context)
        assert ask.state_name == "input_required" and "2 of the 12 are held out (never trained on)" in ask.text
        last = None
        async for ev in peer.stream("yes", context_id=context, task_id=ask.task_id):
            last = ev
            if "submitted job" in ev.text:
                finish_job(store, ev.text.split()[2], losses, evaluation, warnings)
    assert last is not None and last.state_name == "input_required", last
    return last, context


async def test_a_better_model_is_shown_and_promoted_on_yes(stack):
    peer, tools, _ = stack
    asked, context = await train_until_asked(stack, [2.4, 2.0, 1.5, 1.1], BETTER, [])
    assert "| loss | 2.500 | 1.250 | -1.250 | better |" in asked.text and "Verdict: better" in asked.text
    assert "Use this tuned model" in asked.text and "until you demote it" in asked.text
    assert (await tools.call("finetune_promoted_model"))["model"] is None  # nothing happens before the answer
    with anyio.fail_after(60):
        done = await peer.ask("yes", context_id=context, task_id=asked.task_id)
    assert done.state_name == "completed" and "Promoted ft:" in done.text
    promoted = (await tools.call("finetune_promoted_model"))["model"]
    assert promoted and f"Promoted {promoted}. The research agent now answers with it" in done.text


async def test_a_worse_diverged_model_is_refused_even_on_yes(stack):
    peer, tools, _ = stack
    warning = {"code": "tuned_worse_than_base", "message": "the tuned model is worse than its base on held-out data"}
    asked, context = await train_until_asked(stack, [1.9, 2.4, 3.9, 4.8], WORSE, [warning])
    assert "I do not recommend using this model" in asked.text
    assert "the training loss diverged: it rose from 1.90 to 4.80" in asked.text
    assert "worse than its base" in asked.text and "promote anyway" in asked.text
    with anyio.fail_after(60):
        done = await peer.ask("yes", context_id=context, task_id=asked.task_id)
    assert done.state_name == "completed" and "Not promoted because" in done.text and "diverged" in done.text
    assert (await tools.call("finetune_promoted_model"))["model"] is None


async def test_promote_anyway_is_an_explicit_override_that_names_the_warnings(stack):
    peer, tools, _ = stack
    asked, context = await train_until_asked(stack, [1.9, 2.4, 3.9, 4.8], BETTER, [])
    with anyio.fail_after(60):
        done = await peer.ask("promote anyway", context_id=context, task_id=asked.task_id)
    assert done.state_name == "completed" and "despite: the training loss diverged" in done.text
    state = await tools.call("finetune_promoted_model")
    assert state["model"] and state["accepted_warnings"] and "diverged" in state["accepted_warnings"][0]
