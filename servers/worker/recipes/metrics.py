"""Pure evaluation arithmetic (no torch): answer scores, perplexity, preference accuracy, verdicts, divergence.

Kept apart from the model code in evaluate.py so every number a job reports can be checked by hand.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

HOLDOUT_FRACTION = 0.1
HOLDOUT_MAX = 50
HOLDOUT_MIN_RECORDS = 10
LOSS_TOLERANCE = 0.02  # relative: a held-out loss must move more than 2% of the base value to count
RATE_TOLERANCE = 0.05  # absolute: EM, contains, F1, preference accuracy and margin
DIVERGE_RATIO = 1.5
PRIMARY = {
    "chat": ("loss", "token_f1"),
    "preference": ("preference_accuracy",),
    "text": ("loss",),
    "retrieval": ("ndcg@10", "recall@100"),  # the embedding recipe (embedding_eval.py)
}
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})
_WORD = re.compile(r"\w+", re.UNICODE)


# ---------------------------------------------------------------------------------------------- answers
def words(text: str) -> list[str]:
    """Lower-cased word tokens (Unicode-aware, so Korean works too)."""
    return _WORD.findall(text.lower())


def token_f1(answer: str, reference: str) -> float:
    """Word-overlap F1 between an answer and the reference answer (SQuAD-style), in [0, 1]."""
    a, r = words(answer), words(reference)
    if not a or not r:
        return float(a == r)
    common = sum((Counter(a) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def exact_match(answer: str, reference: str) -> float:
    """1.0 when the answer's words equal the reference's (case and punctuation ignored)."""
    return float(words(answer) == words(reference))


def contains_reference(answer: str, reference: str) -> float:
    """1.0 when the reference's words appear, in order and adjacent, inside the answer's words."""
    ref = words(reference)
    if not ref:
        return 0.0
    return float(f" {' '.join(ref)} " in f" {' '.join(words(answer))} ")


def answer_scores(answers: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean exact_match, contains_reference and token_f1 over paired answers and references."""
    if not answers:
        return {}
    pairs = list(zip(answers, references, strict=True))
    return {
        name: sum(fn(a, r) for a, r in pairs) / len(pairs)
        for name, fn in (
            ("exact_match", exact_match),
            ("contains_reference", contains_reference),
            ("token_f1", token_f1),
        )
    }


# ---------------------------------------------------------------------------------------------- losses
def mean_loss(losses: Sequence[float], tokens: Sequence[int]) -> float:
    """Token-weighted mean of per-example mean losses (= total NLL / total target tokens)."""
    total = sum(tokens)
    if total <= 0:
        return math.nan
    return sum(loss * n for loss, n in zip(losses, tokens, strict=True)) / total


def perplexity(loss: float) -> float:
    """exp(mean token NLL); inf when the loss is too large (or not finite)."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def preference_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """Share of pairs whose chosen answer has a strictly higher log-prob than the rejected one."""
    if not chosen:
        return math.nan
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(chosen)


def preference_margin(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """Mean log-prob of chosen minus rejected (nats per pair)."""
    if not chosen:
        return math.nan
    return sum(c - r for c, r in zip(chosen, rejected, strict=True)) / len(chosen)


# ---------------------------------------------------------------------------------------------- comparison
def outcome(metric: str, base: float, tuned: float) -> str:
    """Say whether the tuned value is better, worse or the same as the base's, by the metric's tolerance."""
    lower = metric in LOWER_IS_BETTER
    if not math.isfinite(tuned):
        return "same" if not math.isfinite(base) else "worse"
    if not math.isfinite(base):
        return "better"
    gap = LOSS_TOLERANCE * abs(base) if lower else RATE_TOLERANCE
    delta = (base - tuned) if lower else (tuned - base)
    return "better" if delta > gap else "worse" if delta < -gap else "same"


def compare(base: dict[str, float], tuned: dict[str, float]) -> list[dict[str, Any]]:
    """Return Evals-style per-metric rows: base, tuned, delta (tuned - base), direction and outcome."""
    return [
        {
            "testing_criteria": name,
            "base": finite_or_none(base[name]),
            "tuned": finite_or_none(tuned[name]),
            "delta": finite_or_none(tuned[name] - base[name]),
            "higher_is_better": name not in LOWER_IS_BETTER,
            "outcome": outcome(name, base[name], tuned[name]),
        }
        for name in base
        if name in tuned
    ]


def verdict(rows: list[dict[str, Any]], kind: str) -> str:
    """'worse' if a primary metric regressed, 'better' if one improved and none regressed, else 'inconclusive'."""
    outcomes = [r["outcome"] for r in rows if r["testing_criteria"] in PRIMARY.get(kind, ())]
    if "worse" in outcomes:
        return "worse"
    return "better" if "better" in outcomes else "inconclusive"


def result_counts(base: Sequence[float | None], tuned: Sequence[float | None], *, higher_is_better: bool) -> dict:
    """Per-example counts: passed = the tuned score beats the base's; errored = an example with no score."""
    passed = failed = errored = 0
    for b, t in zip(base, tuned, strict=True):
        if b is None or t is None:
            errored += 1
        elif (t > b) if higher_is_better else (t < b):
            passed += 1
        else:
            failed += 1
    return {"total": len(base), "passed": passed, "failed": failed, "errored": errored}


def finite_or_none(value: float) -> float | None:
    """Round for JSON; None for NaN/inf (strict JSON, as the REST API sends it, has no such numbers)."""
    return round(value, 6) if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------- divergence
def loss_divergence(losses: Sequence[float]) -> str | None:
    """Return why a training loss curve diverged (non-finite, or smoothed end > 1.5x smoothed start), else None."""
    bad = next((i for i, v in enumerate(losses, 1) if not math.isfinite(v)), None)
    if bad is not None:
        return f"the training loss became {losses[bad - 1]} at logged step {bad}"
    if len(losses) < 2:
        return None
    k = min(5, max(1, len(losses) // 4))
    start, end = sum(losses[:k]) / k, sum(losses[-k:]) / k
    if end > DIVERGE_RATIO * start:
        return f"the training loss rose from {start:.2f} to {end:.2f} (mean of the first and last {k} steps)"
    return None


# ---------------------------------------------------------------------------------------------- held-out split
def split_holdout(
    records: list[dict[str, Any]],
    seed: int,
    *,
    fraction: float = HOLDOUT_FRACTION,
    cap: int = HOLDOUT_MAX,
    min_records: int = HOLDOUT_MIN_RECORDS,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Set aside floor(fraction * n) records (at most cap, none below min_records) by a seeded draw."""
    n = len(records)
    count = min(cap, int(n * fraction)) if n >= min_records else 0
    held = sorted(random.Random(seed).sample(range(n), count))
    chosen = set(held)
    info = {
        "type": "held_out",
        "seed": seed,
        "fraction": fraction,
        "max_examples": cap,
        "count": count,
        "of": n,
        "indices": held,
    }
    return [r for i, r in enumerate(records) if i not in chosen], [records[i] for i in held], info
