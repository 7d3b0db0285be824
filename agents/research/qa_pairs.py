"""Question/answer pairs from the user guides, for instruction tuning: real questions answered by doc sentences.

The embedded 135M model cannot write good questions, so the pairs come from fixed, checkable rules over the
markdown, in English and Korean:

1. A heading that is itself a question ("What is LoRA?", "RAG란 무엇인가요?") is the question; the answer is the
   first prose sentence(s) under it.
2. A heading of a known kind becomes one: "LoRA pitfalls" -> "What are the pitfalls of LoRA?",
   "RAG가 맞는 경우" -> "RAG가 맞는 경우는 언제인가요?", "LoRA를 쓸 때 주의할 점" -> "...점은 무엇인가요?".
3. A section whose first sentence starts with its heading ("The retrieval server indexes files...") gives
   "What does the retrieval server do?" ("What is X?" when the sentence says "X is ..."); Korean "X는 ...합니다."
   gives "X는 무엇을 하나요?" and "X는 ...입니다." gives "X는 무엇인가요?".
4. A bullet led by a bold term ("**Dense search** stores vectors...", "**벡터 검색**: sqlite-vec에...") gives
   "How does dense search work?" / "What is X?" / "벡터 검색은 어떻게 작동하나요?".

Answers are prose sentences only (never headings, tables, code, captions, images, HTML or a line ending in ':'),
at most two consecutive sentences of one paragraph, with markdown emphasis and links reduced to their text.
Questions are unique; `split_holdout` keeps every k-th pair of each language out of training.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"(\[\uac00-\ud7a3])")
HANGUL = re.compile(r"[\uac00-\ud7a3]")
SKIP_LINE = re.compile(r"^\s*(?:\||<|!\[|>|\[[^\]]*\]\([^)]*\)\s*$)")
BOLD_LEAD = re.compile(r"^\*\*([^*]{2,40})\*\*(:?)\s+(.+)$")
LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
EMPHASIS = re.compile(r"\*\*(.+?)\*\*|(?<![\w*])\*(?!\s)([^*]+?)(?<!\s)\*(?![\w*])|__(.+?)__")
PARENS = re.compile(r"\s*\([^)]*\)")
KO_PITFALLS = re.compile(r"(?:주의할 점|함정)$")
KO_WHEN = re.compile(r"경우$")
MAX_ANSWER = 320
T = TypeVar("T")


@dataclass(frozen=True)
class QAPair:
    """One question with its answer sentence(s), the language, and where in the guides the answer is."""

    question: str
    answer: str
    lang: str
    source: str
    rule: str

    def record(self) -> dict[str, Any]:
        """Return the chat record the fine-tuning service trains on."""
        return {"messages": [{"role": "user", "content": self.question}, {"role": "assistant", "content": self.answer}]}


@dataclass
class Section:
    """A heading and the prose units (paragraphs or list items) under it, in order."""

    title: str
    heading: str
    units: list[str]


# --- markdown -> sections -> prose ---------------------------------------------------------------------------
def sections(text: str, title: str) -> list[Section]:
    """Split markdown into sections at headings, dropping code blocks, tables, HTML and images."""
    out: list[Section] = [Section(title, "", [])]
    unit: list[str] = []
    fence = False

    def flush() -> None:
        if unit:
            out[-1].units.append(" ".join(part.strip() for part in unit))
            unit.clear()

    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            flush()
            fence = not fence
            continue
        heading = None if fence else HEADING.match(line)
        if fence or SKIP_LINE.match(line) or not line.strip():
            flush()
        elif heading:
            flush()
            out.append(Section(title, heading.group(2).strip(), []))
        elif ITEM.match(line):
            flush()
            unit.append(ITEM.sub("", line, count=1))
        else:
            unit.append(line)
    flush()
    return [s for s in out if s.units or s.heading]


def clean(text: str) -> str:
    """Reduce markdown links and emphasis to their text and collapse spaces."""
    text = LINK.sub(r"\1", text)
    text = EMPHASIS.sub(lambda m: next(g for g in m.groups() if g is not None), text)
    return re.sub(r"\s+", " ", text).strip()


def is_prose(sentence: str) -> bool:
    """Tell whether a sentence can be an answer: a full sentence, not a caption, table row or fragment."""
    if not sentence.endswith((".", "!", "?")) or "|" in sentence or len(sentence) > MAX_ANSWER:
        return False
    words = sentence.split()
    return len(words) >= (3 if HANGUL.search(sentence) else 6)


def prose_sentences(unit: str) -> list[str]:
    """Return the unit's sentences, cleaned, keeping only those that read as prose."""
    return [s for s in (clean(p) for p in SENTENCE_END.split(clean(unit))) if is_prose(s)]


def answer_from(units: Sequence[str]) -> list[str]:
    """Return the first prose sentence of the units, plus the next one of its paragraph if both stay short."""
    for unit in units:
        said = prose_sentences(unit)
        if said:
            return said[:2] if len(said) > 1 and len(said[0]) + len(said[1]) < MAX_ANSWER else said[:1]
    return []


# --- the four rules ------------------------------------------------------------------------------------------
def topic(word: str, used: str | None = None) -> str:
    """Return the Korean topic particle for `word`: the one the source used (은/는, from 이/가), else by batchim."""
    if used:
        return {"이": "은", "가": "는"}.get(used, used)
    last = word.rstrip()[-1:]
    if last and HANGUL.match(last):
        return "은" if (ord(last) - 0xAC00) % 28 else "는"
    return "는"


def heading_question(heading: str) -> str | None:
    """Rules 1-2: a heading that is a question, or one of a known kind turned into one."""
    text = clean(heading)
    if text.endswith("?"):
        return text
    if HANGUL.search(text):
        if KO_WHEN.search(text):
            return f"{text}{topic(text)} 언제인가요?"
        if KO_PITFALLS.search(text):
            return f"{text}{topic(text)} 무엇인가요?"
        return None
    if m := re.fullmatch(r"(.+) pitfalls", text):
        return f"What are the pitfalls of {m.group(1)}?"
    return None


def subject_question(subject: str, sentence: str) -> str | None:
    """Rules 3-4: the question a sentence that opens with `subject` answers, or None if it does not open so."""
    name = PARENS.sub("", clean(subject)).strip()
    if not name or len(name.split()) > 5:
        return None
    if HANGUL.search(sentence):
        m = re.match(rf"{re.escape(name)}(?:\([^)]*\))?(은|는|이|가)\s", sentence)
        if not m:
            return None
        ask = "무엇인가요?" if sentence.rstrip(".").endswith("입니다") else "무엇을 하나요?"
        return f"{name}{topic(name, m.group(1))} {ask}"
    m = re.match(rf"(the\s+)?{re.escape(name)}(?:\s*\([^)]*\))?\s+(\w+)", sentence, re.I)
    if not m or re.search(r"(?:ly|ing)$", m.group(2)):
        return None
    lead = f"the {_lower(name)}" if m.group(1) else _lower(name)
    if m.group(2) in ("is", "are"):
        return f"What {m.group(2)} {lead}?"
    return f"What does {lead} do?" if m.group(2).endswith("s") else None


def bold_question(unit: str) -> tuple[str, str] | None:
    """Rule 4: a bullet led by a bold term, as (question, answer)."""
    m = BOLD_LEAD.match(unit.strip())
    if not m:
        return None
    term, colon, rest = clean(m.group(1)), m.group(2), m.group(3)
    name = PARENS.sub("", term).strip()
    first = clean(SENTENCE_END.split(clean(rest if colon else f"{term} {rest}"))[0])
    if not is_prose(first) or not name or len(name.split()) > 3:
        return None
    if HANGUL.search(name):  # "**X**: ...합니다." describes what X does; "...입니다." states a figure, not how
        acts = colon and not first.rstrip(".").endswith("입니다")
        return (f"{name}{topic(name)} 어떻게 작동하나요?", first) if acts else None
    if colon:
        return None
    verb = rest.split()[0]
    if verb in ("is", "are"):
        return f"What {verb} {_lower(name)}?", first
    return (f"How does {_lower(name)} work?", first) if verb.endswith("s") else None


def _lower(name: str) -> str:
    """Lower-case a common noun phrase but keep acronyms and names (LoRA, SQLite, DPO)."""
    first = name.split()[0]
    return name if any(c.isupper() for c in first[1:]) or first.isupper() else name[0].lower() + name[1:]


def section_pairs(section: Section, source: str) -> list[QAPair]:
    """Apply the rules to one section."""
    where = f"{source} › {section.heading}" if section.heading else source
    out: list[QAPair] = []
    said = answer_from(section.units)
    question = heading_question(section.heading) if section.heading else None
    if question and said:
        out.append(_pair(question, " ".join(said), where, "heading"))
    elif section.heading and said and (question := subject_question(section.heading, said[0])):
        out.append(_pair(question, " ".join(said), where, "subject"))
    for unit in section.units:
        if qa := bold_question(unit):
            out.append(_pair(qa[0], qa[1], where, "bold-term"))
    return out


def _pair(question: str, answer: str, source: str, rule: str) -> QAPair:
    return QAPair(question, answer, "ko" if HANGUL.search(question + answer) else "en", source, rule)


# --- whole documents -----------------------------------------------------------------------------------------
def pairs_from_markdown(text: str, source: str) -> list[QAPair]:
    """Return the Q/A pairs of one markdown document, in document order."""
    return [p for s in sections(text, source) for p in section_pairs(s, source)]


def build_pairs(documents: Iterable[tuple[str, str]], limit: int | None = None) -> list[QAPair]:
    """Return unique-question pairs from (source, markdown) documents, question headings first."""
    found = [p for source, text in documents for p in pairs_from_markdown(text, source)]
    found.sort(key=lambda p: p.rule != "heading")
    seen: set[str] = set()
    out: list[QAPair] = []
    for p in found:
        key = re.sub(r"(?:이란|란|은|는) 무엇인가요", " 무엇인가요", p.question.casefold().rstrip("?"))  # X란 = X는
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out[:limit] if limit else out


def guide_documents(paths: Iterable[Path]) -> list[tuple[str, str]]:
    """Read markdown files (folders: their *.md, sorted) as (source, text)."""
    out: list[tuple[str, str]] = []
    for path in paths:
        files = sorted(path.glob("*.md")) if path.is_dir() else [path]
        out += [(f"{f.parent.name}/{f.name}" if path.is_dir() else f.name, f.read_text("utf-8")) for f in files]
    return out


def split_holdout(pairs: Sequence[QAPair], every: int = 6) -> tuple[list[QAPair], list[QAPair]]:
    """Split into (train, held out): every `every`-th pair of each language is held out, never trained on."""
    return _split(pairs, [p.lang for p in pairs], every)


def split_records(
    records: Sequence[dict[str, Any]], every: int = 6
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split chat records the same way as `split_holdout` splits their pairs (the language is the Hangul test)."""
    langs = ["ko" if HANGUL.search(json.dumps(r, ensure_ascii=False)) else "en" for r in records]
    return _split(records, langs, every)


def _split(items: Sequence[T], langs: Sequence[str], every: int) -> tuple[list[T], list[T]]:
    train: list[T] = []
    held: list[T] = []
    count: dict[str, int] = {}
    for item, lang in zip(items, langs, strict=True):
        count[lang] = count.get(lang, 0) + 1
        (held if count[lang] % every == every // 2 else train).append(item)
    return train, held
