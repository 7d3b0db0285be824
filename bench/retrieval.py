"""Retrieval bench: quality against bm25s, ingest/search scale, embedding speed. `python bench/retrieval.py --help`.

Reads the evaluation sets in place from <repo>/../shared/data (or RAGTUNE_BENCH_DATA / --data); sections whose
data is missing are skipped with a message. Everything runs on one thread; timings are medians.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from rich.console import Console  # noqa: E402 - the path and thread pins above must come first

from bench.retrieval_cache import DEFAULT_CACHE  # noqa: E402
from bench.retrieval_data import DataMissing, data_dir, load_ko_welfare, load_scifact  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Describe the sections and their sizes (quick defaults; raise them for full runs)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quality", action="store_true", help="lexical/vector/hybrid nDCG@10, R@100 vs bm25s")
    p.add_argument("--scale", action="store_true", help="ingest chunks/s and search p50/p95 at several sizes")
    p.add_argument("--embed", action="store_true", help="embedding tokens per CPU-second, default vs packaged")
    p.add_argument("--all", action="store_true", help="run every section")
    p.add_argument("--data", help="folder holding scifact/ and ko-welfare/ (default <repo>/../shared/data)")
    p.add_argument("--sets", default="ko-welfare,scifact", help="quality sets, comma-separated")
    p.add_argument("--queries", type=int, default=300, help="train queries sampled per set (0 = all)")
    p.add_argument(
        "--corpus",
        type=int,
        default=0,
        help="docs kept per set for quality (0 = all); keeps every relevant doc of the sampled queries",
    )
    p.add_argument(
        "--dense-corpus",
        type=int,
        default=600,
        help="scifact docs embedded for vector/hybrid (0 = all 5,183; dense is slow on CPU)",
    )
    p.add_argument("--embedder", default="e5-small", help="embedder for vector/hybrid quality")
    p.add_argument("--weights", default="0.5", help="hybrid vector weights to score, comma-separated (0.5 = default)")
    p.add_argument("--sweep", action="store_true", help="also re-fuse the index's rankings over a weight/k/depth grid")
    p.add_argument("--sweep-weights", default="0.3,0.4,0.5,0.6,0.7", help="vector weights of the fusion sweep")
    p.add_argument("--rrf-ks", default="10,30,60,100", help="RRF k values of the fusion sweep")
    p.add_argument("--depths", default="20,50,100", help="candidates per signal of the fusion sweep (<= 100)")
    p.add_argument("--sizes", default="1000,10000,100000", help="chunk counts for the scale section")
    p.add_argument("--searches", type=int, default=200, help="searches timed per size and mode")
    p.add_argument("--max-seconds", type=float, default=60.0, help="stop timing one size/mode after this long")
    p.add_argument("--ingest-docs", type=int, default=200, help="real docs ingested to time ingest (chunks/s)")
    p.add_argument("--engines", default="e5-small,e5-small-packaged", help="embedding engines compared")
    p.add_argument("--embed-passages", type=int, default=24, help="Korean passages timed per engine")
    p.add_argument("--embed-queries", type=int, default=500, help="ko-welfare queries for the engines' nDCG (0 = skip)")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats (median)")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="corpus-embedding cache folder ('' = none)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections and print their tables."""
    args = parse_args(argv)
    if not (args.quality or args.scale or args.embed or args.all):
        print("choose a section: --quality, --scale, --embed or --all (see --help)")
        return 2
    import torch

    torch.set_num_threads(1)
    console = Console() if sys.stdout.isatty() else Console(width=150)
    cache = Path(args.cache) if args.cache else None
    results: dict[str, object] = {"argv": sys.argv[1:], "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if args.quality or args.all:
        results["quality"] = _section(console, "quality", lambda: _quality(args, cache, console))
    if args.scale or args.all:
        results["scale"] = _section(console, "scale", lambda: _scale(args, console))
    if args.embed or args.all:
        results["embed"] = _section(console, "embed", lambda: _embed(args, cache, console))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    return 0


def _section(console: Console, name: str, run: Callable[[], object]) -> object:
    console.rule(f"[bold]{name}")
    try:
        return run()
    except DataMissing as e:
        console.print(f"[yellow]skipping {name}: {e}[/yellow]")
        return {"skipped": str(e)}


def _quality(args: argparse.Namespace, cache: Path | None, console: Console) -> object:
    from bench.retrieval_quality import run_quality

    root = data_dir(args.data)
    loaders = {"ko-welfare": load_ko_welfare, "scifact": load_scifact}
    return run_quality(args, [loaders[n.strip()](root) for n in args.sets.split(",") if n.strip()], cache, console)


def _scale(args: argparse.Namespace, console: Console) -> object:
    from bench.retrieval_scale import run_scale

    return run_scale(args, console)


def _embed(args: argparse.Namespace, cache: Path | None, console: Console) -> object:
    from bench.retrieval_embed import run_embed_section

    ko = load_ko_welfare(data_dir(args.data))
    docs = sorted(ko.corpus)
    passages = [ko.corpus[d] for d in docs[: args.embed_passages]]
    data = ko.sample(args.embed_queries, None, args.seed) if args.embed_queries else None
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    return run_embed_section(engines, passages, args.repeats, data, cache, console)


if __name__ == "__main__":
    sys.exit(main())
