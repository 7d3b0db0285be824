"""Clean Q/A pairs from the user guides: real questions, answered by sentences of the docs, in English and Korean."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anyio
import pytest
from ragtune.agents.a2a_peer import A2APeer
from ragtune.agents.mcp_tools import McpTools
from ragtune.agents.research.__main__ import make_app as research_app
from ragtune.agents.research.qa_pairs import (
    QAPair,
    build_pairs,
    clean,
    guide_documents,
    pairs_from_markdown,
    split_holdout,
    split_records,
)
from ragtune.servers.retrieval.server import build_app as retrieval_app

from ragtune.config import AgentSettings, RetrievalSettings

ROOT = Path(__file__).resolve().parents[3]
GUIDES = [ROOT / "docs" / "guide", ROOT / "docs" / "ko", ROOT / "README.md"]
WORD = re.compile(r"[a-z][a-z0-9-]{2,}|[\uac00-\ud7a3]{2,}")
QUESTION_WORDS = {
    "what",
    "does",
    "how",
    "work",
    "are",
    "the",
    "pitfalls",
    "무엇인가요",
    "무엇을",
    "하나요",
    "작동하나요",
}


@pytest.fixture(scope="module")
def pairs() -> list[QAPair]:
    return build_pairs(guide_documents(GUIDES))


def test_real_questions_in_both_languages(pairs: list[QAPair]) -> None:
    by_lang = {lang: [p for p in pairs if p.lang == lang] for lang in ("en", "ko")}
    assert len(by_lang["en"]) >= 25 and len(by_lang["ko"]) >= 25
    assert all(p.question.endswith("?") for p in pairs)
    assert len({p.question for p in pairs}) == len(pairs)
    assert not [p for p in pairs if re.search(r"briefly|guide say|간단히 설명|문서는 무엇이라고", p.question)]
    questions = {p.question for p in pairs}
    assert {"What is LoRA?", "How does dense search work?", "데이터는 어디에 저장되나요?"} <= questions
    assert {"LoRA를 쓸 때 주의할 점은 무엇인가요?", "벡터 검색은 어떻게 작동하나요?"} <= questions


def test_answers_are_sentences_of_the_guides_never_headings_tables_or_captions(pairs: list[QAPair]) -> None:
    docs = dict(guide_documents(GUIDES))
    headings = {clean(h) for text in docs.values() for h in re.findall(r"(?m)^#+\s+(.+)$", text)}
    for p in pairs:
        source = clean(docs[p.source.split(" › ")[0]])
        assert p.answer in source, p
        assert p.answer.endswith((".", "!", "?")) and not p.answer.endswith(":"), p
        assert "|" not in p.answer and "```" not in p.answer and p.answer not in headings, p
    by_question = {p.question: p.answer for p in pairs}
    assert by_question["How does dense search work?"] == "Dense search stores vectors in sqlite-vec."
    assert by_question["벡터 검색은 어떻게 작동하나요?"] == "sqlite-vec에 벡터를 저장합니다."


def test_derived_questions_are_about_what_their_answer_says(pairs: list[QAPair]) -> None:
    for p in pairs:
        # A heading's answer is the text under it, and a Korean "**term**: ..." bullet omits its subject (the bold
        # term leads it); every other derived pair must name its subject in the answer.
        if p.rule == "subject" or (p.rule == "bold-term" and p.lang == "en"):
            subject = set(WORD.findall(p.question.casefold())) - QUESTION_WORDS
            assert subject & set(WORD.findall(p.answer.casefold())), p


def test_markdown_noise_is_skipped() -> None:
    text = (
        "# Guide\n\n## What formats are accepted?\n\n| format | example |\n|---|---|\n| chat | {} |\n\n"
        'Accepted dataset formats (JSONL, one record per line):\n\n```json\n{"text": "Code is not prose."}\n```\n\n'
        '![A figure caption](loss.png)\n\n<a id="x"></a>\n\n'
        "The service accepts chat, text and preference records as **JSONL** files.\n\n"
        "## Fine-tuning benchmarks\n\nTable 2: results.\n"
    )
    assert [(p.question, p.answer, p.rule) for p in pairs_from_markdown(text, "t.md")] == [
        (
            "What formats are accepted?",
            "The service accepts chat, text and preference records as JSONL files.",
            "heading",
        )
    ]


def test_held_out_pairs_are_never_trained_on(pairs: list[QAPair]) -> None:
    train, held = split_holdout(pairs)
    assert {p.lang for p in held} == {"en", "ko"} and len(held) >= 6
    assert not {p.question for p in train} & {p.question for p in held}
    assert len(train) + len(held) == len(pairs)
    assert split_holdout(pairs) == (train, held)  # deterministic: the demo and its check agree
    records = split_records([p.record() for p in pairs])  # the agent splits records exactly as the demo splits pairs
    assert records == ([p.record() for p in train], [p.record() for p in held])


async def test_research_agent_builds_the_pairs_from_ingested_guides_over_a2a(
    free_port, serving, scripted_model
) -> None:
    rport, aport = free_port(), free_port()
    async with serving(retrieval_app(RetrievalSettings(retrieval_port=rport), embedder=None), rport) as rurl:
        tools = McpTools(f"{rurl}/mcp")
        for source, text in guide_documents(GUIDES):
            await tools.call("retrieval_ingest_text", text=text, source=source, title=source)
        settings = AgentSettings(retrieval_url=f"{rurl}/mcp")
        app = research_app(settings, f"http://127.0.0.1:{aport}", model=scripted_model([]), embedder=None)
        async with serving(app, aport) as url:
            peer = A2APeer(url)
            with anyio.fail_after(120):
                reply = await peer.ask("Make Q/A pairs from my docs for instruction tuning")
            await peer.aclose()
    rows = [json.loads(line) for line in reply.text.splitlines() if line.startswith("{")]
    assert len(rows) >= 20 and "Built" in reply.text
    asked = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in rows}
    assert asked.get("What is LoRA?", "").startswith("LoRA (low-rank adaptation) freezes the model's weights")
    assert any(re.search(r"[\uac00-\ud7a3]", q) for q in asked)  # Korean guides give Korean questions
