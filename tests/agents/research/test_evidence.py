"""Citations and extractive answers: whole sentences, no code, relevance and grounding checks."""

from __future__ import annotations

from ragtune.agents.research.evidence import (
    extractive_answer,
    grounded,
    is_korean,
    parse_hits,
    relevant,
    sentences,
)

HIT = {
    "title": "Guide",
    "heading_path": ["Guide", "LoRA"],
    "char_start": 10,
    "char_end": 90,
    "score": 0.1,
    "text": "## LoRA\nLoRA trains small adapter matrices and\nkeeps the base model frozen. It saves memory.\n\n"
    "```\nlora = train(model)  # code is never quoted\n```\n| a | table |\n- **Adapters** are small files.",
}


def test_sentences_are_whole_and_skip_code_and_tables():
    assert sentences(HIT["text"]) == [
        "LoRA trains small adapter matrices and keeps the base model frozen.",
        "It saves memory.",
        "Adapters are small files.",
    ]


def test_citation_drops_the_repeated_title_and_keeps_the_span():
    (hit,) = parse_hits({"hits": [HIT]})
    assert hit.citation(1) == "[1] Guide › LoRA (chars 10-90)"


def test_extractive_answer_quotes_the_best_sentences_with_numbers():
    hits = parse_hits([HIT])
    answer = extractive_answer("Why does LoRA save memory?", hits, max_sentences=2)
    assert answer.splitlines() == [
        "“It saves memory.” [1]",
        "“LoRA trains small adapter matrices and keeps the base model frozen.” [1]",
    ]


def test_relevance_and_grounding():
    hits = parse_hits([HIT])
    assert relevant("LoRA memory", hits) and not relevant("boiling point of mercury", hits)
    assert grounded("LoRA trains small adapter matrices and saves memory [1].", hits)
    assert not grounded("A: A: A: A: A: A: A: A: A: A:", hits)
    assert not grounded("Paris is the capital of France and has many museums.", hits)
    assert is_korean("한국어 문서는 어떻게 검색하나요?") and not is_korean("What is LoRA?")
