"""Hyperparameter "auto" rules, method parsing and PEFT settings."""

from __future__ import annotations

import pytest
from ragtune.servers.finetune.hyper import (
    BASE_LR,
    DEFAULT_LORA,
    RequestError,
    parse_method,
    parse_peft,
    resolve,
)


def report(n: int, longest: int = 100) -> dict:
    return {"examples": n, "tokens": {"max": longest}}


@pytest.mark.parametrize(
    ("n", "epochs", "batch"),
    [(10, 10, 1), (12, 9, 1), (40, 3, 1), (100, 3, 2), (1000, 3, 16), (20_000, 1, 32)],
)
def test_auto_epochs_and_batch_follow_dataset_size(n: int, epochs: int, batch: int) -> None:
    kind, opts = parse_method({"type": "supervised"})
    out = resolve(kind, opts, DEFAULT_LORA, report(n))
    assert (out["n_epochs"], out["batch_size"]) == (epochs, batch)


def test_learning_rate_depends_on_method_and_peft() -> None:
    kind, opts = parse_method(
        {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": 2}}}
    )
    assert resolve(kind, opts, DEFAULT_LORA, report(50))["learning_rate"] == pytest.approx(4e-4)
    assert resolve(kind, opts, None, report(50))["learning_rate"] == pytest.approx(4e-5)
    kind, opts = parse_method({"type": "dpo"})
    out = resolve(kind, opts, DEFAULT_LORA, report(50))
    assert out["learning_rate"] == pytest.approx(5e-5) and out["beta"] == 0.1
    kind, opts = parse_method({"type": "supervised", "supervised": {"hyperparameters": {"learning_rate": 1e-3}}})
    assert resolve(kind, opts, DEFAULT_LORA, report(50))["learning_rate"] == 1e-3


def test_max_length_auto_and_explicit_values_pass_through() -> None:
    kind, opts = parse_method("supervised", legacy={"n_epochs": 2, "max_steps": 7})
    out = resolve(kind, opts, DEFAULT_LORA, report(50, longest=900))
    assert out["max_length"] == 2048 and out["n_epochs"] == 2 and out["max_steps"] == 7
    assert resolve(kind, opts, DEFAULT_LORA, report(50, longest=10))["max_length"] == 256


def test_rejection_sampling_defaults_and_checks() -> None:
    kind, opts = parse_method({"type": "rejection_sampling"})
    out = resolve(kind, opts, DEFAULT_LORA, report(50))
    assert (out["n_samples"], out["temperature"], out["reward"]) == (4, 0.8, "reference_similarity")
    assert out["max_new_tokens"] == 64
    for given, kept in [
        ("length_penalty", "length"),
        ("length:20", "length:20"),
        ("contains:Paris", "contains:Paris"),
        (r"regex:\d+", r"regex:\d+"),
    ]:
        kind, opts = parse_method({"type": "rejection_sampling", "rejection_sampling": {"reward": given}})
        assert resolve(kind, opts, DEFAULT_LORA, report(50))["reward"] == kept
    for bad in ("vibes", "contains:", "length:many"):
        kind, opts = parse_method({"type": "rejection_sampling", "rejection_sampling": {"reward": bad}})
        with pytest.raises(RequestError, match="unknown reward"):
            resolve(kind, opts, DEFAULT_LORA, report(50))


@pytest.mark.parametrize(
    ("method", "needle"),
    [
        ({"type": "rlhf"}, "unknown method type 'rlhf'"),
        ({"type": "reinforcement"}, "use rejection_sampling"),
        ({"type": "supervised", "supervised": {"hyperparameters": {"epochs": 3}}}, "unknown hyperparameters"),
        ({"type": "dpo", "dpo": {"n_samples": 3}}, "unknown dpo options"),
        (
            {"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.1}}},
            "beta only applies to method dpo",
        ),
    ],
)
def test_bad_methods_name_the_problem(method: dict, needle: str) -> None:
    with pytest.raises(RequestError, match=needle):
        parse_method(method)


def test_peft_defaults_and_validation() -> None:
    assert parse_peft(None, "supervised") == DEFAULT_LORA and parse_peft(None, "cpt") is None
    assert parse_peft({"type": "full"}, "supervised") is None and parse_peft("full", "dpo") is None
    assert parse_peft({"r": 4}, "supervised")["r"] == 4  # type: ignore[index]
    for bad, needle in [
        ({"r": 0}, "peft.r"),
        ({"dropout": 2}, "peft.dropout"),
        ({"rank": 4}, "unknown LoRA"),
        ({"target_modules": 5}, "target_modules"),
    ]:
        with pytest.raises(RequestError, match=needle):
            parse_peft(bad, "supervised")


def test_base_rates_match_the_worker_recipes() -> None:
    from ragtune.servers.worker.recipes import cpt, dpo, sft

    assert BASE_LR[("supervised", "lora")] == BASE_LR[("rejection_sampling", "lora")] == sft.LORA_LR
    assert BASE_LR[("supervised", "full")] == BASE_LR[("rejection_sampling", "full")] == sft.FULL_LR
    assert BASE_LR[("dpo", "lora")] == BASE_LR[("dpo", "full")] == dpo.LORA_LR
    assert (BASE_LR[("cpt", "lora")], BASE_LR[("cpt", "full")]) == (cpt.LORA_LR, cpt.FULL_LR)
