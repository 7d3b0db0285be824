"""Weighted RRF: the scores, the weights, the tie-break and what the tuned default k favours."""

from __future__ import annotations

import pytest
from ragtune.servers.retrieval.fusion import RRF_K, rrf


def test_scores_are_weighted_reciprocal_ranks_with_the_tuned_k() -> None:
    fused = dict(rrf([["a", "b"], ["b", "c"]], [0.25, 0.75]))
    assert fused["a"] == pytest.approx(0.25 / (RRF_K + 1))
    assert fused["b"] == pytest.approx(0.25 / (RRF_K + 2) + 0.75 / (RRF_K + 1))
    assert fused["c"] == pytest.approx(0.75 / (RRF_K + 2))


def test_equal_scores_go_to_the_better_first_rank_then_the_earlier_list() -> None:
    # x and y swap places across two equally weighted lists: same score, x was ranked first in the first list.
    assert [i for i, _ in rrf([["x", "y"], ["y", "x"]], [1.0, 1.0])] == ["x", "y"]
    assert [i for i, _ in rrf([["y", "x"], ["x", "y"]], [1.0, 1.0])] == ["y", "x"]
    # c (rank 1, second list) ties d (rank 2, first list) at k=10: the better rank wins over the earlier list.
    fused = rrf([["a", "d"], ["c"]], [12.0, 11.0], k=10)
    assert fused[1][1] == pytest.approx(fused[2][1]) and [i for i, _ in fused[1:]] == ["c", "d"]


def test_the_default_k_lets_agreement_beat_a_single_first_place() -> None:
    # "both" is third in each list, "solo" first in one: a small k rewards the top rank, RRF_K rewards agreement.
    rankings = [["solo", "p", "both"], ["q", "r", "both"]]
    assert rrf(rankings, [1.0, 1.0], k=0)[0][0] == "solo"
    assert rrf(rankings, [1.0, 1.0])[0][0] == "both"
