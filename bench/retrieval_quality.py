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
from ragtune.servers.retrieval.fusion import RRF_K, rrf
from ragtune.servers.retrieval.index import Index
from ragtune.servers.retrieval.models import SearchMode
from ragtune.servers.retrieval.search import FUSION_DEPTH, search
from rich.console import Console
from rich.progress import track
from rich.table import Table

from bench.retrieval_cache import CachingEmbedder
from bench.retrieval_data import EvalSet
from bench.retrieval_metrics import evaluate
from ragtune.config import RetrievalSettings
from ragtune.embeddings import make_embedder

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
        return [[t.form.lower() for t in kiwi.tokenize(x) if t.tag.startswith(KIWI_TAGS)] or ["∅"] for x in texts]

    return tokenize


def _english_tokenizer() -> Any:
    stemmer = Stemmer.Stemmer("english")

    def tokenize(texts: Sequence[str]) -> Any:
        return bm25s.tokenize(list(texts), stopwords="en", stemmer=stemmer, show_progress=False)

    return tokenize


def index_runs(
    data: EvalSet,
    embedder: Any,
    modes: Sequence[tuple[str, SearchMode, float]],
    console: Console,
    chunk_runs: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Ingest the corpus into a fresh index, embed it, and rank every query in each mode (docs deduplicated).

    `chunk_runs`, when given, receives each mode's chunk-level ranking (chunk id, source) for the fusion sweep.
    """
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        index = Index.open(Path(tmp) / "bench.db", embedder)
        start = time.perf_counter()
        for doc_id, text in track(list(data.corpus.items()), description=f"ingest {data.name}", console=console):
            index.ingest_text(text, collection=data.name, source=doc_id, title=data.titles.get(doc_id))
        timings["ingest_s"] = time.perf_counter() - start
        start = time.perf_counter()
        if embedder is not None:
            index.embed_pending()
            if hasattr(embedder, "save"):
                embedder.save()  # before searching, so a failed search never loses an hour of embedding
        timings["embed_s"] = time.perf_counter() - start
        runs: dict[str, Any] = {}
        for label, mode, weight in modes:
            runs[label] = {}
            for qid, query in track(list(data.queries.items()), description=f"{label} {data.name}", console=console):
                hits = search(index, query, collection=data.name, k=100, mode=mode, weight=weight).hits
                runs[label][qid] = list(dict.fromkeys(h.source for h in hits))
                if chunk_runs is not None:
                    chunk_runs.setdefault(label, {})[qid] = [(h.chunk_id, h.source) for h in hits]
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
        bm25 = bm25s_run(data)
        base = evaluate(bm25, data.qrels)
        modes: list[tuple[str, SearchMode, float]] = [("lexical", "lexical", 0.5)]
        if embedder is not None:
            modes.append(("vector", "vector", 1.0))
            for w in (float(x) for x in args.weights.split(",")):
                modes.append(("hybrid" if w == 0.5 else f"hybrid w={w}", "hybrid", w))
        chunk_runs: dict[str, Any] = {}
        runs, timings = index_runs(data, embedder, modes, console, chunk_runs)
        if embedder is not None:
            embedder.save()
        rows.append({"set": data.name, "mode": "bm25s", **base, "note": data.note})
        for label, _, _ in modes:
            rows.append({"set": data.name, "mode": label, **evaluate(runs[label], data.qrels), **timings})
        if embedder is not None and args.sweep:
            sweep = fusion_sweep(chunk_runs, data.qrels, args, base["ndcg@10"])
            _check_sweep(sweep, rows, data.name, console)
            _print_sweep(sweep, data.name, base["ndcg@10"], console)
            folds = held_out(sweep, bm25, data.qrels, console)
            rows.append({"set": data.name, "mode": "sweep", "sweep": sweep, "held_out": folds})
    _print([r for r in rows if r["mode"] != "sweep"], console, args.embedder)
    return rows


def fusion_sweep(
    chunk_runs: dict[str, Any], qrels: dict[str, dict[str, int]], args: argparse.Namespace, base: float
) -> list[dict[str, Any]]:
    """Re-fuse the index's own lexical and vector chunk rankings with the product's `rrf` over a grid.

    The index's hybrid search is exactly `rrf([lexical[:depth], vector[:depth]], [1 - w, w], k)` over its
    single-signal rankings (depth 100), so this scores weights, RRF k and depths without re-running searches.
    """
    lexical, vector = chunk_runs["lexical"], chunk_runs["vector"]
    out = []
    for w in (float(x) for x in args.sweep_weights.split(",")):
        for k in (int(x) for x in args.rrf_ks.split(",")):
            for depth in (int(x) for x in args.depths.split(",")):
                run = {}
                for qid, lex in lexical.items():
                    vec = vector[qid]
                    source = dict(lex) | dict(vec)
                    fused = rrf([[c for c, _ in lex[:depth]], [c for c, _ in vec[:depth]]], [1.0 - w, w], k)
                    run[qid] = list(dict.fromkeys(source[c] for c, _ in fused[:100]))
                scores = evaluate(run, qrels)
                halves = [evaluate(run, {q: qrels[q] for q in half}) for half in _halves(qrels)]
                out.append(
                    {
                        "weight": w,
                        "rrf_k": k,
                        "depth": depth,
                        **scores,
                        "x_bm25s": scores["ndcg@10"] / base,
                        "ndcg@10 halves": [h["ndcg@10"] for h in halves],
                    }
                )
    return out


def _halves(qrels: dict[str, dict[str, int]]) -> list[list[str]]:
    """Split the queries in two folds (alternate sorted ids) for tuning on one and scoring on the other."""
    qids = sorted(qrels)
    return [qids[0::2], qids[1::2]]


def held_out(
    sweep: list[dict[str, Any]],
    bm25: dict[str, list[str]],
    qrels: dict[str, dict[str, int]],
    console: Console,
) -> list[dict[str, Any]]:
    """Two-fold check of the tuning: pick the best grid point on one half, score it on the other."""
    out = []
    for tune, test in ((0, 1), (1, 0)):
        best = max(sweep, key=lambda s: s["ndcg@10 halves"][tune])
        base = evaluate(bm25, {q: qrels[q] for q in _halves(qrels)[test]})["ndcg@10"]
        got = best["ndcg@10 halves"][test]
        out.append(
            {
                "tuned_on": tune,
                "weight": best["weight"],
                "rrf_k": best["rrf_k"],
                "depth": best["depth"],
                "held_out_ndcg@10": got,
                "held_out_bm25s": base,
                "x_bm25s": got / base,
            }
        )
        console.print(
            f"tuned on half {tune}: w={best['weight']} k={best['rrf_k']} depth={best['depth']} -> "
            f"half {test}: {got:.4f} vs bm25s {base:.4f} ({got / base:.3f}x)"
        )
    return out


def _check_sweep(sweep: list[dict[str, Any]], rows: list[dict[str, Any]], name: str, console: Console) -> None:
    """Confirm the sweep reproduces the index's hybrid search at the product's k and depth."""
    for r in rows:
        if r["set"] == name and r["mode"].startswith("hybrid"):
            w = 0.5 if r["mode"] == "hybrid" else float(r["mode"].split("=")[1])
            same = [s for s in sweep if s["weight"] == w and s["rrf_k"] == RRF_K and s["depth"] == FUSION_DEPTH]
            for s in same:
                diff = abs(s["ndcg@10"] - r["ndcg@10"])
                console.print(
                    f"sweep check {name} w={w}: index {r['ndcg@10']:.4f}, sweep {s['ndcg@10']:.4f}"
                    f" ({'same' if diff < 1e-9 else f'DIFFERS by {diff:.4f}'})"
                )


def _print_sweep(sweep: list[dict[str, Any]], name: str, base: float, console: Console) -> None:
    table = Table(title=f"{name}: hybrid nDCG@10 (x bm25s {base:.4f}) by vector weight, RRF k and depth")
    depths = sorted({s["depth"] for s in sweep})
    for col in ("w", "RRF k", *(f"depth {d}" for d in depths)):
        table.add_column(col, justify="right")
    cells = {(s["weight"], s["rrf_k"], s["depth"]): s for s in sweep}
    for w, k in sorted({(s["weight"], s["rrf_k"]) for s in sweep}):
        row = [cells[(w, k, d)] for d in depths]
        table.add_row(f"{w:.2f}", str(k), *(f"{c['ndcg@10']:.4f} ({c['x_bm25s']:.3f})" for c in row))
    console.print(table)


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
