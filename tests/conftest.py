"""Suite-wide fixtures: every test gets its own RAGTUNE_HOME and runs offline."""

from __future__ import annotations

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
