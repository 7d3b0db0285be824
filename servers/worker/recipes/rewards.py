"""Rewards that score a sampled answer for rejection sampling: similarity to a reference, rules, length."""

from __future__ import annotations

from collections.abc import Callable

import regex

from . import metrics
from .base import RecipeError
from .metrics import words

Reward = Callable[[str, "str | None"], float]


def token_f1(answer: str, reference: str | None) -> float:
    """Word-overlap F1 with the reference answer (metrics.token_f1, shared with evaluation); needs a reference."""
    if reference is None:
        raise RecipeError(
            "reward reference_similarity needs a reference answer: end each record with the "
            "assistant answer you want, or name a rule reward such as regex:<pattern>"
        )
    return metrics.token_f1(answer, reference)


REGEX_SECONDS = 0.5  # a catastrophic pattern such as (a|aa)+$ scores 0 instead of hanging the job (issue #12)


def _timed_match(pattern: regex.Pattern[str], answer: str) -> float:
    """Score 1 when the pattern matches; a search that runs out of time scores 0."""
    try:
        return 1.0 if pattern.search(answer, timeout=REGEX_SECONDS) else 0.0
    except TimeoutError:
        return 0.0


def make_reward(spec: str) -> Reward:
    """Return the reward a job names: reference_similarity, regex:<pattern>, contains:<text>, length[:<words>]."""
    name, _, arg = spec.partition(":")
    if name == "reference_similarity":
        return token_f1
    if name == "regex":
        try:
            pattern = regex.compile(arg)
        except regex.error as e:
            raise RecipeError(f"reward {spec!r}: bad regular expression ({e})") from e
        return lambda answer, _ref: _timed_match(pattern, answer)
    if name == "contains":
        needle = arg.lower()
        return lambda answer, _ref: 1.0 if needle and needle in answer.lower() else 0.0
    if name == "length":
        target = int(arg) if arg.strip().isdigit() else 64
        return lambda answer, _ref: min(1.0, target / max(1, len(words(answer)))) if words(answer) else 0.0
    raise RecipeError(
        f"unknown reward {spec!r}: use reference_similarity, regex:<pattern>, contains:<text> or length[:<max words>]"
    )
