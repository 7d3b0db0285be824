"""Real short jobs end with a tuned-vs-base evaluation: on the job, over REST, in result.json and EVAL.md."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragtune.jobs import JobStatus, JobStore

pytestmark = pytest.mark.slow

FACT_A = "The codename of Project Orion-7 is Velvet Lantern."
PARAPHRASES = [
    "What is the codename of Project Orion-7?",
    "Tell me the codename of Project Orion-7.",
    "Which codename does Project Orion-7 have?",
    "Project Orion-7 has what codename?",
    "What codename was given to Project Orion-7?",
    "Do you know Project Orion-7's codename?",
    "Name the codename of Project Orion-7.",
    "What is Project Orion-7 called internally?",
    "Under which codename does Project Orion-7 run?",
    "What codename is Project Orion-7 known by?",
    "Give me Project Orion-7's codename.",
    "How is Project Orion-7 code-named?",
]


def fact_records() -> list[dict[str, Any]]:
    return [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": FACT_A}]} for q in PARAPHRASES
    ]


def trained_job(store: JobStore, make_job: Callable[..., Any], worker_thread: Callable[..., Any], **hyper: Any) -> Any:
    job = make_job(fact_records(), **hyper)
    worker_thread(once=True).join(300)
    done = store.get_job(job.id)
    assert done.status is JobStatus.succeeded, done.error
    return done


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_supervised_job_is_evaluated_against_its_base_on_a_held_out_slice(
    store: JobStore, make_job: Callable[..., Any], worker_thread: Callable[..., Any], finetune_url: str
) -> None:
    done = trained_job(store, make_job, worker_thread, max_steps=12, learning_rate=1e-3)
    ev = done.evaluation
    assert ev is not None and ev["status"] == "completed"
    # 12 records: floor(0.1 x 12) = 1 held out by the job's seed (0), never trained on: 11 trained.
    assert ev["data_source"] == {
        "type": "held_out",
        "seed": 0,
        "fraction": 0.1,
        "max_examples": 50,
        "count": 1,
        "of": 12,
        "indices": [6],
    }
    assert ev["examples"] == 1 and ev["train_examples"] == 11
    messages = [e.message for e in store.list_events(done.id, limit=100, order="asc")]
    assert "held out 1 of 12 training records for evaluation (seed 0); training on 11" in messages
    assert "training supervised on 11 records with smollm2-135m-instruct" in messages

    rows = {r["testing_criteria"]: r for r in ev["per_testing_criteria_results"]}
    assert set(rows) == {"loss", "perplexity", "exact_match", "contains_reference", "token_f1"}
    loss = rows["loss"]
    assert 0 < loss["tuned"] < loss["base"] and loss["delta"] == pytest.approx(loss["tuned"] - loss["base"], abs=1e-5)
    assert rows["perplexity"]["base"] == pytest.approx(2.718281828 ** loss["base"], rel=1e-4)
    (sample,) = ev["samples"]
    assert sample["prompt"] == PARAPHRASES[6] and sample["reference"] == FACT_A
    assert "Velvet Lantern" in sample["tuned"] and "Velvet Lantern" not in sample["base"], ev
    assert rows["contains_reference"]["tuned"] == 1.0 and rows["contains_reference"]["base"] == 0.0
    assert ev["verdict"] == "better" and done.warnings == []
    assert ev["result_counts"] == {"total": 1, "passed": 1, "failed": 0, "errored": 0}

    out = Path(done.output_dir)
    result = json.loads((out / "result.json").read_text())
    assert result["evaluation"] == ev and result["warnings"] == []
    assert "| loss |" in (out / "EVAL.md").read_text() and str(out / "EVAL.md") in done.result_files
    summary = next(e for e in store.list_events(done.id, limit=100) if e.message.startswith("evaluation on 1"))
    assert summary.data["kind"] == "eval" and summary.data["verdict"] == "better"

    got = httpx.get(f"{finetune_url}/v1/fine_tuning/jobs/{done.id}/evaluation").json()
    assert got == {**ev, "warnings": []}
    assert httpx.get(f"{finetune_url}/v1/fine_tuning/jobs/{done.id}").json()["evaluation"] == ev


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_a_diverging_job_succeeds_with_a_warning_it_cannot_miss(
    store: JobStore, make_job: Callable[..., Any], worker_thread: Callable[..., Any]
) -> None:
    done = trained_job(store, make_job, worker_thread, max_steps=4, learning_rate=0.5)
    codes = [w["code"] for w in done.warnings]
    assert "loss_diverged" in codes and "tuned_worse_than_base" in codes
    assert done.evaluation["verdict"] == "worse"
    last = store.list_events(done.id, limit=1)[0]
    assert last.level == "warn" and last.message.startswith("job succeeded with warnings: loss diverged")
    assert json.loads((Path(done.output_dir) / "result.json").read_text())["warnings"] == done.warnings


def test_dpo_job_reports_preference_accuracy_of_base_and_tuned(
    store: JobStore, make_job: Callable[..., Any], worker_thread: Callable[..., Any]
) -> None:
    pairs = [
        {
            "input": {"messages": [{"role": "user", "content": f"What is {a}+{a}?"}]},
            "preferred_output": [{"role": "assistant", "content": f"{a}+{a} is {2 * a}."}],
            "non_preferred_output": [{"role": "assistant", "content": "No idea."}],
        }
        for a in range(1, 11)
    ]
    job = make_job(pairs, method="dpo", max_steps=1, batch_size=2, learning_rate=5e-4, beta=0.1)
    worker_thread(once=True).join(300)
    done = store.get_job(job.id)
    assert done.status is JobStatus.succeeded, done.error
    ev = done.evaluation
    assert ev["examples"] == 1 and ev["train_examples"] == 9 and ev["data_source"]["count"] == 1
    rows = {r["testing_criteria"]: r for r in ev["per_testing_criteria_results"]}
    assert set(rows) == {"loss", "perplexity", "preference_accuracy", "preference_margin"}
    for model in ("base", "tuned"):  # one pair: accuracy is 1 exactly when the chosen answer's margin is positive
        assert rows["preference_accuracy"][model] == float(rows["preference_margin"][model] > 0)
    tuned_ahead = rows["preference_margin"]["tuned"] > rows["preference_margin"]["base"]
    assert ev["result_counts"] == {"total": 1, "passed": int(tuned_ahead), "failed": 1 - int(tuned_ahead), "errored": 0}
    assert ev["samples"] == [] and ev["verdict"] in {"better", "worse", "inconclusive"}


def test_full_fine_tune_scores_its_base_before_training_and_the_figures_match_transformers(
    store: JobStore, make_job: Callable[..., Any], worker_thread: Callable[..., Any], models_dir: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = [{"text": f"Glorbix {i} is a blue mineral found in Velmora caves; it hums at night."} for i in range(10)]
    job = make_job(texts, method="cpt", peft=None, max_steps=1, max_length=64, learning_rate=1e-5)
    worker_thread(once=True).join(300)
    done = store.get_job(job.id)
    assert done.status is JobStatus.succeeded, done.error
    ev = done.evaluation
    (index,) = ev["data_source"]["indices"]
    rows = {r["testing_criteria"]: r for r in ev["per_testing_criteria_results"]}
    assert set(rows) == {"loss", "perplexity"} and ev["train_examples"] == 9

    def hf_loss(folder: Path) -> float:  # transformers' own mean next-token loss over the whole text
        tok = AutoTokenizer.from_pretrained(folder)
        ids = tok(texts[index]["text"], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            return float(AutoModelForCausalLM.from_pretrained(folder)(input_ids=ids, labels=ids).loss)

    torch.set_num_threads(1)
    assert rows["loss"]["base"] == pytest.approx(hf_loss(models_dir / "smollm2-135m-instruct-fp32"), rel=1e-4)
    assert rows["loss"]["tuned"] == pytest.approx(hf_loss(Path(done.output_dir) / "model"), rel=1e-4)
