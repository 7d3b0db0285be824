"""The evaluation's arithmetic against hand computations on tiny sets (no model): every number a job reports."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from ragtune.servers.worker.recipes import eval_report, metrics

from ragtune.jobs import JobStatus, JobStore


def test_answer_metrics_match_a_hand_computation() -> None:
    answers = ["Paris.", "The capital is Paris, France", "Lyon"]
    references = ["paris", "Paris", "Paris"]
    # EM: only "Paris." == "paris" after lower-casing and dropping punctuation -> 1/3.
    # contains: answers 1 and 2 contain the word "paris" -> 2/3.
    # F1: 1.0; answer 2 has 5 words, 1 shared -> P 1/5, R 1 -> 2*(1/5)/(6/5) = 1/3; 0.0 -> mean 4/9.
    assert metrics.answer_scores(answers, references) == pytest.approx(
        {"exact_match": 1 / 3, "contains_reference": 2 / 3, "token_f1": 4 / 9}
    )


def test_contains_needs_whole_words_in_order() -> None:
    assert metrics.contains_reference("It is Velvet Lantern!", "velvet lantern") == 1.0
    assert metrics.contains_reference("Lantern Velvet", "velvet lantern") == 0.0
    assert metrics.contains_reference("Parisian", "Paris") == 0.0
    assert metrics.contains_reference("anything", "...") == 0.0
    assert metrics.exact_match("서울입니다", "서울입니다.") == 1.0


def test_loss_is_token_weighted_and_perplexity_is_its_exponential() -> None:
    # Example 1: mean NLL 1.0 over 3 target tokens; example 2: 2.5 over 1 -> (3 + 2.5) / 4 = 1.375.
    loss = metrics.mean_loss([1.0, 2.5], [3, 1])
    assert loss == pytest.approx(1.375)
    assert metrics.perplexity(loss) == pytest.approx(3.955077, rel=1e-6)
    assert math.isnan(metrics.mean_loss([], []))
    assert metrics.perplexity(1e6) == math.inf


def test_preference_accuracy_is_strict_and_margin_is_the_mean_difference() -> None:
    chosen, rejected = [-3.0, -5.0, -2.0, -4.0], [-4.0, -1.0, -2.0, -6.0]
    assert metrics.preference_accuracy(chosen, rejected) == 0.5  # pairs 1 and 4; the tie (pair 3) is not a win
    assert metrics.preference_margin(chosen, rejected) == pytest.approx((1 - 4 + 0 + 2) / 4)


@pytest.mark.parametrize(
    ("metric", "base", "tuned", "expected"),
    [
        ("loss", 2.0, 1.9, "better"),  # 0.1 > 2% of 2.0
        ("loss", 2.0, 1.97, "same"),  # 0.03 < 0.04
        ("loss", 2.0, 2.05, "worse"),
        ("loss", 2.0, math.nan, "worse"),
        ("perplexity", 7.0, math.inf, "worse"),
        ("token_f1", 0.40, 0.50, "better"),
        ("token_f1", 0.40, 0.44, "same"),
        ("preference_accuracy", 0.75, 0.5, "worse"),
    ],
)
def test_outcome_uses_the_documented_tolerances(metric: str, base: float, tuned: float, expected: str) -> None:
    assert metrics.outcome(metric, base, tuned) == expected


def test_verdict_rules() -> None:
    def rows(**outcomes: str) -> list[dict[str, Any]]:
        return [{"testing_criteria": k, "outcome": v} for k, v in outcomes.items()]

    assert metrics.verdict(rows(loss="better", token_f1="same", exact_match="worse"), "chat") == "better"
    assert metrics.verdict(rows(loss="better", token_f1="worse"), "chat") == "worse"
    assert metrics.verdict(rows(loss="same", token_f1="same"), "chat") == "inconclusive"
    assert metrics.verdict(rows(loss="worse", preference_accuracy="better"), "preference") == "better"
    assert metrics.verdict(rows(loss="worse"), "text") == "worse"


def test_compare_reports_base_tuned_and_delta() -> None:
    (row,) = metrics.compare({"loss": 2.0}, {"loss": 1.5})
    assert row == {
        "testing_criteria": "loss",
        "base": 2.0,
        "tuned": 1.5,
        "delta": -0.5,
        "higher_is_better": False,
        "outcome": "better",
    }
    (nan_row,) = metrics.compare({"loss": 2.0}, {"loss": math.nan})
    assert nan_row["tuned"] is None and nan_row["delta"] is None and nan_row["outcome"] == "worse"


def test_result_counts_compare_each_example() -> None:
    counts = metrics.result_counts([2.0, 1.0, None, 3.0], [1.0, 1.5, 0.5, 3.0], higher_is_better=False)
    assert counts == {"total": 4, "passed": 1, "failed": 2, "errored": 1}


@pytest.mark.parametrize(
    ("losses", "diverged"),
    [
        ([1.9, 2.4, 3.5, 4.8], True),  # k=1: 4.8 > 1.5 x 1.9 (the demo run)
        ([2.0, 1.0, 0.5, 0.4, 3.0, 3.2, 3.1, 3.3], True),  # k=2: (3.1+3.3)/2 = 3.2 > 1.5 x 1.5 = 2.25
        ([2.0, 2.6, 2.9, 2.8], False),  # k=1: 2.8 < 3.0
        ([2.2, 1.1, 0.3, 0.06], False),
        ([2.0, math.nan, 1.0], True),
        ([5.0], False),
    ],
)
def test_loss_divergence(losses: list[float], diverged: bool) -> None:
    assert (metrics.loss_divergence(losses) is not None) is diverged


def test_holdout_split_is_seeded_bounded_and_disjoint() -> None:
    records = [{"i": i} for i in range(25)]
    train, held, info = metrics.split_holdout(records, seed=7)
    assert len(held) == 2 and len(train) == 23  # floor(0.1 x 25)
    assert info["indices"] == sorted(__import__("random").Random(7).sample(range(25), 2))
    assert {r["i"] for r in held}.isdisjoint(r["i"] for r in train)
    assert metrics.split_holdout(records, seed=7)[2] == info  # same seed, same slice
    assert len(metrics.split_holdout([{"i": i} for i in range(900)], seed=0)[1]) == 50  # capped
    assert metrics.split_holdout(records[:9], seed=0)[1] == []  # too few to hold any out


def _evaluation(base_loss: float, tuned_loss: float, base_f1: float, tuned_f1: float) -> dict[str, Any]:
    rows = metrics.compare({"loss": base_loss, "token_f1": base_f1}, {"loss": tuned_loss, "token_f1": tuned_f1})
    return {
        "status": "completed",
        "data_source": {"type": "held_out", "count": 2, "of": 20, "seed": 0},
        "examples": 2,
        "train_examples": 18,
        "per_testing_criteria_results": rows,
        "result_counts": {"total": 2, "passed": 1, "failed": 1, "errored": 0},
        "verdict": metrics.verdict(rows, "chat"),
        "samples": [{"prompt": "Q | x?", "reference": "A.", "base": "no", "tuned": "A."}],
    }


class Recorder:
    """Collects the events a review emits."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any] | None]] = []

    def event(self, message: str, *, level: str = "info", data: dict[str, Any] | None = None) -> None:
        self.events.append((message, level, data))


def test_review_of_a_worse_and_diverged_job_warns_in_events_result_and_eval_md(tmp_path: Path) -> None:
    rows = [{"step": s, "train_loss": v} for s, v in [(1, 1.9), (2, 2.5), (3, 3.9), (4, 4.8)]]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rec = Recorder()
    ev, warnings = eval_report.review(tmp_path, _evaluation(1.2, 3.4, 0.5, 0.1), {"job_id": "ftjob-x"}, rec)

    assert ev["verdict"] == "worse" and ev["object"] == "fine_tuning.job.evaluation"
    assert ev["summary"] == (
        "evaluation on 2 held-out examples (base -> tuned): loss 1.200 -> 3.400, token_f1 0.500 -> 0.100; verdict worse"
    )
    assert [w["code"] for w in warnings] == ["loss_diverged", "tuned_worse_than_base"]
    assert "rose from 1.90 to 4.80" in warnings[0]["message"]
    summary, level, data = rec.events[0]
    assert summary == ev["summary"] and level == "warn"
    assert data == {
        "kind": "eval",
        "verdict": "worse",
        "examples": 2,
        "metrics": {
            "loss": {"base": 1.2, "tuned": 3.4, "delta": 2.2},
            "token_f1": {"base": 0.5, "tuned": 0.1, "delta": -0.4},
        },
    }
    assert [(lvl, d["code"]) for _, lvl, d in rec.events[1:]] == [
        ("warn", "loss_diverged"),
        ("warn", "tuned_worse_than_base"),
    ]
    md = (tmp_path / "EVAL.md").read_text()
    assert "| loss | 1.200 | 3.400 | 2.200 | worse |" in md
    assert "| Q \\| x? | A. | no | A. |" in md
    assert "`tuned_worse_than_base`" in md and "2 of 20 training records held out" in md


def test_review_of_a_better_job_has_no_warnings(tmp_path: Path) -> None:
    rows = [{"step": s, "train_loss": v} for s, v in [(1, 2.2), (2, 1.1), (2, 1.0), (3, 0.3)]]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert eval_report.read_losses(tmp_path / "metrics.jsonl") == [2.2, 1.0, 0.3]  # a resumed step counts once
    ev, warnings = eval_report.review(tmp_path, _evaluation(2.0, 0.5, 0.2, 0.9), {"job_id": "ftjob-y"}, Recorder())
    assert ev["verdict"] == "better" and warnings == []


def test_review_of_a_skipped_evaluation_says_why(tmp_path: Path) -> None:
    rec = Recorder()
    reason = "too few training records to hold some out (5 < 10): pass a validation_file"
    ev, warnings = eval_report.review(tmp_path, eval_report.skipped(reason), {"job_id": "j"}, rec)
    assert ev["verdict"] == "inconclusive" and warnings == [] and ev["examples"] == 0
    assert ev["per_testing_criteria_results"] == [] and ev["result_counts"]["total"] == 0  # same shape as completed
    assert rec.events[0][0] == f"evaluation skipped: {reason}"


async def test_rest_and_mcp_show_the_evaluation_and_warn_before_use(
    store: JobStore, make_job: Callable[..., Any], finetune_url: str, fact_records: list[dict[str, Any]]
) -> None:
    job = make_job(fact_records)
    async with httpx.AsyncClient(timeout=30) as http:
        missing = await http.get(f"{finetune_url}/v1/fine_tuning/jobs/{job.id}/evaluation")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "evaluation_not_found"
        assert f"job {job.id} is queued" in missing.json()["error"]["message"]

        ev = {**_evaluation(1.2, 3.4, 0.5, 0.1), "summary": "evaluation on 2 held-out examples: worse"}
        warning = {"code": "tuned_worse_than_base", "message": "the tuned model is worse"}
        store.transition(job.id, JobStatus.running)
        store.transition(job.id, JobStatus.succeeded, evaluation=ev, warnings=[warning])
        got = (await http.get(f"{finetune_url}/v1/fine_tuning/jobs/{job.id}/evaluation")).json()
        assert got == {**ev, "warnings": [warning]}
        async with Client(streamable_http_client(f"{finetune_url}/mcp", http_client=http)) as mcp:
            view = (await mcp.call_tool("finetune_get_job", {"job_id": job.id})).structured_content
    assert view["job"]["evaluation"]["verdict"] == "worse" and view["job"]["warnings"] == [warning]
    assert view["next_step"].startswith("do not use it without asking the user: tuned_worse_than_base")
