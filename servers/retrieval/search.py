"""Lexical, vector and hybrid search over an Index, with metadata filters applied inside each ranking."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ragtune.servers.retrieval.errors import BadQuery, EmbedderMismatch
from ragtune.servers.retrieval.filters import compile_filters
from ragtune.servers.retrieval.fusion import rrf
from ragtune.servers.retrieval.korean import get_analyzer, or_query
from ragtune.servers.retrieval.lexical import exact_top, split_terms
from ragtune.servers.retrieval.models import Coverage, Hit, SearchMode, SearchResult
from ragtune.servers.retrieval.schema import vec_table

from ragtune.embeddings import covers, detect_language

if TYPE_CHECKING:
    from ragtune.servers.retrieval.index import Index

FUSION_DEPTH = 100  # candidates per signal before fusion (notes: depth 100 for the measured +3 nDCG)
MAX_K = 100
MODES = ("hybrid", "lexical", "vector")
HEAD_WEIGHT = 1.0  # bm25 weight of the title/heading column relative to the body


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
    where, params = compile_filters(filters)
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
    index: Index, row: Any, mode: str, lang: str, coverage: Coverage, has_terms: bool
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
    problem = index.embedder_problem(row)
    if problem:
        raise EmbedderMismatch(problem)
    e = index.embedder
    reason = None
    if e is None:
        reason = "no embedder is configured (RAGTUNE_EMBEDDER=none)"
    elif row["embedder_model"] is None:
        reason = f"collection {row['name']!r} was created without an embedder"
    elif mode == "hybrid" and not covers(e, lang):
        reason = f"embedder {e.model_id} does not cover the query language ({lang})"
    elif coverage.embedded == 0:
        reason = f"no vectors yet (0/{coverage.total} chunks embedded); they are filled in the background"
    if reason is None:
        signals.append("vector")
    elif mode == "vector" and (e is None or row["embedder_model"] is None):
        raise BadQuery(f"vector search is unavailable: {reason}; use mode='lexical'")
    else:
        skipped["vector"] = reason
    return signals, skipped


def lexical_ranking(
    index: Index, terms: list[str], collection: str, where: str, params: list[Any], depth: int
) -> list[tuple[int, float]]:
    """Return (chunk rowid, bm25) best first; filters apply before the limit (approximate at scale, see lexical.py)."""
    # Hand-written SQL, not sqlite-utils: the hot path (two-stage FTS5 bm25, see lexical.py) needs exact query plans.
    # CROSS JOIN pins the FTS match as the outer loop; otherwise SQLite walks the collection's chunks first.
    docs = "" if where == "1" else " cross join documents d on d.id = c.doc_id"
    sql = (
        f"select c.id, bm25(chunks_fts, {HEAD_WEIGHT}, 1.0) as s from chunks_fts "
        f"cross join chunks c on c.id = chunks_fts.rowid{docs} "
        f"where chunks_fts match ? and c.collection = ? and {where} order by s, c.id limit ?"
    )

    with index.reader() as conn:  # a thread's own connection: a long query does not stall other searches

        def rank(words: Sequence[str], limit: int) -> list[tuple[int, float]]:
            return [(r[0], r[1]) for r in conn.execute(sql, (or_query(words), collection, *params, limit))]

        split = split_terms(conn, terms)
        if split is not None:
            top = exact_top(conn, split, rank, depth, (HEAD_WEIGHT, 1.0))
            if top is not None:
                return top
        return rank(terms, depth)


def vector_ranking(
    index: Index, query: str, row: Any, where: str, params: list[Any], depth: int
) -> list[tuple[int, float]]:
    """Return (chunk rowid, cosine distance) best first; filters restrict the candidates before the top-k."""
    assert index.embedder is not None
    vec = np.asarray(index.embedder.embed_queries([query]), dtype=np.float32).reshape(-1)
    # Documents first: the filter is evaluated once per document, not once per chunk.
    allowed_sql = (
        f"select c.id from documents d cross join chunks c on c.doc_id = d.id where d.collection = ? and {where}"
    )
    with index.lock:
        allowed = None
        if where != "1":
            allowed = [r[0] for r in index.conn.execute(allowed_sql, (row["name"], *params))]
        cached = index.vectors.knn(index.conn, index.generation(), row["name"], row["dim"], vec, depth, allowed)
        if cached is not None:
            return cached
        sql = (
            f"select chunk_id, distance from {vec_table(row['dim'])} "
            "where embedding match ? and k = ? and collection = ?"
        )
        args: list[Any] = [vec.tobytes(), depth, row["name"]]
        if where != "1":
            sql += f" and chunk_id in ({allowed_sql})"
            args += [row["name"], *params]
        return [(r[0], r[1]) for r in index.conn.execute(sql + " order by distance", args)]


def load_hits(
    index: Index, ranked: list[tuple[int, float]], lex_ranks: dict[int, int], vec_ranks: dict[int, int]
) -> list[Hit]:
    """Fetch the chunks and documents behind ranked rowids, keeping the order."""
    if not ranked:
        return []
    ids = [c for c, _ in ranked]
    with index.lock:
        rows = index.conn.execute(
            "select c.id, c.ordinal, c.text, c.heading_path, c.char_start, c.char_end, d.doc_id, d.title, "
            f"d.source, d.metadata from chunks c join documents d on d.id = c.doc_id "
            f"where c.id in ({', '.join('?' * len(ids))})",
            ids,
        ).fetchall()
    by_id = {r["id"]: r for r in rows}
    return [
        Hit(
            chunk_id=f"{r['doc_id']}:{r['ordinal']}",
            doc_id=r["doc_id"],
            title=r["title"],
            source=r["source"],
            heading_path=json.loads(r["heading_path"]),
            text=r["text"],
            char_start=r["char_start"],
            char_end=r["char_end"],
            score=float(score),
            lexical_rank=lex_ranks.get(cid),
            vector_rank=vec_ranks.get(cid),
            metadata=json.loads(r["metadata"]),
        )
        for cid, score in ranked
        if (r := by_id.get(cid)) is not None
    ]
