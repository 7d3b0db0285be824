"""Label-free training pairs for the `embedding` method, built from a collection's own chunks.

Three sources, each a `{"query", "positive"}` record (the canonical `pairs` format):
- `title`: the chunk's document title and heading path -> the chunk's text (always);
- `sentence`: one sentence of the chunk -> the rest of the chunk (inverse cloze task, Lee et al. 2019);
- `question`: questions a chat model writes for the chunk (only with a real model, RAGTUNE_CHAT_MODEL and
  RAGTUNE_CHAT_BASE_URL; the embedded SmolLM2-135M writes unrelated English for Korean passages and at best one
  usable question for English ones, see docs/benchmarks/retrieval.md).
`build_pairs_file` writes them as JSONL and validates the file like an upload.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ragtune.datasets import LoadedDataset, parse_dataset

from .base import RecipeError
from .embedding_corpus import CollectionChunk, collection_chunks

SOURCES = ("title", "sentence", "question")
MIN_SENTENCE_CHARS = 12
MAX_QUESTION_CHARS = 200
_SENTENCE = re.compile(r"(?<=[.!?。])\s+|\n+")
QUESTION_PROMPT = (
    "Write {n} short questions, one per line, that a user might ask and that this passage answers. "
    "Use the passage's language and everyday words, not the passage's wording. No numbering, no answers.\n\n"
    "Passage:\n{text}"
)

Ask = Callable[[str], str]  # prompt -> the chat model's answer


def title_query(chunk: CollectionChunk) -> str | None:
    """The document title and heading path as one query (None when the chunk has neither)."""
    parts = list(dict.fromkeys(p.strip() for p in (chunk.title, *chunk.heading_path) if p and p.strip()))
    return " > ".join(parts) or None


def sentences(text: str) -> list[str]:
    """Split a passage into sentences (punctuation or line breaks; good enough for Korean and English prose)."""
    return [s.strip() for s in _SENTENCE.split(text) if len(s.strip()) >= MIN_SENTENCE_CHARS]


def sentence_pair(chunk: CollectionChunk, rng: random.Random) -> dict[str, str] | None:
    """One sentence (not the title line) as the query, the chunk without it as the positive."""
    found = [s for s in sentences(chunk.text) if s != chunk.title.strip()]
    if len(found) < 2:
        return None
    pick = rng.choice(found)
    rest = " ".join(chunk.text.replace(pick, " ", 1).split())
    return {"query": pick, "positive": rest} if rest else None


def parse_questions(answer: str, limit: int) -> list[str]:
    """Keep the lines of a model's answer that look like questions (bullets and numbers stripped)."""
    out = []
    for line in answer.splitlines():
        q = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip()
        if 4 <= len(q) <= MAX_QUESTION_CHARS and (q.endswith("?") or q.endswith("까") or q.endswith("요")):
            out.append(q)
    unique = {q.casefold(): q for q in reversed(out)}  # the first spelling of a question repeated in another case
    return list(reversed(unique.values()))[:limit]


def build_pairs(
    chunks: Iterable[CollectionChunk],
    *,
    sources: Sequence[str] = ("title", "sentence"),
    ask: Ask | None = None,
    questions_per_chunk: int = 2,
    seed: int = 0,
) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Return pairs from the chunks and how many each source gave."""
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise RecipeError(f"unknown pair sources {sorted(unknown)}; use {', '.join(SOURCES)}")
    if "question" in sources and ask is None:
        raise RecipeError("pair source 'question' needs a chat model: set RAGTUNE_CHAT_MODEL and RAGTUNE_CHAT_BASE_URL")
    rng = random.Random(seed)
    pairs: list[dict[str, str]] = []
    counts = dict.fromkeys(sources, 0)
    for chunk in chunks:
        made: list[tuple[str, dict[str, str]]] = []
        query = title_query(chunk) if "title" in sources else None
        if query and " ".join(query.split()) != " ".join(chunk.text.split()):
            made.append(("title", {"query": query, "positive": chunk.text}))
        if "sentence" in sources and (pair := sentence_pair(chunk, rng)):
            made.append(("sentence", pair))
        if "question" in sources and ask is not None:
            answer = ask(QUESTION_PROMPT.format(n=questions_per_chunk, text=chunk.text))
            made += [
                ("question", {"query": q, "positive": chunk.text}) for q in parse_questions(answer, questions_per_chunk)
            ]
        for source, pair in made:
            counts[source] += 1
            pairs.append(pair)
    return pairs, counts


def chat_asker(settings: Any = None) -> Ask | None:
    """Return a prompt -> answer function over the configured chat model, or None when it is the stand-in."""
    from ragtune.config import LLMSettings
    from ragtune.llm import STAND_IN, make_chat_model

    settings = settings or LLMSettings()
    if settings.chat_model.lower() == STAND_IN:
        return None
    model = make_chat_model(settings)

    def ask(prompt: str) -> str:
        content = model.invoke(prompt).content
        return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)

    return ask


def write_pairs(pairs: Sequence[dict[str, str]], path: Path) -> LoadedDataset:
    """Write pairs as JSONL and validate the file as an upload would be (raises DatasetError on a bad line)."""
    if not pairs:
        raise RecipeError("no pairs could be built: the collection has no chunks with a title or two sentences")
    text = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)
    loaded = parse_dataset(text, source=path.name, format="pairs")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return loaded


def collection_pairs_jsonl(
    collection: str,
    *,
    questions: bool = False,
    max_chunks: int | None = None,
    seed: int = 0,
) -> tuple[bytes, dict[str, Any]]:
    """Label-free pairs of a collection as validated JSONL bytes (for an upload) and a summary of what was made."""
    chunks = collection_chunks(collection, max_chunks)
    if not chunks:
        raise RecipeError(f"collection {collection!r} has no chunks: ingest documents first")
    sources = ("title", "sentence", "question") if questions else ("title", "sentence")
    pairs, counts = build_pairs(chunks, sources=sources, ask=chat_asker() if questions else None, seed=seed)
    if not pairs:
        raise RecipeError(f"collection {collection!r} gave no pairs: its chunks have no title and one sentence each")
    text = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)
    parse_dataset(text, source=f"{collection}-pairs.jsonl", format="pairs")
    return text.encode(), {"collection": collection, "chunks": len(chunks), "pairs": len(pairs), "by_source": counts}


def build_pairs_file(
    collection: str,
    path: Path,
    *,
    sources: Sequence[str] = ("title", "sentence"),
    max_chunks: int | None = None,
    ask: Ask | None = None,
    questions_per_chunk: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Build label-free pairs from a retrieval collection into a validated JSONL training file; return a summary."""
    chunks = collection_chunks(collection, max_chunks)
    if not chunks:
        raise RecipeError(f"collection {collection!r} has no chunks: ingest documents first")
    pairs, counts = build_pairs(chunks, sources=sources, ask=ask, questions_per_chunk=questions_per_chunk, seed=seed)
    loaded = write_pairs(pairs, path)
    return {"path": str(path), "chunks": len(chunks), "pairs": len(pairs), "by_source": counts, "report": loaded.report}
