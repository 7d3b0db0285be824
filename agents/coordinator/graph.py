"""Coordinator graph: route -> research | finetune | chain (Q/A pairs from research, then finetune).

Peers are called over A2A only (`A2APeer`); their status updates are relayed as the coordinator's own, and a
peer's input-required becomes the coordinator's (the user's reply is passed back to the same peer task).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import interrupt
from ragtune.agents.a2a_peer import A2APeer, PeerEvent
from ragtune.agents.coordinator import prompts
from ragtune.agents.coordinator.choose import pick_route
from ragtune.agents.coordinator.peers import PeerCalls
from ragtune.agents.finetune.situation import extract_jsonl


class CoordinatorState(TypedDict, total=False):
    """What the coordinator carries: the route, the peer task it waits on, the answer."""

    request: str
    route: str
    routed_by: str
    dataset: str
    peer_task_id: str
    peer_state: str
    peer_question: str
    reply: str
    answer: str


@dataclass
class CoordinatorDeps:
    """The two peers and the model that may route."""

    research: A2APeer
    finetune: A2APeer
    model: BaseChatModel | None = None
    calls: PeerCalls = field(default_factory=PeerCalls)


def _status(text: str) -> None:
    get_stream_writer()({"status": text})


def build_coordinator_graph(
    deps: CoordinatorDeps, checkpointer: BaseCheckpointSaver | None = None
) -> CompiledStateGraph:
    """Compile the coordinator graph for these dependencies."""

    async def relay(
        peer: A2APeer, name: str, text: str, config: RunnableConfig, task_id: str | None = None
    ) -> PeerEvent:
        owner = str(config["configurable"].get("task_id", ""))
        return await deps.calls.relay(
            peer, name, text, owner=owner, context_id=_thread(config), status=_status, task_id=task_id
        )

    async def choose(state: CoordinatorState) -> CoordinatorState:
        picked, by = await pick_route(state["request"], deps.model)
        _status(f"routing to {picked} (by {by})")
        return {
            "route": picked,
            "routed_by": by,
            "dataset": "",
            "peer_task_id": "",
            "peer_state": "",
            "peer_question": "",
            "reply": "",
            "answer": "",
        }

    async def research(state: CoordinatorState, config: RunnableConfig) -> CoordinatorState:
        ev = await relay(deps.research, "research", state["request"], config)
        return {"answer": ev.text}

    async def make_dataset(state: CoordinatorState, config: RunnableConfig) -> CoordinatorState:
        ev = await relay(deps.research, "research", prompts.QA_REQUEST, config)
        rows = extract_jsonl(ev.text)
        _status(f"the research agent built {len(rows)} Q/A pairs")
        return {"dataset": "\n".join(line for line in ev.text.splitlines() if line.strip().startswith("{"))}

    async def finetune(state: CoordinatorState, config: RunnableConfig) -> CoordinatorState:
        if state.get("peer_task_id"):  # the user answered the peer's question: continue that peer task
            text, task_id = state.get("reply", ""), state["peer_task_id"]
        else:
            text, task_id = state["request"], None
            if state.get("dataset"):
                text = prompts.TRAIN_ON.format(request=state["request"], jsonl=state["dataset"])
        ev = await relay(deps.finetune, "finetune", text, config, task_id)
        if ev.state_name == "input_required":
            return {"peer_task_id": ev.task_id, "peer_state": ev.state_name, "peer_question": ev.text}
        return {
            "peer_task_id": "",
            "peer_state": ev.state_name,
            "answer": ev.text,
        }

    async def ask_user(state: CoordinatorState) -> CoordinatorState:
        return {"reply": str(interrupt({"question": state["peer_question"]}))}

    def after_choose(state: CoordinatorState) -> str:
        return {"research": "research", "finetune": "finetune", "chain": "make_dataset"}[state["route"]]

    def after_finetune(state: CoordinatorState) -> str:
        return "ask_user" if state.get("peer_state") == "input_required" else END

    g = StateGraph(CoordinatorState)
    g.add_node("choose", choose)  # one call per node: a list of them loses each function's type for add_node
    g.add_node("research", research)
    g.add_node("make_dataset", make_dataset)
    g.add_node("finetune", finetune)
    g.add_node("ask_user", ask_user)
    g.add_edge(START, "choose")
    g.add_conditional_edges("choose", after_choose, ["research", "finetune", "make_dataset"])
    g.add_edge("make_dataset", "finetune")
    g.add_conditional_edges("finetune", after_finetune, ["ask_user", END])
    g.add_edge("ask_user", "finetune")
    g.add_edge("research", END)
    return g.compile(checkpointer=checkpointer, name="coordinator")


def _thread(config: RunnableConfig) -> str:
    return str(config["configurable"]["thread_id"])


def peer_context(values: dict[str, Any]) -> str | None:
    """Return the peer task the coordinator is waiting on, if any."""
    return values.get("peer_task_id") or None
