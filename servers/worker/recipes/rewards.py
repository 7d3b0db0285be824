"""Rewards that score a sampled answer for rejection sampling: similarity to a reference, rules, length."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from .base import RecipeError

Reward = Callable[[str, "str | None"], float]
_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (Unicode-aware, so Korean works too)."""
    return _WORD.findall(text.lower())


def token_f1(answer: str, reference: str | None) -> float:
    """Word-overlap F1 between an answer and the reference answer (SQuAD-style), in [0, 1]."""
    if reference is None:
        raise RecipeError(
            "reward reference_similarity needs a reference answer: end each record with the "
            "assistant answer you want, or name a rule reward such as regex:<pattern>"
        )
    a, r = words(answer), words(reference)
    if not a or not r:
        return float(a == r)
    common = sum((Counter(a) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def make_reward(spec: str) -> Reward:
    """Return the reward a job names: reference_similarity, regex:<pattern>, contains:<text>, length[:<words>]."""
    name, _, arg = spec.partition(":")
    if name == "reference_similarity":
        return token_f1
    if name == "regex":
        try:
            pattern = re.compile(arg)
        except re.error as e:
            raise RecipeError(f"reward {spec!r}: bad regular expression ({e})") from e
        return lambda answer, _ref: 1.0 if pattern.search(answer) else 0.0
    if name == "contains":
        needle = arg.lower()
        return lambda answer, _ref: 1.0 if needle and needle in answer.lower() else 0.0
    if name == "length":
        target = int(arg) if arg.strip().isdigit() else 64
        return lambda answer, _ref: min(1.0, target / max(1, len(words(answer)))) if words(answer) else 0.0
    raise RecipeError(
        f"unknown reward {spec!r}: use reference_similarity, regex:<pattern>, contains:<text> or length[:<max words>]"
    )
