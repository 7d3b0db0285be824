"""The research agent over A2A against a real retrieval MCP server (HTTP, lexical index with Kiwi) holding a small
Korean/English corpus; the coordinator delegating to it over HTTP; the tool-calling path with a scripted model;
one short run with the embedded model."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest
from langchain_core.messages import AIMessage, ToolMessage
from ragtune.agents.a2a_peer import A2APeer
from ragtune.agents.coordinator.__main__ import make_app as coordinator_app
from ragtune.agents.mcp_tools import McpTools
from ragtune.agents.research.__main__ import make_app as research_app
from ragtune.agents.research.evidence import extract_citations
from ragtune.servers.retrieval.server import build_app as retrieval_app

from ragtune.config import AgentSettings, RetrievalSettings

DOCS = {
    "lora.md": (
        "LoRA guide",
        "# LoRA guide\n\n## Why LoRA\n\nLoRA trains small low-rank adapter matrices while the "
        "base model stays frozen. It needs far less GPU memory than full fine-tuning. The adapter file is "
        "only a few megabytes.\n\n## When to use it\n\nUse LoRA when the data set is small and the domain "
        "is narrow.",
    ),
    "rag.md": (
        "RAG first",
        "# RAG first\n\n## Changing data\n\nWhen documents change every week, retrieval "
        "reads the current text at question time, while fine-tuning freezes facts at training time.",
    ),
    "ko.md": (
        "한국어 검색",
        "# 한국어 검색\n\n## 형태소 분석\n\nragtune은 한국어 문서를 Kiwi 형태소 분석기로 나누어 "
        "색인합니다. 조사가 붙은 단어도 검색됩니다.\n\n## 하이브리드 검색\n\n어휘 검색과 벡터 검색의 순위를 "
        "결합합니다.",
    ),
}


NO_SERVICE = "http://127.0.0.1:9/mcp"


@pytest.fixture
async def retrieval(free_port, serving):
    """A real retrieval server over HTTP with the small corpus ingested through its MCP tools."""
    port = free_port()
    app = retrieval_app(RetrievalSettings(retrieval_port=port), embedder=None)
    async with serving(app, port) as url:
        tools = McpTools(f"{url}/mcp")
        for source, (title, text) in DOCS.items():
            await tools.call("retrieval_ingest_text", text=text, source=source, title=title)
        yield f"{url}/mcp"


@pytest.fixture
def agent(free_port, serving, retrieval):
    """Start the research agent (given a model) in front of the retrieval server; yield a client."""

    async def start(model: Any) -> Any:
        port = free_port()
        settings = AgentSettings(retrieval_url=retrieval, finetune_url=NO_SERVICE)  # no promoted model
        return serving(research_app(settings, f"http://127.0.0.1:{port}", model=model), port)

    return start


async def ask(url: str, text: str, **kw: Any) -> tuple[Any, list[str]]:
    peer, statuses, answer = A2APeer(url), [], None
    with anyio.fail_after(120):
        async for ev in peer.stream(text, **kw):
            statuses.append(ev.text)
            answer = ev if ev.kind == "answer" else answer
            last = ev
    await peer.aclose()
    assert last.state_name == "completed", statuses
    return answer, statuses


async def test_korean_question_is_answered_extractively_with_citations(agent, local_model):
    async with await agent(local_model) as url:  # Korean: the model is not asked to write
        answer, statuses = await ask(url, "한국어 문서는 어떻게 검색하나요?")
    assert any(s.startswith("retrieving passages") for s in statuses)
    assert "[mode: extractive]" in answer.text
    assert "형태소" in answer.text and "[1]" in answer.text
    cites = extract_citations(answer.text)
    assert cites and cites[0].startswith("[1] 한국어 검색 ›") and "(chars " in cites[0]


async def test_nothing_relevant_is_said_plainly(agent, local_model):
    async with await agent(local_model) as url:
        answer, _ = await ask(url, "What is the boiling point of mercury on Venus?")
    assert answer.text.startswith("Not found in your documents") and "Sources:" not in answer.text
    assert "[mode: not found]" in answer.text


async def test_follow_up_in_the_same_context_continues_the_question(agent, local_model):
    context = uuid.uuid4().hex
    async with await agent(local_model) as url:
        await ask(url, "한국어 문서는 어떻게 검색하나요?", context_id=context)
        _, statuses = await ask(url, "and hybrid?", context_id=context)
    assert any("한국어 문서는 어떻게 검색하나요? and hybrid?" in s for s in statuses)


async def test_tool_calling_model_chooses_retrieval_itself(agent, scripted_model):
    model = scripted_model(
        [
            AIMessage("", tool_calls=[{"name": "retrieval_search", "args": {"query": "LoRA memory"}, "id": "c1"}]),
            AIMessage(
                "LoRA needs far less GPU memory than full fine-tuning [1].\n\nSources:\n[1] LoRA guide › Why LoRA"
            ),
        ]
    )
    async with await agent(model) as url:
        answer, statuses = await ask(url, "Why does LoRA save memory?")
    assert "[mode: tool-calling ScriptedModel; grounding check: passed]" in answer.text
    assert any("choosing tools" in s for s in statuses)
    tool_results = [m for batch in model.seen for m in batch if isinstance(m, ToolMessage)]
    assert tool_results and "low-rank adapter" in str(tool_results[0].content)  # the real server answered


async def test_coordinator_delegates_to_research_over_http(free_port, serving, retrieval, local_model):
    rport, cport = free_port(), free_port()
    settings = AgentSettings(
        retrieval_url=retrieval,
        research_agent_url=f"http://127.0.0.1:{rport}",
        finetune_agent_url="http://127.0.0.1:9",
    )
    async with serving(research_app(settings, f"http://127.0.0.1:{rport}", model=local_model), rport):
        async with serving(coordinator_app(settings, f"http://127.0.0.1:{cport}"), cport) as url:
            answer, statuses = await ask(url, "한국어 검색은 어떻게 하나요?")
    assert "routing to research (by keywords)" in statuses
    assert any(s.startswith("[research] retrieving passages") for s in statuses)
    assert "Kiwi" in answer.text and "[1] 한국어 검색" in answer.text


async def test_embedded_model_runs_the_english_workflow(agent, local_model):
    async with await agent(local_model) as url:
        answer, statuses = await ask(url, "Why does LoRA need less memory than full fine-tuning?")
    assert "writing an answer with smollm2-135m" in statuses
    mode = answer.text.rpartition("[mode: ")[2]
    assert mode.startswith(("generated by smollm2-135m; grounding check: passed]", "extractive; the smollm2-135m"))
    assert "[1] LoRA guide › Why LoRA" in answer.text
