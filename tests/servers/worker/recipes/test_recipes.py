"""Each recipe trains the embedded model for a few steps through the worker; the pieces they share are exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ragtune.servers.worker.recipes import RECIPES, RecipeError, get_recipe
from ragtune.servers.worker.recipes.base import TrainJob, job_options
from ragtune.servers.worker.recipes.rewards import make_reward, token_f1

from ragtune.jobs import JobStatus, JobStore


def test_every_method_type_has_a_registered_recipe() -> None:
    assert set(RECIPES) == {"supervised", "cpt", "dpo", "rejection_sampling", "embedding"}
    with pytest.raises(RecipeError, match="unknown method type 'ppo'; use one of supervised"):
        get_recipe("ppo")


def test_job_options_merge_method_options_and_resolved_hyperparameters() -> None:
    job = {
        "method": {
            "type": "rejection_sampling",
            "rejection_sampling": {
                "reward": "regex:\\d",
                "n_samples": 2,
                "hyperparameters": {"n_epochs": "auto", "batch_size": 2},
            },
        },
        "hyperparameters": {"n_epochs": 3, "learning_rate": 1e-3},
    }
    assert job_options(job) == {
        "reward": "regex:\\d",
        "n_samples": 2,
        "batch_size": 2,
        "n_epochs": 3,
        "learning_rate": 1e-3,
    }


@pytest.mark.parametrize(
    ("spec", "answer", "reference", "score"),
    [
        ("reference_similarity", "Paris is a city", "The capital is Paris", 0.5),
        ("reference_similarity", "no overlap", "something else", 0.0),
        ("regex:\\b4\\b", "2+2 is 4.", None, 1.0),
        ("regex:\\b5\\b", "2+2 is 4.", None, 0.0),
        ("contains:velvet", "Velvet Lantern", None, 1.0),
        ("length:2", "one two three four", None, 0.5),
    ],
)
def test_rewards_score_answers(spec: str, answer: str, reference: str | None, score: float) -> None:
    assert make_reward(spec)(answer, reference) == pytest.approx(score)


def test_bad_rewards_are_clear_errors() -> None:
    with pytest.raises(RecipeError, match="unknown reward 'bleu'"):
        make_reward("bleu")
    with pytest.raises(RecipeError, match="needs a reference answer"):
        token_f1("an answer", None)


def test_weight_zero_assistant_turns_carry_no_loss(models_dir: Path) -> None:
    from ragtune.servers.worker.recipes.common import load_tokenizer

    tok = load_tokenizer(str(models_dir / "smollm2-135m-instruct-fp32"))
    messages = [
        {"role": "user", "content": "Hi", "weight": None},
        {"role": "assistant", "content": "Zebra zebra.", "weight": 0},
        {"role": "user", "content": "2+2?", "weight": None},
        {"role": "assistant", "content": "It is 4.", "weight": None},
    ]
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    trained = tok.decode([t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m])
    assert trained == "It is 4.<|im_end|>"
    plain = tok.apply_chat_template(messages, tokenize=False)
    assert plain.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert "<|im_start|>assistant\nZebra zebra.<|im_end|>\n" in plain


def test_supervised_without_trainable_turns_is_refused_before_loading_a_model(tmp_path: Path) -> None:
    recs = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]}]
    job = TrainJob(job={"id": "j", "method": {"type": "supervised"}}, records=recs, model_name="m", model_path="-")
    with pytest.raises(RecipeError, match="no record has an assistant turn with weight 1"):
        RECIPES["supervised"].run(job, tmp_path, None)  # type: ignore[arg-type]


@pytest.mark.slow
def test_dpo_job_logs_reward_metrics_and_saves_an_adapter(
    store: JobStore, make_job, preference_records, worker_thread
) -> None:
    job = make_job(preference_records, method="dpo", max_steps=2, batch_size=2, learning_rate=5e-4, beta=0.1)
    worker_thread(once=True).join(240)

    done = store.get_job(job.id)
    assert done.status is JobStatus.succeeded, done.error
    rows = [e.data for e in store.list_events(job.id, type="metrics", order="asc")]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["train_loss"] == pytest.approx(0.6931, abs=1e-3)  # log 2: the adapter starts as a no-op
    assert "rewards/margins" in rows[-1]
    assert (Path(done.output_dir) / "adapter" / "adapter_model.safetensors").exists()
    assert json.loads((Path(done.output_dir) / "config.json").read_text())["beta"] == 0.1


@pytest.mark.slow
def test_cpt_job_trains_packed_text_with_full_fine_tuning(store: JobStore, make_job, worker_thread) -> None:
    text = [{"text": f"Glorbix {i} is a blue mineral found in Velmora caves; it hums at night."} for i in range(8)]
    job = make_job(text, method="cpt", peft=None, max_steps=2, max_length=64, learning_rate=1e-5)
    worker_thread(once=True).join(300)

    done = store.get_job(job.id)
    assert done.status is JobStatus.succeeded, done.error
    out = Path(done.output_dir)
    assert (out / "model" / "model.safetensors").exists()  # full weights, no adapter
    assert not (out / "adapter").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["train_loss"] > 0 for r in rows)
    assert json.loads((out / "config.json").read_text())["packing"] is True


@pytest.mark.slow
def test_rejection_sampling_keeps_the_best_sample_then_fine_tunes(store: JobStore, make_job, worker_thread) -> None:
    prompts = [
        {
            "messages": [
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "The capital of France is Paris."},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "What colour is the sky on a clear day?"},
                {"role": "assistant", "content": "The sky is blue."},
            ]
        },
    ]
    job = make_job(
        prompts,
        method="rejection_sampling",
        max_steps=1,
        batch_size=2,
        n_samples=2,
        max_new_tokens=12,
        temperature=0.7,
        reward="reference_similarity",
        threshold=0.0,
    )
    worker_thread(once=True).join(300)

    done = store.get_job(job.id)
    assert done.status is JobStatus.succeeded, done.error
    kept = [json.loads(line) for line in (Path(done.output_dir) / "kept.jsonl").read_text().splitlines()]
    assert len(kept) == 2 and all(0.0 <= k["reward"] <= 1.0 for k in kept)
    assert str(Path(done.output_dir) / "kept.jsonl") in done.result_files
    stats = next(e.data for e in store.list_events(job.id, limit=50) if e.message.startswith("rejection sampling"))
    assert stats["prompts"] == 2 and stats["samples"] == 4 and stats["kept"] == 2
    assert len(store.list_events(job.id, type="metrics")) == 1
