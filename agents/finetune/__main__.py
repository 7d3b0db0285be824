"""Serve the fine-tuning agent over A2A: `python -m ragtune.agents.finetune [--host H --port P]`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from ragtune.agents.a2a_app import AgentSpec, build_app
from ragtune.agents.a2a_peer import A2APeer
from ragtune.agents.cli import run
from ragtune.agents.finetune import card
from ragtune.agents.finetune.graph import FinetuneDeps, build_finetune_graph, cancel_job
from ragtune.agents.mcp_tools import McpTools

from ragtune.config import AgentSettings
from ragtune.llm import make_chat_model, supports_tools


def make_app(
    settings: AgentSettings, base_url: str, poll_seconds: float = 1.0, model: BaseChatModel | None = None
) -> FastAPI:
    """Build the fine-tuning agent's A2A app from settings (a tool-calling model, if any, picks its own tools)."""
    research = A2APeer(settings.research_agent_url, settings.token())
    model = model or make_chat_model(settings)
    # The embedded model is never asked to choose: the fixed workflow runs and the model is not even loaded.
    deps = FinetuneDeps(
        McpTools(settings.finetune_url, settings.token()),
        research,
        poll_seconds=poll_seconds,
        model=model if supports_tools(model) else None,
    )

    async def build(saver: BaseCheckpointSaver) -> CompiledStateGraph:
        return build_finetune_graph(deps, saver)

    async def on_cancel(values: dict[str, Any]) -> None:
        await cancel_job(deps, values)

    spec = AgentSpec(card.NAME, card.DESCRIPTION, card.skills(), build, on_cancel, cleanup=[research.aclose])
    return build_app(spec, settings, base_url)


def main(argv: list[str] | None = None) -> None:
    """Parse flags, read settings once and serve."""
    run(
        "python -m ragtune.agents.finetune",
        card.DESCRIPTION,
        "RAGTUNE_FINETUNE_AGENT_PORT",
        8713,
        lambda s: s.finetune_agent_port,
        make_app,
        argv,
    )


if __name__ == "__main__":
    main()
