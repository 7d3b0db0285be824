"""Regression tests for issue #12 on the retrieval server: FIFOs, query length, zip bombs, nested JSON,
huge offsets, Markdown headings, and a truthful --no-wait and status."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from ragtune.servers.retrieval import cli
from ragtune.servers.retrieval.chunking import markdown_title
from ragtune.servers.retrieval.errors import BadQuery
from ragtune.servers.retrieval.filler import VectorFiller
from ragtune.servers.retrieval.index import Index
from ragtune.servers.retrieval.ingest import ingest_paths
from ragtune.servers.retrieval.loaders import LoadError, load_file
from ragtune.servers.retrieval.search import lexical_ranking, search
from ragtune.servers.retrieval.server import build_server

from ragtune.config import RetrievalSettings

from .conftest import FakeEmbedder
from .test_server import call, error_text
from .test_transports import ROOT, free_port, server_env, wait_healthy

TOKEN = "x7Qp2-LmN9vRt4sZ"


@pytest.fixture
def fifo_dir(docs_dir: Path) -> Path:
    """A folder under the root holding a FIFO named like a markdown file next to a real one."""
    folder = docs_dir / "f"
    folder.mkdir()
    os.mkfifo(folder / "a.md")
    (folder / "b.md").write_text("# Real\n\nA real file about lighthouses.\n", encoding="utf-8")
    return folder


def test_cli_ingest_skips_a_fifo_instead_of_hanging(tmp_path: Path, docs_dir: Path, fifo_dir: Path) -> None:
    env = server_env(tmp_path, docs_dir)
    run = [sys.executable, "-m", "ragtune.servers.retrieval", "ingest"]
    done = subprocess.run([*run, str(fifo_dir)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "1 added" in done.stdout, done.stderr
    assert "not a regular file" in done.stderr
    named = subprocess.run(
        [*run, str(fifo_dir / "a.md")], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert named.returncode == 1 and "not a regular file" in named.stderr
    assert "Traceback" not in named.stderr


@pytest.fixture
def http_proc(tmp_path: Path, docs_dir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`serve --transport http` in a subprocess (the test itself stops it with SIGTERM)."""
    port = free_port()
    env = server_env(tmp_path, docs_dir, RAGTUNE_API_TOKEN=TOKEN, RAGTUNE_LOG_LEVEL="WARNING")
    argv = [sys.executable, "-m", "ragtune.servers.retrieval", "serve", "--transport", "http", "--port", str(port)]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


async def test_fifos_over_mcp_leave_the_server_responsive_and_stoppable(
    http_proc: tuple[str, subprocess.Popen[bytes]], fifo_dir: Path
) -> None:
    base, proc = http_proc
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=httpx2.Timeout(30, read=60))
    with anyio.fail_after(90):
        async with http, Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
            for _ in range(45):  # more calls than the worker thread pool (40) that 42 hung calls used up
                text = await error_text(client, "retrieval_ingest_path", paths=[str(fifo_dir / "a.md")])
                assert "not a regular file" in text
            report = await call(client, "retrieval_ingest_path", paths=[str(fifo_dir)])
            assert report["added"] == 1 and "not a regular file" in report["errors"][0]["error"]
            found = await call(client, "retrieval_search", query="lighthouses")
            assert found["hits"][0]["title"] == "Real"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) in (0, -signal.SIGTERM)  # uvicorn shuts down, then re-raises the signal


def test_a_query_over_the_limit_is_refused_with_the_setting_named(index: Index) -> None:
    index.ingest_text("Lighthouses guide ships.", source="l")
    with pytest.raises(BadQuery, match="RAGTUNE_RETRIEVAL_MAX_QUERY_CHARS"):
        search(index, "lighthouse " * 1000)
    assert search(index, "lighthouse " * 10).hits


def _docx(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_a_docx_bomb_and_a_broken_docx_give_one_line_errors(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.docx"
    bomb.write_bytes(_docx({"[Content_Types].xml": b"<x/>", "word/document.xml": b"<w>" + b"a" * 20_000_000}))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(LoadError, match="decompression bomb") as bomb_error:
        load_file(bomb)
    broken = tmp_path / "broken.docx"
    broken.write_bytes(_docx({"[Content_Types].xml": b"<Types><unclosed", "word/document.xml": b"<w:document"}))
    with pytest.raises(LoadError, match="not a readable .docx") as broken_error:
        load_file(broken)
    assert "\n" not in str(bomb_error.value) + str(broken_error.value)


def test_a_pdf_parser_failure_is_a_load_error(tmp_path: Path) -> None:
    pdf = tmp_path / "bad.pdf"
    pdf.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF")
    with pytest.raises(LoadError, match="not a readable PDF|no text layer"):
        load_file(pdf)


def test_deeply_nested_json_is_a_load_error_with_its_line(tmp_path: Path) -> None:
    records = tmp_path / "r.jsonl"
    records.write_text('{"text": "fine"}\n' + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(LoadError, match=r"too deeply \(line 2\)"):
        load_file(records)


async def test_a_huge_offset_gets_a_clear_error(retrieval_settings: RetrievalSettings) -> None:
    async with Client(build_server(retrieval_settings, embedder=FakeEmbedder())) as client:
        await call(client, "retrieval_ingest_text", text="One document.")
        text = await error_text(client, "retrieval_list_documents", offset=2**63)
        assert "offset must be" in text and "next_offset" in text


KIWI_STYLE = """Kiwi guide
==========

Intro to the analyser.

```python
# load the model first
kiwi = Kiwi()
```

Tokenizing
----------

Call tokenize on a sentence.
"""


def test_markdown_code_comments_are_not_headings_and_setext_headings_are(index: Index, docs_dir: Path) -> None:
    assert markdown_title(KIWI_STYLE) == "Kiwi guide"
    assert markdown_title("```\n# not a title\n```\ntext\n") is None
    (docs_dir / "kiwi.md").write_text(KIWI_STYLE, encoding="utf-8")
    ingest_paths(index, [docs_dir / "kiwi.md"])
    hit = search(index, "tokenize sentence", mode="lexical").hits[0]
    assert hit.title == "Kiwi guide" and hit.heading_path == ["Kiwi guide", "Tokenizing"]
    intro = search(index, "analyser", mode="lexical").hits[0]
    assert intro.heading_path == ["Kiwi guide"]


def test_no_wait_and_status_say_who_fills_vectors(
    retrieval_settings: RetrievalSettings, docs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(paths=[str(docs_dir / "en.md")], collection=None, text_field="text", no_wait=True)
    shell = Index.open(retrieval_settings, FakeEmbedder())
    try:
        assert cli.ingest(shell, args) == 0
        assert "no server is running" in capsys.readouterr().out
        assert "no running server" in shell.status().vector_filler
        server = Index.open(retrieval_settings, FakeEmbedder())
        filler = VectorFiller(server, idle_seconds=0.2).start()
        try:
            server.pending.set()
            tick = threading.Event()
            for _ in range(100):  # bounded: the filler thread embeds on its own schedule
                if shell.coverage().embedded == shell.coverage().total:
                    break
                tick.wait(0.1)
            status = json.loads(shell.status().model_dump_json())
            assert f"server pid {os.getpid()}" in status["vector_filler"]
            assert shell.coverage().embedded == shell.coverage().total
        finally:
            filler.stop()
            server.close()
        assert "no running server" in shell.status().vector_filler
    finally:
        shell.close()


def test_lexical_ranking_runs_without_the_index_lock(index: Index) -> None:
    index.ingest_text("Lighthouses guide ships along the coast.", source="l")
    name = index.resolve_collection(None)
    result: list[list[tuple[int, float]]] = []
    with index.lock:  # another thread holding the lock (a writer, a long search) must not stall this search
        worker = threading.Thread(
            target=lambda: result.append(lexical_ranking(index, ["lighthous"], name, "1", [], 5)), daemon=True
        )
        worker.start()
        worker.join(timeout=10)
    assert result and result[0], "the lexical ranking waited for the index lock"


def test_the_retrieval_server_caps_open_mcp_sessions(retrieval_settings: RetrievalSettings) -> None:
    from ragtune.servers.retrieval.server import build_app
    from starlette.testclient import TestClient

    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    capped = retrieval_settings.model_copy(update={"mcp_max_sessions": 1})
    with TestClient(build_app(capped, embedder=None), base_url="http://127.0.0.1:8701") as http:
        assert http.post("/mcp", json=init, headers=headers).status_code == 200
        assert http.post("/mcp", json=init, headers=headers).status_code == 503
