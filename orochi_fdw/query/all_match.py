"""Whether the statistics of some rows prove that every row satisfies a
bound expression: the counterpart of min/max pruning
(:func:`~orochi_fdw.query.predicates.might_match`, which proves that none
does).

A scan takes the rows of a chunk group that passes whole without decoding
the filter's columns: ``ts BETWEEN a AND b`` over a chunk group whose ``ts``
lies in ``[a, b]`` by its min and max, with no NULL ``ts``.

It answers True only when sure, for comparisons of integer-valued columns
(integers, dates, times, timestamps, scaled numerics) and of floats whose
statistics say there is no NaN, with the NULL count known to be zero;
anything else (text, whose bounds may be truncated; unknown statistics) is
False, and the rows are filtered as usual.

Example:
    >>> from orochi_fdw.bridge.api import ColumnDefinition, Qual
    >>> from orochi_fdw.query.predicates import ColumnStats, bind_quals
    >>> bound = bind_quals([Qual("n", ">=", 3), Qual("n", "<", 10)], {"n": ColumnDefinition("n", 23)})
    >>> all_match(bound.filter, {"n": ColumnStats(row_count=5, null_count=0, min=3, max=9)})
    True
    >>> all_match(bound.filter, {"n": ColumnStats(row_count=5, null_count=1, min=3, max=9)})
    False
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from orochi_fdw.query.predicates import (ALWAYS_FALSE, ALWAYS_TRUE, And, BooleanExpression,
                                         BoundPredicate, Comparison, In, IsNull, NotNull, Or)

__all__ = ["all_match", "matcher"]

#: kinds whose values and statistics are integers in the column's order
_INT_KINDS = frozenset(("int16", "int32", "int64", "date", "time", "timestamp", "timestamptz",
                        "decimal"))
_FLOAT_KINDS = frozenset(("float32", "float64"))


def all_match(expr: BooleanExpression, stats: Mapping[str, Any] | Callable[[str], Any]) -> bool:
    """True when ``stats`` (column name -> an object with ``row_count``,
    ``null_count``, ``min``, ``max`` and, for floats, ``has_nan``; None when
    unknown) prove that every row satisfies ``expr``; False when unsure."""
    test = matcher(expr)
    return test is not None and test(stats.get if isinstance(stats, Mapping) else stats)


def matcher(expr: BooleanExpression) -> Callable[[Callable[[str], Any]], bool] | None:
    """:func:`all_match` of ``expr`` as a function of the statistics lookup,
    made once per scan; None when no statistics can prove ``expr``."""
    if expr is ALWAYS_TRUE:
        return lambda lookup: True
    if expr is ALWAYS_FALSE:
        return None
    if isinstance(expr, (And, Or)):
        tests = [matcher(c) for c in expr.children]
        if isinstance(expr, And):
            if any(t is None for t in tests):
                return None
            return lambda lookup: all(t(lookup) for t in tests)
        tests = [t for t in tests if t is not None]
        return (lambda lookup: any(t(lookup) for t in tests)) if tests else None
    if not isinstance(expr, BoundPredicate):
        return None
    name = expr.term.name
    if isinstance(expr, IsNull):
        return lambda lookup: _counts(lookup(name)) == "nulls"
    if isinstance(expr, NotNull):
        return lambda lookup: _counts(lookup(name)) == "values"
    kind = expr.term.kind
    if kind not in _INT_KINDS and kind not in _FLOAT_KINDS:
        return None  # text: its bounds may be truncated
    is_float = kind in _FLOAT_KINDS
    if isinstance(expr, In):
        values = [v for v in expr.values if _number(v)]
        if not values:
            return None

        def test_in(lookup):
            b = _bounds(lookup(name), is_float)
            return b is not None and b[0] == b[1] and b[0] in values
        return test_in
    if not isinstance(expr, Comparison):
        return None
    v, op = expr.value, expr.op
    if isinstance(v, bool) or not (isinstance(v, (int, float)) or hasattr(v, "numerator")) \
            or (isinstance(v, float) and math.isnan(v)):
        return None  # not a number (the stored NaN of a numeric is an int: fine)
    check = _OPS[op]

    def test(lookup):
        b = _bounds(lookup(name), is_float)
        return b is not None and check(b[0], b[1], v)
    return test


#: ``op``: whether every value in [lo, hi] satisfies ``x op v``
_OPS = {
    "=": lambda lo, hi, v: lo == v and hi == v,
    "<>": lambda lo, hi, v: v < lo or v > hi,
    "<": lambda lo, hi, v: hi < v,
    "<=": lambda lo, hi, v: hi <= v,
    ">": lambda lo, hi, v: lo > v,
    ">=": lambda lo, hi, v: lo >= v,
}


def _counts(s: Any) -> str | None:
    """"nulls" when every row is NULL, "values" when none is, else None."""
    rows = getattr(s, "row_count", None)
    nulls = getattr(s, "null_count", None)
    if rows is None or nulls is None:
        return None
    if nulls >= rows:
        return "nulls"
    return "values" if nulls == 0 else None


def _bounds(s: Any, is_float: bool) -> tuple[Any, Any] | None:
    """(min, max) of rows none of which is NULL (nor, for floats, NaN), or
    None when the statistics do not say so."""
    if s is None or _counts(s) != "values":
        return None  # a NULL row satisfies no comparison
    if is_float and getattr(s, "has_nan", None) is not False:
        return None  # NaN sorts above every number and equals itself
    lo, hi = s.min, s.max
    if not _number(lo) or not _number(hi):
        return None
    return lo, hi


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) \
        and not (isinstance(v, float) and math.isnan(v))
