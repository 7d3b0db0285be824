"""Fine-tuning agent graph: assess -> advise -> prepare -> confirm -> submit -> follow -> offer (promotion).

The model never decides here: the situation is read with rules, the method comes from
`finetune_recommend_method`, launching waits for a human "yes" (`interrupt()` = A2A input-required).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import interrupt
from ragtune.agents.a2a_peer import A2APeer
from ragtune.agents.finetune import evaluation, job_answers, prompts
from ragtune.agents.finetune.memory import gpu_memory_gb, is_memory_question, parse_memory_request, render_estimate
from ragtune.agents.finetune.requests import parse_request
from ragtune.agents.finetune.situation import (
    extract_jsonl,
    is_yes,
    parse_situation,
    requested_steps,
    wants_training,
)
from ragtune.agents.finetune.tool_agent import run_tool_agent
from ragtune.agents.mcp_tools import McpTools, ToolFailed
from ragtune.agents.research.qa_pairs import split_records

from ragtune.llm import model_label, supports_tools

TERMINAL = {"succeeded", "failed", "cancelled"}
MIN_FOR_HOLDOUT = 12  # fewer examples: all are trained on, and the job holds out its own slice (or skips the eval)


class FinetuneState(TypedDict, total=False):
    """What the fine-tuning graph carries through one request."""

    request: str
    situation: dict[str, Any]
    recommendation: dict[str, Any]
    advice: str
    train: bool
    dataset: list[dict[str, Any]]
    file_id: str
    validation_file_id: str
    held_out: int
    confirmed: bool
    job_id: str
    job: dict[str, Any]
    losses: list[float]
    answer: str


@dataclass
class FinetuneDeps:
    """What the fine-tuning graph needs at run time."""

    finetune: McpTools
    research: A2APeer | None = None
    model: BaseChatModel | None = None  # a tool-calling model picks tools itself; None = the fixed workflow
    default_steps: int = 30
    poll_seconds: float = 1.0
    max_follow_seconds: float = 3600.0


def _status(text: str) -> None:
    get_stream_writer()({"status": text})


def build_finetune_graph(deps: FinetuneDeps, checkpointer: BaseCheckpointSaver | None = None) -> CompiledStateGraph:
    """Compile the fine-tuning graph for these dependencies."""

    async def assess(state: FinetuneState) -> FinetuneState:
        request = state["request"]
        dataset = extract_jsonl(request)
        prose = "\n".join(line for line in request.splitlines() if not line.lstrip().startswith("{"))
        situation = parse_situation(prose, n_examples=len(dataset) if dataset else None)
        _status(f"assessing: goal={situation['goal']}, examples={situation['n_examples']}")
        rec = await deps.finetune.call("finetune_recommend_method", **situation)
        fresh: FinetuneState = {
            "situation": situation,
            "recommendation": rec,
            "advice": prompts.advice(rec),
            "train": wants_training(request, bool(dataset)),
            "dataset": dataset,
            "file_id": "",
            "validation_file_id": "",
            "held_out": 0,
            "confirmed": False,
            "job_id": "",
            "job": {},
            "answer": "",
        }
        return fresh

    async def tool_agent(state: FinetuneState, config: RunnableConfig) -> FinetuneState:
        assert deps.model is not None
        _status(f"{model_label(deps.model)} is choosing tools")
        return await run_tool_agent(deps.model, deps.finetune, state["request"], config)

    def start(state: FinetuneState) -> str:
        if deps.model is not None and supports_tools(deps.model):
            return "tool_agent"
        request = state["request"]
        if parse_request(request) is not None:
            return "job_request"  # status/list/cancel/pause/resume/validate/evaluation: the tools, not advice
        return "memory" if is_memory_question(request) and not extract_jsonl(request) else "assess"

    async def job_request(state: FinetuneState) -> FinetuneState:
        req = parse_request(state["request"])
        assert req is not None
        _status(f"calling {job_answers.TOOLS[req.action]}")
        return {"answer": await job_answers.answer(deps.finetune, req), "job_id": "", "train": False}

    async def memory(state: FinetuneState) -> FinetuneState:
        # Memory questions go to the estimator, never to the method advisor (issue #9).
        request, assumed = state["request"], ""
        args = parse_memory_request(request)
        if "model" not in args and "params_b" not in args:
            args["model"], assumed = "smollm2-135m", "no model size named: estimated for the embedded smollm2-135m"
        _status(f"estimating GPU memory ({', '.join(f'{k}={v}' for k, v in args.items())})")
        try:
            est = await deps.finetune.call("finetune_estimate_memory", **args)
        except ToolFailed as e:
            return {"answer": f"I could not estimate the memory: {e}", "job_id": "", "train": False}
        answer = render_estimate(est, gpu_memory_gb(request), assumed, korean=bool(re.search("[가-힣]", request)))
        return {"answer": f"{answer}\n\n[mode: rules + finetune_estimate_memory]", "job_id": "", "train": False}

    def after_assess(state: FinetuneState) -> str:
        return "prepare" if state.get("train") else "advise"

    async def advise(state: FinetuneState) -> FinetuneState:
        return {"answer": f"{state['advice']}\n\n[mode: rules + finetune_recommend_method]"}

    async def prepare(state: FinetuneState) -> FinetuneState:
        dataset = state.get("dataset") or []
        if not dataset and deps.research is not None:
            _status("asking the research agent for Q/A pairs from your documents")
            try:
                reply = await deps.research.ask("Make Q/A pairs from my docs for instruction tuning")
            except Exception as e:  # the peer is optional: say what is missing instead of failing the task
                return {
                    "answer": f"{prompts.NO_DATASET}\n(The research agent at {deps.research.url} could not be "
                    f"reached: {type(e).__name__}.)",
                    "train": False,
                }
            dataset = extract_jsonl(reply.text)
        if not dataset:
            return {"answer": prompts.NO_DATASET, "train": False}
        # Hold some pairs out (never trained on) so the job can compare the tuned model with its base on them.
        train, held = split_records(dataset) if len(dataset) >= MIN_FOR_HOLDOUT else (dataset, [])
        _status(f"validating and uploading {len(train)} training examples and {len(held)} held out")
        try:
            file = await _upload(train, "agent-qa.jsonl")
            validation = await _upload(held, "agent-qa-held-out.jsonl") if held else None
        except ToolFailed as e:
            return {"answer": f"The dataset was refused, nothing was launched:\n{e}", "train": False}
        return {
            "dataset": dataset,
            "file_id": file["id"],
            "validation_file_id": validation["id"] if validation else "",
            "held_out": len(held),
        }

    async def _upload(records: list[dict[str, Any]], name: str) -> dict[str, Any]:
        content = "\n".join(json.dumps(r, ensure_ascii=False) for r in records)
        return await deps.finetune.call("finetune_upload_dataset", content=content, filename=name)

    def after_prepare(state: FinetuneState) -> str:
        return "confirm" if state.get("file_id") else END

    async def confirm(state: FinetuneState) -> FinetuneState:
        n, held = len(state.get("dataset") or []), state.get("held_out", 0)
        question = prompts.CONFIRM.format(
            n=n, steps=_steps(state), advice=state.get("advice", ""), held=prompts.held_out(n, held)
        )
        reply = interrupt({"question": question})
        return {"confirmed": is_yes(str(reply))}

    def after_confirm(state: FinetuneState) -> str:
        return "submit" if state.get("confirmed") else "decline"

    async def decline(state: FinetuneState) -> FinetuneState:
        return {"answer": prompts.DECLINED.format(file_id=state.get("file_id", ""))}

    async def submit(state: FinetuneState) -> FinetuneState:
        # batch 8: each step averages English and Korean examples (their losses differ ~2x), and 20 steps pass
        # over a ~60-pair set about three times, so the loss curve says whether training worked, not which
        # language a batch happened to hold.
        hp = {"max_steps": _steps(state), "batch_size": 8, "learning_rate": 1e-3, "max_length": 256}
        job = await deps.finetune.call(
            "finetune_create_job",
            training_file=state["file_id"],
            validation_file=state.get("validation_file_id") or None,
            method="supervised",
            hyperparameters=hp,
            peft={"type": "lora"},  # rank and alpha: the server's one default (hyper.DEFAULT_LORA, r 16)
        )
        _status(f"submitted job {job['id']} ({hp['max_steps']} steps of LoRA SFT on {job.get('model')})")
        return {"job_id": job["id"], "job": job}

    async def follow(state: FinetuneState) -> FinetuneState:
        job_id, last_event, last_status, losses = state["job_id"], None, "", []
        deadline = time.monotonic() + deps.max_follow_seconds
        while True:
            view = await deps.finetune.call("finetune_get_job", job_id=job_id)
            job = view["job"]
            if job["status"] != last_status:
                last_status = job["status"]
                _status(f"job {job_id}: {last_status}")
            events = await deps.finetune.call(
                "finetune_job_events", job_id=job_id, after=last_event, order="asc", limit=100
            )
            for ev in events["events"]:
                last_event = ev["id"]
                _status(prompts.event_line(ev))
                if isinstance((ev.get("data") or {}).get("train_loss"), int | float):
                    losses.append(float(ev["data"]["train_loss"]))
            if job["status"] in TERMINAL:
                return {"job": job, "losses": losses, "answer": prompts.outcome(job, view.get("latest_metrics"))}
            if time.monotonic() > deadline:
                return {"job": job, "answer": prompts.STILL_RUNNING.format(job_id=job_id)}
            await asyncio.sleep(deps.poll_seconds)

    def after_follow(state: FinetuneState) -> str:
        job = state.get("job") or {}
        return "offer" if job.get("status") == "succeeded" and job.get("fine_tuned_model") else END

    async def offer(state: FinetuneState) -> FinetuneState:
        # Show the evaluation and ask; a diverged or worse model needs an explicit override (never silent).
        job = state["job"]
        found = evaluation.problems(job, state.get("losses") or [])
        reply = str(interrupt({"question": evaluation.question(job, found)}))
        wanted = bool(evaluation.OVERRIDE.match(reply)) if found else is_yes(reply)
        done = state.get("answer", "")
        if not wanted:
            return {"answer": f"{done}\n\n{evaluation.kept(job, found)}"}
        _status(f"promoting {job['fine_tuned_model']}")
        try:
            result = await deps.finetune.call(
                "finetune_promote_model", model=job["fine_tuned_model"], accept_warnings=bool(found)
            )
        except ToolFailed as e:
            return {"answer": f"{done}\n\nNot promoted: {e}"}
        return {"answer": f"{done}\n\n{evaluation.promoted(result)}"}

    g = StateGraph(FinetuneState)
    for name, fn in [
        ("tool_agent", tool_agent),
        ("memory", memory),
        ("job_request", job_request),
        ("assess", assess),
        ("advise", advise),
        ("prepare", prepare),
        ("confirm", confirm),
        ("decline", decline),
        ("submit", submit),
        ("follow", follow),
        ("offer", offer),
    ]:
        g.add_node(name, fn)
    g.add_conditional_edges(START, start, ["tool_agent", "job_request", "memory", "assess"])
    g.add_conditional_edges("assess", after_assess, ["advise", "prepare"])
    g.add_conditional_edges("prepare", after_prepare, ["confirm", END])
    g.add_conditional_edges("confirm", after_confirm, ["submit", "decline"])
    g.add_edge("submit", "follow")
    g.add_conditional_edges("follow", after_follow, ["offer", END])
    for end in ("tool_agent", "job_request", "memory", "advise", "decline", "offer"):
        g.add_edge(end, END)
    return g.compile(checkpointer=checkpointer, name="finetune")


def _steps(state: FinetuneState) -> int:
    return requested_steps(state.get("request", "")) or 30


async def cancel_job(deps: FinetuneDeps, values: dict[str, Any]) -> None:
    """Cancel the job this conversation launched, when the A2A task is cancelled while it runs."""
    job_id = values.get("job_id")
    if job_id and (values.get("job") or {}).get("status") not in TERMINAL:
        await deps.finetune.call("finetune_cancel_job", job_id=job_id)
