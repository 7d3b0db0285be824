"""The embedded engine on the real SmolLM2: adapter hot swap, LRU eviction, unloading the last adapter, base
answers that stay the base's while adapters are loaded (random non-zero LoRA weights change the answer without
training), and tool calls in OpenAI's shape for a chat template that renders tools."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TOOL_TEMPLATE = (  # a Hermes-style template that renders tools (SmolLM2's own does not)
    "{% if tools %}<|im_start|>system\nCall a tool by writing "
    '<tool_call>{"name": ..., "arguments": {...}}</tool_call>. Tools:\n'
    "{% for t in tools %}{{ t['function'] | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
FEW_SHOT = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'},
    {"role": "tool", "content": "sunny"},
    {"role": "assistant", "content": "It is sunny in Paris."},
    {"role": "user", "content": "What is the weather in Seoul?"},
]


def test_tool_calls_come_back_in_openai_shape_for_a_template_with_tools(
    models_dir: Path, tmp_path: Path, serve: Callable[[FinetuneSettings], str]
) -> None:
    import shutil

    from openai import OpenAI

    base = tmp_path / "tool-base"  # the same weights, a chat template that renders tools
    base.mkdir()
    for f in (models_dir / f"{BASE}-fp32").iterdir():
        (base / f.name).symlink_to(f) if f.suffix == ".safetensors" else shutil.copy(f, base / f.name)
    (base / "chat_template.jinja").write_text(TOOL_TEMPLATE)
    url = serve(FinetuneSettings(home=tmp_path / "home", models_dir=models_dir, default_base_model=str(base)))
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
    assert str(base) in {m.id for m in client.models.list()}

    kw: dict[str, Any] = {"model": str(base), "messages": FEW_SHOT, "tools": [TOOL], "max_tokens": 40, "temperature": 0}
    answer = client.chat.completions.create(**kw).choices[0]
    assert answer.finish_reason == "tool_calls" and answer.message.content is None
    call = (answer.message.tool_calls or [None])[0]
    assert call and call.type == "function" and call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"city"}

    chunks = list(client.chat.completions.create(**kw, stream=True))
    streamed = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert streamed and streamed[0][0].function and streamed[0][0].function.name == "get_weather"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"

    plain = client.chat.completions.create(**{**kw, "tool_choice": "none"}).choices[0]
    assert plain.finish_reason in ("stop", "length") and plain.message.tool_calls is None
