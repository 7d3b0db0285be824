"""The command line: --help everywhere, ingest with a bar, search as a table, status, claude-config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from ragtune.servers.retrieval.__main__ import main


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, docs_dir: Path) -> Path:
    """Point the CLI at a private home and `docs_dir`, lexical only (fast)."""
    monkeypatch.setenv("RAGTUNE_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("RAGTUNE_RETRIEVAL_ROOTS", str(docs_dir))
    monkeypatch.setenv("RAGTUNE_EMBEDDER", "none")
    return docs_dir


@pytest.mark.parametrize("argv", [[], ["serve"], ["ingest"], ["search"], ["status"], ["claude-config"]])
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_ingest_then_search_prints_a_table(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", str(cli_env), "--collection", "guide"]) == 0
    assert "2 added" in capsys.readouterr().out
    assert main(["search", "형태소를", "--collection", "guide", "--k", "1"]) == 0
    captured = capsys.readouterr()
    assert "검색 안내" in captured.out and "lexical" in captured.out
    assert "vector skipped" in captured.err
    assert main(["search", "pasta", "--collection", "guide", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["source"] == "en.md"
    assert main(["status"]) == 0
    assert json.loads(capsys.readouterr().out)["collections"][0]["documents"] == 2


def test_bad_input_is_one_clear_line_and_exit_1(
    cli_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "elsewhere.md").write_text("x", encoding="utf-8")
    assert main(["ingest", str(tmp_path / "elsewhere.md")]) == 1
    assert "outside the allowed roots" in capsys.readouterr().err
    assert main(["search", "x", "--collection", "missing"]) == 1
    assert "unknown collection" in capsys.readouterr().err


def test_claude_config_uses_absolute_paths(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["claude-config"]) == 0
    entry = json.loads(capsys.readouterr().out)["mcpServers"]["ragtune-retrieval"]
    assert entry["command"] == str(Path(sys.executable).absolute())
    assert entry["args"] == ["-m", "ragtune.servers.retrieval", "serve", "--transport", "stdio"]
    assert Path(entry["env"]["RAGTUNE_HOME"]).is_absolute()
