"""Validate metadata filters and compile them to SQLite SQL over `documents.metadata` (filter before ranking).

Shape: `{"source": "a.md", "year": {"gte": 2020}, "lang": {"in": ["ko", "en"]}}`; fields are ANDed. Dates
compare as ISO strings ("2024-01-31"), numbers as numbers.
"""

from __future__ import annotations

import re
from typing import Any

from ragtune.servers.retrieval.errors import RetrievalError

OPERATORS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
LIST_OPERATORS = {"in": "in", "nin": "not in"}
FIELD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")
HELP = (
    'use {"field": value} for equality, {"field": {"gte": 2020, "lt": 2025}} for ranges '
    '(eq ne gt gte lt lte), or {"field": {"in": ["a", "b"]}} (in, nin)'
)
Scalar = str | int | float | bool


class FilterError(RetrievalError):
    """Raised for a malformed filter; the message shows the accepted shape."""


def normalise(filters: dict[str, Any] | None) -> list[tuple[str, str, Any]]:
    """Validate filters into (field, operator, value) triples, the shape every store compiles to its SQL."""
    if not filters:
        return []
    if not isinstance(filters, dict):
        raise FilterError(f"filters must be an object, got {type(filters).__name__}: {HELP}")
    out: list[tuple[str, str, Any]] = []
    for name, condition in filters.items():
        if not isinstance(name, str) or not FIELD.match(name):
            raise FilterError(f"bad filter field {name!r}: use letters, digits, _ . : - (64 at most)")
        out += [(name, op, value) for op, value in _conditions(name, condition)]
    return out


def compile_filters(filters: dict[str, Any] | None, alias: str = "d") -> tuple[str, list[Any]]:
    """Return SQLite (`sql`, `params`) for a WHERE clause ('1' when there is no filter)."""
    conditions = normalise(filters)
    if not conditions:
        return "1", []
    clauses: list[str] = []
    params: list[Any] = []
    for name, op, value in conditions:
        column = f"{alias}.doc_id" if name == "doc_id" else f"json_extract({alias}.metadata, '$.\"{name}\"')"
        if op in LIST_OPERATORS:
            clauses.append(f"{column} {LIST_OPERATORS[op]} ({', '.join('?' * len(value))})")
            params.extend(value)
        else:
            clauses.append(f"{column} {OPERATORS[op]} ?")
            params.append(value)
    return " and ".join(f"({c})" for c in clauses), params


def _conditions(name: str, condition: Any) -> list[tuple[str, Any]]:
    """Normalise one field's condition into (operator, value) pairs, validating types."""
    if not isinstance(condition, dict):
        return [("eq", _scalar(name, "eq", condition))]
    if not condition:
        raise FilterError(f"filter on {name!r} is empty: {HELP}")
    out: list[tuple[str, Any]] = []
    for op, value in condition.items():
        if op in LIST_OPERATORS:
            if not isinstance(value, list) or not value:
                raise FilterError(f"filter {name!r}.{op} needs a non-empty list: {HELP}")
            out.append((op, [_scalar(name, op, v) for v in value]))
        elif op in OPERATORS:
            out.append((op, _scalar(name, op, value)))
        else:
            raise FilterError(f"unknown filter operator {op!r} on {name!r}: {HELP}")
    return out


def _scalar(name: str, op: str, value: Any) -> Scalar:
    """Accept strings, numbers and booleans only."""
    if not isinstance(value, Scalar):
        raise FilterError(f"filter {name!r}.{op} needs a string, number or boolean, got {value!r}: {HELP}")
    return value
