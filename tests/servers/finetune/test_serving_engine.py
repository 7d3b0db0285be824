"""The embedded engine's adapter bookkeeping on the real SmolLM2: hot swap, LRU eviction, unloading the last
adapter, and base answers that stay the base's while adapters are loaded (random non-zero LoRA weights change
the answer without any training)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from ragtune.servers.finetune.serving.embedded import TransformersEngine
from ragtune.servers.finetune.serving.engine import ChatParams, ServedModel

from ragtune.config import FinetuneSettings

pytestmark = pytest.mark.slow
BASE = "smollm2-135m-instruct"


def _adapter(models_dir: Path, out: Path, seed: int) -> ServedModel:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(models_dir / f"{BASE}-fp32")
    config = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return ServedModel(f"ft:{BASE}:org-ragtune:s{seed}:ftjob-{seed}", "lora", 0, BASE, str(out), f"ftjob-{seed}")


def test_adapters_swap_per_request_and_the_base_stays_the_base(models_dir: Path, tmp_path: Path) -> None:
    first, second = _adapter(models_dir, tmp_path / "a", 1), _adapter(models_dir, tmp_path / "b", 2)
    base = ServedModel(BASE, "base", 0, BASE)
    engine = TransformersEngine(FinetuneSettings(home=tmp_path, models_dir=models_dir, serving_max_loaded=1))
    params = ChatParams(messages=[{"role": "user", "content": "Name a colour."}], max_tokens=6, temperature=0)

    async def run() -> list[str]:
        answers = []
        for model in (base, first, second, base, first):
            answers.append((await engine.complete(model, params)).text)
            if model is not base:
                assert engine.loaded() == [model.id]  # max_loaded=1: loading one evicted the other
        await engine.unload(first.id)  # the last adapter: the base model is plain again
        assert engine.loaded() == []
        answers.append((await engine.complete(base, params)).text)
        answers.append((await engine.complete(second, params)).text)  # and takes adapters again
        await engine.close()
        return answers

    plain, a, b, plain_again, a_again, plain_after, b_again = asyncio.run(run())
    assert plain == plain_again == plain_after
    assert len({plain, a, b}) == 3, (plain, a, b)
    assert a == a_again and b == b_again
