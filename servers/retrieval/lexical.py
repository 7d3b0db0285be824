"""bm25 top-k from FTS5 without scoring every chunk that shares a common word with the query (approximate at scale).

An OR-query containing a term found in many chunks (신청, 지원, patient) makes FTS5 compute bm25 for all of
them: ~160 ms p95 at 100k chunks. From MIN_ROWS chunks on, the query is split: FTS5 ranks the chunks matching the
rarer terms (few), the common terms' bm25 contributions are added for those candidates here (same formula, same
statistics as FTS5: row count and token totals from the FTS5 averages record, per-row sizes from docsize). The
result is provably the exact top-k only when the k-th score beats the best score any other chunk could reach (its
rare-term score plus the common terms' maximum contributions). That bound rarely holds, and with EXACT_ONLY off
(the default) the re-scored candidates are returned anyway: the ranking is then approximate, since chunks matching
only common terms can be missed. Below MIN_ROWS, or when the rare terms match fewer than k chunks, or the query has
no rare or no common term, the full OR-query runs and the top-k is exact.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

K1, B = 1.2, 0.75  # FTS5's bm25() constants
MIN_ROWS = 20_000  # below this the plain OR-query is fast enough (~17 ms p95 at 10k)
COMMON_RATIO = 0.05  # a term in more than this share of chunks is scored for candidates only
CANDIDATES = 300  # chunks fetched by the rare terms before the common terms are added
# When the bound fails, keep the re-scored candidates (True would run the full query instead). Measured with
# this forced on at every size (bench/retrieval.py --quality, 300 train queries): ko-welfare nDCG@10 unchanged,
# SciFact (5,183 docs) 0.7108 vs 0.7119; the exact-only variant fell back on ~90% of queries at 30k chunks.
EXACT_ONLY = False
SIMPLE_TERM = re.compile(r"^\w+$")

Ranker = Callable[[Sequence[str], int], list[tuple[int, float]]]


@dataclass(frozen=True)
class Split:
    """A query's terms split by document frequency, with the statistics bm25 needs."""

    rare: list[str]
    common: list[str]
    idf: dict[str, float]
    avgdl: float


def split_terms(
    conn: Any, terms: Sequence[str], *, min_rows: int | None = None, ratio: float | None = None
) -> Split | None:
    """Return the split, or None when the plain query is as good (small index, no common or no rare terms)."""
    min_rows = MIN_ROWS if min_rows is None else min_rows
    ratio = COMMON_RATIO if ratio is None else ratio
    if len(terms) < 2:
        return None
    n_rows, n_tokens = _averages(conn)
    if n_rows < min_rows or not n_tokens:
        return None
    df = dict(
        conn.execute(f"select term, doc from chunks_vocab where term in ({', '.join('?' * len(terms))})", list(terms))
    )
    common = [t for t in terms if df.get(t, 0) > ratio * n_rows]
    rare = [t for t in terms if t not in common]
    if not common or not rare or not all(SIMPLE_TERM.match(t) and t == t.lower() for t in common):
        return None
    idf = {t: max(math.log((n_rows - df[t] + 0.5) / (df[t] + 0.5)), 1e-6) for t in common}
    return Split(rare=rare, common=common, idf=idf, avgdl=n_tokens / n_rows)


def exact_top(
    conn: Any, split: Split, rank: Ranker, depth: int, weights: tuple[float, float]
) -> list[tuple[int, float]] | None:
    """Return (rowid, bm25) best first (FTS5's sign: lower is better), or None to run the full query instead.

    None comes back when the rare terms match fewer than `depth` chunks, or (EXACT_ONLY only) when the top-k is not
    provably exact; otherwise the re-scored candidates are returned, exact or not.
    """
    fetch = max(CANDIDATES, depth)
    partial = rank(split.rare, fetch)
    if len(partial) < depth:
        return None  # chunks matching only common terms could fill the list
    ids = [cid for cid, _ in partial]
    marks = ", ".join("?" * len(ids))
    texts = {
        r[0]: (r[1], r[2])
        for r in conn.execute(f"select id, lex_head, lex_body from chunks where id in ({marks})", ids)
    }
    sizes = {
        r[0]: sum(_varints(r[1]))
        for r in conn.execute(f"select id, sz from chunks_fts_docsize where id in ({marks})", ids)
    }
    scored = []
    for cid, score in partial:
        head, body = texts[cid]
        norm = K1 * (1 - B + B * sizes[cid] / split.avgdl)
        extra = 0.0
        for term in split.common:
            freq = weights[0] * _count(head, term) + weights[1] * _count(body, term)
            extra += split.idf[term] * freq * (K1 + 1) / (freq + norm)
        scored.append((cid, score - extra))
    scored.sort(key=lambda p: (p[1], p[0]))
    # Best score a chunk outside the candidates could reach: every common term's maximum contribution
    # (tf -> infinity, times the column weight), plus the weakest fetched rare-term score if the fetch was full.
    ceiling = sum(split.idf[t] * (K1 + 1) for t in split.common)
    if len(partial) == fetch:
        ceiling -= partial[-1][1]
    if EXACT_ONLY and -scored[depth - 1][1] <= ceiling + 1e-9:
        return None
    return scored[:depth]


def _count(text: str, term: str) -> int:
    """Occurrences of `term` as a whole space-separated token of an analysed column."""
    return f" {text.replace(' ', '  ')} ".count(f" {term} ")  # doubled spaces: adjacent repeats both count


def _averages(conn: Any) -> tuple[int, int]:
    """Read FTS5's averages record (rowid 1 of the data table): row count, then token totals per column."""
    row = conn.execute("select block from chunks_fts_data where id = 1").fetchone()
    if row is None:
        return 0, 0
    values = _varints(row[0])
    return (values[0], sum(values[1:])) if values else (0, 0)


def _varints(blob: bytes) -> list[int]:
    """Decode SQLite/FTS5 varints (big-endian 7-bit groups; a ninth byte carries 8 bits)."""
    out, i = [], 0
    while i < len(blob):
        value = 0
        for j in range(9):
            byte = blob[i]
            i += 1
            if j == 8:
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        out.append(value)
    return out
