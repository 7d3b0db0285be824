"""Retriever tuning bench: tune e5-small on ko-welfare's train queries, score held-out queries base vs tuned.

`python bench/retriever_tuning.py --help`. Reads ../shared/data/ko-welfare in place (never copied). Splits the
train queries by query (fixed seed) into a training part and a held-out part, mines bm25 hard negatives from a
lexical index of the corpus, trains the `embedding` recipe's InfoNCE Trainer, exports the tuned layers and ranks
the held-out queries through the retrieval index (lexical / vector / hybrid) with the base and the tuned embedder,
both in the int8 serving engine. `--label-free` also tunes on pairs built from the corpus alone (titles and
sentences, no queries) and scores it on the same held-out queries. Training threads are pinned (--threads).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402 - the path and env pins above must come first
from rich.table import Table  # noqa: E402

from bench.retrieval_cache import DEFAULT_CACHE, CachingEmbedder  # noqa: E402
from bench.retrieval_data import EvalSet, data_dir, load_ko_welfare, load_scifact  # noqa: E402
from bench.retrieval_metrics import evaluate  # noqa: E402

TARGETS = {"hybrid": 0.90, "vector_gain": 0.05}
MODES = [("lexical", "lexical", 0.5), ("vector", "vector", 1.0), ("hybrid", "hybrid", 0.5)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Sizes default to what a shared 2-core CPU box finishes in well under an hour."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="folder holding ko-welfare/ (default <repo>/../shared/data)")
    p.add_argument("--set", default="ko-welfare", choices=["ko-welfare", "scifact"])
    p.add_argument("--held-out", type=int, default=500, help="train queries held out for scoring (never trained on)")
    p.add_argument("--train-pairs", type=int, default=1500, help="training pairs drawn from the rest (0 = all)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--max-length", type=int, default=256, help="tokens each text is cut to while training")
    p.add_argument("--scale", type=float, default=20.0, help="InfoNCE similarity scale (1 / temperature)")
    p.add_argument("--no-checkpointing", action="store_true", help="keep activations (fast, ~12 GB at 32 x 256)")
    p.add_argument("--whole-doc", action="store_true", help="positive = the whole document, not its best chunk")
    p.add_argument("--no-negatives", action="store_true", help="in-batch negatives only, both modes (no bm25 mining)")
    p.add_argument("--label-free", action="store_true", help="also tune on pairs built from the corpus alone")
    p.add_argument("--only-label-free", action="store_true", help="tune and score only the label-free embedder")
    p.add_argument("--skip-base", action="store_true", help="do not score the base embedder (another run did)")
    p.add_argument("--label-free-pairs", type=int, default=0, help="most label-free pairs trained on (0 = all)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--embed-threads", type=int, default=2, help="threads of the int8 engines while scoring")
    p.add_argument("--speed-passages", type=int, default=48, help="passages for the base-vs-tuned speed check")
    p.add_argument("--corpus", type=int, default=0, help="smoke runs: keep only this many docs (0 = all)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--train-seed", type=int, default=None, help="seed of the training order (default --seed)")
    p.add_argument("--init", default=None, help="tune further from this tuned embedder's folder, not e5-small")
    p.add_argument("--work", default=None, help="folder for checkpoints and exports (default a temp folder)")
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="base passage-vector cache ('' disables)")
    args = p.parse_args(argv)
    args.train_seed = args.seed if args.train_seed is None else args.train_seed
    return args


class Events:
    """RunCallbacks for the recipe outside a job: print events and every 10th loss."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.losses: list[float] = []

    def event(self, message: str, *, level: str = "info", data: dict[str, Any] | None = None) -> None:
        self.console.print(f"[dim]{message}[/dim]")

    def metrics(self, data: dict[str, Any]) -> None:
        self.losses.append(float(data["train_loss"]))
        if data["step"] % 10 == 0 or data["step"] == data.get("total_steps"):
            self.console.print(f"[dim]step {data['step']}/{data['total_steps']} loss {data['train_loss']:.4f}[/dim]")

    def checkpoint(self, step: int, path: str, metrics: dict[str, Any]) -> None:
        pass

    def should_pause(self) -> bool:
        return False


def split_queries(data: EvalSet, held: int, seed: int) -> tuple[list[str], list[str]]:
    """Shuffle the query ids with a fixed seed; the first `held` are held out, the rest may be trained on."""
    qids = sorted(data.queries)
    random.Random(seed).shuffle(qids)
    return qids[held:], qids[:held]


def shrink(data: EvalSet, keep: list[str], size: int, seed: int) -> EvalSet:
    """A smaller corpus for smoke runs: the relevant docs of the `keep` queries plus random others."""
    needed = {d for q in keep for d in data.qrels.get(q, {}) if d in data.corpus}
    others = sorted(set(data.corpus) - needed)
    docs = needed | set(random.Random(seed).sample(others, max(0, min(len(others), size - len(needed)))))
    queries = {q: t for q, t in data.queries.items() if set(data.qrels.get(q, {})) <= docs}
    corpus = {d: data.corpus[d] for d in sorted(docs)}
    return EvalSet(data.name, data.lang, corpus, queries, {q: data.qrels[q] for q in queries}, titles=data.titles)


def open_lexical(data: EvalSet, folder: Path) -> Any:
    """A lexical-only retrieval index of the corpus (for mining negatives and reading chunks)."""
    from ragtune.servers.retrieval.index import Index

    index = Index.open(folder / "lexical.db", None)
    for doc_id, text in data.corpus.items():
        index.ingest_text(text, collection=data.name, source=doc_id, title=data.titles.get(doc_id) or None)
    return index


def first_chunks(index: Any, collection: str) -> dict[str, str]:
    """Each source document's first chunk text, by source id."""
    from ragtune.servers.worker.recipes.embedding_corpus import PAGE

    out: dict[str, str] = {}
    offset: int | None = 0
    while offset is not None:
        page = index.list_documents(collection, offset=offset, limit=PAGE)
        for info in page.documents:
            doc = index.get_document(info.doc_id)
            span = doc.chunk_spans[0]
            out[info.source] = doc.text[span.char_start : span.char_end].strip()
        offset = page.next_offset
    return out


def best_chunks(index: Any, data: EvalSet, pairs: list[tuple[str, str]]) -> tuple[list[dict[str, str]], int]:
    """Pair each (query, relevant doc) with the doc's chunk that bm25 ranks highest for the query.

    The index serves chunks, not documents: training on the whole (truncated) document teaches the model a text it
    never sees at search time. A doc none of whose chunks is among the query's 50 best bm25 hits keeps its first
    chunk. Returns the records and how many fell back to the first chunk.
    """
    from ragtune.servers.retrieval.errors import BadQuery
    from ragtune.servers.retrieval.search import search

    first = first_chunks(index, data.name)
    out, fallback = [], 0
    for qid, doc in pairs:
        try:
            hits = search(index, data.queries[qid], collection=data.name, k=50, mode="lexical").hits
        except BadQuery:
            hits = []
        text = next((h.text for h in hits if h.source == doc), None)
        if text is None:
            fallback += 1
            text = first.get(doc) or data.corpus[doc]
        out.append({"query": data.queries[qid], "positive": text})
    return out, fallback


def train(records: list[dict[str, str]], args: argparse.Namespace, folder: Path, name: str, console: Console) -> dict:
    """Train the embedding recipe on `records` and export the tuned layers; return its folder and timings."""
    from ragtune.servers.worker.recipes.base import TrainJob
    from ragtune.servers.worker.recipes.embedding import EmbeddingJobConfig, train_pairs

    from ragtune.embedders.tuned import TunedManifest, read_manifest, save_tuned

    cfg = EmbeddingJobConfig(
        learning_rate=args.lr,
        n_epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        scale=args.scale,
        gradient_checkpointing=not args.no_checkpointing,
        seed=args.train_seed,
        save_steps=-1,
    )
    base, base_path = ("e5-small", "") if not args.init else (read_manifest(Path(args.init)).model_id, args.init)
    job = {"id": f"bench-{name}", "model": base, "seed": cfg.seed}
    train_job = TrainJob(job=job, records=records, model_name=base, model_path=base_path, threads=args.threads)
    events = Events(console)
    console.print(f"[bold]training {name}[/bold] on {len(records)} pairs, {args.threads} threads")
    cpu = time.process_time()
    model, trainer, _, seconds = train_pairs(train_job, records, cfg, folder / f"run-{name}", events)
    cpu = time.process_time() - cpu  # all threads of this process: comparable on a shared box, unlike wall time
    out = save_tuned(folder / f"tuned-{name}", model.export(), TunedManifest(model_id=f"ft:e5-small:bench::{name}"))
    pairs_seen = len(records) * args.epochs
    return {
        "path": str(out),
        "pairs": len(records),
        "negatives": sum("negative" in r for r in records),
        "steps": trainer.state.global_step,
        "seconds": round(seconds, 1),
        "seconds_per_1000_pairs": round(1000 * seconds / pairs_seen, 1),
        "cpu_seconds": round(cpu, 1),
        "cpu_seconds_per_1000_pairs": round(1000 * cpu / pairs_seen, 1),
        "loss_first": events.losses[0] if events.losses else None,
        "loss_last": events.losses[-1] if events.losses else None,
    }


def score(data: EvalSet, embedder: Any, console: Console) -> dict[str, dict[str, float]]:
    """nDCG@10 / Recall@100 of the held-out queries in each mode, through the retrieval index."""
    from bench.retrieval_quality import index_runs

    runs, timings = index_runs(data, embedder, MODES, console)
    out = {label: evaluate(runs[label], data.qrels) for label, _, _ in MODES}
    return {**out, "timings": timings}


def speed(base: Any, tuned: Any, passages: list[str], repeats: int = 3) -> dict[str, float]:
    """Passages per second of base and tuned, interleaved on 1 thread, medians of `repeats` runs."""
    import torch

    torch.set_num_threads(1)
    base.embed_passages(passages[:2])
    tuned.embed_passages(passages[:2])
    times: dict[str, list[float]] = {"base": [], "tuned": []}
    for _ in range(repeats):
        for label, emb in (("base", base), ("tuned", tuned)):
            start = time.perf_counter()
            emb.embed_passages(passages)
            times[label].append(time.perf_counter() - start)
    b, t = statistics.median(times["base"]), statistics.median(times["tuned"])
    return {"base_passages_per_s": len(passages) / b, "tuned_passages_per_s": len(passages) / t, "ratio": b / t}


def main(argv: list[str] | None = None) -> int:
    """Split, mine, train (supervised and label-free), score, print and save the figures."""
    args = parse_args(argv)
    console = Console()
    root = data_dir(args.data)
    full = load_ko_welfare(root) if args.set == "ko-welfare" else load_scifact(root)
    train_ids, held_ids = split_queries(full, args.held_out, args.seed)
    if args.corpus:
        full = shrink(full, held_ids + train_ids[: args.train_pairs], args.corpus, args.seed)
        train_ids = [q for q in train_ids if q in full.queries]
    held = EvalSet(
        full.name,
        full.lang,
        full.corpus,
        {q: full.queries[q] for q in held_ids},
        {q: full.qrels[q] for q in held_ids},
        titles=full.titles,
    )
    rng = random.Random(args.seed)
    pool = [q for q in train_ids if full.qrels.get(q)]
    chosen = pool if not args.train_pairs or args.train_pairs >= len(pool) else rng.sample(pool, args.train_pairs)
    pairs = [(q, d) for q in chosen for d in list(full.qrels[q])[:1] if d in full.corpus]
    records = [{"query": full.queries[q], "positive": full.corpus[d]} for q, d in pairs]
    results: dict[str, Any] = {
        "command": "python bench/retriever_tuning.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "set": full.name,
        "split": {
            "seed": args.seed,
            "held_out_queries": len(held_ids),
            "train_pool": len(pool),
            "trained_pairs": len(records),
        },
        "threads": args.threads,
        "max_length": args.max_length,
        "scale": args.scale,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "train_seed": args.train_seed,
        "init": args.init,
    }
    console.print(
        f"[bold]{full.name}[/bold]: {len(held_ids)} held-out queries, {len(records)} training pairs of {len(pool)}"
    )
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="retriever-tuning-"))
    work.mkdir(parents=True, exist_ok=True)
    from ragtune.servers.worker.recipes.embedding_corpus import iter_chunks, mine_negatives
    from ragtune.servers.worker.recipes.embedding_pairs import build_pairs

    index = open_lexical(full, work)
    try:
        if not args.whole_doc:
            records, fallback = best_chunks(index, full, pairs)
            results["positives"] = {"best_chunk": len(records) - fallback, "first_chunk_fallback": fallback}
        if not args.no_negatives:
            started = time.perf_counter()
            records, mined = mine_negatives(records, full.name, index=index)
            results["mining"] = {"mined": mined, "seconds": round(time.perf_counter() - started, 1)}
        if args.label_free:
            chunks = list(iter_chunks(index, full.name))
            free, counts = build_pairs(chunks, sources=("title", "sentence"), seed=args.seed)
            if args.label_free_pairs and len(free) > args.label_free_pairs:
                free = rng.sample(free, args.label_free_pairs)
            free_mined = 0
            if not args.no_negatives:
                free, free_mined = mine_negatives(free, full.name, index=index)
            results["label_free_pairs"] = {
                "chunks": len(chunks),
                "pairs": len(free),
                "by_source": counts,
                "mined": free_mined,
            }
    finally:
        index.close()

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False))

    save()
    if not args.only_label_free:
        results["train"] = train(records, args, work, "supervised", console)
        save()
    if args.label_free:
        results["train_label_free"] = train(free, args, work, "label-free", console)
        save()

    from ragtune.config import RetrievalSettings
    from ragtune.embedders.tuned import TunedE5
    from ragtune.embeddings import make_embedder

    inner = make_embedder(RetrievalSettings(embedder="e5-small", embed_threads=args.embed_threads))
    assert inner is not None
    base = CachingEmbedder(inner, Path(args.cache) if args.cache else None, "e5-small")
    results["scores"] = {}
    if not args.skip_base:
        results["scores"]["base"] = score(held, base, console)
        base.save()
        save()
    if "train" in results:
        tuned = TunedE5(results["train"]["path"], threads=args.embed_threads)
        results["scores"]["tuned"] = score(held, tuned, console)
        save()
    if args.label_free:
        free_emb = TunedE5(results["train_label_free"]["path"], threads=args.embed_threads)
        results["scores"]["label_free"] = score(held, free_emb, console)
        save()
    passages = list(full.corpus.values())[: args.speed_passages]
    from ragtune.embedders.fast_e5 import TorchE5

    key = "train" if "train" in results else "train_label_free"
    results["speed_1_thread"] = speed(TorchE5(threads=1), TunedE5(results[key]["path"], threads=1), passages)
    save()
    print_results(results, console)
    return 0


def print_results(results: dict[str, Any], console: Console) -> None:
    """One table per metric: base vs tuned (and label-free) per mode, with the targets."""
    scores = results["scores"]
    table = Table(title=f"{results['set']}: {results['split']['held_out_queries']} held-out queries, nDCG@10 (R@100)")
    table.add_column("mode")
    for name in scores:
        table.add_column(name, justify="right")
    for mode, _, _ in MODES:
        table.add_row(
            mode, *(f"{scores[n][mode]['ndcg@10']:.4f} ({scores[n][mode]['recall@100']:.3f})" for n in scores)
        )
    console.print(table)
    if "tuned" in scores and "base" in scores:
        gain = scores["tuned"]["vector"]["ndcg@10"] - scores["base"]["vector"]["ndcg@10"]
        console.print(
            f"targets: hybrid >= {TARGETS['hybrid']} -> {scores['tuned']['hybrid']['ndcg@10']:.4f}; "
            f"vector gain >= {TARGETS['vector_gain']} -> {gain:+.4f}"
        )
    for key in ("train", "train_label_free"):
        if key in results:
            t = results[key]
            console.print(
                f"{key}: {t['pairs']} pairs ({t['negatives']} with a hard negative), {t['steps']} steps, "
                f"{t['seconds']} s "
                f"= {t['seconds_per_1000_pairs']} s per 1,000 pairs ({t.get('cpu_seconds_per_1000_pairs')} CPU-s); "
                f"loss {t['loss_first']:.3f} -> {t['loss_last']:.3f}"
            )
    s = results["speed_1_thread"]
    console.print(
        f"int8 engine, 1 thread: base {s['base_passages_per_s']:.2f} passages/s, tuned {s['tuned_passages_per_s']:.2f}"
        f" (tuned/base {s['ratio']:.3f})"
    )


if __name__ == "__main__":
    sys.exit(main())
