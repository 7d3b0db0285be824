"""Citations and the fluency check of a draft."""

from __future__ import annotations

from ragtune.agents.research.evidence import extract_citations, format_answer, grounded, is_korean, parse_hits

HIT = {
    "title": "Guide",
    "heading_path": ["Guide", "LoRA"],
    "char_start": 10,
    "char_end": 90,
    "score": 0.1,
    "text": "LoRA trains small adapter matrices and keeps the base model frozen. It saves memory.",
}


def test_citation_drops_the_repeated_title_and_keeps_the_span():
    (hit,) = parse_hits({"hits": [HIT]})
    assert hit.citation(1) == "[1] Guide › LoRA (chars 10-90)"


def test_answer_lists_its_sources_and_mode():
    answer = format_answer("“It saves memory.” [1]", parse_hits([HIT]), "extractive")
    assert extract_citations(answer) == ["[1] Guide › LoRA (chars 10-90)"]
    assert answer.endswith("[mode: extractive]")


def test_fluency_check_and_language():
    hits = parse_hits([HIT])
    assert grounded("LoRA trains small adapter matrices and saves memory [1].", hits)
    assert not grounded("A: A: A: A: A: A: A: A: A: A:", hits)
    assert not grounded("Paris is the capital of France and has many museums.", hits)
    assert is_korean("한국어 문서는 어떻게 검색하나요?") and not is_korean("What is LoRA?")
