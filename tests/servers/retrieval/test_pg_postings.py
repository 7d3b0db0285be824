"""The PostgreSQL store's impact-ordered postings (stores/postgres_lexical.py) on a real PostgreSQL.

The early-termination path is forced on a small corpus by lowering its thresholds: it must rank the same top-10 as
the exact bm25 query; postings must follow every write, replace and delete exactly; and a database written before
the postings existed is migrated with its postings backfilled, equal to what writes produce.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ragtune.servers.retrieval.index import Index, IndexConfig
from ragtune.servers.retrieval.search import search
from ragtune.servers.retrieval.stores import postgres as pgstore
from ragtune.servers.retrieval.stores import postgres_lexical as postings

from ragtune import pg

WORDS = (
    "river lake water sand sea stone bridge garden tomato garlic pasta sauce salt noodle boil simmer autumn sun "
    "planting harvest welfare service office form identity search engine vector morpheme sentence document "
    "ranking fusion model tuning adapter dataset".split()
)
QUERIES = [
    "river water sand",
    "garden tomato garlic harvest",
    "pasta sauce salt",
    "search engine ranking fusion",
    "welfare service office form",
    "water",
    "model tuning dataset adapter vector",
]


def _corpus(n: int = 160, seed: int = 7) -> dict[str, str]:
    """Deterministic documents of Zipf-distributed words: common and rare terms, varied lengths and frequencies."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(WORDS) + 1) ** 0.8
    p /= p.sum()
    return {f"doc{i:03d}.md": " ".join(rng.choice(WORDS, size=int(rng.integers(8, 40)), p=p)) for i in range(n)}


def _open(url: str, tmp_path: Path) -> Index:
    config = IndexConfig(db_path=tmp_path / "unused.db", database_url=url, chunk_tokens=64, chunk_overlap=8)
    return Index.open(config, None)


def _fill(ix: Index, corpus: dict[str, str]) -> None:
    for source, text in corpus.items():
        ix.ingest_text(text, source=source, metadata={"n": len(text)})


def _top(ix: Index, query: str, k: int = 10, filters: dict[str, Any] | None = None) -> list[tuple[str, float]]:
    return [(h.chunk_id, round(h.score, 6)) for h in search(ix, query, k=k, mode="lexical", filters=filters).hits]


def _force_impact_path(monkeypatch: pytest.MonkeyPatch, per_term: int, rescore: int) -> list[int]:
    """Lower the thresholds so every query takes the impact path; return a list that counts its uses."""
    monkeypatch.setattr(pgstore, "MIN_ROWS", 10)
    monkeypatch.setattr(pgstore, "MATCH_BUDGET", 10)
    monkeypatch.setattr(postings, "POSTINGS", per_term)
    monkeypatch.setattr(postings, "RESCORE", rescore)
    used: list[int] = []
    real = postings.impact_sql

    def counted(*args: str) -> str:
        used.append(1)
        return real(*args)

    monkeypatch.setattr(postings, "impact_sql", counted)
    return used


def _postings_drift(conn: Any) -> list[Any]:
    """Postings that differ from a recomputation from the chunks (the migration's backfill; empty: exact)."""
    conn.execute("create temp table expected (term integer, impact real, chunk_id bigint)")
    conn.execute(postings.BACKFILL.replace("insert into lex_post", "insert into expected"))
    drift = conn.execute(
        "(select term, impact, chunk_id, 'missing' from expected except all select term, impact, chunk_id, 'missing' "
        "from lex_post) union all (select term, impact, chunk_id, 'extra' from lex_post except all "
        "select term, impact, chunk_id, 'extra' from expected)"
    ).fetchall()
    conn.execute("drop table expected")
    return drift


def _postings_by_name(conn: Any) -> list[tuple[str, str, float, int]]:
    return conn.execute(
        "select l.collection, l.term, p.impact, p.chunk_id from lex_post p join lex_df l on l.id = p.term "
        "order by 1, 2, 4"
    ).fetchall()


def test_impact_path_ranks_the_exact_top_10(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ix = _open(pg_url, tmp_path)
    try:
        _fill(ix, _corpus())
        exact = {q: _top(ix, q) for q in QUERIES}
        half, few = {"n": {"gte": 120}}, {"n": {"gte": 220}}  # 108 and 15 of the 160 documents
        exact_half = {q: _top(ix, q, filters=half) for q in QUERIES}
        exact_few = {q: _top(ix, q, filters=few) for q in QUERIES}
        assert all(len(hits) == 10 for hits in (*exact.values(), *exact_half.values()))
        assert sum(len(hits) == 10 for hits in exact_few.values()) >= 4, "the selective filter still leaves answers"
        used = _force_impact_path(monkeypatch, per_term=80, rescore=80)  # about half of river, lake, water
        assert {q: _top(ix, q) for q in QUERIES} == exact, "same chunks, same order, same bm25 scores"
        assert len(used) == len(QUERIES), "every query took the impact-ordered path"
        used.clear()
        assert {q: _top(ix, q, filters=half) for q in QUERIES} == exact_half, "a filter keeping half: same top-10"
        assert len(used) == len(QUERIES)
        firsts: list[bool] = []  # per filtered query past the impact path: did the filter-first path answer it?
        real_first = pgstore.PostgresStore._filter_first

        def counted_first(self: Any, *args: Any) -> Any:
            out = real_first(self, *args)
            firsts.append(out is not None)
            return out

        monkeypatch.setattr(pgstore.PostgresStore, "_filter_first", counted_first)
        assert {q: _top(ix, q, filters=few) for q in QUERIES} == exact_few, "a selective filter: exact, filter first"
        assert len(firsts) == len(QUERIES) and all(firsts), "the 5 % filter's chunks were all scored"
        firsts.clear()
        monkeypatch.setattr(pgstore, "FILTER_BUDGET", 0)  # the filter now keeps too many: the rarest terms pick
        for q in QUERIES:
            hits = search(ix, q, k=10, mode="lexical", filters=few).hits
            assert all(h.metadata["n"] >= 220 for h in hits) and bool(hits) == bool(exact_few[q])
        assert len(firsts) == len(QUERIES) and not any(firsts)
        # The path really stops early: five postings per term and ten rescored chunks no longer find the exact top-10
        # (a query whose postings give fewer than ten chunks runs the full query).
        _force_impact_path(monkeypatch, per_term=5, rescore=10)
        assert {q: _top(ix, q) for q in QUERIES} != exact
    finally:
        ix.close()


def test_postings_follow_writes_replaces_and_deletes(pg_url: str, tmp_path: Path) -> None:
    ix = _open(pg_url, tmp_path)
    try:
        corpus = _corpus(40)
        _fill(ix, corpus)
        ix.create_collection("other")
        ix.ingest_text("river river lake in another collection", collection="other", source="o.md")
        conn = ix.store._conn()
        assert conn.execute("select count(*) from lex_post").fetchone()[0] > 200
        assert _postings_drift(conn) == []
        for i, source in enumerate(list(corpus)[:10]):  # replace: old postings go, new ones come
            ix.ingest_text(f"replaced text {i} about stone bridge harvest", source=source)
        for doc in ix.list_documents(limit=5).documents:
            ix.delete_document(doc.doc_id)
        assert _postings_drift(conn) == [], "no stale or missing posting after replaces and deletes"
        ix.delete_collection("other")
        assert _postings_drift(conn) == []
        assert (
            conn.execute(
                "select count(*) from lex_post p where not exists (select 1 from lex_df l where l.id = p.term)"
            ).fetchone()[0]
            == 0
        )
    finally:
        ix.close()


def test_migration_backfills_postings_of_an_older_database(
    new_pg_database: Callable[[], AbstractContextManager[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = _corpus(60, seed=11)
    with new_pg_database() as new_url, new_pg_database() as old_url:
        current = _open(new_url, tmp_path)
        _fill(current, corpus)
        # The older schema (the migrations before the postings), holding the same rows the older store wrote.
        with pg.connect(old_url) as old, pg.connect(new_url) as src:
            pg.migrate(old, pgstore.COMPONENT, pgstore.MIGRATIONS[: pgstore.MIGRATIONS.index(postings.MIGRATION)])
            assert old.execute("select to_regclass('lex_post')").fetchone()[0] is None
            for table, cols in (
                ("collections", "name, embedder_model, dim, languages, created_at, generation, n_chunks, n_embedded, "
                 "n_tokens"),
                ("documents", "id, doc_id, collection, source, title, content_hash, text, metadata, created_at, "
                 "updated_at"),
                ("chunks", "id, doc_id, collection, ordinal, text, heading_path, char_start, char_end, lex_head, "
                 "lex_body, lex_terms, lex_tf, n_tokens, embedded, claimed_until, claimed_by"),
                ("lex_df", "collection, term, df"),
            ):  # fmt: skip
                with src.cursor().copy(f"copy {table}({cols}) to stdout (format binary)") as out:
                    with old.cursor().copy(f"copy {table}({cols}) from stdin (format binary)") as into:
                        for block in out:
                            into.write(block)
        migrated = _open(old_url, tmp_path)
        try:
            conn = migrated.store._conn()
            version = conn.execute("select version from ragtune_schema where component = 'index'").fetchone()[0]
            assert version == len(pgstore.MIGRATIONS)
            assert _postings_drift(conn) == [], "every term of every chunk has its posting"
            n_postings = conn.execute("select count(*) from lex_post").fetchone()[0]
            assert n_postings == len(_postings_by_name(current.store._conn())) > 500
            ref, avg = conn.execute("select lex_ref_len, n_tokens::float8 / n_chunks from collections").fetchone()
            assert ref == avg, "a migrated collection's reference length is its mean chunk length"
            exact = {q: _top(current, q) for q in QUERIES}
            _force_impact_path(monkeypatch, per_term=80, rescore=80)
            assert {q: _top(migrated, q) for q in QUERIES} == exact
            # Backfilled postings are found by key: deleting and replacing documents leaves none behind.
            for doc in migrated.list_documents(limit=4).documents:
                migrated.delete_document(doc.doc_id)
            migrated.ingest_text("a new document about river harvest", source=list(corpus)[10])
            assert _postings_drift(conn) == []
        finally:
            migrated.close()
            current.close()
