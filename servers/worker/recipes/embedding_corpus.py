"""What an `embedding` job reads from a retrieval collection: bm25 hard negatives, and its chunks.

Only the retrieval index's public API is used (`Index.open`, `list_documents`, `get_document`, `search` in
lexical mode), so the same code works on the SQLite and the PostgreSQL index.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ragtune.config import RetrievalSettings

from .base import RecipeError

MINE_DEPTH = 10  # bm25 hits looked at per query for a hard negative
PICK_FROM = 5  # the negative is drawn (seeded by the query) from this many best hits of other documents
PAGE = 200


@dataclass(frozen=True)
class CollectionChunk:
    """One chunk of a collection: its text and where it sits (document title, heading path)."""

    doc_id: str
    title: str
    heading_path: tuple[str, ...]
    text: str


def _open(settings: RetrievalSettings | None) -> Any:
    from ragtune.servers.retrieval.index import Index

    return Index.open(settings or RetrievalSettings(), None)


def _same(a: str, b: str) -> bool:
    """Say whether two passages are one text (or one contains the other): never a negative of each other."""
    x, y = " ".join(a.split()), " ".join(b.split())
    return bool(x) and bool(y) and (x in y or y in x)


def iter_chunks(index: Any, collection: str, limit: int | None = None) -> Iterator[CollectionChunk]:
    """Yield a collection's chunks in document order (at most `limit`)."""
    from ragtune.servers.retrieval.errors import RetrievalError

    offset: int | None = 0
    count = 0
    try:
        while offset is not None:
            page = index.list_documents(collection, offset=offset, limit=PAGE)
            for info in page.documents:
                doc = index.get_document(info.doc_id)
                for span in doc.chunk_spans:
                    text = doc.text[span.char_start : span.char_end].strip()
                    if not text:
                        continue
                    yield CollectionChunk(doc.doc_id, doc.title, tuple(span.heading_path), text)
                    count += 1
                    if limit is not None and count >= limit:
                        return
            offset = page.next_offset
    except RetrievalError as e:
        raise RecipeError(f"cannot read collection {collection!r}: {e}") from e


def collection_chunks(
    collection: str, limit: int | None = None, settings: RetrievalSettings | None = None
) -> list[CollectionChunk]:
    """Return up to `limit` chunks of a collection of the retrieval index (RAGTUNE_HOME / DATABASE_URL)."""
    index = _open(settings)
    try:
        return list(iter_chunks(index, collection, limit))
    finally:
        index.close()


def pick_negative(query: str, positive: str, hits: Sequence[Any]) -> str | None:
    """Choose a hard negative among bm25 `hits`: never the positive or another chunk of its document.

    The top hit that is not the positive is often a near-duplicate of it (a false negative that teaches the
    model to push a right answer away), so the pick is drawn from the PICK_FROM best other-document hits, with a
    generator seeded by the query (the same file mines the same negatives every run).
    """
    own = {h.doc_id for h in hits if _same(h.text, positive)}
    others = [h for h in hits if h.doc_id not in own and not _same(h.text, positive)]
    if not others:
        return None
    seed = int.from_bytes(hashlib.sha256(query.encode()).digest()[:8], "big")
    return str(others[random.Random(seed).randrange(min(PICK_FROM, len(others)))].text)


def mine_negatives(
    records: Sequence[dict[str, Any]],
    collection: str,
    *,
    settings: RetrievalSettings | None = None,
    index: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Give each pair without a negative a strong bm25 hit of `collection` from another document (pick_negative).

    Returns the records and how many got a mined negative. An explicit negative in the file is kept.
    """
    from ragtune.servers.retrieval.errors import BadQuery, RetrievalError
    from ragtune.servers.retrieval.search import search

    own = index is None
    index = index or _open(settings)
    out, mined = [], 0
    try:
        for n, rec in enumerate(records, 1):
            if progress and n % 100 == 0:
                progress(n, len(records))
            if rec.get("negative"):
                out.append(dict(rec))
                continue
            try:
                hits = search(index, rec["query"], collection=collection, k=MINE_DEPTH, mode="lexical").hits
            except BadQuery:
                hits = []
            negative = pick_negative(rec["query"], rec["positive"], hits)
            out.append({**rec, "negative": negative} if negative else dict(rec))
            mined += negative is not None
    except RetrievalError as e:
        raise RecipeError(
            f"cannot mine hard negatives from collection {collection!r}: {e}; name an existing collection "
            "in the hyperparameter `collection`, or leave it out to train on in-batch negatives only"
        ) from e
    finally:
        if own:
            index.close()
    return out, mined
