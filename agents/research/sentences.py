"""Candidate sentences of the retrieved chunks, each with its exact character span in the document.

A chunk is an exact slice of its document (`char_start`), so a sentence found at offset i of the chunk text lies at
`char_start + i` in the document: the citation can point at the sentence, not at the whole chunk.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

from ragtune.agents.research.evidence import Hit

FENCE = re.compile(r"^\s*(```|~~~).*?(?:^\s*\1[^\n]*$|\Z)", re.S | re.M)
ITEM = re.compile(r"(?:[-*+>]\s+|\d+[.)]\s+)")
SENTENCE_END = re.compile(r"(?<=[.!?。])[\"'”’)\]]*\s+")
TABLE_RULE = re.compile(r"^\|?[\s:|-]+\|?$")
COMMENTED = re.compile(r"^[ \t]*([^#\s`~][^\n]*?\s#\s[^\n]*\S)[ \t]*$", re.M)
MIN_CHARS = 12
LIST_ITEM_CHARS = 200


@dataclass(frozen=True)
class Sentence:
    """One quotable sentence (or table row) of a hit, with its span in the document."""

    text: str
    hit: Hit
    start: int | None  # document offsets; None when the hit has no span
    end: int | None

    def citation_hit(self) -> Hit:
        """Return the hit narrowed to this sentence, so its citation names the sentence's span."""
        return replace(self.hit, text=self.text, start=self.start, end=self.end)


def _blocks(text: str) -> Iterator[tuple[int, int]]:
    """Yield (start, end) of each paragraph (fenced code is already blanked out)."""
    for m in re.finditer(r"\S(?:.*?\S)?(?=\n[ \t]*\n|\s*\Z)", text, re.S):
        yield m.start(), m.end()


def _lines(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Yield (start, end) of each non-empty line in text[start:end], stripped of surrounding blanks."""
    for m in re.finditer(r"[^\n]+", text[start:end]):
        a, b = start + m.start(), start + m.end()
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            yield a, b


def _items(text: str, start: int, end: int) -> Iterator[tuple[int, int, str]]:
    """Yield (start, end, kind) units of one paragraph: list items and prose runs ('text'), table rows ('row')."""
    run: tuple[int, int] | None = None
    lines = list(_lines(text, start, end))
    for i, (a, b) in enumerate(lines):
        line = text[a:b]
        if line.startswith("#") or line.startswith("<"):
            kind = "skip"
        elif line.startswith("|"):
            header = i + 1 < len(lines) and TABLE_RULE.match(text[lines[i + 1][0] : lines[i + 1][1]])
            kind = "skip" if header or TABLE_RULE.match(line) else "row"
        else:
            kind = "text"
        if kind == "text" and run and not ITEM.match(line):
            run = (run[0], b)  # a wrapped line continues the sentence above
            continue
        if run:
            yield run[0], run[1], "text"
        run = (a, b) if kind == "text" else None
        if kind == "row":
            yield a, b, "row"
    if run:
        yield run[0], run[1], "text"


def _clean(raw: str) -> str:
    """Return a unit as quoted: one line, no markdown emphasis."""
    return " ".join(raw.replace("**", "").split())


def _row(raw: str) -> str:
    """Return a table row as a line of its cells joined by ' | '."""
    cells = [c.strip() for c in raw.strip().strip("|").split("|")]
    return " | ".join(c.replace("**", "") for c in cells if c)


def split_spans(text: str) -> list[tuple[int, int, str]]:
    """Split chunk text into quotable units: (start, end, text) with offsets into `text`."""
    out = commented_commands(text)
    text = FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)  # same length: offsets still hold
    for block_start, block_end in _blocks(text):
        for a, b, kind in _items(text, block_start, block_end):
            if kind == "row":
                row = _row(text[a:b])
                if len(row) >= MIN_CHARS:
                    out.append((a, b, row))
                continue
            marker = ITEM.match(text, a)
            a = marker.end() if marker else a
            pos = a
            # A short list item stays whole: "`RAGTUNE_API_TOKEN`: the token. Needed beyond loopback" is one fact.
            ends = [] if marker and b - a <= LIST_ITEM_CHARS else list(SENTENCE_END.finditer(text, a, b))
            for m in [*ends, None]:
                cut, nxt = (m.start() + len(m.group(0).rstrip()), m.end()) if m else (b, b)
                said = _clean(text[pos:cut])
                if len(said) >= MIN_CHARS:
                    out.append((pos, cut, said))
                pos = nxt
    return sorted(out)


def commented_commands(text: str) -> list[tuple[int, int, str]]:
    """Return the lines of fenced code that say what they do ("make demo  # run the kit"): quotable as facts."""
    out = []
    for fence in FENCE.finditer(text):
        for m in COMMENTED.finditer(text, fence.start(), fence.end()):
            out.append((m.start(1), m.end(1), " ".join(m.group(1).split())))
    return out


def candidates(hits: list[Hit]) -> list[Sentence]:
    """Return every quotable sentence of the hits, each once (overlapping chunks repeat sentences)."""
    out: list[Sentence] = []
    seen: set[tuple[str, str]] = set()
    for hit in hits:
        for a, b, said in split_spans(hit.text):
            key = (hit.document_id or hit.title, said)
            if key in seen:
                continue
            seen.add(key)
            base = hit.start
            out.append(
                Sentence(said, hit, base + a if base is not None else None, base + b if base is not None else None)
            )
    return out
