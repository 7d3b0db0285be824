"""Weighted RRF: the scores, the weights and the tuned default k."""

from __future__ import annotations

import pytest
from ragtune.servers.retrieval.fusion import RRF_K, rrf


def test_scores_are_weighted_reciprocal_ranks_with_the_tuned_k() -> None:
    fused = dict(rrf([["a", "b"], ["b", "c"]], [0.25, 0.75]))
    assert RRF_K == 10  # measured best on SciFact and ko-welfare; change it only with a new sweep
    assert fused["a"] == pytest.approx(0.25 / 11)
    assert fused["b"] == pytest.approx(0.25 / 12 + 0.75 / 11)
    assert fused["c"] == pytest.approx(0.75 / 12)
