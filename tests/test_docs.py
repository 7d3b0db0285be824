"""User docs stay true: the method guide agrees with the advisor, the README with the settings and Makefile."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ragtune.servers.finetune.advisor import (
    PLENTIFUL_DATA,
    RULES,
    SCENARIOS,
    TINY_DATA,
    Situation,
    recommend_method,
)

from ragtune.config_docs import TABLE_BEGIN, TABLE_END, collect, readme_block

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs/guide/choosing-a-method.md"
GUIDE_KO = ROOT / "docs/ko/choosing-a-method.md"
README = ROOT / "README.md"
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def _section_rows(path: Path, heading: str) -> list[list[str]]:
    """Return the cells of the first Markdown table under `heading` (header and rule lines dropped)."""
    text = path.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    rows: list[list[str]] = []
    for line in text[start + len(heading) + 2 :].splitlines():
        if line.startswith("## "):
            break
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:]


def _code(cell: str) -> str:
    """Return the `code` a table cell ends with."""
    found = re.findall(r"`([a-z_]+)`", cell)
    assert found, f"no method code in {cell!r}"
    return found[-1]


def test_guide_scenarios_are_the_advisors_and_get_the_advisors_answer() -> None:
    rows = _section_rows(GUIDE, "## Canonical scenarios")
    assert [row[0] for row in rows] == [title for title, _, _ in SCENARIOS]
    for (title, situation, expected), row in zip(SCENARIOS, rows, strict=True):
        answered = recommend_method(Situation(**situation)).method
        assert answered == expected == _code(row[1]), f"{title}: advisor {answered}, guide {row[1]}"


def test_guide_rules_are_the_advisors_rules_in_order() -> None:
    rows = _section_rows(GUIDE, "## The decision rules")
    assert [(_code(row[1]), _code(row[3])) for row in rows] == [(rule.name, rule.method) for rule in RULES]
    for rule, row in zip(RULES, rows, strict=True):
        assert row[2] == rule.when.replace("10000", "10,000"), f"{rule.name}: {row[2]!r} vs {rule.when!r}"
    text = GUIDE.read_text(encoding="utf-8")
    assert f"fewer than {TINY_DATA} examples" in text and f"{PLENTIFUL_DATA:,} examples or more" in text


def test_korean_guide_has_the_same_rules_and_answers() -> None:
    rules = _section_rows(GUIDE_KO, "## 판단 규칙")
    assert [(_code(row[1]), _code(row[3])) for row in rules] == [(rule.name, rule.method) for rule in RULES]
    scenarios = _section_rows(GUIDE_KO, "## 대표 상황별 추천")
    assert [_code(row[1]) for row in scenarios] == [expected for _, _, expected in SCENARIOS]
    assert all(HANGUL.search(row[0]) for row in scenarios)


@pytest.mark.parametrize("path", [GUIDE, GUIDE_KO])
def test_every_advice_link_lands_on_an_anchor(path: Path) -> None:
    anchors = set(re.findall(r'<a id="([a-z-]+)"></a>', path.read_text(encoding="utf-8")))
    for _, situation, _ in SCENARIOS:
        link = recommend_method(Situation(**situation)).docs
        assert link.split("#")[0] == "docs/guide/choosing-a-method.md"
        assert link.split("#")[1] in anchors, link


def test_guide_states_the_memory_facts_the_advisor_computes() -> None:
    from ragtune.servers.finetune.advisor import estimate_memory

    text = GUIDE.read_text(encoding="utf-8")
    weights = estimate_memory(params=7e9, method="full", precision="bf16").weights_gb
    assert weights == 14.0 and "**14 GB**" in text
    assert "CPT hurts instruction following" in text
    korean = GUIDE_KO.read_text(encoding="utf-8")
    for method in ("full", "lora", "qlora"):
        total = round(estimate_memory(params=7e9, method=method).total_gb)
        assert f"**{total} GB**" in text and f"**{total}GB**" in korean, f"{method}: the advisor says {total} GB"


def test_readme_opens_with_exactly_the_two_setup_commands() -> None:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README.md has no code block"
    assert text.index(block.group(0)) < text.index("\n## "), "the set-up commands come before the first section"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo: .*\n\t\$\(BIN\)/python agents/run.py$", makefile, re.M)
    assert re.search(r"^test: .*\n\t\$\(BIN\)/python -m pytest", makefile, re.M)


def test_readme_configuration_table_is_generated_from_the_settings() -> None:
    text = README.read_text(encoding="utf-8")
    start, end = text.index(TABLE_BEGIN), text.index(TABLE_END) + len(TABLE_END)
    assert text[start:end] == readme_block(collect()), "run `python -m ragtune.config_docs update-readme`"
    env_example = (ROOT / ".env.example").read_text(encoding="utf-8")
    for doc in collect():
        assert f"`{doc.env}`" in text[start:end] and doc.env in env_example


def test_readme_documents_every_recipe_and_links_the_benchmarks() -> None:
    from ragtune.servers.worker.recipes import RECIPES

    text = README.read_text(encoding="utf-8")
    for name in RECIPES:
        assert f"`{name}`" in text, f"README.md does not mention recipe {name}"
    assert "docs/benchmarks/" in text


def _markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        assert (path.parent / target).exists(), f"{path.name} links to missing {target}"


def test_demo_corpus_is_structured_and_bilingual() -> None:
    english = sorted((ROOT / "docs/guide").glob("*.md"))
    korean = sorted((ROOT / "docs/ko").glob("*.md"))
    assert len(english) >= 3 and len(korean) >= 3
    for path in english + korean:
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# ") and text.count("\n## ") >= 3, f"{path.name} needs headings for the chunker"
    for path in korean:
        prose = re.sub(r"```.*?```|`[^`]*`|\([^)]*\)", "", path.read_text(encoding="utf-8"), flags=re.S)
        letters = [c for c in prose if c.isalpha()]
        assert sum(bool(HANGUL.match(c)) for c in letters) / len(letters) > 0.5, f"{path.name} is not mostly Korean"


def test_guide_lists_every_mcp_tool_in_the_contract() -> None:
    contracts = (ROOT / "docs/dev/CONTRACTS.md").read_text(encoding="utf-8")
    tools = set(re.findall(r"`((?:retrieval|finetune)_[a-z_]+)`", contracts))
    assert len(tools) >= 20
    for doc in ("docs/guide/overview.md", "docs/ko/overview.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        missing = sorted(t for t in tools if t not in text)
        assert not missing, f"{doc} does not mention {missing}"
