"""Candidate sentences: whole sentences with their exact span in the document; code, headings and table rules
dropped; short list items, table rows and commented commands kept as one unit each."""

from __future__ import annotations

from ragtune.agents.research.evidence import Hit
from ragtune.agents.research.sentences import candidates, split_spans

DOC = (
    "# Guide\n\n## LoRA\n\nLoRA trains small adapter matrices and\nkeeps the base model frozen. It saves memory.\n\n"
    "```bash\nmake demo    # run the whole kit\nlora = train(model)\n```\n\n"
    "| Part | Port |\n|---|---|\n| fine-tuning server | 8702 |\n\n"
    "- `RAGTUNE_API_TOKEN`: bearer token. Needed beyond loopback\n- **Adapters** are small files."
)


def test_units_are_whole_sentences_rows_items_and_commented_commands():
    assert [text for _, _, text in split_spans(DOC)] == [
        "LoRA trains small adapter matrices and keeps the base model frozen.",
        "It saves memory.",
        "make demo # run the whole kit",
        "fine-tuning server | 8702",
        "`RAGTUNE_API_TOKEN`: bearer token. Needed beyond loopback",
        "Adapters are small files.",
    ]


def test_citation_points_at_the_sentence_inside_the_document():
    offset = 100  # the chunk starts 100 characters into its document
    document = "x" * offset + DOC
    hit = Hit("Guide", "LoRA", DOC, offset, offset + len(DOC), 1.0, "doc1")
    by_text = {s.text: s for s in candidates([hit, hit])}  # a repeated chunk gives each sentence once
    assert len(by_text) == 6
    saves = by_text["It saves memory."]
    assert document[saves.start : saves.end] == "It saves memory."
    row = by_text["fine-tuning server | 8702"]
    assert document[row.start : row.end] == "| fine-tuning server | 8702 |"
    assert saves.citation_hit().citation(1) == f"[1] Guide › LoRA (chars {saves.start}-{saves.end})"
