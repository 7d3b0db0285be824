"""The strict check: every number, name, path, port, setting, flag and quoted token of a draft must be in the
cited sentences."""

from __future__ import annotations

from pathlib import Path

from ragtune.agents.research.sentences import split_spans
from ragtune.agents.research.strict import check, stated

ROW = "| fine-tuning server (`servers/finetune`) | MCP server plus an OpenAI-compatible REST API (`/v1`) | 8702"
HOME = "Everything goes under `RAGTUNE_HOME` (default `./.ragtune`): the index and 10,000 job files."


def test_a_wrong_port_fails_and_says_which():
    result = check("The fine-tuning server listens on port 8711 [1].", [ROW])
    assert not result.passed
    assert result.line() == "grounding check: failed: 8711 not in sources"
    assert check("The fine-tuning server listens on port 8702 [1].", [ROW]).line() == "grounding check: passed"


def test_numbers_match_as_whole_tokens_and_ignore_thousands_separators():
    assert not check("It uses port 870.", [ROW]).passed  # 870 is not 8702
    assert check("It holds 10000 job files [1].", [HOME]).passed


def test_settings_paths_flags_quoted_tokens_and_names_are_checked():
    assert check("Data lives under RAGTUNE_HOME, by default ./.ragtune [1].", [HOME]).passed
    for wrong in (
        "Data lives under RAGTUNE_DATA_DIR.",
        "Data lives under ~/.cache/ragtune/store.",
        "Pass --data-dir to move it.",
        'Set "home_folder" first.',
        "It is stored by Ollama.",
    ):
        assert not check(wrong, [HOME]).passed, wrong
    assert {"ragtune_data_dir", "--data-dir"} <= set(stated("Use RAGTUNE_DATA_DIR or --data-dir."))


def test_citation_markers_are_not_claims():
    assert stated("It saves memory [1] [2, 3].") == []


def test_a_draft_copying_any_guide_sentence_passes():
    root = Path(__file__).resolve().parents[3]
    for path in [*(root / "docs" / "guide").glob("*.md"), *(root / "docs" / "ko").glob("*.md"), root / "README.md"]:
        for _, _, sentence in split_spans(path.read_text()):
            assert check(f"{sentence} [1]", [sentence]).passed, (path.name, sentence)
