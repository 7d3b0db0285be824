"""PostgreSQL backend bench (issue #10): quality vs SQLite, and scale to 1M chunks. `python bench/retrieval_pg.py -h`.

Uses RAGTUNE_DATABASE_URL (or --database-url) when given, else starts an embedded PostgreSQL 18 + pgvector in a
temp folder (bench/retrieval_pg_server.py). Evaluation data is read in place from <repo>/../shared/data (or
RAGTUNE_BENCH_DATA / --data). Threads are pinned (OMP/torch 1 thread; PostgreSQL parallel workers as given).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from rich.console import Console  # noqa: E402 - the path and thread pins above must come first

from bench.retrieval_cache import DEFAULT_CACHE  # noqa: E402
from bench.retrieval_data import DataMissing, data_dir, load_ko_welfare, load_scifact  # noqa: E402
from bench.retrieval_pg_server import postgres_server, server_version  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Describe the sections and their sizes."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quality", action="store_true", help="nDCG@10 / R@100, PostgreSQL vs SQLite, every mode")
    p.add_argument("--scale", action="store_true", help="synthetic N chunks: ingest, HNSW build, latency, recall")
    p.add_argument("--database-url", help="PostgreSQL server to use (default RAGTUNE_DATABASE_URL, else embedded)")
    p.add_argument("--workdir", help="folder for the embedded server's data (default the system temp folder)")
    p.add_argument("--data", help="folder holding scifact/ and ko-welfare/ (default <repo>/../shared/data)")
    p.add_argument(
        "--pg-postings",
        help="quality: force PostgreSQL's impact-ordered lexical path on every query with PER_TERM,RESCORE postings "
        "(the corpora are under its 20k-chunk threshold), e.g. 2000,500 (the store's values) or 200,100",
    )
    p.add_argument("--sets", default="ko-welfare,scifact", help="quality sets, comma-separated")
    p.add_argument("--lexical-queries", type=int, default=1000, help="queries per set, lexical pass (0 = all)")
    p.add_argument("--dense-queries", type=int, default=200, help="queries per set for the embedded pass (0 = skip)")
    p.add_argument("--dense-corpus", type=int, default=250, help="docs per set for the embedded pass (0 = all)")
    p.add_argument("--embedder", default="e5-small", help="embedder of the vector/hybrid pass")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="passage-vector cache folder ('' = none)")
    p.add_argument("--sizes", default="100000", help="scale: chunk counts, comma-separated (e.g. 100000,1000000)")
    p.add_argument("--sqlite-sizes", default="100000", help="scale: chunk counts also run on SQLite ('' = none)")
    p.add_argument("--searches", type=int, default=200, help="scale: searches timed per mode and client count")
    p.add_argument("--clients", default="1,8", help="scale: concurrent clients, comma-separated")
    p.add_argument("--recall-queries", type=int, default=100, help="scale: queries for HNSW recall@10 vs exact")
    p.add_argument("--lexical-exact-queries", type=int, default=40, help="scale: fast vs exact bm25 (0 = skip)")
    p.add_argument("--max-seconds", type=float, default=90.0, help="scale: stop timing one mode after this long")
    p.add_argument("--pg-workers", type=int, default=1, help="scale: max_parallel_maintenance_workers for builds")
    p.add_argument("--maintenance-mem", default="3GB", help="scale: maintenance_work_mem for the index builds")
    p.add_argument("--real-docs", type=int, default=1000, help="scale: real docs ingested through Index (chunks/s)")
    p.add_argument("--json", help="also write the results to this JSON file (rewritten after every step)")
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections against one PostgreSQL server and print their tables."""
    args = parse_args(argv)
    if not (args.quality or args.scale):
        print("choose a section: --quality and/or --scale (see --help)")
        return 2
    import torch

    torch.set_num_threads(1)
    console = Console() if sys.stdout.isatty() else Console(width=180)
    results: dict[str, Any] = {"argv": sys.argv[1:], "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))

    results["code"] = _code_version()
    if args.pg_postings:
        results["pg_postings"] = _force_postings(args.pg_postings)
    with postgres_server(args.database_url, args.workdir) as (url, how):
        results["server"] = f"{server_version(url)}; {how}"
        console.print(f"[bold]server[/bold]: {results['server']}")
        try:
            if args.quality:
                console.rule("[bold]quality")
                results["quality"] = _quality(args, url, console, save, results)
            if args.scale:
                console.rule("[bold]scale")
                from bench.retrieval_pg_scale import run_scale

                results["scale"] = run_scale(args, url, console, save, results)
        except DataMissing as e:
            console.print(f"[yellow]skipping: {e}[/yellow]")
            results["skipped"] = str(e)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    return 0


def _code_version() -> str:
    """The commit measured, and whether the stores differ from it (helpers commit while benches run)."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "servers/retrieval"], cwd=repo, capture_output=True, text=True
    ).stdout.split()
    return head.stdout.strip() + (" + uncommitted changes under servers/retrieval" if dirty else "")


def _force_postings(spec: str) -> str:
    """Send every unfiltered PostgreSQL lexical query through the impact-ordered postings with these sizes."""
    from ragtune.servers.retrieval.stores import postgres as pgstore
    from ragtune.servers.retrieval.stores import postgres_lexical

    try:
        per_term, rescore = (int(x) for x in spec.split(","))
    except ValueError:
        raise SystemExit(f"--pg-postings takes PER_TERM,RESCORE, e.g. 2000,500 (got {spec!r})") from None
    pgstore.MIN_ROWS = pgstore.MATCH_BUDGET = 0
    postgres_lexical.POSTINGS, postgres_lexical.RESCORE = per_term, rescore
    return f"PostgreSQL impact path forced, {per_term} postings/term, {rescore} rescored"


def _quality(args: argparse.Namespace, url: str, console: Console, save: Any, results: dict[str, Any]) -> Any:
    from bench.retrieval_cache import CachingEmbedder
    from bench.retrieval_pg_quality import QueryMemo, compare, postgres_opener, print_quality, sqlite_opener
    from ragtune.config import RetrievalSettings
    from ragtune.embeddings import make_embedder

    root = data_dir(args.data)
    loaders = {"ko-welfare": load_ko_welfare, "scifact": load_scifact}
    sets = [loaders[n.strip()](root) for n in args.sets.split(",") if n.strip()]
    openers = {"sqlite": sqlite_opener, "postgres": postgres_opener(url)}
    rows: list[dict[str, Any]] = []
    results["quality"] = rows
    forced = f" [{results['pg_postings']}]" if results.get("pg_postings") else ""
    for full in sets:
        data = full.sample(args.lexical_queries or None, None, args.seed)
        data.titles = full.titles
        rows += compare(data, None, ["lexical"], openers, console, f"full corpus, no embedder{forced}")
        save()
    if args.dense_queries:
        inner = make_embedder(RetrievalSettings(embedder=args.embedder, embed_threads=1))
        assert inner is not None
        cache = Path(args.cache) if args.cache else None
        embedder = QueryMemo(CachingEmbedder(inner, cache, args.embedder))
        for full in sets:
            data = full.sample(args.dense_queries, args.dense_corpus or None, args.seed)
            data.titles = full.titles
            scope = "whole corpus" if len(data.corpus) == len(full.corpus) else "subsample"
            modes: list[Any] = ["lexical", "vector", "hybrid"]
            rows += compare(data, embedder, modes, openers, console, f"{scope}, {args.embedder}{forced}")
            save()
    print_quality(rows, console, args.embedder)
    return rows


if __name__ == "__main__":
    sys.exit(main())
