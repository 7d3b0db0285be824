"""ragtune-migrate: a real SQLite home (a job made by the service, a document ingested by the CLI) into PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ragtune.servers.finetune.service import FinetuneService
from ragtune.servers.migrate import main
from ragtune.servers.retrieval.stores import open_store

from ragtune.config import FinetuneSettings
from ragtune.jobs import JobStatus, JobStore

CHAT = "".join(
    json.dumps(
        {"messages": [{"role": "user", "content": f"What is {i}+{i}?"}, {"role": "assistant", "content": str(2 * i)}]}
    )
    + "\n"
    for i in range(12)
)
DOC = """# Lantern guide

## Night routes
The Velvet Lantern route opens at dusk and closes when the harbour bell rings twice.

## Tickets
Tickets for the lantern route are sold at the pier office only.
"""


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a ragtune command line in a fresh interpreter, as a user would."""
    return subprocess.run([sys.executable, "-P", *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture
def sqlite_home(isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SQLite RAGTUNE_HOME with a succeeded, promoted job (events, checkpoint) and one ingested document."""
    service = FinetuneService(FinetuneSettings())
    file = service.upload(CHAT.encode(), "train.jsonl")
    job = service.create_job({"model": "smollm2-135m-instruct", "training_file": file.id, "suffix": "m"})
    store = service.store
    assert isinstance(store, JobStore)
    store.lease_next("w1", 30)
    for step, loss in ((1, 2.5), (2, 1.9)):
        store.add_event(job.id, f"step {step}", type="metrics", data={"step": step, "train_loss": loss})
    store.add_checkpoint(job.id, 2, str(isolated_env / "jobs" / job.id / "checkpoint-2"), {"train_loss": 1.9})
    model = f"ft:smollm2-135m-instruct:org-ragtune:m:{job.id}"
    store.transition(job.id, JobStatus.succeeded, message="done", fine_tuned_model=model)
    service.promote(model)
    service.close()
    monkeypatch.setenv("RAGTUNE_RETRIEVAL_ROOTS", str(tmp_path))
    doc = tmp_path / "lantern.md"
    doc.write_text(DOC)
    ingested = cli("-m", "ragtune.servers.retrieval", "ingest", str(doc), "--collection", "guides")
    assert ingested.returncode == 0, ingested.stderr[-2000:]
    return isolated_env


def test_a_sqlite_home_is_copied_into_postgres_and_a_rerun_copies_nothing(
    sqlite_home: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = FinetuneService(FinetuneSettings())
    job = before.list_jobs().data[0]
    events = [e.model_dump() for e in before.events(job.id, limit=100).data]
    ckpts = [c.model_dump() for c in before.checkpoints(job.id).data]
    files = [f.model_dump() for f in before.list_files().data]
    promoted = before.current_promotion()
    before.close()
    sqlite_index = open_store(sqlite_home / "retrieval.db")
    counts = sqlite_index.chunk_counts("guides")
    sqlite_index.close()
    assert counts[0] >= 2 and counts[1] == counts[0]  # every chunk has its vector

    assert main(["--home", str(sqlite_home), "--database-url", pg_url, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "job store: copied files 1, jobs 1, events" in out and "checkpoints 1, promotion 1" in out
    assert "retrieval index: copied collections 1, documents 1, unchanged 0" in out

    monkeypatch.setenv("RAGTUNE_DATABASE_URL", pg_url)
    after = FinetuneService(FinetuneSettings())  # the service on PostgreSQL sees the same job, log and files
    assert type(after.store).__name__ == "PostgresJobStore"
    assert after.get_job(job.id) == job
    assert [e.model_dump() for e in after.events(job.id, limit=100).data] == events
    assert [c.model_dump() for c in after.checkpoints(job.id).data] == ckpts
    assert [f.model_dump() for f in after.list_files().data] == files
    assert after.current_promotion() == promoted is not None
    after.close()
    pg_index = open_store(sqlite_home / "retrieval.db", pg_url)
    assert pg_index.chunk_counts("guides") == counts  # chunks and their vectors, nothing re-embedded
    pg_index.close()
    found = cli(
        "-m",
        "ragtune.servers.retrieval",
        "search",
        "when does the lantern route close",
        "--mode",
        "vector",
        "--collection",
        "guides",
    )
    assert found.returncode == 0 and "harbour bell" in found.stdout, found.stderr[-2000:]

    assert main(["--home", str(sqlite_home), "--no-progress"]) == 0  # the URL from RAGTUNE_DATABASE_URL
    again = capsys.readouterr().out
    assert "job store: copied files 0, jobs 0, events 0, checkpoints 0, promotion 0" in again
    assert "documents 0, unchanged 1, chunks 0, vectors 0" in again


def test_clear_errors_when_there_is_nothing_to_copy_or_nowhere_to_copy_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RAGTUNE_DATABASE_URL", raising=False)
    assert main(["--home", str(tmp_path)]) == 2
    assert "set RAGTUNE_DATABASE_URL" in capsys.readouterr().err
    assert main(["--home", str(tmp_path / "empty"), "--database-url", "postgresql://u:pw@127.0.0.1:1/x"]) == 2
    assert "nothing to copy: no" in capsys.readouterr().err
    (tmp_path / "jobs.db").touch()
    assert main(["--home", str(tmp_path), "--database-url", "postgresql://u:pw@127.0.0.1:1/x", "--only", "jobs"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach PostgreSQL" in err and "pw@" not in err


def test_help_runs_as_a_module() -> None:
    shown = cli("-m", "ragtune.servers.migrate", "--help")
    assert shown.returncode == 0 and "ragtune-migrate" in shown.stdout and "--database-url" in shown.stdout
