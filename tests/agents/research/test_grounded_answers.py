"""Issue #9's examples as regressions over A2A: the research agent (embedded SmolLM2, e5-small sentence scoring)
in front of a real retrieval server holding the user guides (docs/guide, docs/ko, README.md). Each answer states
the right fact with a citation, or says "not found"; it never states the wrong port."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest
from ragtune.agents.a2a_peer import A2APeer
from ragtune.agents.mcp_tools import McpTools
from ragtune.agents.research.__main__ import make_app as research_app
from ragtune.agents.research.evidence import extract_citations
from ragtune.agents.research.scoring import SentenceScorer
from ragtune.servers.retrieval.server import build_app as retrieval_app

from ragtune.config import AgentSettings, RetrievalSettings
from ragtune.embeddings import make_embedder

pytestmark = pytest.mark.slow  # a whole stack and the embedded model

ROOT = Path(__file__).resolve().parents[3]
GUIDES = [ROOT / "docs" / "guide", ROOT / "docs" / "ko", ROOT / "README.md"]


@pytest.fixture
async def research(free_port, serving, local_model, tmp_path):
    """A lexical retrieval server with the user guides ingested, and the research agent on the embedded model."""
    # Load the chat model, Kiwi and the embedder first: on a busy box they take longer than a server start may.
    await anyio.to_thread.run_sync(local_model.load)
    await anyio.to_thread.run_sync(SentenceScorer(make_embedder(RetrievalSettings())).warm)
    rport, aport = free_port(), free_port()
    settings = RetrievalSettings(retrieval_port=rport, retrieval_roots=[ROOT], home=tmp_path / "retrieval")
    async with serving(retrieval_app(settings, embedder=None), rport) as rurl:
        await McpTools(f"{rurl}/mcp").call("retrieval_ingest_path", paths=[str(p) for p in GUIDES])
        agent = AgentSettings(retrieval_url=f"{rurl}/mcp", finetune_url="http://127.0.0.1:9/mcp")
        async with serving(research_app(agent, f"http://127.0.0.1:{aport}", model=local_model), aport) as url:
            yield url


async def ask(url: str, text: str) -> str:
    """Send one question over A2A and return the completed task's answer."""
    peer, answer = A2APeer(url), None
    with anyio.fail_after(180):
        async for ev in peer.stream(text):
            answer = ev if ev.kind == "answer" else answer
            last = ev
    await peer.aclose()
    assert last.state_name == "completed" and answer is not None
    return answer.text


def body(answer: str) -> str:
    """Return what an answer states, without its sources and mode."""
    return re.split(r"\n\nSources:\n|\n\n\[mode: ", answer)[0]


async def test_english_examples_state_the_right_fact_or_nothing(research):
    port = await ask(research, "What port does the fine-tuning server listen on?")
    said = body(port)
    assert "8702" in said.splitlines()[0], port
    assert not any("8711" in line and "fine-tuning server" in line for line in said.splitlines()), port
    cites = extract_citations(port)
    assert cites and re.search(r"\(chars \d+-\d+\)$", cites[0])

    formats = await ask(research, "Which file formats can the retrieval server ingest?")
    assert ".pdf" in body(formats) and ".docx" in body(formats), formats

    nothing = await ask(research, "How do I deploy ragtune on Kubernetes with Helm?")
    assert nothing.startswith("Not found in your documents"), nothing
    assert "Closest sources:" in nothing and "Sources:\n[1]" not in nothing


async def test_korean_examples_state_the_right_fact_or_nothing(research):
    stored = await ask(research, "파인튜닝 결과는 어디에 저장되나요?")
    assert re.search(r"RAGTUNE_HOME|\.ragtune|결과 폴더", body(stored)), stored
    assert "--ask" not in body(stored)  # the quickstart's sentence that merely quotes the question
    assert "[mode: extractive]" in stored and extract_citations(stored)

    nothing = await ask(research, "한 컬렉션에 최대 몇 명의 사용자가 접근할 수 있나요?")
    assert nothing.startswith("문서에서 찾지 못했습니다"), nothing
    assert "가장 가까운 출처:" in nothing  # passages about collections were found, none answers
