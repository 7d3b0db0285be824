"""Chunking follows headings, paragraphs and sentences (Korean endings too) and records exact spans."""

from __future__ import annotations

import pytest
from ragtune.servers.retrieval.chunking import Span, chunk_text, count_tokens, passage_text, split_sentences

DOC = (
    "# 안내\n\n첫 문단입니다. 짧아요.\n\n## 설치\n\n"
    "설치는 쉽습니다. 명령을 실행하세요. 잘 되나요? 됩니다! 끝났다. 다음으로 갑니다.\n\n"
    "```\n# not a heading inside code\n```\n\n# English\n\nOne sentence here. Another one there.\n"
)


SENTENCES = " ".join(f"Sentence number {i} is here." for i in range(40))  # 6 tokens a sentence


@pytest.mark.parametrize("overlap", [0, 10])
def test_chunks_cover_all_text_and_neighbours_share_only_the_overlap(overlap: int) -> None:
    chunks = chunk_text(SENTENCES, budget=30, overlap=overlap)
    covered = set().union(*(range(c.start, c.end) for c in chunks))
    assert all(i in covered for i, ch in enumerate(SENTENCES) if not ch.isspace()), "no text is lost"
    for a, b in zip(chunks, chunks[1:], strict=False):
        shared = SENTENCES[b.start : a.end] if b.start < a.end else ""
        if overlap:
            assert shared.endswith("is here.") and 0 < count_tokens(shared) <= overlap, shared
        else:
            assert shared == ""


def test_chunk_spans_trim_whitespace_at_both_ends() -> None:
    chunks = chunk_text(DOC, budget=12, overlap=4)
    assert chunks and all(DOC[c.start : c.end] == DOC[c.start : c.end].strip() for c in chunks)


def test_chunks_carry_their_heading_path_and_never_mix_sections() -> None:
    chunks = chunk_text(DOC, budget=200, overlap=0)
    paths = [c.headings for c in chunks]
    assert paths == [("안내",), ("안내", "설치"), ("English",)]
    assert "not a heading inside code" in DOC[chunks[1].start : chunks[1].end]


def test_korean_sentence_endings_split_long_paragraphs() -> None:
    text = "설치는 쉽습니다. 명령을 실행하세요. 잘 되나요? 됩니다! 끝났다."
    sentences = [text[s.start : s.end] for s in split_sentences(text, Span(0, len(text)))]
    assert sentences == ["설치는 쉽습니다.", "명령을 실행하세요.", "잘 되나요?", "됩니다!", "끝났다."]


def test_chunks_respect_the_budget_and_are_numbered_in_order() -> None:
    chunks = chunk_text(SENTENCES, budget=30, overlap=10)
    assert len(chunks) > 3
    assert all(count_tokens(SENTENCES[c.start : c.end]) <= 30 for c in chunks)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_a_giant_sentence_is_cut_hard_within_budget() -> None:
    text = "word " * 500
    chunks = chunk_text(text.strip(), budget=50, overlap=0)
    assert all(count_tokens(text[c.start : c.end]) <= 50 for c in chunks)
    assert chunks[-1].end == len(text.strip())


def test_passage_text_puts_title_and_headings_above_a_chunk_once() -> None:
    body = "Tomatoes simmered with garlic."
    assert passage_text(body, "Cooking", ("Cooking", "Sauce")) == "Cooking\nSauce\n" + body
    # A chunk that opens with its title or heading (SciFact "title abstract", a markdown heading line) keeps as is.
    assert passage_text("Cooking pasta Boil the water.", "Cooking pasta") == "Cooking pasta Boil the water."
    assert passage_text("## Sauce\n\n" + body, "Cooking", ("Sauce",)) == "Cooking\n## Sauce\n\n" + body
    assert passage_text(body, None, ()) == passage_text(body, "  ", ()) == body
