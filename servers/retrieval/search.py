"""Lexical, vector and hybrid search over an Index, with metadata filters applied inside each ranking."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from ragtune.servers.retrieval.errors import BadQuery, EmbedderMismatch
from ragtune.servers.retrieval.fusion import rrf
from ragtune.servers.retrieval.korean import get_analyzer
from ragtune.servers.retrieval.models import Coverage, Hit, SearchMode, SearchResult
from ragtune.servers.retrieval.stores.base import HEAD_WEIGHT, CollectionRow  # noqa: F401 - HEAD_WEIGHT re-exported

from ragtune.embeddings import covers, detect_language

if TYPE_CHECKING:
    from ragtune.servers.retrieval.index import Index

FUSION_DEPTH = 100  # candidates per signal before fusion (notes: depth 100 for the measured +3 nDCG)
MAX_K = 100
MODES = ("hybrid", "lexical", "vector")


def search(
    index: Index,
    query: str,
    *,
    collection: str | None = None,
    k: int = 5,
    mode: SearchMode = "hybrid",
    filters: dict[str, Any] | None = None,
    weight: float = 0.5,
) -> SearchResult:
    """Return the top `k` chunks; hybrid fuses bm25 and vector ranks with weighted RRF (fusion.RRF_K)."""
    if not isinstance(query, str) or not query.strip():
        raise BadQuery("query is empty: pass the question or keywords to search for")
    if len(query) > index.config.max_query_chars:  # a 1 MB query ran 59 s and held the index lock (issue #12)
        raise BadQuery(
            f"query is {len(query):,} characters, over the {index.config.max_query_chars:,} limit: search with a "
            "shorter question or keywords (or raise RAGTUNE_RETRIEVAL_MAX_QUERY_CHARS)"
        )
    if mode not in MODES:
        raise BadQuery(f"unknown mode {mode!r}: use hybrid, lexical or vector")
    if not 1 <= k <= MAX_K:
        raise BadQuery(f"k must be between 1 and {MAX_K}, got {k}")
    if not 0.0 <= weight <= 1.0:
        raise BadQuery(f"weight is the vector share of the fusion and must be in [0, 1], got {weight}")
    name = index.resolve_collection(collection)
    with index.lock:
        row = index.require_collection(name)
    where, params = index.store.compile_filters(filters)
    lang = detect_language(query)
    coverage = index.coverage(name)
    terms = list(dict.fromkeys(get_analyzer().terms(query)))
    signals, skipped = plan(index, row, mode, lang, coverage, bool(terms))
    depth = max(k, FUSION_DEPTH) if len(signals) == 2 else k
    lexical = lexical_ranking(index, terms, name, where, params, depth) if "lexical" in signals else []
    vector = vector_ranking(index, query, row, where, params, depth) if "vector" in signals else []
    if len(signals) == 2:
        fused = rrf([[c for c, _ in lexical], [c for c, _ in vector]], [1.0 - weight, weight])
    else:
        fused = [(c, -s if signals == ["lexical"] else 1.0 - s) for c, s in (lexical or vector)]
    ranks = [{c: r for r, (c, _) in enumerate(lst, 1)} for lst in (lexical, vector)]
    hits = load_hits(index, fused[:k], ranks[0], ranks[1])
    return SearchResult(
        query=query,
        collection=name,
        mode=mode,
        query_language=lang,
        signals=signals,
        skipped=skipped,
        weight=weight if len(signals) == 2 else float("vector" in signals),
        coverage=coverage,
        hits=hits,
    )


def plan(
    index: Index, row: CollectionRow, mode: str, lang: str, coverage: Coverage, has_terms: bool
) -> tuple[list[Any], dict[str, str]]:
    """Decide which signals rank this query, and say why any is left out."""
    signals: list[Any] = []
    skipped: dict[str, str] = {}
    if mode in ("hybrid", "lexical"):
        if has_terms:
            signals.append("lexical")
        elif mode == "lexical":
            raise BadQuery("the query has no searchable words (only punctuation or stop words): rephrase it")
        else:
            skipped["lexical"] = "the query has no searchable words"
    else:
        skipped["lexical"] = "mode=vector"
    if mode == "lexical":
        skipped["vector"] = "mode=lexical"
        return signals, skipped
    # The collection's own embedder, not the server's: one it cannot load is an error in mode=vector, a reason here.
    problem = index.embedder_problem(row)
    if problem and mode == "vector":
        raise EmbedderMismatch(problem)
    e = index.collection_embedder(row) if not problem else None
    reason = problem
    if row.embedder_model is None:
        reason = (
            f"no embedder: collection {row.name!r} was created without one (RAGTUNE_EMBEDDER=none or embedder "
            "'none'); re-embed it (retrieval_reembed) to add vectors"
        )
    elif reason is None and mode == "hybrid" and not covers(e, lang):
        reason = f"embedder {row.embedder_model} does not cover the query language ({lang})"
    elif reason is None and coverage.embedded == 0:
        reason = f"no vectors yet (0/{coverage.total} chunks embedded); they are filled in the background"
    if reason is None:
        signals.append("vector")
    elif mode == "vector" and row.embedder_model is None:
        raise BadQuery(f"vector search is unavailable: {reason}; use mode='lexical'")
    else:
        skipped["vector"] = reason
    return signals, skipped


def lexical_ranking(
    index: Index, terms: list[str], collection: str, where: str, params: list[Any], depth: int
) -> list[tuple[int, float]]:
    """Return (chunk id, bm25) best first (lower is better); `where, params` come from store.compile_filters."""
    return index.store.lexical_ranking(terms, collection, (where, params), depth)


def vector_ranking(
    index: Index, query: str, row: CollectionRow, where: str, params: list[Any], depth: int
) -> list[tuple[int, float]]:
    """Return (chunk id, cosine distance) best first with the collection's own embedder; filters restrict the
    candidates before the top-k. A reembed that switched the collection meanwhile is retried with the new one."""
    for _ in range(2):
        e = index.collection_embedder(row)
        assert e is not None and row.dim is not None
        vec = np.asarray(e.embed_queries([query]), dtype=np.float32).reshape(-1)
        ranking = index.store.vector_ranking(vec, row.name, row.dim, (where, params), depth)
        now = index.require_collection(row.name)
        if (now.embedder_model, now.dim) == (row.embedder_model, row.dim):
            break
        row = now  # the query vector and the stored vectors must come from the same model
    return ranking


def load_hits(
    index: Index, ranked: list[tuple[int, float]], lex_ranks: dict[int, int], vec_ranks: dict[int, int]
) -> list[Hit]:
    """Fetch the chunks and documents behind ranked chunk ids, keeping the order."""
    if not ranked:
        return []
    by_id = index.store.load_hits([c for c, _ in ranked])
    return [
        Hit(
            chunk_id=f"{r.doc_id}:{r.ordinal}",
            doc_id=r.doc_id,
            title=r.title,
            source=r.source,
            heading_path=r.heading_path,
            text=r.text,
            char_start=r.char_start,
            char_end=r.char_end,
            score=float(score),
            lexical_rank=lex_ranks.get(cid),
            vector_rank=vec_ranks.get(cid),
            metadata=r.metadata,
        )
        for cid, score in ranked
        if (r := by_id.get(cid)) is not None
    ]
