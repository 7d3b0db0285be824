"""The demo corpus: the user guides only (never docs/dev or docs/benchmarks), in the `guides` collection that the
research agent is started on; `--docs DIR` goes into a collection of its own, never `default` (issue #9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client
from ragtune.agents.corpus import ROOT, CorpusError, choose_corpus, collection_for, retrieval_roots
from ragtune.agents.demo import services
from ragtune.servers.retrieval.server import build_server

from ragtune.config import AgentSettings, FinetuneSettings, RetrievalSettings


def test_the_default_corpus_is_the_user_guides_in_their_own_collection():
    corpus = choose_corpus(None)
    assert corpus.collection == "guides"
    assert [p.relative_to(ROOT).as_posix() for p in corpus.paths] == ["docs/guide", "docs/ko", "README.md"]


def test_a_docs_folder_gets_its_own_collection_and_root(tmp_path: Path):
    folder = tmp_path / "My Notes"
    folder.mkdir()
    corpus = choose_corpus(str(folder))
    assert corpus.collection == collection_for(folder) == "docs-My-Notes" and corpus.paths == (folder,)
    assert choose_corpus(str(folder), "team").collection == "team"
    assert retrieval_roots(corpus, None).split(",") == [str(ROOT), str(folder)]
    assert retrieval_roots(choose_corpus(None), None) == str(ROOT)
    with pytest.raises(CorpusError, match="no such file or folder"):
        choose_corpus(str(tmp_path / "missing"))
    with pytest.raises(CorpusError, match="1-64 letters"):
        choose_corpus(None, "bad name!")


def test_the_research_agent_is_started_on_the_corpus_collection():
    svcs = services(AgentSettings(), RetrievalSettings(), FinetuneSettings(), "docs-notes")
    (research,) = [s for s in svcs if s.name == "research-agent"]
    assert research.args[research.args.index("--collection") + 1] == "docs-notes"


async def test_ingesting_the_corpus_keeps_developer_and_benchmark_docs_out(tmp_path: Path):
    corpus = choose_corpus(None)
    settings = RetrievalSettings(home=tmp_path / "home", retrieval_roots=[ROOT], embedder="none")
    async with Client(build_server(settings)) as client:
        result = await client.call_tool(
            "retrieval_ingest_path", {"paths": [str(p) for p in corpus.paths], "collection": corpus.collection}
        )
        assert not result.is_error, result.content
        page = await client.call_tool("retrieval_list_documents", {"collection": "guides", "limit": 200})
        sources = {
            Path(d["source"]).resolve().relative_to(ROOT).as_posix() for d in page.structured_content["documents"]
        }
        listed = await client.call_tool("retrieval_list_collections", {})
    expected = {p.relative_to(ROOT).as_posix() for d in ("docs/guide", "docs/ko") for p in (ROOT / d).rglob("*.md")}
    assert sources == expected | {"README.md"}
    assert [c["name"] for c in listed.structured_content["collections"]] == ["guides"]  # nothing in `default`
