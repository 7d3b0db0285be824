"""Score the tuned model against its base on held-out records: target-token losses, greedy answers, preferences.

The base is the same loaded model with the LoRA adapter disabled (no second load); a full fine-tune is scored
once before training starts. torch is imported inside functions; the arithmetic lives in metrics.py.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtune.datasets import split_prompt_reference

from . import metrics
from .base import RunCallbacks, RunResult, TrainingOptions, TrainJob
from .eval_report import skipped

GENERATE_MAX = 8  # greedy answers per model (chat only): generation dominates the evaluation's time
MAX_NEW_TOKENS = 64
SAMPLES = 3


@dataclass
class Example:
    """One held-out example as token ids: the scored continuation starts at `start` (prompt before it)."""

    ids: list[int]
    start: int
    prompt: list[dict[str, str]] = field(default_factory=list)
    reference: str = ""
    rejected: Example | None = None


@dataclass
class Scores:
    """One model's figures on the held-out set: summary metrics, per-example scores, greedy answers."""

    metrics: dict[str, float]
    per_example: list[float | None]
    answers: list[str]


def _turns(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m.get("content") or ""} for m in messages]


class Scorer:
    """Turn held-out records into token ids once, then score any model state on them."""

    def __init__(self, tok: Any, kind: str, records: list[dict[str, Any]], max_length: int) -> None:
        self.tok, self.kind, self.max_length = tok, kind, max_length
        self.template = getattr(tok, "inference_chat_template", None) or tok.chat_template
        build = {"chat": self._chat, "preference": self._preference, "text": self._text}[kind]
        self.examples = [ex for ex in (build(r) for r in records[: metrics.HOLDOUT_MAX]) if ex is not None]

    # ------------------------------------------------------------------------------------------ encoding
    def _encode(self, prompt: list[dict[str, str]], answer: str) -> tuple[list[int], int]:
        head = self.tok.apply_chat_template(prompt, add_generation_prompt=True, chat_template=self.template)
        full = self.tok.apply_chat_template(
            [*prompt, {"role": "assistant", "content": answer}], chat_template=self.template
        )
        if not isinstance(head, list):  # transformers >= 5 returns a BatchEncoding-like dict
            head, full = head["input_ids"], full["input_ids"]
        return list(full)[: self.max_length], len(head)

    def _chat(self, record: dict[str, Any]) -> Example | None:
        prompt, reference = split_prompt_reference({"messages": _turns(record.get("messages") or [])})
        if reference is None:
            return None
        ids, start = self._encode(prompt, reference)
        return Example(ids, start, prompt, reference)

    def _preference(self, record: dict[str, Any]) -> Example:
        prompt = _turns(record["prompt"])
        chosen, rejected = (_turns(record[k])[-1]["content"] for k in ("chosen", "rejected"))
        ids, start = self._encode(prompt, chosen)
        r_ids, r_start = self._encode(prompt, rejected)
        return Example(ids, start, prompt, chosen, Example(r_ids, r_start))

    def _text(self, record: dict[str, Any]) -> Example | None:
        text = record.get("text") or "\n\n".join(m.get("content") or "" for m in record.get("messages") or [])
        if not text.strip():
            return None
        ids = list(self.tok(text)["input_ids"])[: self.max_length]
        return Example(ids, 1, reference=text)

    # ------------------------------------------------------------------------------------------ scoring
    def score(self, model: Any, *, base: bool = False) -> Scores:
        """Score the model (with its adapter disabled when `base`) on every example."""
        import torch

        ctx = model.disable_adapter() if base and hasattr(model, "peft_config") else nullcontext()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), ctx:
                return self._score(model)
        finally:
            model.train(was_training)

    def _score(self, model: Any) -> Scores:
        nll = [self.logprobs(model, ex) for ex in self.examples]
        losses = [-sum(lp) / len(lp) if lp else None for lp in nll]
        counts = [len(lp) for lp in nll]
        loss = metrics.mean_loss([x or 0.0 for x in losses], counts)
        out = {"loss": loss, "perplexity": metrics.perplexity(loss)}
        per_example: list[float | None] = losses
        answers: list[str] = []
        if self.kind == "preference":
            chosen = [sum(lp) for lp in nll]
            rejected = [sum(self.logprobs(model, ex.rejected)) for ex in self.examples if ex.rejected]
            out["preference_accuracy"] = metrics.preference_accuracy(chosen, rejected)
            out["preference_margin"] = metrics.preference_margin(chosen, rejected)
            per_example = [c - r for c, r in zip(chosen, rejected, strict=True)]
        elif self.kind == "chat":
            answers = [self.answer(model, ex) for ex in self.examples[:GENERATE_MAX]]
            out.update(metrics.answer_scores(answers, [ex.reference for ex in self.examples[: len(answers)]]))
        return Scores(out, per_example, answers)

    def logprobs(self, model: Any, ex: Example | None) -> list[float]:
        """Log-probs of the example's target tokens (those from `start` on) under the model."""
        import torch

        if ex is None or ex.start >= len(ex.ids):
            return []
        device = next(model.parameters()).device
        ids = torch.tensor([ex.ids], device=device)
        logits = model(input_ids=ids).logits[0, :-1].float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None])[:, 0]
        return [float(v) for v in logp[ex.start - 1 :]]

    def answer(self, model: Any, ex: Example) -> str:
        """The model's greedy answer to the example's prompt (bounded by the reference's length)."""
        import torch

        device = next(model.parameters()).device
        prompt = torch.tensor([ex.ids[: ex.start]], device=device)
        budget = min(MAX_NEW_TOKENS, len(ex.ids) - ex.start + 16)
        out = model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=budget,
            do_sample=False,
            pad_token_id=self.tok.pad_token_id,
        )
        return self.tok.decode(out[0][ex.start :], skip_special_tokens=True).strip()


def evaluation(scorer: Scorer, base: Scores, tuned: Scores, source: dict[str, Any]) -> dict[str, Any]:
    """Assemble the Evals-style comparison of base and tuned (job ids and names are filled in later)."""
    rows = metrics.compare(base.metrics, tuned.metrics)
    samples = [
        {"prompt": ex.prompt[-1]["content"] if ex.prompt else "", "reference": ex.reference, "base": b, "tuned": t}
        for ex, b, t in zip(scorer.examples, base.answers, tuned.answers, strict=False)
    ][:SAMPLES]
    return {
        "status": "completed",
        "reason": None,
        "data_source": source,
        "examples": len(scorer.examples),
        "per_testing_criteria_results": rows,
        "result_counts": metrics.result_counts(
            base.per_example, tuned.per_example, higher_is_better=scorer.kind == "preference"
        ),
        "verdict": metrics.verdict(rows, scorer.kind),
        "samples": samples,
    }


def train_and_evaluate(
    trainer: Any,
    tok: Any,
    cb: Any,
    job: TrainJob,
    cfg: TrainingOptions,
    out_dir: Path,
    callbacks: RunCallbacks,
    *,
    kind: str,
    peft: bool,
    train_examples: int,
) -> RunResult:
    """Train (resuming), score base and tuned on the held-out records, then save: every recipe's tail."""
    from .common import finish, train_resuming

    scorer = Scorer(tok, kind, job.validation_records, int(cfg.max_length)) if job.validation_records else None
    if scorer is not None and not scorer.examples:
        scorer = None
    base = scorer.score(trainer.model) if scorer and not peft else None  # a full fine-tune's base is pre-training
    train_resuming(trainer, out_dir, callbacks)
    report = skipped(job.eval_source.get("reason") or "no held-out example has a reference answer", job.eval_source)
    if scorer is not None and not cb.pause_requested:
        callbacks.event(f"evaluating base and tuned model on {len(scorer.examples)} held-out examples")
        started = time.monotonic()
        base = base or scorer.score(trainer.model, base=True)
        report = evaluation(scorer, base, scorer.score(trainer.model), job.eval_source)
        report["seconds"] = round(time.monotonic() - started, 2)
        loss = tuned_loss(report)
        callbacks.event(
            f"validation loss {loss:.4f} on {len(scorer.examples)} examples",
            data={
                "valid_loss": metrics.finite_or_none(loss),
                "base_valid_loss": metrics.finite_or_none(base.metrics["loss"]),
            },
        )
    result = finish(trainer, tok, cb, cfg, out_dir, peft=peft)
    result.extra["evaluation"] = {**report, "train_examples": train_examples}
    return result


def tuned_loss(report: dict[str, Any]) -> float:
    """The tuned model's held-out loss from a report (NaN when it has none)."""
    row = next((r for r in report.get("per_testing_criteria_results", []) if r["testing_criteria"] == "loss"), None)
    value = row["tuned"] if row else None
    return math.nan if value is None else float(value)
