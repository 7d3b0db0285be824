"""Split a document into chunks that follow its structure: headings, paragraphs, then sentences.

Every chunk is an exact slice `text[char_start:char_end]` of the document, so a hit can be cited by span.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
FENCE = re.compile(r"^\s*(```|~~~)")
# A setext underline: `===` (level 1) or `---` (level 2) right under a line of text.
SETEXT = re.compile(r"^ {0,3}(=+|-{2,})[ \t]*$")
# Sentence ends: . ! ? and their full-width forms (Korean 다. 요. 까? included), or a line break.
SENTENCE_END = re.compile(r"(?<=[.!?。！？…])[\"'”’)\]]*\s+|\n+")
# A rough stand-in for subword tokens: a Latin word, a number, one or two Hangul syllables, or a symbol.
TOKEN = re.compile(r"[A-Za-z]+|\d+|[가-힣]{1,2}|[^\sA-Za-z\d가-힣]")


def count_tokens(text: str) -> int:
    """Estimate the embedder's token count of `text` without loading a tokenizer."""
    return len(TOKEN.findall(text))


@dataclass(frozen=True)
class Span:
    """A character range of the document and the headings above it."""

    start: int
    end: int
    headings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChunkSpan(Span):
    """One chunk: a span plus its ordinal in the document."""

    ordinal: int = 0


def sections(text: str) -> list[tuple[tuple[str, ...], list[Span]]]:
    """Group the paragraphs of `text` under their markdown heading path (code fences stay whole)."""
    out: list[tuple[tuple[str, ...], list[Span]]] = [((), [])]
    path: list[tuple[int, str]] = []
    para_start: int | None = None
    in_fence = False
    heading_only = False  # a heading and the blank line under it belong to the next paragraph
    pos = 0
    prev_text = False  # the previous line was paragraph text (so an underline under it makes a setext heading)

    def close(end: int) -> None:
        nonlocal para_start
        if para_start is not None:
            start = para_start
            while end > start and text[end - 1].isspace():
                end -= 1
            if end > start:
                out[-1][1].append(Span(start, end, out[-1][0]))
        para_start = None

    def open_section(level: int, name: str) -> None:
        nonlocal path, heading_only
        path = [(lvl, n) for lvl, n in path if lvl < level] + [(level, name)]
        out.append((tuple(n for _, n in path), []))
        heading_only = True

    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        was_text, prev_text = prev_text, False
        if FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else HEADING.match(line.rstrip("\r\n"))
        underline = None if in_fence or not was_text or para_start is None else SETEXT.match(line.rstrip("\r\n"))
        if heading:
            close(pos)
            open_section(len(heading.group(1)), heading.group(2).strip())
            para_start = pos  # the heading line opens the section's first paragraph
        elif underline:  # the paragraph above is the heading's text; it opens the new section
            open_section(1 if underline.group(1)[0] == "=" else 2, " ".join(text[para_start:pos].split()))
        elif not stripped and not in_fence:
            if not heading_only:
                close(pos)
        else:
            heading_only = False
            prev_text = not in_fence and not FENCE.match(line)
            if para_start is None:
                para_start = pos + (len(line) - len(line.lstrip()))
        pos += len(line)
    close(pos)
    return [(heads, spans) for heads, spans in out if spans]


def markdown_title(text: str) -> str | None:
    """Return the first level-1 heading (`# T` or `T` over `===`) outside code fences, if any."""
    in_fence, previous = False, ""
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            heading = HEADING.match(line)
            if heading and len(heading.group(1)) == 1:
                return heading.group(2).strip()
            if previous.strip() and not HEADING.match(previous) and re.fullmatch(r" {0,3}=+[ \t]*", line):
                return previous.strip()
        previous = "" if in_fence else line
    return None


def split_sentences(text: str, span: Span) -> list[Span]:
    """Split one paragraph into sentence spans (Korean endings like 다. 요. 까? included)."""
    out: list[Span] = []
    start = span.start
    for match in SENTENCE_END.finditer(text, span.start, span.end):
        if match.start() > start:
            out.append(Span(start, match.start(), span.headings))
        start = match.end()
    if start < span.end:
        out.append(Span(start, span.end, span.headings))
    return out


def split_hard(text: str, span: Span, budget: int) -> list[Span]:
    """Cut a span that alone exceeds the budget at token boundaries."""
    out: list[Span] = []
    start = span.start
    tokens = 0
    for match in TOKEN.finditer(text, span.start, span.end):
        if tokens >= budget:
            out.append(Span(start, match.start(), span.headings))
            start, tokens = match.start(), 0
        tokens += 1
    out.append(Span(start, span.end, span.headings))
    return [s for s in out if text[s.start : s.end].strip()]


def units(text: str, paragraphs: list[Span], budget: int) -> list[tuple[Span, int]]:
    """Break paragraphs into pieces no larger than the budget: whole paragraphs, else sentences, else cuts."""
    out: list[tuple[Span, int]] = []
    for para in paragraphs:
        size = count_tokens(text[para.start : para.end])
        if size <= budget:
            out.append((para, size))
            continue
        for sentence in split_sentences(text, para):
            size = count_tokens(text[sentence.start : sentence.end])
            pieces = [sentence] if size <= budget else split_hard(text, sentence, budget)
            out.extend((p, count_tokens(text[p.start : p.end])) for p in pieces)
    return out


def pack(pieces: list[tuple[Span, int]], budget: int, overlap: int) -> list[tuple[int, int]]:
    """Greedily group consecutive pieces under the budget; each group repeats up to `overlap` tokens."""
    groups: list[tuple[int, int]] = []
    first = 0
    while first < len(pieces):
        last, used = first, pieces[first][1]
        while last + 1 < len(pieces) and used + pieces[last + 1][1] <= budget:
            last += 1
            used += pieces[last][1]
        groups.append((first, last))
        if last + 1 >= len(pieces):
            break
        nxt, shared = last + 1, 0
        while nxt - 1 > first and shared + pieces[nxt - 1][1] <= overlap:
            nxt -= 1
            shared += pieces[nxt][1]
        first = nxt
    return groups


def chunk_text(text: str, budget: int = 350, overlap: int = 50) -> list[ChunkSpan]:
    """Return the chunks of `text`: sections never mix, pieces pack up to `budget` tokens with overlap."""
    if budget < 1:
        raise ValueError("chunk budget must be at least one token")
    overlap = min(overlap, budget // 2)
    chunks: list[ChunkSpan] = []
    for heads, paragraphs in sections(text):
        pieces = units(text, paragraphs, budget)
        for first, last in pack(pieces, budget, overlap):
            start, end = pieces[first][0].start, pieces[last][0].end
            chunks.append(ChunkSpan(start, end, heads, ordinal=len(chunks)))
    return chunks


def passage_text(text: str, title: str | None, headings: tuple[str, ...] | list[str] = ()) -> str:
    """Put the document title and heading path above a chunk for the embedder (skipping ones it opens with)."""
    opening = text[:300].casefold()
    parts: list[str] = []
    for part in (title or "", *headings):
        part = part.strip()
        folded = part.casefold()
        if part and folded not in opening[: len(folded) + 16] and all(folded != p.casefold() for p in parts):
            parts.append(part)
    return "\n".join([*parts, text]) if parts else text
