"""The demo's fine-tuning step says plainly whether the loss fell, and its check question was never trained on."""

from __future__ import annotations

from ragtune.agents.demo_finetune import GUIDES, loss_line
from ragtune.agents.research.qa_pairs import build_pairs, guide_documents, split_holdout, split_records


def test_loss_line_says_plainly_when_the_loss_did_not_fall() -> None:
    fell, line = loss_line([2.7, 1.9, 1.9, 1.7, 1.6, 1.4, 1.2, 1.1])
    assert fell and line.startswith("training loss fell from 2.30 to 1.15")
    fell, line = loss_line([1.9, 2.4, 3.9, 4.8])
    assert not fell and "THE TRAINING LOSS DID NOT FALL (1.90 -> 4.80)" in line
    assert loss_line([2.0]) == (False, "the job logged fewer than two losses: cannot tell whether training helped")


def test_the_check_question_is_held_out_by_the_agent_too() -> None:
    pairs = build_pairs(guide_documents(GUIDES))
    train, held = split_holdout(pairs)
    check = next(p for p in held if p.lang == "en")
    _, agent_held = split_records([p.record() for p in pairs])  # what the fine-tuning agent uploads as validation
    assert check.record() in agent_held and check.question not in {p.question for p in train}
