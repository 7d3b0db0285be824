"""Research agent graph: retrieve -> answer with citations (or -> build Q/A pairs from the passages).

With the embedded model this is a fixed workflow in which the model only writes text; with a tool-calling model
the model drives retrieval itself through the MCP tools (`create_agent`).
"""

from __future__ import annotations

import asyncio
import json
import operator
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from ragtune.agents.mcp_tools import McpTools
from ragtune.agents.research import prompts
from ragtune.agents.research.answer import AnswerPolicy, abstain_reason, not_found
from ragtune.agents.research.evidence import Hit, is_korean, parse_hits
from ragtune.agents.research.qa_pairs import build_pairs
from ragtune.agents.research.scoring import SentenceScorer
from ragtune.agents.research.sentences import candidates
from ragtune.agents.research.strict import check
from ragtune.agents.research.writing import Writer, write

from ragtune.llm import model_label, supports_tools

# Returns the promoted tuned model as a writer, or None to answer with the agent's own model.
PromotedWriter = Callable[[], Awaitable[Writer | None]]

QA_REQUEST = re.compile(r"q\s*/\s*a|q&a|qa pairs|question.answer pairs|질의응답|질문.답변", re.I)
QA_SEEDS = ("fine-tuning LoRA", "RAG retrieval", "dataset format", "파인튜닝 방법", "검색 증강")
QA_TOPIC = re.compile(r"\babout (.+)$|(.+?)에 대한", re.I)
FOLLOW_UP_WORDS = 5


class ResearchState(TypedDict, total=False):
    """What the research graph carries; `history` accumulates across turns of one A2A context."""

    request: str
    query: str
    hits: list[dict[str, Any]]
    answer: str
    history: Annotated[list[str], operator.add]


@dataclass
class ResearchDeps:
    """What the research graph needs at run time."""

    retrieval: McpTools
    model: BaseChatModel
    scorer: SentenceScorer
    collection: str | None = None
    k: int = 8
    qa_pairs: int = 64
    policy: AnswerPolicy = AnswerPolicy()
    promoted: PromotedWriter | None = None
    draft: bool = True  # False: always quote (no model writes), as bench/answers.py's extractive mode


def _status(text: str) -> None:
    get_stream_writer()({"status": text})


def build_research_graph(deps: ResearchDeps, checkpointer: BaseCheckpointSaver | None = None) -> CompiledStateGraph:
    """Compile the research graph for these dependencies."""

    async def search(query: str, k: int) -> list[Hit]:
        args: dict[str, Any] = {"query": query, "k": k}
        if deps.collection:
            args["collection"] = deps.collection
        return parse_hits(await deps.retrieval.call("retrieval_search", **args))

    async def plan(state: ResearchState) -> ResearchState:
        request = state["request"].strip()
        history = state.get("history") or []
        # A short follow-up ("and in Korean?", "why?") continues the previous question of this context.
        query = request
        if history and len(request.split()) <= FOLLOW_UP_WORDS and not is_korean(request):
            query = f"{history[-1]} {request}"
        return {"query": query, "hits": [], "answer": ""}

    def route(state: ResearchState) -> str:
        if QA_REQUEST.search(state["request"]):
            return "build_qa"
        return "tool_agent" if supports_tools(deps.model) else "retrieve"

    async def retrieve(state: ResearchState) -> ResearchState:
        _status(f"retrieving passages for “{state['query'][:80]}”")
        hits = await search(state["query"], deps.k)
        _status(f"{len(hits)} hits")
        return {"hits": [h.__dict__ for h in hits]}

    async def answer(state: ResearchState) -> ResearchState:
        question, hits = state["request"], [Hit(**h) for h in state.get("hits") or []]
        _status("scoring sentences")
        ranked = await asyncio.to_thread(deps.scorer.rank, state["query"], candidates(hits))
        unseen = await asyncio.to_thread(deps.scorer.unseen, state["query"], [_passage(h) for h in hits])
        why = abstain_reason(state["query"], ranked, unseen, deps.policy, dense=deps.scorer.embedder is not None)
        if why:
            _status(f"not answering: {why}")
            return {"answer": not_found(question, ranked), "history": [state["query"]]}
        writer = None
        if deps.draft:
            writer = (await deps.promoted() if deps.promoted else None) or Writer.of(deps.model)
        if writer and writer.writes(question):
            _status(f"writing an answer with {writer.label}")
        else:
            _status("quoting the most relevant sentences")
        return {"answer": await write(question, ranked, writer, deps.policy), "history": [state["query"]]}

    async def tool_agent(state: ResearchState) -> ResearchState:
        _status(f"{model_label(deps.model)} is choosing tools")
        agent = create_agent(deps.model, await deps.retrieval.langchain_tools(), system_prompt=prompts.TOOL_SYSTEM)
        history = [HumanMessage(q) for q in (state.get("history") or [])[-3:]]
        result = await agent.ainvoke({"messages": [*history, HumanMessage(state["request"])]})
        last = next(m for m in reversed(result["messages"]) if isinstance(m, AIMessage))
        sources = [h.text for m in result["messages"] if isinstance(m, ToolMessage) for h in _tool_hits(m)]
        verdict = check(last.text.partition("\nSources:")[0], sources).line()
        return {
            "answer": f"{last.text}\n\n[mode: tool-calling {model_label(deps.model)}; {verdict}]",
            "history": [state["request"]],
        }

    async def build_qa(state: ResearchState) -> ResearchState:
        about = QA_TOPIC.search(state["request"])
        topic = next((g for g in about.groups() if g), "").strip(" .?!") if about else ""
        found: dict[str, Hit] = {}
        for query in ([topic] if topic else []) + list(QA_SEEDS):
            _status(f"collecting documents for “{query}” ({len(found)} so far)")
            for h in await search(query, 10):
                found.setdefault(h.document_id or h.title, h)
        documents = []
        for doc_id, h in found.items():  # whole documents: the rules read headings and the prose under them
            detail = await deps.retrieval.call("retrieval_get_document", doc_id=doc_id) if h.document_id else {}
            documents.append((str(detail.get("source") or h.title).rsplit("/", 1)[-1], detail.get("text") or h.text))
        pairs = build_pairs(documents, deps.qa_pairs)
        body = "\n".join(json.dumps(p.record(), ensure_ascii=False) for p in pairs)
        answer = (
            f"Built {len(pairs)} Q/A pairs from {len(documents)} documents (questions from headings and defining "
            f"sentences, answers quoted from the docs).\n```jsonl\n{body}\n```\n\n[mode: extractive]"
        )
        return {"answer": answer, "history": [state["request"]]}

    g = StateGraph(ResearchState)
    for name, fn in [
        ("plan", plan),
        ("retrieve", retrieve),
        ("answer", answer),
        ("tool_agent", tool_agent),
        ("build_qa", build_qa),
    ]:
        g.add_node(name, fn)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", route, ["retrieve", "tool_agent", "build_qa"])
    g.add_edge("retrieve", "answer")
    for end in ("answer", "tool_agent", "build_qa"):
        g.add_edge(end, END)
    return g.compile(checkpointer=checkpointer, name="research")


def _passage(hit: Hit) -> str:
    """Return everything a hit says, its title and heading included."""
    return f"{hit.title} {hit.heading} {hit.text}"


def _tool_hits(message: ToolMessage) -> list[Hit]:
    """Return the hits a retrieval_search tool result carried (none for other tools or unparsable text)."""
    try:
        return parse_hits(json.loads(message.text))
    except (ValueError, TypeError, AttributeError):
        return []
