"""Serve the research agent over A2A: `python -m ragtune.agents.research [--host H --port P]`."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from ragtune.agents.a2a_app import AgentSpec, build_app
from ragtune.agents.cli import agent_parser, serve_agent
from ragtune.agents.mcp_tools import McpTools
from ragtune.agents.research import card
from ragtune.agents.research.graph import ResearchDeps, build_research_graph
from ragtune.agents.research.promoted import promoted_writer
from ragtune.agents.research.scoring import SentenceScorer

from ragtune.config import AgentSettings, RetrievalSettings
from ragtune.embeddings import Embedder, make_embedder
from ragtune.llm import LocalChatModel, make_chat_model


def make_app(
    settings: AgentSettings,
    base_url: str,
    collection: str | None = None,
    model: BaseChatModel | None = None,
    embedder: Embedder | None | str = "settings",
) -> FastAPI:
    """Build the research agent's A2A app from settings (or with the given chat model and embedder)."""
    model = model or make_chat_model(settings)
    if isinstance(embedder, str):  # the retrieval server's embedder (RAGTUNE_EMBEDDER), loaded once per process
        embedder = make_embedder(RetrievalSettings())
    scorer = SentenceScorer(embedder)
    tools = McpTools(settings.retrieval_url, settings.token())
    deps = ResearchDeps(tools, model, scorer, collection=collection, promoted=promoted_writer(settings))

    async def build(saver: BaseCheckpointSaver) -> CompiledStateGraph:
        if isinstance(model, LocalChatModel):
            await asyncio.to_thread(model.load)  # before the first question, without blocking the loop
        await asyncio.to_thread(scorer.warm)  # Kiwi and the embedder load now, not mid-answer
        return build_research_graph(deps, saver)

    spec = AgentSpec(card.NAME, card.DESCRIPTION, card.skills(), build)
    return build_app(spec, settings, base_url)


def main(argv: list[str] | None = None) -> None:
    """Parse flags, read settings once and serve."""
    p = agent_parser("python -m ragtune.agents.research", card.DESCRIPTION, "RAGTUNE_RESEARCH_PORT", 8712)
    p.add_argument("--collection", help="retrieval collection to search (default: the server's default)")
    args = p.parse_args(argv)
    serve_agent(args, lambda s: s.research_port, lambda s, url: make_app(s, url, args.collection))


if __name__ == "__main__":
    main()
