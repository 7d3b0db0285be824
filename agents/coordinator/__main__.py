"""Serve the coordinator over A2A: `python -m ragtune.agents.coordinator [--host H --port P]`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from ragtune.agents.a2a_app import AgentSpec, build_app
from ragtune.agents.a2a_peer import A2APeer
from ragtune.agents.cli import run
from ragtune.agents.coordinator import card
from ragtune.agents.coordinator.graph import CoordinatorDeps, build_coordinator_graph, peer_context
from ragtune.agents.coordinator.peers import PeerCalls

from ragtune.config import AgentSettings
from ragtune.llm import make_chat_model, supports_tools


def make_app(settings: AgentSettings, base_url: str, model: BaseChatModel | None = None) -> FastAPI:
    """Build the coordinator's A2A app; it reaches its peers only over A2A (HTTP)."""
    research = A2APeer(settings.research_agent_url, settings.token())
    finetune = A2APeer(settings.finetune_agent_url, settings.token())
    model = model or make_chat_model(settings)
    # The embedded model never routes: the keyword router does, and the model is not even loaded here.
    deps = CoordinatorDeps(
        research, finetune, model if supports_tools(model) else None, PeerCalls(settings.peer_wait_seconds)
    )

    async def build(saver: BaseCheckpointSaver) -> CompiledStateGraph:
        return build_coordinator_graph(deps, saver)

    async def on_cancel_task(task_id: str, values: dict[str, Any]) -> None:
        waiting = peer_context(values)
        await deps.calls.cancel(task_id, (finetune, waiting) if waiting else None)

    async def peers() -> dict[str, bool]:
        return {"research": await research.answers(), "finetune": await finetune.answers()}

    spec = AgentSpec(
        card.NAME,
        card.DESCRIPTION,
        card.skills(),
        build,
        cleanup=[research.aclose, finetune.aclose],
        on_cancel_task=on_cancel_task,
        peers=peers,
    )
    return build_app(spec, settings, base_url)


def main(argv: list[str] | None = None) -> None:
    """Parse flags, read settings once and serve."""
    run(
        "python -m ragtune.agents.coordinator",
        card.DESCRIPTION,
        "RAGTUNE_COORDINATOR_PORT",
        8711,
        lambda s: s.coordinator_port,
        make_app,
        argv,
    )


if __name__ == "__main__":
    main()
