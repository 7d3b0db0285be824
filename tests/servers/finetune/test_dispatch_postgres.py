"""Ray submissions reach the PostgreSQL job store the service uses, even when only .env or the settings name it."""

from __future__ import annotations

from ragtune.servers.finetune.ray_jobs import worker_env

from ragtune.config import FinetuneSettings


def test_worker_env_carries_the_database_url_the_service_uses() -> None:
    url = "postgresql://ragtune:pw@db:5432/ragtune"
    env = worker_env(FinetuneSettings(database_url=url), {"PATH": "/bin"})  # not in the environment: from settings
    assert env["RAGTUNE_DATABASE_URL"] == url
    assert "RAGTUNE_DATABASE_URL" not in worker_env(FinetuneSettings(), {"PATH": "/bin"})  # SQLite: the file path only
