"""Metadata filters compile to parameterised SQL; malformed ones are clear errors."""

from __future__ import annotations

import pytest
from ragtune.servers.retrieval.filters import FilterError, compile_filters


def test_equality_ranges_and_lists_compile_to_parameters() -> None:
    sql, params = compile_filters({"source": "a.md", "year": {"gte": 2020, "lt": 2025}, "lang": {"in": ["ko", "en"]}})
    assert sql.count("?") == len(params) == 5
    assert params == ["a.md", 2020, 2025, "ko", "en"]
    assert "in (?, ?)" in sql


def test_no_filter_is_always_true() -> None:
    assert compile_filters(None) == ("1", [])


@pytest.mark.parametrize(
    ("filters", "fragment"),
    [
        ({"year": {"between": [1, 2]}}, "unknown filter operator"),
        ({"year": {"in": []}}, "non-empty list"),
        ({"year": {"in": "ko"}}, "non-empty list"),
        ({"bad field'": 1}, "bad filter field"),
        ({"year": {"gte": [2020]}}, "string, number or boolean"),
        ({"year": {}}, "is empty"),
        (["year"], "must be an object"),
    ],
)
def test_malformed_filters_explain_the_accepted_shape(filters: object, fragment: str) -> None:
    with pytest.raises(FilterError, match=fragment):
        compile_filters(filters)  # type: ignore[arg-type]
