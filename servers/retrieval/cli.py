"""The CLI's index commands: ingest with progress bars, search as a table, status as JSON."""

from __future__ import annotations

import argparse

from ragtune.servers.retrieval import heartbeat
from ragtune.servers.retrieval.errors import RetrievalError
from ragtune.servers.retrieval.index import Index
from ragtune.servers.retrieval.ingest import ingest_paths
from ragtune.servers.retrieval.reembed import cancel_reembed, run_reembed, start_reembed
from ragtune.servers.retrieval.search import search as search_index
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ragtune.config import RetrievalSettings
from ragtune.embeddings import make_embedder

out = Console()
err = Console(stderr=True)


def run(settings: RetrievalSettings, args: argparse.Namespace) -> int:
    """Open the index, run `args.command`, and report domain errors as one red line (exit 1)."""
    index = Index.open(settings, make_embedder(settings))
    try:
        if args.command == "ingest":
            return ingest(index, args)
        if args.command == "search":
            return search(index, args)
        if args.command == "reembed":
            return reembed(index, args)
        out.print_json(index.status().model_dump_json())
        return 0
    except RetrievalError as e:
        err.print(f"[red]error:[/red] {e}")
        return 1
    finally:
        index.close()


def _bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def ingest(index: Index, args: argparse.Namespace) -> int:
    """Ingest with a bar per file, then (unless --no-wait) fill vectors with a second bar."""
    embedder = getattr(args, "embedder", None)
    if embedder:  # the collection's own embedder, recorded when this ingest creates it
        name = index.resolve_collection(args.collection)
        index.create_collection(name, embedder=embedder, force=getattr(args, "force", False), exist_ok=True)
    with _bar() as bar:
        task = bar.add_task("ingest", total=None)
        report = ingest_paths(
            index,
            args.paths,
            collection=args.collection,
            text_field=args.text_field,
            progress=lambda done, total, msg: bar.update(task, completed=done, total=total, description=msg[:40]),
        )
    out.print(report.message)
    for problem in report.errors:
        err.print(f"[yellow]skipped[/yellow] {problem.path}: {problem.error}")
    if args.no_wait and index.pending_count():
        beat = heartbeat.read(index.beat_target)
        out.print(
            f"vectors: {heartbeat.describe(beat, True)}"
            if beat
            else "vectors are not filled yet: no server is running to fill them. Start one (`serve`), or run "
            "`ingest` again without --no-wait; lexical search works meanwhile"
        )
    elif index.pending_count():
        with _bar() as bar:
            task = bar.add_task("vectors", total=index.pending_count())
            index.embed_pending(progress=lambda done, total, msg: bar.update(task, completed=done, total=total))
        out.print(f"vectors: {index.coverage(report.collection).embedded}/{index.coverage(report.collection).total}")
    return 0


def search(index: Index, args: argparse.Namespace) -> int:
    """Print hits as a table (or JSON), with the signals used and any skipped."""
    result = search_index(
        index,
        args.query,
        collection=args.collection,
        k=args.k,
        mode=args.mode,
        filters=args.filters,
        weight=args.weight,
    )
    if args.json:
        out.print_json(result.model_dump_json())
        return 0
    table = Table(title=f"{result.query!r} in {result.collection} ({'+'.join(result.signals) or 'nothing'})")
    for column in ("#", "score", "lex", "vec", "title / heading", "span", "text"):
        table.add_column(column, overflow="fold")
    for n, hit in enumerate(result.hits, 1):
        where = " > ".join([hit.title, *hit.heading_path[1:]])
        table.add_row(
            str(n),
            f"{hit.score:.4g}",
            str(hit.lexical_rank or "-"),
            str(hit.vector_rank or "-"),
            where,
            f"{hit.char_start}-{hit.char_end}",
            " ".join(hit.text.split())[:160],
        )
    out.print(table)
    for signal, why in result.skipped.items():
        err.print(f"[dim]{signal} skipped: {why}[/dim]")
    cov = result.coverage
    err.print(f"[dim]vector coverage {cov.embedded}/{cov.total}[/dim]")
    return 0


def reembed(index: Index, args: argparse.Namespace) -> int:
    """Start (or resume) a reembed and run it here with a progress bar; --cancel stops one, --no-wait only starts."""
    if args.cancel:
        out.print(cancel_reembed(index, args.collection).message)
        return 0
    if not args.embedder:
        err.print("[red]error:[/red] name the new embedder: --embedder e5-small|minilm|openai:<model>|ft:e5-small:...")
        return 2
    info = start_reembed(index, args.collection, args.embedder, force=args.force)
    if args.no_wait:
        out.print(f"{info.message}. A running server (`serve`) carries it on; or run this again without --no-wait")
        return 0
    with _bar() as bar:
        task = bar.add_task(f"reembed {info.collection}", total=info.coverage.total, completed=info.coverage.embedded)
        info = run_reembed(
            index, info.collection, progress=lambda done, total, msg: bar.update(task, completed=done, total=total)
        )
    out.print(info.message)
    return 0 if info.state == "done" else 1
