"""The in-memory vector matrix answers exactly like sqlite-vec's vec0 scan and stays in sync with the file."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from ragtune.servers.retrieval.index import Index
from ragtune.servers.retrieval.search import search


class RandomEmbedder:
    """Random unit vectors seeded by the text: distinct, tie-free scores for exact-ranking comparisons."""

    model_id = "random-32"
    dim = 32
    languages = frozenset({"*"})

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        out = [
            np.random.default_rng(int(hashlib.md5(t.encode()).hexdigest()[:8], 16)).standard_normal(self.dim)
            for t in texts
        ]
        return np.asarray(out, dtype=np.float32)

    embed_queries = embed_passages = _embed


def _ingest(ix: Index, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        ix.ingest_text(f"note {i} about topic {i % 7}", source=f"d{i}.md", metadata={"group": i % 3})
    ix.embed_pending()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Index, Index]]:
    """Two indexes on one file: the first answers from memory, the second (no cache budget) from vec0."""
    cached = Index.open(tmp_path / "v.db", RandomEmbedder(), embed_batch=64)
    plain = Index.open(tmp_path / "v.db", RandomEmbedder(), vector_cache_mb=0)
    yield cached, plain
    cached.close()
    plain.close()


def _ids(ix: Index, query: str, k: int, filters: dict | None = None) -> list[tuple[str, float]]:
    return [
        (h.chunk_id, round(h.score, 4))
        for h in search(ix, query, collection="default", k=k, mode="vector", filters=filters).hits
    ]


def test_cached_knn_matches_vec0_ids_order_and_distances(pair: tuple[Index, Index]) -> None:
    cached, plain = pair
    _ingest(cached, 150)
    for q in ("alpha", "beta gamma", "note 12", "topic 3"):
        assert _ids(cached, q, 20) == _ids(plain, q, 20)
    assert cached.vectors.used_bytes() > 150 * 32 * 4  # answered from memory
    assert plain.vectors.used_bytes() == 0  # the budget of 0 MB sends every search to vec0


def test_filters_restrict_the_matrix_so_k_results_come_back(pair: tuple[Index, Index]) -> None:
    cached, plain = pair
    _ingest(cached, 90)
    hits = search(cached, "alpha", k=10, mode="vector", filters={"group": 2}).hits
    assert len(hits) == 10 and all(h.metadata["group"] == 2 for h in hits)
    assert _ids(cached, "alpha", 10, {"group": 2}) == _ids(plain, "alpha", 10, {"group": 2})
    rare = search(cached, "alpha", k=5, mode="vector", filters={"source": "d7.md"}).hits
    assert [h.source for h in rare] == ["d7.md"]


def test_writes_from_another_index_on_the_same_file_are_seen(pair: tuple[Index, Index]) -> None:
    cached, other = pair
    _ingest(cached, 30)
    query = "note 40 about topic 5"  # the exact text of d40's chunk: its vector is the query's
    assert "d40.md" not in [h.source for h in search(cached, query, k=5, mode="vector").hits]
    other.ingest_text("note 40 about topic 5", source="d40.md")
    other.embed_pending()
    assert search(cached, query, k=1, mode="vector").hits[0].source == "d40.md"
    doc_id = search(cached, query, k=1, mode="vector").hits[0].doc_id
    other.delete_document(doc_id)
    assert "d40.md" not in [h.source for h in search(cached, query, k=5, mode="vector").hits]
    assert _ids(cached, "beta", 10) == _ids(other, "beta", 10)


def test_own_writes_update_the_matrix_in_place(pair: tuple[Index, Index]) -> None:
    cached, plain = pair
    _ingest(cached, 20)
    search(cached, "alpha", k=3, mode="vector")  # load
    _ingest(cached, 20, start=20)  # appended after each commit, no reload
    doc = search(cached, "note 25 about topic 4", k=1, mode="vector").hits[0]
    assert doc.source == "d25.md"
    cached.delete_document(doc.doc_id)
    cached.ingest_text("note 3 about topic 3, edited", source="d3.md", metadata={"group": 0})
    cached.embed_pending()
    assert "d25.md" not in [h.source for h in search(cached, "note 25 about topic 4", k=5, mode="vector").hits]
    assert _ids(cached, "gamma", 39) == _ids(plain, "gamma", 39)
    cached.delete_collection("default")
    assert cached.vectors.used_bytes() == 0
