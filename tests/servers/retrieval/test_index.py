"""The index end to end with a fake embedder: ingest, search modes, filters, replacement, atomicity."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from ragtune.servers.retrieval.errors import (
    BadQuery,
    CollectionExists,
    EmbedderMismatch,
    UnknownCollection,
    UnknownDocument,
)
from ragtune.servers.retrieval.filters import FilterError
from ragtune.servers.retrieval.index import Index
from ragtune.servers.retrieval.ingest import ingest_paths
from ragtune.servers.retrieval.korean import Analyzer
from ragtune.servers.retrieval.search import search

from .conftest import FakeEmbedder

Counts = Callable[[Index], dict[str, int]]


def test_korean_question_with_particles_finds_the_noun_through_kiwi(index: Index) -> None:
    index.ingest_text("검색 기능은 문서를 빠르게 찾아 줍니다.", source="search.md")
    index.ingest_text("날씨가 맑고 바람이 붑니다.", source="weather.md")
    result = search(index, "검색을 어떻게 쓰나요?", mode="lexical")
    assert [h.source for h in result.hits] == ["search.md"]
    # Whitespace tokens would not match: "검색을" never occurs in the document.
    assert "검색을" not in result.hits[0].text


def test_ingest_search_delete_search(index: Index, row_counts: Counts) -> None:
    report = index.ingest_text("# Pasta\n\nBoil water and cook noodles.", source="pasta.md")
    assert report.status == "added" and report.chunks == 1
    hit = search(index, "cooking noodles", mode="lexical").hits[0]
    assert hit.doc_id == report.doc_id and hit.lexical_rank == 1 and hit.heading_path == ["Pasta"]
    doc = index.get_document(report.doc_id)
    assert doc.text[hit.char_start : hit.char_end] == hit.text
    index.embed_pending()
    assert row_counts(index)["vec_64"] == 1
    index.delete_document(report.doc_id)
    assert search(index, "cooking noodles", mode="lexical").hits == []
    assert search(index, "cooking noodles", mode="vector").hits == []
    assert row_counts(index) == {"documents": 0, "chunks": 0, "chunks_fts_docsize": 0, "vec_64": 0}
    with pytest.raises(UnknownDocument, match="list documents"):
        index.delete_document(report.doc_id)


def test_reingesting_the_same_content_is_a_noop_and_says_so(index: Index, row_counts: Counts) -> None:
    first = index.ingest_text("같은 내용입니다.", source="same.md")
    before = row_counts(index)
    again = index.ingest_text("같은 내용입니다.", source="same.md")
    assert (first.status, again.status) == ("added", "unchanged")
    assert row_counts(index) == before


def test_a_changed_file_replaces_its_chunks(index: Index, docs_dir: Path, row_counts: Counts) -> None:
    path = docs_dir / "ko.md"
    first = ingest_paths(index, [path])
    index.embed_pending()
    path.write_text("# 새 문서\n\n완전히 바뀐 내용입니다.\n", encoding="utf-8")
    second = ingest_paths(index, [path])
    assert (first.added, second.replaced) == (1, 1)
    assert search(index, "형태소", mode="lexical").hits == []
    assert search(index, "바뀐 내용", mode="lexical").hits[0].source == "ko.md"
    counts = row_counts(index)
    assert counts["documents"] == 1 and counts["chunks"] == counts["chunks_fts_docsize"] == 1
    assert counts["vec_64"] == 0, "old vectors went with the old chunks"
    assert index.coverage().embedded == 0 and index.pending_count() == 1


def test_a_crash_mid_document_leaves_the_old_version_whole(
    index: Index, monkeypatch: pytest.MonkeyPatch, row_counts: Counts
) -> None:
    long_text = "\n\n".join(f"Paragraph {i} about apples and oranges." * 5 for i in range(6))
    index.ingest_text(long_text, source="fruit.md")
    before = row_counts(index)
    calls = {"n": 0}
    real = Analyzer.lexical

    def flaky(self: Analyzer, text: str) -> str:
        calls["n"] += 1
        return None if calls["n"] == 5 else real(self, text)  # type: ignore[return-value]

    monkeypatch.setattr(Analyzer, "lexical", flaky)
    with pytest.raises(Exception, match="NOT NULL"):
        index.ingest_text(long_text + "\n\nA new closing paragraph.", source="fruit.md")
    assert row_counts(index) == before
    assert "closing" not in index.get_document(index.list_documents().documents[0].doc_id).text


def test_hybrid_fuses_both_signals_and_reports_ranks(index: Index) -> None:
    index.ingest_text("Tomato sauce with garlic.", source="sauce.md")
    index.ingest_text("Boil noodles in salted water.", source="noodles.md")
    lexical_only = search(index, "garlic tomato")
    assert lexical_only.signals == ["lexical"] and "no vectors yet" in lexical_only.skipped["vector"]
    index.embed_pending()
    result = search(index, "garlic tomato", k=2)
    assert result.signals == ["lexical", "vector"] and result.skipped == {}
    assert result.coverage.embedded == result.coverage.total == 2
    top = result.hits[0]
    assert top.source == "sauce.md" and top.lexical_rank == 1 and top.vector_rank == 1
    assert search(index, "garlic tomato", weight=0.0, k=2).weight == 0.0


def test_every_chunk_is_embedded_with_its_document_title(index: Index) -> None:
    body = "\n\n".join(f"Paragraph {i} talks about fins, tails and cells growing back." for i in range(12))
    report = index.ingest_text(body, source="fish.md", title="Zebrafish regeneration")
    index.ingest_text("Mice regrow hair follicles after wounding.", source="mice.md", title="Mouse skin")
    assert report.chunks > 2
    index.embed_pending()
    hits = search(index, "zebrafish", mode="vector", k=report.chunks).hits
    # Only the title says "zebrafish": every chunk of the document outranks the other document.
    assert [h.source for h in hits] == ["fish.md"] * report.chunks
    assert all("Zebrafish" not in h.text and body[h.char_start : h.char_end] == h.text for h in hits)


def test_filters_apply_inside_the_ranking_so_k_results_come_back(index: Index) -> None:
    for year in range(2015, 2025):
        index.ingest_text(
            f"Report about rivers and lakes, edition {year}.",
            source=f"r{year}.md",
            metadata={"year": year, "lang": "en", "date": f"{year}-06-01"},
        )
    index.embed_pending()
    for mode in ("lexical", "vector", "hybrid"):
        result = search(index, "rivers lakes", k=3, mode=mode, filters={"year": {"gte": 2020}})  # type: ignore[arg-type]
        assert len(result.hits) == 3, mode
        assert all(h.metadata["year"] >= 2020 for h in result.hits), mode
    only = search(index, "rivers", k=5, filters={"source": "r2016.md"})
    assert [h.source for h in only.hits] == ["r2016.md"]
    dated = search(index, "rivers", k=10, filters={"date": {"lt": "2017-01-01"}, "lang": {"in": ["en", "ko"]}})
    assert sorted(h.metadata["year"] for h in dated.hits) == [2015, 2016]


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"query": "  "}, BadQuery, "query is empty"),
        ({"query": "x", "collection": "nope"}, UnknownCollection, "unknown collection 'nope'"),
        ({"query": "x", "filters": {"year": {"gte": [1]}}}, FilterError, "string, number or boolean"),
        ({"query": "x", "mode": "fuzzy"}, BadQuery, "unknown mode"),
        ({"query": "x", "weight": 2}, BadQuery, r"\[0, 1\]"),
        ({"query": "the of", "mode": "lexical"}, BadQuery, "no searchable words"),
    ],
)
def test_bad_search_arguments_are_clear_errors(index: Index, kwargs: dict, error: type, fragment: str) -> None:
    index.ingest_text("something", source="s.md")
    with pytest.raises(error, match=fragment):
        search(index, **kwargs)


def test_another_embedder_on_the_same_collection_is_refused(index: Index, row_counts: Counts) -> None:
    index.ingest_text("Vectors from the first embedder.", source="v.md")
    index.embed_pending()
    other = Index(index.conn, index.config, FakeEmbedder("other-model", 32))
    # Each collection uses its own embedder: one this process cannot load leaves hybrid lexical, with the reason.
    hybrid = search(other, "vectors")
    assert hybrid.signals == ["lexical"]
    assert re.search(r"built with fake-hash-64 \(dim 64\).*other-model \(dim 32\)", hybrid.skipped["vector"])
    with pytest.raises(EmbedderMismatch, match="mode='lexical'"):
        search(other, "vectors", mode="vector")
    before = row_counts(index)
    other.ingest_text("more text", source="w.md")  # searchable lexically; its vector waits for fake-hash-64
    assert row_counts(index)["vec_64"] == before["vec_64"]
    assert search(other, "more text", mode="lexical").hits, "lexical search still works"
    assert other.pending_count() == 0 and other.embed_pending() == 0, "it never embeds another model's collection"
    assert index.embed_pending() == 1, "a process with the collection's embedder fills it"


def test_collections_record_the_embedder_and_count_documents(index: Index, row_counts: Counts) -> None:
    info = index.create_collection("notes")
    assert (info.embedder_model, info.dim, info.languages) == ("fake-hash-64", 64, ["*"])
    with pytest.raises(CollectionExists):
        index.create_collection("notes")
    index.ingest_text("one", source="1", collection="notes")
    index.ingest_text("two", source="2", collection="notes")
    [notes] = [c for c in index.list_collections() if c.name == "notes"]
    assert (notes.documents, notes.chunks) == (2, 2)
    page = index.list_documents("notes", offset=0, limit=1)
    assert page.total == 2 and page.next_offset == 1 and len(page.documents) == 1
    assert index.list_documents("notes", offset=1, limit=1).next_offset is None
    index.embed_pending()
    assert row_counts(index)["vec_64"] == 2
    assert index.delete_collection("notes") == 2
    assert "notes" not in [c.name for c in index.list_collections()]
    assert row_counts(index) == {"documents": 0, "chunks": 0, "chunks_fts_docsize": 0, "vec_64": 0}


def test_lexical_only_index_searches_without_vectors(retrieval_settings: object) -> None:
    ix = Index.open(retrieval_settings, None)  # type: ignore[arg-type]
    try:
        ix.ingest_text("plain lexical text", source="p.md")
        result = search(ix, "lexical")
        assert result.signals == ["lexical"] and "RAGTUNE_EMBEDDER=none" in result.skipped["vector"]
        with pytest.raises(BadQuery, match="use mode='lexical'"):
            search(ix, "lexical", mode="vector")
    finally:
        ix.close()


def test_hybrid_skips_vectors_for_a_language_the_embedder_does_not_cover(index: Index) -> None:
    english_only = FakeEmbedder()
    english_only.languages = frozenset({"en"})
    ix = Index(index.conn, index.config, english_only)
    ix.ingest_text("검색 문서와 search document", source="mixed.md")
    ix.embed_pending()
    korean = search(ix, "검색을 해요")
    assert korean.query_language == "ko" and korean.signals == ["lexical"]
    assert "does not cover the query language (ko)" in korean.skipped["vector"]
    assert search(ix, "search documents").signals == ["lexical", "vector"]


def test_weight_one_ranks_by_vectors_alone(index: Index) -> None:
    for n, text in enumerate(["apple banana", "apple apple cherry", "banana cherry date", "apple date"]):
        index.ingest_text(text, source=f"{n}.md")
    index.embed_pending()
    vector = [h.chunk_id for h in search(index, "apple cherry", mode="vector", k=4).hits]
    fused = search(index, "apple cherry", weight=1.0, k=4)
    assert [h.chunk_id for h in fused.hits][: len(vector)] == vector
    assert [h.vector_rank for h in fused.hits] == [1, 2, 3, 4]


def test_counts_see_writes_from_another_connection(index: Index, retrieval_settings: object) -> None:
    assert index.coverage().total == 0
    other = Index.open(retrieval_settings, index.embedder)  # type: ignore[arg-type]
    try:
        other.ingest_text("written by another process", source="o.md")
    finally:
        other.close()
    assert index.coverage().total == 1


def test_sqlite_utils_cli_counts_the_index_tables_with_sqlite_vec_loaded(index: Index) -> None:
    index.ingest_text("# Pasta\n\nBoil water and cook noodles.", source="pasta.md")
    index.embed_pending()
    cli = Path(sys.executable).with_name("sqlite-utils")
    vec = subprocess.run(
        [sys.executable, "-c", "import sqlite_vec; print(sqlite_vec.loadable_path())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    shown = subprocess.run(
        [cli, "tables", str(index.config.db_path), "--counts", "--load-extension", vec],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    counts = {t["table"]: t["count"] for t in json.loads(shown.stdout)}
    assert counts["documents"] == 1 and counts["chunks"] == 1 and counts[f"vec_{index.embedder.dim}"] == 1
