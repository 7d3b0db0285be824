"""Sentence scoring with the real embedder (e5-small) and Kiwi, abstention, and extractive answers."""

from __future__ import annotations

import pytest
from ragtune.agents.research.answer import AnswerPolicy, answerable, extractive, not_found
from ragtune.agents.research.evidence import Hit, extract_citations
from ragtune.agents.research.scoring import SentenceScorer
from ragtune.agents.research.sentences import candidates

from ragtune.config import RetrievalSettings
from ragtune.embeddings import make_embedder

PARTS = (
    "## The parts of ragtune\n\n| Part | What it does | Default port |\n|---|---|---|\n"
    "| retrieval server | MCP server: hybrid search over SQLite | 8701 |\n"
    "| fine-tuning server | MCP server plus an OpenAI-compatible REST API | 8702 |\n"
    "| coordinator agent | routes each request to the research or fine-tuning agent | 8711 |\n\n"
    "All HTTP services listen on loopback (127.0.0.1) by default."
)
DATA = (
    "## 데이터는 어디에 저장되나요?\n\n모든 데이터는 `RAGTUNE_HOME`(기본값 `./.ragtune`) 아래에 있습니다: 색인 "
    "`retrieval.db`, 작업 결과, 모델 캐시. 이 폴더만 백업하면 됩니다."
)
HITS = [
    Hit("ragtune overview", "The parts of ragtune", PARTS, 900, 900 + len(PARTS), 1.0, "overview"),
    Hit("ragtune 소개", "데이터는 어디에 저장되나요?", DATA, 5000, 5000 + len(DATA), 0.5, "ko-overview"),
]


@pytest.fixture(scope="module")
def scorer() -> SentenceScorer:
    """The scorer as the research agent builds it: the retrieval server's default embedder."""
    return SentenceScorer(make_embedder(RetrievalSettings()))


def test_the_port_question_quotes_the_fine_tuning_row_first(scorer):
    question = "What port does the fine-tuning server listen on?"
    ranked = scorer.rank(question, candidates(HITS))
    assert "8702" in ranked[0].sentence.text
    assert answerable(ranked, scorer.unseen(question, [h.text for h in HITS]), AnswerPolicy())
    answer = extractive(ranked[:1])
    assert answer.startswith("“fine-tuning server | MCP server plus an OpenAI-compatible REST API | 8702” [1]")
    row = ranked[0].sentence
    assert PARTS[row.start - 900 : row.end - 900].startswith("| fine-tuning server")
    assert extract_citations(answer) == [f"[1] ragtune overview › The parts of ragtune (chars {row.start}-{row.end})"]


def test_the_korean_storage_question_finds_ragtune_home(scorer):
    ranked = scorer.rank("파인튜닝 결과는 어디에 저장되나요?", candidates(HITS))
    assert "RAGTUNE_HOME" in ranked[0].sentence.text


def test_terms_no_passage_mentions_make_the_question_unanswerable(scorer):
    question = "How do I deploy ragtune on Kubernetes with Helm?"
    unseen = scorer.unseen(question, [h.text for h in HITS])
    assert unseen == ["deploy", "helm", "kubernet"]
    assert not answerable(scorer.rank(question, candidates(HITS)), unseen, AnswerPolicy())


def test_a_sentence_quoting_the_question_is_not_its_answer(scorer):
    example = 'Ask it, for example: `--ask "파인튜닝 결과는 어디에 저장되나요?"` in the demo.'
    hits = [*HITS, Hit("quickstart", "demo", example, 0, len(example), 1.0, "qs")]
    texts = [s.sentence.text for s in scorer.rank("파인튜닝 결과는 어디에 저장되나요?", candidates(hits))]
    assert texts and not any("--ask" in t for t in texts)


def test_not_found_speaks_the_users_language_and_offers_the_closest_sources(scorer):
    question = "김치찌개는 어떻게 끓이나요?"
    ranked = scorer.rank(question, candidates(HITS))
    assert not answerable(ranked, scorer.unseen(question, [h.text for h in HITS]), AnswerPolicy())
    said = not_found(question, ranked)
    assert said.startswith("문서에서 찾지 못했습니다") and "가장 가까운 출처:" in said and "[mode: not found]" in said
    assert not_found("How do I cook kimchi stew?", ranked).startswith("Not found in your documents")
