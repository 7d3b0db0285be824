"""Compose answers from ranked sentences: quote the best, or say "not found" (in the user's language) below the
relevance threshold, offering the closest sources."""

from __future__ import annotations

from dataclasses import dataclass

from ragtune.agents.research import prompts
from ragtune.agents.research.evidence import Hit, format_answer, is_korean
from ragtune.agents.research.scoring import Scored, asks_number, holds_value
from ragtune.agents.research.strict import new_facts

# Calibrated on bench/answers_set.jsonl with the e5-small embedder (docs/benchmarks/agents.md, "Answers"): the best
# sentence's blend score, less a penalty for each question term that no retrieved passage mentions ("Kubernetes"),
# below which the documents are taken not to answer the question.
MIN_SCORE = 0.92
MIN_SCORE_LEXICAL_ONLY = 0.15  # without an embedder the blend is 0.25 x the lexical share (+ the kind bonus)
UNSEEN_PENALTY = 0.1
QUOTE_MARGIN = 0.1  # runners-up are quoted when they score almost as well as the best
MAX_QUOTES = 3
# A sentence of another document scoring within this of the best, and stating other facts, makes the answer a coin
# toss between two facts: abstain rather than cite the wrong one.
RIVAL_MARGIN = 0.015
CONTEXT_SENTENCES = 3  # what a model is given to write from


@dataclass(frozen=True)
class AnswerPolicy:
    """When to answer and how much to quote."""

    min_score: float = MIN_SCORE
    min_score_lexical_only: float = MIN_SCORE_LEXICAL_ONLY
    unseen_penalty: float = UNSEEN_PENALTY
    max_quotes: int = MAX_QUOTES
    quote_margin: float = QUOTE_MARGIN
    rival_margin: float = RIVAL_MARGIN
    context: int = CONTEXT_SENTENCES


def confidence(ranked: list[Scored], unseen: list[str], policy: AnswerPolicy) -> float:
    """Return how well the documents answer: the best sentence's score less the penalty for unseen terms."""
    return (ranked[0].score if ranked else 0.0) - policy.unseen_penalty * len(unseen)


def answerable(ranked: list[Scored], unseen: list[str], policy: AnswerPolicy, dense: bool = True) -> bool:
    """Tell whether the best sentence is relevant enough to answer from."""
    floor = policy.min_score if dense else policy.min_score_lexical_only
    return bool(ranked) and confidence(ranked, unseen, policy) >= floor


def rival(question: str, ranked: list[Scored], policy: AnswerPolicy) -> Scored | None:
    """Return a sentence of another document that scores almost as well as the best but states other facts (the
    question's own words, "fine-tuning", are not facts)."""
    best = ranked[0]
    facts = new_facts(question, best.sentence.text)
    for s in ranked[1:]:
        if s.score < best.score - policy.rival_margin:
            return None
        if _document(s) != _document(best) and not facts & new_facts(question, s.sentence.text):
            return s
    return None


def _document(s: Scored) -> str:
    """Return which document a sentence comes from."""
    return s.sentence.hit.document_id or s.sentence.hit.title


def abstain_reason(
    question: str, ranked: list[Scored], unseen: list[str], policy: AnswerPolicy, dense: bool = True
) -> str:
    """Return why the documents do not answer the question ("" when they do): too little relevance, a number asked
    for that no quoted sentence states, or two documents' different facts scoring alike."""
    if not answerable(ranked, unseen, policy, dense):
        return "no sentence is relevant enough"
    if asks_number(question) and not any(holds_value(s.sentence.text) for s in quotes(ranked, policy)):
        return "no relevant sentence states the number asked for"
    if (other := rival(question, ranked, policy)) is not None:
        return f"“{other.sentence.hit.title}” states another fact as relevant as the best one"
    return ""


def quotes(ranked: list[Scored], policy: AnswerPolicy) -> list[Scored]:
    """Pick the sentences to quote: the best, plus close runners-up (at most one per sentence text)."""
    best = ranked[0].score
    return [s for s in ranked[: policy.max_quotes] if s.score >= best - policy.quote_margin]


def extractive(picked: list[Scored], mode: str = "extractive") -> str:
    """Quote the picked sentences, each citing its exact span."""
    body = "\n".join(f"“{s.sentence.text}” [{n}]" for n, s in enumerate(picked, 1))
    return format_answer(body, [s.sentence.citation_hit() for s in picked], mode)


def closest_sources(ranked: list[Scored], limit: int = 2) -> list[Hit]:
    """Return the sections of the best-scoring sentences (one per section), to offer when nothing answers."""
    seen: dict[tuple[str, str], Hit] = {}
    for s in ranked:
        seen.setdefault((s.sentence.hit.title, s.sentence.hit.heading), s.sentence.hit)
        if len(seen) == limit:
            break
    return list(seen.values())


def not_found(question: str, ranked: list[Scored]) -> str:
    """Say plainly, in the user's language, that the documents do not answer; list the closest sources."""
    korean = is_korean(question)
    text = (prompts.NOT_FOUND_KO if korean else prompts.NOT_FOUND).format(question=question)
    near = closest_sources(ranked)
    if near:
        label = prompts.CLOSEST_KO if korean else prompts.CLOSEST
        text += (
            "\n\n" + label + "\n" + "\n".join(f"- {h.title}" + (f" › {h.heading}" if h.heading else "") for h in near)
        )
    return format_answer(text, [], "not found")
