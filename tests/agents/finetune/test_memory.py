"""Memory questions: the parser (sizes, precision, method in English and Korean) and, over A2A, the fine-tuning
agent answering them with the real `finetune_estimate_memory`, not the method advisor (issue #9)."""

from __future__ import annotations

import anyio
import pytest
from ragtune.agents.a2a_peer import A2APeer
from ragtune.agents.finetune.__main__ import make_app
from ragtune.agents.finetune.memory import gpu_memory_gb, is_memory_question, model_size_b, parse_memory_request
from ragtune.agents.mcp_tools import McpTools
from ragtune.servers.finetune.app import build_app as finetune_app

from ragtune.config import AgentSettings, FinetuneSettings

ENGLISH = "How much GPU memory do I need to fine-tune a 7B model with LoRA?"
KOREAN = "7B 모델 학습에 GPU 메모리가 얼마나 필요한가요?"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ENGLISH, {"method": "lora", "params_b": 7.0}),
        (KOREAN, {"method": "lora", "params_b": 7.0}),
        ("70억 파라미터 모델을 LoRA로 학습하려면 메모리가 얼마나 드나요?", {"method": "lora", "params_b": 7.0}),
        ("13B 모델을 QLoRA로 파인튜닝하면 VRAM이 몇 GB 필요한가요?", {"method": "qlora", "params_b": 13.0}),
        ("memory for a 7b model, full fine-tuning in bf16", {"method": "full", "params_b": 7.0, "precision": "bf16"}),
        ("GPU memory for 4-bit LoRA on llama-3-8b?", {"method": "qlora", "model": "llama-3-8b", "precision": "int4"}),
        (
            "VRAM for full training of smollm2-135m in fp32",
            {"method": "full", "model": "smollm2-135m", "precision": "fp32"},
        ),
        (
            "memory to train a 1.5B model with LoRA, 4096 tokens, batch 2",
            {"method": "lora", "params_b": 1.5, "seq_len": 4096, "batch": 2},
        ),
    ],
)
def test_memory_requests_are_parsed(text, expected):
    assert is_memory_question(text)
    assert parse_memory_request(text) == expected


def test_sizes_and_gpus_and_non_memory_questions():
    assert model_size_b("a 135M model") == pytest.approx(0.135) and model_size_b("130억 모델") == pytest.approx(13)
    assert model_size_b("on a 24 GB GPU") is None and gpu_memory_gb("on a 24 GB GPU") == 24
    for text in (
        "What is LoRA?",
        "What does the memory estimate include?",
        "파인튜닝 결과는 어디에 저장되나요?",
        "We have 20k labelled tickets and a 24 GB GPU: should we fine-tune?",  # a method question with a GPU
        "Should I use LoRA or QLoRA for a 7B model on a T4?",
    ):
        assert not is_memory_question(text)


async def test_the_agent_answers_memory_questions_with_the_estimator(free_port, serving):
    fport, aport = free_port(), free_port()
    async with serving(finetune_app(FinetuneSettings(finetune_port=fport), port=fport), fport) as ft_url:
        settings = AgentSettings(finetune_url=f"{ft_url}/mcp", research_agent_url="http://127.0.0.1:9")
        expected = await McpTools(f"{ft_url}/mcp").call("finetune_estimate_memory", params_b=7.0, method="lora")
        async with serving(make_app(settings, f"http://127.0.0.1:{aport}"), aport) as url:
            peer = A2APeer(url)
            for question, total in ((ENGLISH, "about {:g} GB"), (KOREAN, "GPU 메모리는 약 {:g} GB")):
                with anyio.fail_after(60):
                    done = await peer.ask(question)
                assert done.state_name == "completed"
                assert total.format(expected["total_gb"]) in done.text and "finetune_estimate_memory" in done.text
                assert "Recommendation" not in done.text and "prompting + retrieval" not in done.text
            await peer.aclose()
