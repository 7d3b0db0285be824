"""Hits as citations: normalise search results, format answers with numbered sources, check a draft's fluency."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9+\-]*|[0-9]+|[\uac00-\ud7a3]+")
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
STOP = set(
    "a an the of to in on for and or is are was be it its this that what which how why when where who do does can "
    "i you we my your our with from by as at about into than then so if not no yes should would could will me "
    "tell explain give show please use using".split()
)
# Common Korean question words/particles-only tokens that say nothing about the topic.
KO_STOP = {
    "무엇",
    "무엇인",
    "무엇인가요",
    "어떻게",
    "언제",
    "왜",
    "어떤",
    "있나요",
    "하나요",
    "인가요",
    "설명",
    "알려",
}


@dataclass
class Hit:
    """One retrieved chunk as the agents cite it."""

    title: str
    heading: str
    text: str
    start: int | None
    end: int | None
    score: float
    document_id: str = ""

    def citation(self, n: int) -> str:
        """Return the numbered citation line: [n] title > heading (chars a-b)."""
        where = f" › {self.heading}" if self.heading else ""
        span = f" (chars {self.start}-{self.end})" if self.start is not None else ""
        return f"[{n}] {self.title}{where}{span}"


def parse_hits(result: Any) -> list[Hit]:
    """Turn a retrieval_search result (a list of hits, or an object holding `hits`) into Hits."""
    rows = result.get("hits", result.get("results", [])) if isinstance(result, dict) else result
    return [_hit(r) for r in rows or [] if isinstance(r, dict) and r.get("text")]


def _hit(r: dict[str, Any]) -> Hit:
    heading = r.get("heading_path", r.get("heading", r.get("headings", "")))
    title = r.get("title") or r.get("document_title") or r.get("source") or r.get("path") or "untitled"
    if isinstance(heading, list):
        heading = " › ".join(str(h) for h in heading[1 if heading[:1] == [title] else 0 :] if h)
    span = r.get("span") or r.get("char_span")
    start = r.get("char_start", r.get("start"))
    end = r.get("char_end", r.get("end"))
    if isinstance(span, dict):
        start, end = span.get("start"), span.get("end")
    elif isinstance(span, list | tuple) and len(span) == 2:
        start, end = span
    return Hit(
        str(title),
        str(heading or ""),
        str(r["text"]),
        start,
        end,
        float(r.get("score") or 0.0),
        str(r.get("document_id", r.get("doc_id", ""))),
    )


def is_korean(text: str) -> bool:
    """Tell whether the text is mostly Korean (Hangul), where the local model cannot write."""
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(bool(_HANGUL.match(c)) for c in letters) / len(letters) > 0.3


def terms(text: str) -> set[str]:
    """Return the content terms of a text: English words without stop words, Korean words cut to their stem."""
    out: set[str] = set()
    for w in _WORD.findall(text.lower()):
        if _HANGUL.match(w):
            if w not in KO_STOP and len(w) >= 2:
                out.add(w[:2])  # particles attach at the end; the first two syllables carry the noun
        elif w not in STOP and len(w) >= 2:
            out.add(w.rstrip("s") if len(w) > 3 else w)
    return out


def grounded(draft: str, hits: list[Hit], threshold: float = 0.7) -> bool:
    """Tell whether a draft is fluent and mostly made of the retrieved text's words (else it was invented)."""
    tokens = re.findall(r"\w+", draft.lower())
    if len(tokens) < 6 or len(set(tokens)) / len(tokens) < 0.5 or "question:" in draft.lower():
        return False  # too short, looping ("A: A: A: ..."), or echoing the prompt
    words = terms(draft)
    if len(words) < 4:
        return False
    source = " ".join(h.text for h in hits).lower()
    return sum(w in source for w in words) / len(words) >= threshold


def format_answer(body: str, hits: list[Hit], mode: str) -> str:
    """Assemble the answer: body, numbered sources, and which mode produced it."""
    sources = "\n".join(h.citation(n) for n, h in enumerate(hits, 1))
    return f"{body}\n\nSources:\n{sources}\n\n[mode: {mode}]" if hits else f"{body}\n\n[mode: {mode}]"


def extract_citations(answer: str) -> list[str]:
    """Return the numbered source lines of an answer ("[1] title › heading (chars a-b)")."""
    _, _, sources = answer.partition("\nSources:\n")
    return [line for line in sources.splitlines() if re.match(r"\[\d+\] ", line)]
