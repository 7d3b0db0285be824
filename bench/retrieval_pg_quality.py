"""Quality section of the PostgreSQL bench: the same queries through Index + search on SQLite and on PostgreSQL.

Two passes per set: lexical over the whole corpus (no embedder: cheap), and lexical / vector / hybrid over a
fixed-seed subsample with the embedder (every chunk must be embedded; passage vectors come from
bench/retrieval_cache.py's disk cache, so the second backend never re-embeds). Queries are the train queries.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ragtune.servers.retrieval.index import Index
from ragtune.servers.retrieval.models import SearchMode
from ragtune.servers.retrieval.search import search
from rich.console import Console
from rich.progress import track
from rich.table import Table

from bench.retrieval_cache import CachingEmbedder
from bench.retrieval_data import EvalSet
from bench.retrieval_metrics import evaluate
from bench.retrieval_pg_server import fresh_database
from ragtune.embeddings import Embedder

TARGET = 0.99  # PostgreSQL / SQLite nDCG@10 in every mode (issue #10)
Opener = Callable[[Embedder | None], Any]  # a context manager yielding an open Index


class QueryMemo:
    """Remember query vectors in memory, so each backend and mode embeds a query once (passages: the disk cache)."""

    def __init__(self, inner: CachingEmbedder) -> None:
        self.inner = inner
        self.model_id, self.dim, self.languages = inner.model_id, inner.dim, inner.languages
        self.memo: dict[str, np.ndarray] = {}

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Return remembered query vectors, embedding the new ones."""
        new = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if new:
            self.memo.update(zip(new, self.inner.embed_queries(new), strict=True))
        return np.stack([self.memo[t] for t in texts])

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Passages through the disk cache."""
        return self.inner.embed_passages(texts)

    def save(self) -> None:
        """Write newly embedded passages to the disk cache."""
        self.inner.save()


def sqlite_opener(embedder: Embedder | None) -> Any:
    """Open a fresh SQLite index in a temp folder."""
    return _sqlite(embedder)


class _sqlite:
    def __init__(self, embedder: Embedder | None) -> None:
        self.embedder = embedder

    def __enter__(self) -> Index:
        self.tmp = tempfile.TemporaryDirectory()
        self.index = Index.open(Path(self.tmp.name) / "bench.db", self.embedder)
        return self.index

    def __exit__(self, *exc: object) -> None:
        self.index.close()
        self.tmp.cleanup()


def postgres_opener(server_url: str) -> Opener:
    """Return an opener of a fresh PostgreSQL database (dropped on exit) on `server_url`."""

    class _pg:
        def __init__(self, embedder: Embedder | None) -> None:
            self.embedder = embedder

        def __enter__(self) -> Index:
            self.db = fresh_database(server_url, "quality")
            url = self.db.__enter__()
            self.index = Index.open(Path(tempfile.gettempdir()) / "unused.db", self.embedder, database_url=url)
            return self.index

        def __exit__(self, *exc: object) -> None:
            self.index.close()
            self.db.__exit__(None, None, None)

    return _pg


def backend_runs(
    data: EvalSet, embedder: Any, modes: Sequence[SearchMode], opener: Opener, label: str, console: Console
) -> tuple[dict[str, dict[str, list[str]]], dict[str, float]]:
    """Ingest the set into a fresh index of one backend, embed it, rank every query in each mode (docs deduped)."""
    timings: dict[str, float] = {}
    with opener(embedder) as index:
        index.create_collection(data.name)
        start = time.perf_counter()
        items = list(data.corpus.items())
        for doc_id, text in track(items, description=f"{label}: ingest {data.name}", console=console):
            index.ingest_text(text, collection=data.name, source=doc_id, title=data.titles.get(doc_id))
        timings["ingest_s"] = time.perf_counter() - start
        if embedder is not None:
            start = time.perf_counter()
            index.embed_pending()
            embedder.save()  # before searching, so a failed search never loses the embedding work
            timings["embed_s"] = time.perf_counter() - start
        runs: dict[str, dict[str, list[str]]] = {}
        for mode in modes:
            start = time.perf_counter()
            runs[mode] = {}
            for qid, query in track(list(data.queries.items()), description=f"{label}: {mode}", console=console):
                hits = search(index, query, collection=data.name, k=100, mode=mode).hits
                runs[mode][qid] = list(dict.fromkeys(h.source for h in hits))
            timings[f"{mode}_ms_per_query"] = (time.perf_counter() - start) * 1000 / max(1, len(data.queries))
    return runs, timings


def compare(
    data: EvalSet,
    embedder: Any,
    modes: Sequence[SearchMode],
    openers: dict[str, Opener],
    console: Console,
    note: str,
) -> list[dict[str, Any]]:
    """Score one set on every backend; one row per mode with both backends' scores and the ratio."""
    console.print(f"[bold]{data.name}[/bold] ({note}): {data.note}")
    scores: dict[str, dict[str, dict[str, float]]] = {}
    timing: dict[str, dict[str, float]] = {}
    overlap: dict[str, float] = {}
    runs_by: dict[str, dict[str, dict[str, list[str]]]] = {}
    if embedder is not None:  # every query embedded once up front, so no backend's timing carries it
        embedder.embed_queries(list(data.queries.values()))
    for backend, opener in openers.items():
        runs, timing[backend] = backend_runs(data, embedder, modes, opener, backend, console)
        runs_by[backend] = runs
        scores[backend] = {m: evaluate(runs[m], data.qrels) for m in modes}
    sqlite_runs, pg_runs = runs_by["sqlite"], runs_by["postgres"]
    for m in modes:  # share of queries whose top-10 documents are identical on both backends
        same = [sqlite_runs[m][q][:10] == pg_runs[m][q][:10] for q in data.queries]
        overlap[m] = sum(same) / max(1, len(same))
    rows = []
    for m in modes:
        s, p = scores["sqlite"][m], scores["postgres"][m]
        rows.append(
            {
                "set": data.name,
                "pass": note,
                "mode": m,
                "queries": len(data.queries),
                "docs": len(data.corpus),
                "sqlite_ndcg@10": s["ndcg@10"],
                "postgres_ndcg@10": p["ndcg@10"],
                "ratio_ndcg@10": p["ndcg@10"] / s["ndcg@10"] if s["ndcg@10"] else float("nan"),
                "sqlite_recall@100": s["recall@100"],
                "postgres_recall@100": p["recall@100"],
                "ratio_recall@100": p["recall@100"] / s["recall@100"] if s["recall@100"] else float("nan"),
                "same_top10": overlap[m],
                "sqlite_ms_per_query": timing["sqlite"][f"{m}_ms_per_query"],
                "postgres_ms_per_query": timing["postgres"][f"{m}_ms_per_query"],
                "sqlite_ingest_s": timing["sqlite"]["ingest_s"],
                "postgres_ingest_s": timing["postgres"]["ingest_s"],
                "sqlite_embed_s": timing["sqlite"].get("embed_s", 0.0),
                "postgres_embed_s": timing["postgres"].get("embed_s", 0.0),
            }
        )
    return rows


def print_quality(rows: list[dict[str, Any]], console: Console, embedder: str) -> None:
    """One table: each set, pass and mode with both backends side by side and the ratio against the target."""
    table = Table(title=f"PostgreSQL vs SQLite retrieval quality (train queries; vector/hybrid with {embedder})")
    cols = ("set", "pass", "mode", "q", "docs", "SQLite nDCG@10", "PG nDCG@10", "PG/SQLite", "SQLite R@100",
            "PG R@100", "PG/SQLite ", "same top-10", "ms/q SQLite", "ms/q PG", f"≥{TARGET}")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="left" if col in ("set", "pass", "mode") else "right")
    for r in rows:
        table.add_row(
            r["set"],
            r["pass"],
            r["mode"],
            str(r["queries"]),
            str(r["docs"]),
            f"{r['sqlite_ndcg@10']:.4f}",
            f"{r['postgres_ndcg@10']:.4f}",
            f"{r['ratio_ndcg@10']:.4f}",
            f"{r['sqlite_recall@100']:.4f}",
            f"{r['postgres_recall@100']:.4f}",
            f"{r['ratio_recall@100']:.4f}",
            f"{r['same_top10']:.1%}",
            f"{r['sqlite_ms_per_query']:.1f}",
            f"{r['postgres_ms_per_query']:.1f}",
            "met" if r["ratio_ndcg@10"] >= TARGET else "MISSED",
        )
    console.print(table)
