"""The rules that turn a likely wrong answer with a citation into "not found": a rival fact from another document
scoring alike, a number asked for that no quoted sentence states, and Korean loanwords written in Latin letters."""

from __future__ import annotations

from ragtune.agents.research.answer import AnswerPolicy, abstain_reason, rival
from ragtune.agents.research.evidence import Hit
from ragtune.agents.research.scoring import Scored, SentenceScorer, asks_number, holds_value, transliterate
from ragtune.agents.research.sentences import Sentence
from ragtune.agents.research.strict import new_facts
from ragtune.agents.research.writing import restates_best


def scored(text: str, score: float, document: str) -> Scored:
    """A sentence of `document` with a given blend score."""
    hit = Hit(document, "", text, 0, len(text), 1.0, document)
    return Scored(Sentence(text, hit, 0, len(text)), score, 0.5, score)


PORT = "What port does the fine-tuning server listen on?"


def test_a_close_sentence_of_another_document_stating_another_fact_makes_the_agent_abstain():
    ranked = [scored("The fine-tuning server listens on 8702.", 1.10, "guide"), scored("Agents use 8711.", 1.09, "a2a")]
    assert rival(PORT, ranked, AnswerPolicy()) is ranked[1]
    assert "states another fact" in abstain_reason(PORT, ranked, [], AnswerPolicy())


def test_no_rival_when_the_other_document_states_the_same_fact_or_scores_clearly_lower():
    same = [
        scored("The fine-tuning server listens on 8702.", 1.10, "guide"),
        scored("Port 8702 (REST).", 1.09, "readme"),
    ]
    assert rival(PORT, same, AnswerPolicy()) is None
    lower = [scored("The fine-tuning server listens on 8702.", 1.10, "guide"), scored("Agents use 8711.", 1.05, "a2a")]
    assert abstain_reason(PORT, lower, [], AnswerPolicy()) == ""


def test_the_same_document_is_no_rival_and_the_questions_own_words_are_no_shared_fact():
    one_doc = [scored("It listens on 8702.", 1.10, "guide"), scored("Agents use 8711.", 1.095, "guide")]
    assert rival(PORT, one_doc, AnswerPolicy()) is None
    # both name the "fine-tuning" of the question, but state different values
    ranked = [scored("fine-tuning keeps `1000` jobs.", 1.10, "readme"), scored("fine-tuning uses `method`.", 1.09, "m")]
    assert rival(PORT, ranked, AnswerPolicy()) is ranked[1]


def test_a_number_question_with_no_number_in_the_quotes_is_not_answered():
    question = "What is the default learning rate of a LoRA job?"
    prose = [scored("Use a lower learning rate and fewer epochs with LoRA.", 1.10, "guide")]
    assert asks_number(question) and not holds_value(prose[0].sentence.text)
    assert "number asked" in abstain_reason(question, prose, [], AnswerPolicy())
    valued = [scored("LoRA jobs default to a learning rate of `2e-4`.", 1.10, "guide")]
    assert abstain_reason(question, valued, [], AnswerPolicy()) == ""
    assert not asks_number("Which method should I use for a small dataset?")


def test_korean_loanwords_match_the_latin_words_of_the_guides():
    assert transliterate("리눅스에서 설정 파일은 어디에 있나요?").split()[0] == "Linux"
    scorer = SentenceScorer(None)
    question = "리눅스에서 Claude Desktop 설정 파일은 어디에 있나요?"
    assert scorer.unseen(question, ["Linux: `~/.config/Claude/claude_desktop_config.json` 설정 파일"]) == []
    assert "linux" in scorer.question_terms(question)
    assert scorer.unseen("도커로 실행하려면?", ["Docker compose로 실행합니다."]) == []


def test_new_facts_leave_out_the_questions_own_words():
    question = "Which GPU holds full fine-tuning of a 7B model on one card?"
    assert new_facts(question, "Only a 141 GB H200 holds full fine-tuning of a 7B model on one GPU.") == {"141", "gb"}


def test_a_draft_is_shown_only_when_it_states_the_one_fact_the_best_sentence_adds():
    question = PORT
    one = [scored("The fine-tuning server listens on port 8702.", 1.1, "guide")]
    assert restates_best(question, "The fine-tuning server listens on port 8702.", one)
    assert not restates_best(question, "It listens on 127.0.0.1.", one)  # another sentence's grounded fact
    many = [
        scored("About 114 GB for full fine-tuning (only a 141 GB H200 holds that), 16 GB for QLoRA on a T4.", 1.1, "g")
    ]
    # several facts in one sentence: a small model may pick the wrong one, so the quote is shown instead
    assert not restates_best("Which GPU holds full fine-tuning?", "The GPU is the 141 GB H200.", many)
    factless = [scored("DPO trains on pairs of answers to the same prompt.", 1.1, "guide")]
    assert not restates_best(
        "What does DPO train on?", "The answer is: DPO (Direct Preference Optimisation).", factless
    )
