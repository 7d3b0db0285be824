"""Fixtures for the retrieval tests: settings rooted in tmp_path, a deterministic fake embedder, an index."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from ragtune.servers.retrieval.index import Index

from ragtune.config import RetrievalSettings

WORD = re.compile(r"\w+")


class FakeEmbedder:
    """Hashed bag of words: deterministic and instant, for plumbing tests only (never a default)."""

    def __init__(self, model_id: str = "fake-hash-64", dim: int = 64) -> None:
        self.model_id = model_id
        self.dim = dim
        self.languages = frozenset({"*"})
        self.calls = 0

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.full((len(texts), self.dim), 1e-3, dtype=np.float32)
        for row, text in enumerate(texts):
            for word in WORD.findall(text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    """A fresh fake embedder."""
    return FakeEmbedder()


@pytest.fixture
def docs_dir(tmp_path: Path) -> Path:
    """An allowed root with a Korean and an English markdown file."""
    root = tmp_path / "docs"
    root.mkdir()
    (root / "ko.md").write_text(
        "# 검색 안내\n\n검색 엔진은 형태소 분석으로 문서를 찾습니다. 조사가 붙어도 찾을 수 있어요.\n\n"
        "## 벡터\n\n벡터 검색은 의미가 비슷한 문장을 찾습니다.\n",
        encoding="utf-8",
    )
    (root / "en.md").write_text(
        "# Cooking pasta\n\nBoil the water, add salt, and cook the noodles for nine minutes.\n\n"
        "## Sauce\n\nTomatoes simmered with garlic make a simple sauce.\n",
        encoding="utf-8",
    )
    return root


@pytest.fixture
def retrieval_settings(tmp_path: Path, docs_dir: Path) -> RetrievalSettings:
    """Settings with a private home, `docs_dir` as the only root, small chunks and batches."""
    return RetrievalSettings(
        home=tmp_path / "home",
        retrieval_roots=[docs_dir],
        chunk_tokens=64,
        chunk_overlap=8,
        embed_batch_size=8,
        embedder="none",
    )


@pytest.fixture
def index(retrieval_settings: RetrievalSettings, fake_embedder: FakeEmbedder) -> Iterator[Index]:
    """An index over the fake embedder, closed after the test."""
    ix = Index.open(retrieval_settings, fake_embedder)
    yield ix
    ix.close()


def _row_counts(ix: Index) -> dict[str, int]:
    tables = ["documents", "chunks", "chunks_fts_docsize"]
    tables += [
        r[0]
        for r in ix.conn.execute("select name from sqlite_master where type = 'table' and name glob 'vec_[0-9]*'")
        if r[0].count("_") == 1
    ]
    return {t: ix.conn.execute(f"select count(*) from {t}").fetchone()[0] for t in tables}


@pytest.fixture
def row_counts() -> Callable[[Index], dict[str, int]]:
    """Count rows in every table a document touches, FTS and vec0 included (for 'nothing half-written')."""
    return _row_counts
