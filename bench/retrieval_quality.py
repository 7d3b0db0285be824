"""Quality section: lexical, vector and hybrid through the retrieval index vs bm25s in the same process."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bm25s
import Stemmer
from rich.console import Console
from rich.progress import track
from rich.table import Table

from bench.retrieval_cache import CachingEmbedder
from bench.retrieval_data import EvalSet
from bench.retrieval_metrics import evaluate
from ragtune.config import RetrievalSettings
from ragtune.embeddings import make_embedder
from servers.retrieval.index import Index
from servers.retrieval.models import SearchMode

KIWI_TAGS = ("NN", "VV", "VA", "XR", "SL", "SN", "SH", "MAG", "NR", "NP")  # the notes' tag set
TARGETS = {("ko-welfare", "lexical"): 0.99, ("scifact", "hybrid"): 1.03}


def bm25s_run(data: EvalSet) -> dict[str, list[str]]:
    """The baseline: bm25s Lucene k1=1.5 b=0.75, Kiwi morphemes (Korean) or stopwords + Snowball (English)."""
    doc_ids = list(data.corpus)
    tokenize = _kiwi_tokenizer() if data.lang == "ko" else _english_tokenizer()
    retriever = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    retriever.index(tokenize([data.corpus[d] for d in doc_ids]), show_progress=False)
    qids = list(data.queries)
    results, _ = retriever.retrieve(
        tokenize([data.queries[q] for q in qids]), k=min(100, len(doc_ids)), show_progress=False, n_threads=1
    )
    return {q: [doc_ids[j] for j in row] for q, row in zip(qids, results, strict=True)}


def _kiwi_tokenizer() -> Any:
    from kiwipiepy import Kiwi

    kiwi = Kiwi(num_workers=1)

    def tokenize(texts: Sequence[str]) -> list[list[str]]:
        return [
            [t.form.lower() for t in kiwi.tokenize(x) if t.tag.startswith(KIWI_TAGS)] or ["∅"] for x in texts
        ]

    return tokenize


def _english_tokenizer() -> Any:
    stemmer = Stemmer.Stemmer("english")

    def tokenize(texts: Sequence[str]) -> Any:
        return bm25s.tokenize(list(texts), stopwords="en", stemmer=stemmer, show_progress=False)

    return tokenize


def index_runs(
    data: EvalSet, embedder: Any, modes: Sequence[tuple[str, SearchMode, float]], console: Console
) -> tuple[dict[str, Any], dict[str, float]]:
    """Ingest the corpus into a fresh index, embed it, and rank every query in each mode (docs deduplicated)."""
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        index = Index.open(Path(tmp) / "bench.db", embedder)
        start = time.perf_counter()
        for doc_id, text in track(
            list(data.corpus.items()), description=f"ingest {data.name}", console=console
        ):
            index.ingest_text(text, collection=data.name, source=doc_id, title=data.titles.get(doc_id))
        timings["ingest_s"] = time.perf_counter() - start
        start = time.perf_counter()
        if embedder is not None:
            index.embed_pending()
        timings["embed_s"] = time.perf_counter() - start
        runs: dict[str, Any] = {}
        for label, mode, weight in modes:
            runs[label] = {}
            for qid, query in track(
                list(data.queries.items()), description=f"{label} {data.name}", console=console
            ):
                hits = index.search(query, collection=data.name, k=100, mode=mode, weight=weight).hits
                runs[label][qid] = list(dict.fromkeys(h.source for h in hits))
        index.close()
    return runs, timings


def run_quality(
    args: argparse.Namespace, sets: Sequence[EvalSet], cache: Path | None, console: Console
) -> list[dict[str, Any]]:
    """Score every set and mode, print a table with the ratios to bm25s and the targets."""
    inner = make_embedder(RetrievalSettings(embedder=args.embedder, embed_threads=1))
    embedder = CachingEmbedder(inner, cache, args.embedder) if inner is not None else None
    rows = []
    for full in sets:
        corpus = args.dense_corpus if full.name == "scifact" else args.corpus
        data = full.sample(args.queries or None, corpus or None, args.seed)
        console.print(f"[bold]{data.name}[/bold]: {data.note}")
        base = evaluate(bm25s_run(data), data.qrels)
        modes: list[tuple[str, SearchMode, float]] = [("lexical", "lexical", 0.5)]
        if embedder is not None:
            modes.append(("vector", "vector", 1.0))
            for w in (float(x) for x in args.weights.split(",")):
                modes.append(("hybrid" if w == 0.5 else f"hybrid w={w}", "hybrid", w))
        runs, timings = index_runs(data, embedder, modes, console)
        if embedder is not None:
            embedder.save()
        rows.append({"set": data.name, "mode": "bm25s", **base, "note": data.note})
        for label, _, _ in modes:
            rows.append({"set": data.name, "mode": label, **evaluate(runs[label], data.qrels), **timings})
    _print(rows, console, args.embedder)
    return rows


def _print(rows: list[dict[str, Any]], console: Console, embedder: str) -> None:
    table = Table(title=f"Retrieval quality (train queries; vector/hybrid with {embedder})")
    for col in ("set", "method", "nDCG@10", "× bm25s", "R@100", "× bm25s ", "target"):
        table.add_column(col, justify="left" if col in ("set", "method", "target") else "right")
    base = {r["set"]: r for r in rows if r["mode"] == "bm25s"}
    for r in rows:
        b = base[r["set"]]
        ratio = r["ndcg@10"] / b["ndcg@10"] if b["ndcg@10"] else float("nan")
        goal = TARGETS.get((r["set"], r["mode"]))
        target = "" if goal is None else f"≥{goal:.2f} {'met' if ratio >= goal else 'MISSED'}"
        table.add_row(
            r["set"],
            r["mode"],
            f"{r['ndcg@10']:.4f}",
            f"{ratio:.3f}",
            f"{r['recall@100']:.4f}",
            f"{r['recall@100'] / b['recall@100']:.3f}" if b["recall@100"] else "-",
            target,
        )
    console.print(table)
