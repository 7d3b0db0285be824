#!/usr/bin/env python
"""Evaluation benchmark: what the tuned-vs-base evaluation adds to a job, on the embedded SmolLM2 with LoRA.

    .venv/bin/python bench/evaluation.py --examples 50 --threads 1

Scores one model state (the job scores two: base with the adapter off, then tuned) on N held-out chat
examples: the target-token loss pass over all N, then greedy answers for the first 8 (recipes/evaluate.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def records(n: int) -> list[dict]:
    """N chat Q/A pairs about made-up projects (answers of about 20 tokens, like the demo's)."""
    return [
        {
            "messages": [
                {"role": "user", "content": f"What is the codename of Project Orion-{i}?"},
                {"role": "assistant", "content": f"The codename of Project Orion-{i} is Velvet Lantern {i}."},
            ]
        }
        for i in range(n)
    ]


def main() -> None:
    """Time the loss pass and the greedy answers of one scoring, with a LoRA adapter attached (disabled)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import torch
    from peft import get_peft_model
    from ragtune.servers.worker.recipes import evaluate
    from ragtune.servers.worker.recipes.common import convert_embedded, load_model, load_tokenizer, lora_config

    from ragtune.models import smollm2_gguf

    torch.set_num_threads(args.threads)
    models = Path(os.environ.get("RAGTUNE_TEST_MODELS_DIR") or tempfile.mkdtemp())
    folder = str(convert_embedded(Path(smollm2_gguf()), models))
    tok = load_tokenizer(folder)
    peft = {"type": "lora", "r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}
    model = get_peft_model(load_model(folder, torch.float32), lora_config(peft))
    scorer = evaluate.Scorer(tok, "chat", records(args.examples), 512)
    started = time.perf_counter()
    with torch.no_grad(), model.disable_adapter():
        model.eval()
        losses = [scorer.logprobs(model, ex) for ex in scorer.examples]
        loss_s = time.perf_counter() - started
        answers = [scorer.answer(model, ex) for ex in scorer.examples[: evaluate.GENERATE_MAX]]
    total = time.perf_counter() - started
    tokens = sum(len(x) for x in losses)
    print(f"examples {len(scorer.examples)}, target tokens {tokens}, threads {args.threads}")
    print(f"loss pass: {loss_s:.1f} s ({loss_s / len(scorer.examples) * 1000:.0f} ms/example)")
    print(f"greedy answers: {total - loss_s:.1f} s for {len(answers)} ({(total - loss_s) / len(answers):.2f} s each)")
    print(f"one model state: {total:.1f} s; a job scores two: ~{2 * total:.0f} s")


if __name__ == "__main__":
    main()
