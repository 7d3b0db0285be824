"""Ingest of files and folders: allowed roots only, symlinks resolved, size and type limits, nothing half-written."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from ragtune.servers.retrieval.errors import IngestError
from ragtune.servers.retrieval.index import Index
from ragtune.servers.retrieval.ingest import ingest_paths
from ragtune.servers.retrieval.search import search

Counts = Callable[[Index], dict[str, int]]


def test_a_folder_is_ingested_with_relative_sources_and_progress(index: Index, docs_dir: Path) -> None:
    (docs_dir / "sub").mkdir()
    (docs_dir / "sub" / "records.jsonl").write_text(
        json.dumps({"id": 7, "body": "레코드 본문입니다.", "year": 2023}) + "\n", encoding="utf-8"
    )
    (docs_dir / "image.png").write_bytes(b"\x89PNG")  # unsupported in a folder: skipped quietly
    (docs_dir / ".hidden.md").write_text("secret", encoding="utf-8")
    seen: list[tuple[float, float | None]] = []
    report = ingest_paths(index, [docs_dir], text_field="body", progress=lambda d, t, m: seen.append((d, t)))
    assert sorted(d.source for d in report.documents) == ["en.md", "ko.md", "sub/records.jsonl#7"]
    assert report.added == 3 and report.errors == []
    assert seen[-1] == (3, 3) and len(seen) == 4
    record = search(index, "레코드", filters={"year": 2023}).hits[0]
    assert record.source == "sub/records.jsonl#7" and record.metadata["path"].endswith("records.jsonl")
    again = ingest_paths(index, [docs_dir], text_field="body")
    assert (again.unchanged, again.added, again.chunks) == (3, 0, 0)
    assert "unchanged" in again.message


def test_a_path_outside_the_roots_is_refused(index: Index, tmp_path: Path, row_counts: Counts) -> None:
    outside = tmp_path / "outside.md"
    outside.write_text("# secret\n\nnot yours", encoding="utf-8")
    with pytest.raises(IngestError, match="outside the allowed roots.*RAGTUNE_RETRIEVAL_ROOTS"):
        ingest_paths(index, [outside])
    assert row_counts(index)["documents"] == 0


def test_a_symlink_escaping_the_roots_is_refused(
    index: Index, docs_dir: Path, tmp_path: Path, row_counts: Counts
) -> None:
    outside = tmp_path / "passwords.md"
    outside.write_text("hunter2", encoding="utf-8")
    link = docs_dir / "innocent.md"
    os.symlink(outside, link)
    with pytest.raises(IngestError, match="a symlink to .*passwords.md.*outside the allowed roots"):
        ingest_paths(index, [link])
    folder = ingest_paths(index, [docs_dir])
    assert [e.path for e in folder.errors] == [str(link)], "inside a folder it is skipped and reported"
    assert "passwords" not in {d.source for d in folder.documents}
    assert not search(index, "hunter2", mode="lexical").hits


def test_one_bad_named_path_writes_nothing(index: Index, docs_dir: Path, row_counts: Counts) -> None:
    (docs_dir / "tool.exe").write_bytes(b"MZ")
    with pytest.raises(IngestError, match="unsupported file type '.exe'"):
        ingest_paths(index, [docs_dir / "ko.md", docs_dir / "tool.exe"])
    with pytest.raises(IngestError, match="does not exist"):
        ingest_paths(index, [docs_dir / "ko.md", docs_dir / "missing.md"])
    assert row_counts(index)["documents"] == 0


def test_an_oversized_file_is_refused(retrieval_settings: object, fake_embedder: object, docs_dir: Path) -> None:
    (docs_dir / "big.txt").write_text("x " * 60_000, encoding="utf-8")
    ix = Index.open(retrieval_settings, fake_embedder, max_file_mb=0.1)  # type: ignore[arg-type]
    try:
        with pytest.raises(IngestError, match=r"over the 0.1 MB limit.*RAGTUNE_RETRIEVAL_MAX_FILE_MB"):
            ingest_paths(ix, [docs_dir / "big.txt"])
        assert ix.conn.execute("select count(*) from documents").fetchone()[0] == 0
    finally:
        ix.close()


def test_an_empty_file_is_a_clear_error(index: Index, docs_dir: Path) -> None:
    (docs_dir / "empty.md").write_text("   \n", encoding="utf-8")
    with pytest.raises(IngestError, match="no text"):
        ingest_paths(index, [docs_dir / "empty.md"])
