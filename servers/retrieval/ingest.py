"""Ingest files and folders: only under the allowed roots, symlinks resolved, size-limited.

Every explicitly named path is checked before anything is written, so one bad path writes nothing.
Inside folders, unsupported files are skipped and unreadable ones are reported per file.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ragtune.servers.retrieval import heartbeat
from ragtune.servers.retrieval.errors import IngestError
from ragtune.servers.retrieval.loaders import SUFFIXES, LoadError, load_file
from ragtune.servers.retrieval.models import DocReport, FileError, IngestReport

if TYPE_CHECKING:
    from ragtune.servers.retrieval.index import Index, Progress


def check_path(path: str | Path, roots: Sequence[Path]) -> tuple[Path, Path]:
    """Resolve `path` (symlinks followed) and return (real path, the root holding it), or raise IngestError."""
    raw = Path(path).expanduser()
    try:
        real = raw.resolve(strict=True)
    except (FileNotFoundError, RuntimeError) as e:
        raise IngestError(f"{path} does not exist: check the path (relative paths start at {Path.cwd()})") from e
    real_roots = [Path(r).expanduser().resolve() for r in roots]
    for root in sorted(real_roots, key=lambda r: len(r.parts), reverse=True):
        if real.is_relative_to(root):
            return real, root
    via = f" (a symlink to {real})" if raw.absolute() != real else ""
    raise IngestError(
        f"{path}{via} is outside the allowed roots ({', '.join(map(str, real_roots))}): move it under one of "
        "them, or add its folder to RAGTUNE_RETRIEVAL_ROOTS"
    )


def check_file(real: Path, max_mb: float) -> None:
    """Refuse unsupported types, anything but a regular file (a FIFO would block), and files over the limit."""
    if real.suffix.lower() not in SUFFIXES:
        raise IngestError(
            f"unsupported file type {real.suffix or '(none)'!r} for {real.name}: supported are "
            f"{', '.join(sorted(SUFFIXES))}"
        )
    info = real.stat()  # stat never opens the file, so it cannot block on a FIFO (issue #12)
    if not stat.S_ISREG(info.st_mode):
        raise IngestError(f"{real.name} is not a regular file (a FIFO, socket or device): only files are ingested")
    size_mb = info.st_size / 1e6
    if size_mb > max_mb:
        raise IngestError(
            f"{real.name} is {size_mb:.1f} MB, over the {max_mb:g} MB limit: split it, or raise "
            "RAGTUNE_RETRIEVAL_MAX_FILE_MB"
        )


def expand(
    paths: Sequence[str | Path], roots: Sequence[Path], max_mb: float
) -> tuple[list[tuple[Path, Path]], list[FileError]]:
    """Check every named path, then list the files to read as (real path, root) plus per-file problems."""
    named = [check_path(p, roots) for p in paths]
    files: list[tuple[Path, Path]] = []
    problems: list[FileError] = []
    for real, root in named:
        if not real.is_dir():
            check_file(real, max_mb)
            files.append((real, root))
            continue
        for folder, dirs, names in os.walk(real):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if name.startswith(".") or Path(name).suffix.lower() not in SUFFIXES:
                    continue
                try:
                    inner, inner_root = check_path(Path(folder) / name, roots)
                    check_file(inner, max_mb)
                    files.append((inner, inner_root))
                except IngestError as e:
                    problems.append(FileError(path=str(Path(folder) / name), error=str(e)))
    unique = list(dict.fromkeys(files))
    if not unique and not problems:
        raise IngestError(
            f"no supported files under {', '.join(map(str, paths))}: supported are {', '.join(sorted(SUFFIXES))}"
        )
    return unique, problems


def ingest_paths(
    index: Index,
    paths: Sequence[str | Path],
    *,
    collection: str | None = None,
    text_field: str = "text",
    progress: Progress | None = None,
) -> IngestReport:
    """Ingest files and folders into `collection`; each document lands whole or not at all."""
    if not paths:
        raise IngestError("no paths given: pass one or more files or folders")
    files, problems = expand(paths, index.config.roots, index.config.max_file_mb)
    name = index.prepare_collection(collection)
    reports: list[DocReport] = []
    for n, (real, root) in enumerate(files):
        if progress:
            progress(n, len(files), f"reading {real.name}")
        source = real.relative_to(root).as_posix() if real != root else real.name
        try:
            docs = load_file(real, source=source, text_field=text_field, max_bytes=int(index.config.max_file_mb * 1e6))
        except LoadError as e:
            if len(files) == 1 and not problems:
                raise
            problems.append(FileError(path=str(real), error=str(e)))
            continue
        modified = dt.datetime.fromtimestamp(real.stat().st_mtime, dt.UTC).date().isoformat()
        for doc in docs:
            if not doc.text.strip():
                problems.append(FileError(path=doc.source, error="no text to index"))
                continue
            doc.metadata.setdefault("path", str(real))
            doc.metadata.setdefault("modified", modified)
            reports.append(index.ingest_document(doc, collection=name))
    if not reports and len(files) == 1 and problems:
        raise IngestError(f"{problems[0].path}: {problems[0].error}")
    if progress:
        progress(len(files), len(files), "done")
    return summarize(index, name, reports, problems)


def summarize(index: Index, collection: str, reports: list[DocReport], problems: list[FileError]) -> IngestReport:
    """Count what happened and say it in one sentence."""
    counts = {s: sum(r.status == s for r in reports) for s in ("added", "replaced", "unchanged")}
    written = sum(r.chunks for r in reports if r.status != "unchanged")
    message = (
        f"{counts['added']} added, {counts['replaced']} replaced, {counts['unchanged']} unchanged "
        f"(already indexed with the same content) in {collection!r}; {written} chunks written"
    )
    if problems:
        message += f"; {len(problems)} file(s) skipped, see errors"
    coverage = index.coverage(collection)
    row = index.require_collection(collection)  # its own embedder, not necessarily the server's
    problem = index.embedder_problem(row)
    if row.embedder_model is None:
        message += ". No embedder is configured for this collection: search is lexical only"
    elif problem is not None:
        message += f". Lexical search works now; its vectors cannot be made here: {problem}"
    elif coverage.embedded < coverage.total:
        message += f". Lexical search works now; vectors: {coverage.embedded}/{coverage.total} chunks"
        beat = heartbeat.read(index.beat_target)
        if beat is not None:  # say "in the background" only when a server really fills them (issue #12)
            message += f" ({heartbeat.describe(beat, True)})"
    return IngestReport(
        collection=collection,
        chunks=written,
        documents=reports,
        errors=problems,
        coverage=coverage,
        message=message,
        **counts,
    )
