"""Two-stage lexical ranking: FTS5's own bm25 for rare terms plus common-term contributions computed here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ragtune.servers.retrieval.lexical as lexical
from ragtune.servers.retrieval.index import Index
from ragtune.servers.retrieval.search import HEAD_WEIGHT, search

FULL = (
    "select c.id, bm25(chunks_fts, 1.0, 1.0) from chunks_fts cross join chunks c on c.id = chunks_fts.rowid "
    "where chunks_fts match ? order by 2, c.id limit ?"
)


@pytest.fixture
def ix(tmp_path: Path) -> Iterator[Index]:
    """An index where 'river' is in every document, 'lake' in a third, and each document has rare words."""
    index = Index.open(tmp_path / "l.db", None)
    for i in range(60):
        extra = " lake lake" if i % 3 == 0 else ""
        index.ingest_text(
            f"River report {i}. The river flows{extra}; zq{chr(97 + i % 20)}x and gq{chr(97 + i % 7)}x river.",
            source=f"r{i}.md",
            title=f"Report {i}",
        )
    yield index
    index.close()


def _rank(ix: Index):  # noqa: ANN202 - the Ranker the search module passes
    def rank(words: list[str], limit: int) -> list[tuple[int, float]]:
        query = " OR ".join(f'"{w}"' for w in words)
        return [(r[0], r[1]) for r in ix.conn.execute(FULL, (query, limit))]

    return rank


def test_the_averages_record_matches_the_table(ix: Index) -> None:
    rows, tokens = lexical._averages(ix.conn)
    assert rows == ix.conn.execute("select count(*) from chunks").fetchone()[0] == 60
    total = sum(len(h.split()) + len(b.split()) for h, b in ix.conn.execute("select lex_head, lex_body from chunks"))
    assert tokens == total
    assert lexical._varints(bytes([0x81, 0x00, 0x05])) == [128, 5]


def test_rescored_candidates_carry_fts5s_own_full_query_scores(ix: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexical, "CANDIDATES", 100)  # every rare-term match is a candidate
    terms = ["river", "lake", "zqdx"]
    split = lexical.split_terms(ix.conn, terms, min_rows=0, ratio=0.1)
    assert split is not None and split.common == ["river", "lake"] and split.rare == ["zqdx"]
    top = lexical.exact_top(ix.conn, split, _rank(ix), 3, (HEAD_WEIGHT, 1.0))
    full = dict(_rank(ix)(terms, 1000))
    assert top is not None and len(top) == 3
    for cid, score in top:
        assert score == pytest.approx(full[cid], rel=1e-9)
    # Candidates are the rare-term matches, ordered by the full score: lake+zqdx chunks first.
    assert [cid for cid, _ in top] == sorted((c for c, _ in top), key=lambda c: (full[c], c))


def test_exact_only_returns_the_full_top_k_or_falls_back(ix: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexical, "EXACT_ONLY", True)
    terms = ["river", "zqdx", "zqex", "gqcx"]
    split = lexical.split_terms(ix.conn, terms, min_rows=0, ratio=0.1)
    assert split is not None
    top = lexical.exact_top(ix.conn, split, _rank(ix), 3, (HEAD_WEIGHT, 1.0))
    if top is not None:  # proven exact: identical to FTS5 over the whole query
        assert [c for c, _ in top] == [c for c, _ in _rank(ix)(terms, 3)]
    assert lexical.exact_top(ix.conn, split, _rank(ix), 50, (HEAD_WEIGHT, 1.0)) is None  # too few rare matches


def test_small_indexes_and_common_only_queries_keep_the_plain_query(ix: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    assert lexical.split_terms(ix.conn, ["river", "zqdx"]) is None  # 60 rows < MIN_ROWS
    monkeypatch.setattr(lexical, "MIN_ROWS", 0)
    monkeypatch.setattr(lexical, "COMMON_RATIO", 0.1)
    assert lexical.split_terms(ix.conn, ["river", "lake"]) is None  # no rare term: nothing to prune
    hits = search(ix, "river lake", mode="lexical", k=10).hits
    assert len(hits) == 10 and all("lake" in h.text for h in hits)
    pruned = search(ix, "river zqdx gqcx", mode="lexical", k=5).hits
    assert len(pruned) == 5 and "zqdx" in pruned[0].text
