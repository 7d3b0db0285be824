"""Render bench/retrieval_pg.py JSON results as the Markdown tables of docs/benchmarks/retrieval.md.

`python bench/retrieval_pg_report.py /tmp/quality.json /tmp/scale.json ...` prints every section found in the files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def quality_md(rows: list[dict[str, Any]]) -> str:
    """One line per set, pass and mode: both backends, the ratio and the share of identical top-10 lists."""
    out = [
        "| set | pass | mode | queries | docs | SQLite nDCG@10 | PostgreSQL nDCG@10 | ratio | SQLite R@100 | "
        "PostgreSQL R@100 | ratio | same top-10 | ms/query SQLite | ms/query PostgreSQL |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['set']} | {r['pass']} | {r['mode']} | {r['queries']} | {r['docs']} | {r['sqlite_ndcg@10']:.4f} | "
            f"{r['postgres_ndcg@10']:.4f} | **{r['ratio_ndcg@10']:.4f}** | {r['sqlite_recall@100']:.4f} | "
            f"{r['postgres_recall@100']:.4f} | {r['ratio_recall@100']:.4f} | {r['same_top10']:.1%} | "
            f"{r['sqlite_ms_per_query']:.1f} | {r['postgres_ms_per_query']:.1f} |"
        )
    return "\n".join(out)


def scale_md(scale: dict[str, Any]) -> str:
    """Ingest lines, the load/build/recall table and the latency table."""
    out = [f"_{scale['note']}_", ""]
    for r in scale.get("ingest", []):
        out.append(
            f"- real ingest, {r['backend']}: {r['docs']} docs, {r['chunks']} chunks, {r['chunks_per_s']:.1f} chunks/s"
            f" wall ({r['chunks_per_cpu_s']:.1f} per CPU-second of the client process)"
        )
    if "query_embed" in scale:
        q = scale["query_embed"]
        out.append(f"- e5-small query embedding, 1 thread: p50 {q['p50_ms']:.1f} ms, p95 {q['p95_ms']:.1f} ms")
    out += [
        "",
        "| chunks | backend | load chunks/s | GIN build s | postings build s (rows, MB) | HNSW build s | DB MB | "
        "recall@10 (k=10) | recall@10 (depth 100) | KNN p50 ms (k=10) | write_document chunks/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in scale.get("sizes", []):
        ld, rc, wr = e.get("load", {}), e.get("recall", {}), e.get("write", {})
        out.append(
            f"| {e['size']:,} | {e['backend']} | {ld.get('load_chunks_per_s', float('nan')):.0f} | "
            f"{_f(ld.get('gin_build_s'))} | {_postings(ld)} | {_f(ld.get('hnsw_build_s'))} | "
            f"{ld.get('db_mb', float('nan')):.0f} | "
            f"{_f(rc.get('recall@10 depth 10'), 3)} | {_f(rc.get('recall@10 depth 100'), 3)} | "
            f"{_f(rc.get('knn p50 ms depth 10'), 1)} | {_f(wr.get('chunks_per_s'))} |"
        )
    for e in scale.get("sizes", []):
        if "lexical_vs_exact" in e:
            x = e["lexical_vs_exact"]
            out.append(
                f"\n- {e['size']:,} {e['backend']}: fast lexical path vs exact bm25 on {x['queries']} queries: "
                f"recall@10 {x['recall@10']:.3f} (by score, tied copies counted: "
                f"{x.get('score recall@10', float('nan')):.3f}), same top-10 {x['same top-10']:.0%}; "
                f"p50 {x['fast p50 ms']:.1f} ms "
                f"vs exact p50 {x['exact p50 ms']:.1f} / p95 {x['exact p95 ms']:.1f} ms"
            )
    out += [
        "",
        "| chunks | backend | what | clients | n | p50 ms | p95 ms | searches/s | CPU ms/search |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in scale.get("sizes", []):
        for s in e.get("search", []):
            out.append(
                f"| {e['size']:,} | {e['backend']} | {s['what']} | {s['clients']} | {s['searches']} | "
                f"{s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['qps']:.1f} | {_f(s.get('cpu_ms_per_search'), 1)} |"
            )
    return "\n".join(out)


def _postings(load: dict[str, Any]) -> str:
    """Postings backfill + index build seconds, with rows and MB."""
    if "postings_backfill_s" not in load:
        return "-"
    seconds = load["postings_backfill_s"] + load["postings_index_s"]
    return f"{seconds:.0f} ({load['postings'] / 1e6:.1f}M, {load['postings_mb']:.0f})"


def _f(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    """Print the Markdown of every results file given."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="JSON files written by bench/retrieval_pg.py --json")
    for path in p.parse_args(argv).results:
        data = json.loads(Path(path).read_text())
        print(f"<!-- {path}: {data.get('server', '')}; argv {' '.join(data.get('argv', []))} -->")
        if data.get("quality"):
            print(quality_md(data["quality"]), end="\n\n")
        if data.get("scale"):
            print(scale_md(data["scale"]), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
