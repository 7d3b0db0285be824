"""The method advisor's rules and the memory estimate's arithmetic."""

from __future__ import annotations

import pytest
from ragtune.servers.finetune.advisor import (
    GPUS,
    MODELS,
    RULES,
    SCENARIOS,
    Situation,
    estimate_memory,
    find_arch,
    parse_params,
    recommend_method,
)


@pytest.mark.parametrize(("title", "situation", "expected"), SCENARIOS, ids=[s[0][:40] for s in SCENARIOS])
def test_canonical_scenarios(title: str, situation: dict, expected: str) -> None:
    rec = recommend_method(Situation(**situation))
    assert rec.method == expected, title
    assert rec.reasons and rec.docs.startswith("docs/guide/choosing-a-method.md#")


def test_every_rule_is_reachable_and_names_are_unique() -> None:
    fired = {recommend_method(Situation(**s)).rule for _, s, _ in SCENARIOS}
    assert fired == {r.name for r in RULES}
    assert len({r.name for r in RULES}) == len(RULES)


def test_changing_facts_beat_cpt_for_knowledge_and_return_no_job() -> None:
    rec = recommend_method(
        Situation(goal="knowledge", n_examples=100_000, domain_terms_missing=True, data_changes_often=True)
    )
    assert rec.method == "prompt_rag" and rec.job_method is None and rec.peft is None


def test_style_with_changing_facts_tunes_the_style_and_keeps_facts_in_retrieval() -> None:
    rec = recommend_method(Situation(goal="style", n_examples=3000, data_changes_often=True))
    assert rec.method == "lora_sft" and rec.peft is not None
    assert any("keep them in retrieval" in r for r in rec.reasons) and "retrieval" in (rec.then or "")


def test_cpt_warns_about_instruction_following_and_says_what_comes_next() -> None:
    rec = recommend_method(Situation(goal="knowledge", n_examples=20_000, domain_terms_missing=True))
    assert rec.job_method == {
        "type": "cpt",
        "cpt": {"hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}},
    }
    assert any("hurt instruction following" in w for w in rec.warnings)
    assert any("base (non-instruct)" in w for w in rec.warnings) and "supervised" in (rec.then or "")


def test_lora_and_full_settings_are_job_ready() -> None:
    lora = recommend_method(Situation(goal="task", n_examples=1000))
    assert lora.peft and lora.peft["type"] == "lora" and lora.job_method["type"] == "supervised"  # type: ignore[index]
    full = recommend_method(Situation(goal="task", n_examples=50_000, gpu_memory_gb=141, model_params_b=1))
    assert full.method == "full_sft" and full.peft is None
    squeezed = recommend_method(Situation(goal="task", n_examples=50_000, gpu_memory_gb=24, model_params_b=8))
    assert squeezed.method == "lora_sft" and "LoRA instead" in squeezed.reasons[-1]
    rs = recommend_method(Situation(goal="preference", n_examples=500))
    assert rs.job_method["rejection_sampling"]["reward"] == "length"  # type: ignore[index]
    assert any("no reference answers" in w for w in rs.warnings)


def test_seven_billion_in_bf16_is_14_gb_of_weights() -> None:
    full = estimate_memory(params=7e9, method="full", precision="bf16", optimizer="adamw")
    assert full.weights_gb == 14.0 and full.gradients_gb == 14.0
    assert full.optimizer_gb == 84.0  # AdamW moments (8 B) + fp32 master weights (4 B) per parameter
    assert full.total_gb == pytest.approx(
        sum(
            [
                full.weights_gb,
                full.adapter_gb,
                full.gradients_gb,
                full.optimizer_gb,
                full.activations_gb,
                full.overhead_gb,
            ]
        ),
        abs=0.05,
    )
    lora = estimate_memory(params=7e9, method="lora")
    qlora = estimate_memory(params=7e9, method="qlora")
    assert lora.weights_gb == 14.0 and qlora.weights_gb == 3.5 and qlora.precision == "int4"
    assert qlora.total_gb < lora.total_gb < full.total_gb
    assert "T4" in qlora.fits and "T4" not in lora.fits and full.fits == ["H200"]
    assert lora.trainable_params < 0.01 * 7e9


def test_activations_scale_and_checkpointing_saves_memory() -> None:
    base = estimate_memory("llama-3-8b", seq_len=2048, batch=1, gradient_checkpointing=False)
    double = estimate_memory("llama-3-8b", seq_len=2048, batch=2, gradient_checkpointing=False)
    ckpt = estimate_memory("llama-3-8b", seq_len=2048, batch=1, gradient_checkpointing=True)
    assert double.activations_gb == pytest.approx(2 * base.activations_gb, rel=0.01)
    assert ckpt.activations_gb < base.activations_gb / 3
    assert estimate_memory("llama-3-70b", method="lora").fits == []
    assert estimate_memory("meta-llama/Meta-Llama-3-8B-Instruct").model == "llama-3-8b"
    assert set(estimate_memory("smollm2-135m").fits) == set(GPUS)


def test_model_lookup_and_parameter_parsing() -> None:
    assert find_arch("HuggingFaceTB/SmolLM2-135M-Instruct")[1] is MODELS["smollm2-135m"]
    name, arch = find_arch("my-13b-model")
    assert arch.params == 13e9 and arch.layers > 30
    with pytest.raises(ValueError, match="unknown model"):
        find_arch("mystery")
    with pytest.raises(ValueError, match="full fine-tuning needs"):
        estimate_memory(params=7e9, method="full", precision="int4")
    assert parse_params("7B") == 7e9 and parse_params("135M") == 135e6 and parse_params("7") == 7e9
    with pytest.raises(ValueError, match="cannot read"):
        parse_params("lots")


def test_retrieval_misses_advise_an_embedding_job_the_service_accepts() -> None:
    """The advice is runnable: its job_method creates a queued embedding job; few pairs point to label-free mode."""
    import io
    import json

    from ragtune.servers.finetune.service import FinetuneService

    from ragtune.config import FinetuneSettings

    rec = recommend_method(Situation(goal="retrieval", n_examples=60))
    assert rec.method == "embedding" and rec.peft is None and rec.then and "retrieval_reembed" in rec.then
    assert not rec.warnings
    few = recommend_method(Situation(goal="retrieval", n_examples=0))
    assert any("finetune_build_embedding_pairs" in w for w in few.warnings), few.warnings
    pairs = [{"query": f"질문 {i}", "positive": f"문서 {i}의 본문"} for i in range(60)]
    svc = FinetuneService(FinetuneSettings())
    try:
        data = io.BytesIO("\n".join(json.dumps(p, ensure_ascii=False) for p in pairs).encode())
        file = svc.upload(data.getvalue(), "pairs.jsonl")
        job = svc.create_job({"training_file": file.id, "model": "e5-small", "method": rec.job_method})
    finally:
        svc.close()
    assert job.method["type"] == "embedding" and job.status.value == "queued"
