"""Choose the peer for a request: a tool-calling model picks with the `route` tool, the intent router otherwise.

A model's pick that is not one of the three routes (no tool call, an unknown agent) falls back to the intent router,
so a confused model can never send a request nowhere.
"""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool
from ragtune.agents.coordinator import prompts
from ragtune.agents.coordinator.router import ROUTES, Route
from ragtune.agents.coordinator.router import route as intent_route

from ragtune.llm import model_label, supports_tools


@tool
def route(agent: Route) -> str:
    """Send the request to 'research' (questions about the documents), 'finetune' (memory, method, datasets, jobs)
    or 'chain' (Q/A pairs from the user's documents, then training on them)."""
    return agent


async def pick_route(text: str, model: BaseChatModel | None) -> tuple[Route, str]:
    """Return the route and who chose it (the model's label, or 'keywords')."""
    if model is not None and supports_tools(model):
        msg = await model.bind_tools([route]).ainvoke([SystemMessage(prompts.ROUTE_SYSTEM), HumanMessage(text)])
        calls = getattr(msg, "tool_calls", None) or []
        agent = calls[0]["args"].get("agent") if calls else None
        if agent in ROUTES:
            return agent, model_label(model)
    return intent_route(text), "keywords"
