"""Predicates: binding and exactness rules, min/max pruning, kernel evaluation,
rendering.

The oracle is a small Python model of Postgres's semantics written without
the binder's help (exact rationals for numbers, microseconds and an explicit
session time zone for dates and times, bytes for text under "C", a regular
expression for LIKE). Pruning must never skip a chunk holding a row the
oracle says satisfies the qual; filtering with an exact qual must select
exactly the oracle's rows.
"""

from __future__ import annotations

import datetime as dt
import doctest
import math
import re
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from orochi_fdw.bridge.api import ColumnDefinition, Qual
from orochi_fdw.bridge.batch import Column, WireKind
from orochi_fdw.bridge.runtime import UNKNOWN
from orochi_fdw.bridge.types import SpecialValue
from orochi_fdw.errors import InvalidParameterError, WrapperError
from orochi_fdw.query import predicates as P
from orochi_fdw.query.predicates import (ALWAYS_FALSE, ALWAYS_TRUE, ROWS_CANNOT_MATCH,
                                         ROWS_MIGHT_MATCH, And, BoundReference, ColumnStats,
                                         Comparison, In, IsNull, Not, NotIn, NotNull, Or,
                                         StartsWith)
from orochi_fdw.storage.codecs import chunk_stats

HYPO = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

D = 86_400_000_000
EPOCH_D = dt.date(2000, 1, 1)
EPOCH_TS = dt.datetime(2000, 1, 1)
UTC = dt.timezone.utc
I32 = (-(2**31), 2**31 - 1)
I64 = (-(2**63), 2**63 - 1)

OIDS = {"bool": 16, "int16": 21, "int32": 23, "int64": 20, "float32": 700, "float64": 701,
        "date": 1082, "timestamp": 1114, "timestamptz": 1184, "time": 1083, "text": 25,
        "varchar": 1043, "bytea": 17, "numeric": 1700}
WIRE = {"bool": WireKind.BOOL, "int16": WireKind.INT16, "int32": WireKind.INT32,
        "int64": WireKind.INT64, "float32": WireKind.FLOAT32, "float64": WireKind.FLOAT64,
        "date": WireKind.DATE, "timestamp": WireKind.TIMESTAMP, "timestamptz": WireKind.TIMESTAMP,
        "time": WireKind.TIME, "text": WireKind.TEXT, "varchar": WireKind.TEXT, "bytea": WireKind.BYTEA}
DTYPES = {"bool": np.uint8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
          "float32": np.float32, "float64": np.float64, "date": np.int32, "timestamp": np.int64,
          "timestamptz": np.int64, "time": np.int64}

POLICY = P.CollationPolicy(default_collation="C", deterministic=frozenset({"default", "en_US.utf8"}))


def coldef(kind: str, name: str = "c") -> ColumnDefinition:
    return ColumnDefinition(name, OIDS[kind], type_name=kind)


def ref(kind: str, name: str = "c") -> BoundReference:
    return P.bind_reference(coldef(kind, name))


def bind1(kind: str, op, value, collation=None, policy=POLICY) -> P.BoundQual:
    return P.bind_qual(Qual("c", op, value, collation), coldef(kind), policy)


def batch_column(kind: str, values: list) -> Column:
    """A wire column from storage-domain values (None = NULL)."""
    validity = np.array([v is not None for v in values], dtype=np.uint8)
    if kind in ("text", "varchar", "bytea"):
        parts = [b"" if v is None else v for v in values]
        offsets = np.zeros(len(values) + 1, np.int64)
        np.cumsum([len(p) for p in parts], out=offsets[1:])
        return Column(WIRE[kind], np.frombuffer(b"".join(parts), np.uint8), validity, offsets)
    arr = np.array([0 if v is None else v for v in values], dtype=DTYPES[kind])
    return Column(WIRE[kind], arr, validity)


# ================================================================== oracle

def _rank(x):
    """A totally ordered key for numbers: -inf < finite < +inf < NaN."""
    if isinstance(x, float):
        if math.isnan(x):
            return (3, 0)
        if math.isinf(x):
            return (2, 0) if x > 0 else (0, 0)
    if isinstance(x, Decimal):
        if x.is_nan():
            return (3, 0)
        if x.is_infinite():
            return (2, 0) if x > 0 else (0, 0)
    return (1, Fraction(x))


def _time_key(kind_or_type: str, v, offset_us: int, zoned: bool):
    """Key of a date / timestamp / timestamptz value on a common UTC-ish axis.
    ``v`` is a storage integer (days / µs) or ±inf; when ``zoned``, a value
    that has no time zone is read in the session zone (UTC = local - offset)."""
    if v in ("-inf", "inf"):
        return (0, 0) if v == "-inf" else (2, 0)
    us = v * D if kind_or_type == "date" else v
    if zoned and kind_or_type != "timestamptz":
        us -= offset_us
    return (1, us)


def const_time(c):
    """(type, storage value or ±inf) of a date/time constant."""
    if isinstance(c, SpecialValue):
        t = {"date": "date", "timestamp without time zone": "timestamp",
             "timestamp with time zone": "timestamptz"}[c.type_name]
        if c.text in ("infinity", "-infinity"):
            return t, ("inf" if c.text == "infinity" else "-inf")
        return t, c.raw
    if isinstance(c, dt.datetime):
        if c.tzinfo is not None:
            delta = c - dt.datetime(2000, 1, 1, tzinfo=UTC)
            return "timestamptz", delta // dt.timedelta(microseconds=1)
        return "timestamp", (c - EPOCH_TS) // dt.timedelta(microseconds=1)
    if isinstance(c, dt.date):
        return "date", (c - EPOCH_D).days
    raise TypeError(c)


def column_time(kind: str, x: int):
    lo, hi = (I32 if kind == "date" else I64)
    if x == lo:
        return "-inf"
    if x == hi:
        return "inf"
    return x


def sql_cmp(kind: str, x, c, offset_us: int, collation=None):
    """-1 / 0 / 1 comparing column value x (storage domain) with constant c as
    Postgres would, or 'unknown' when the order depends on the collation."""
    if kind in ("int16", "int32", "int64"):
        xv = float(x) if isinstance(c, float) and kind == "int64" else x  # int8::float8
        a, b = _rank(xv), _rank(c)
    elif kind in ("float32", "float64"):
        a, b = _rank(float(x)), _rank(c if not isinstance(c, int) else c)
    elif kind == "bool":
        a, b = int(x != 0), int(c)
    elif kind in ("date", "timestamp", "timestamptz"):
        t, cv = const_time(c)
        zoned = (kind == "timestamptz") != (t == "timestamptz")
        a = _time_key(kind, column_time(kind, x), offset_us, zoned)
        b = _time_key(t, cv, offset_us, zoned)
    elif kind in ("text", "varchar"):
        cb = c.encode()
        if x == cb:
            return 0
        if collation not in ("C", "POSIX", None, "default"):
            return "unknown"
        a, b = x, cb
    elif kind == "bytea":
        a, b = x, c
    else:
        raise AssertionError(kind)
    return (a > b) - (a < b)


def like_regex(pattern):
    is_bytes = isinstance(pattern, bytes)
    items = [pattern[i:i + 1] for i in range(len(pattern))]
    out = []
    i = 0
    while i < len(items):
        ch = items[i]
        if ch in ("\\", b"\\"):
            if i + 1 == len(items):
                return None  # Postgres: LIKE pattern must not end with escape character
            out.append(re.escape(items[i + 1]))
            i += 2
            continue
        if ch in ("%", b"%"):
            out.append(b".*" if is_bytes else ".*")
        elif ch in ("_", b"_"):
            out.append(b"." if is_bytes else ".")
        else:
            out.append(re.escape(ch))
        i += 1
    joined = (b"" if is_bytes else "").join(out)
    return re.compile(joined, re.DOTALL)


def sql_scalar(kind, x, op, c, offset_us, collation):
    """True / False / None (NULL) / 'unknown' for `x op c`."""
    if x is None or c is None:
        return None
    if op in ("~~", "!~~", "~~*", "!~~*"):
        rx = like_regex(c)
        if rx is None:
            return "unknown"
        subject = x if kind == "bytea" else x.decode()
        if op in ("~~*", "!~~*"):
            return "unknown"
        m = rx.fullmatch(subject) is not None
        return m if op == "~~" else not m
    r = sql_cmp(kind, x, c, offset_us, collation)
    if r == "unknown":
        return "unknown" if op not in ("=", "<>") else (False if op == "=" else True)
    return {"=": r == 0, "<>": r != 0, "<": r < 0, "<=": r <= 0, ">": r > 0, ">=": r >= 0}[op]


def sql_qual(kind, x, q: Qual, offset_us):
    """The qual's SQL value for column value x."""
    op = q.operator_name
    if not q.is_list_operator:
        if q.value is None:
            return (x is None) if op == "=" else (x is not None)
        return sql_scalar(kind, x, op, q.value, offset_us, q.collation)
    items = q.value
    use_any = q.list_any_or_all
    if not items:
        return not use_any  # even for a NULL x
    if x is None:
        return None
    results = [sql_scalar(kind, x, op, c, offset_us, q.collation) for c in items]
    # 'unknown' (collation-dependent) is TRUE or FALSE; NULL and FALSE are
    # the same to a filter (not true)
    if use_any:
        for decisive in (True, "unknown", None):
            if decisive in results:
                return decisive
        return False
    for decisive in (False, None, "unknown"):
        if decisive in results:
            return decisive
    return True


# ============================================================ generators

def storage_values(kind, anchor: int = 0):
    """Values of a column in its storage domain; dates and times cluster
    around ``anchor`` (a day, in the column's units) so that chunks sit near
    the day boundaries where time zones matter."""
    if kind == "bool":
        return st.sampled_from([0, 1])
    if kind in ("int16", "int32", "int64"):
        bits = {"int16": 16, "int32": 32, "int64": 64}[kind]
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        return st.one_of(st.integers(-6, 6), st.sampled_from([lo, hi, lo + 1, hi - 1]),
                         st.integers(lo, hi))
    if kind in ("float32", "float64"):
        width = 32 if kind == "float32" else 64
        return st.one_of(st.sampled_from([-1.5, -0.0, 0.0, 1.0, 2.5, math.nan, math.inf, -math.inf]),
                         st.floats(-20, 20, width=width).map(lambda v: round(v * 4) / 4),
                         st.floats(width=width, allow_nan=True, allow_infinity=True))
    if kind == "date":
        return st.one_of(st.integers(anchor - 3, anchor + 3), st.integers(-40000, 40000),
                         st.sampled_from(list(I32)))
    if kind in ("timestamp", "timestamptz"):
        hour = 3_600_000_000
        return st.one_of(st.integers(-20, 20).map(lambda h: anchor + h * hour),
                         st.integers(anchor - 2 * D, anchor + 2 * D),
                         st.integers(-40000 * D, 40000 * D), st.sampled_from(list(I64)))
    if kind in ("text", "varchar"):
        return st.lists(st.sampled_from(["a", "b", "ab", "é", "z", "%", "_", "A"]), max_size=3).map(
            lambda p: "".join(p).encode())
    if kind == "bytea":
        return st.lists(st.sampled_from([b"a", b"b", b"\xff", b"\x00", b"%", b"_"]), max_size=3).map(b"".join)
    raise AssertionError(kind)


@st.composite
def chunk(draw, kind):
    anchor = draw(st.integers(-5, 5))
    if kind in ("timestamp", "timestamptz"):
        anchor *= D
    return draw(st.lists(st.one_of(st.none(), storage_values(kind, anchor)), min_size=0, max_size=10))


def _to_float(kind, v):
    return float(np.float32(v)) if kind == "float32" else float(v)


@st.composite
def constants(draw, kind, pool):
    """A constant for a qual on a `kind` column, often near the chunk's values."""
    near = [v for v in pool if v is not None]
    if kind in ("int16", "int32", "int64"):
        base = st.one_of(st.sampled_from(near), st.integers(-25, 25)) if near else st.integers(-25, 25)
        choices = [base,
                   base.map(lambda v: v + 1), base.map(lambda v: v - 1),
                   st.sampled_from([2**15, -(2**15) - 1, 2**31, 2**40, -(2**63) - 1, 2**63]),
                   base.map(lambda v: Decimal(v) + Decimal("0.5")),
                   st.sampled_from([Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("2.5")])]
        if kind != "int64":
            choices += [base.map(lambda v: float(v) + 0.25), st.sampled_from([math.nan, math.inf, -math.inf])]
        return draw(st.one_of(*choices))
    if kind in ("float32", "float64"):
        base = st.sampled_from(near) if near else st.just(0.0)
        # a quarter of a float4 step off a value: a float8 constant that
        # rounds to that value as float4, but is not it
        quarter = st.sampled_from([0.25, -0.25]).map(float)
        off = st.tuples(base, quarter).map(
            lambda t: t[0] + t[1] * float(np.spacing(np.float32(t[0]))) if math.isfinite(t[0]) else t[0])
        return draw(st.one_of(base, off, base.map(lambda v: v + 0.1 if math.isfinite(v) else v),
                              st.sampled_from([0.1, 1e39, -1e39, math.nan, math.inf, -0.0, 2.5]),
                              st.integers(-25, 25)))
    if kind == "bool":
        return draw(st.booleans())
    if kind in ("date", "timestamp", "timestamptz"):
        finite = [v for v in near if v not in I32 + I64]
        scale = D if kind == "date" else 1
        us = draw(st.one_of(st.sampled_from(finite).map(lambda v: v * scale), st.integers(-4 * D, 4 * D))
                  if finite else st.integers(-4 * D, 4 * D))
        us += draw(st.sampled_from([0, 0, 1, -1, D // 3, -D // 3, D, 16 * 3_600_000_000]))
        us = max(min(us, 2_900_000 * D), -700_000 * D)  # within Python's years
        naive = EPOCH_TS + dt.timedelta(microseconds=us)
        tz = dt.timezone(dt.timedelta(minutes=draw(st.integers(-15 * 60, 15 * 60))))
        inf = draw(st.sampled_from(["infinity", "-infinity"]))
        return draw(st.sampled_from([
            naive.date(), naive, naive.replace(tzinfo=UTC), naive.replace(tzinfo=tz),
            SpecialValue("date", I32[1] if inf == "infinity" else I32[0], inf),
            SpecialValue("timestamp without time zone", I64[1] if inf == "infinity" else I64[0], inf),
            SpecialValue("timestamp with time zone", I64[1] if inf == "infinity" else I64[0], inf),
        ]))
    if kind in ("text", "varchar"):
        base = st.sampled_from([v.decode() for v in near]) if near else st.just("a")
        return draw(st.one_of(base, st.sampled_from(["", "a", "ab", "b", "é", "zz", "A"])))
    if kind == "bytea":
        base = st.sampled_from(near) if near else st.just(b"a")
        return draw(st.one_of(base, st.sampled_from([b"", b"a", b"\xff", b"\xff\xff", b"b\x00"])))
    raise AssertionError(kind)


@st.composite
def like_patterns(draw, kind, pool):
    is_bytes = kind == "bytea"
    near = [v for v in pool if v is not None]
    lit = draw(st.sampled_from(near)) if near and draw(st.booleans()) else draw(storage_values(kind))
    lit = lit[:draw(st.integers(0, 3))]
    if not is_bytes:
        lit = lit.decode("utf-8", errors="ignore")
    pct, us_, esc = (b"%", b"_", b"\\") if is_bytes else ("%", "_", "\\")
    escaped = lit.replace(esc, esc + esc).replace(pct, esc + pct).replace(us_, esc + us_)
    tail = draw(st.sampled_from([pct, pct, pct, pct + pct, lit[:0], us_ + pct, pct + lit[:1], esc]))
    return escaped + tail if draw(st.integers(0, 4)) else (lit + tail)


KINDS = ["bool", "int16", "int32", "int64", "float32", "float64", "date", "timestamp",
         "timestamptz", "text", "varchar", "bytea"]


@st.composite
def quals(draw, kind, pool):
    collation = draw(st.sampled_from(["C", "en_US.utf8", "default", "und-x-icu"])) \
        if kind in ("text", "varchar") else None
    weights = ["scalar"] * 3 + ["null", "list"] + (["like"] * 3 if kind in ("text", "varchar", "bytea") else [])
    shape = draw(st.sampled_from(weights))
    if shape == "null":
        return Qual("c", draw(st.sampled_from(["=", "<>"])), None)
    if shape == "like" and kind in ("text", "varchar", "bytea"):
        pat = draw(like_patterns(kind, pool))
        op = draw(st.sampled_from(["~~", "!~~", "~~*", "!~~*"]))
        return Qual("c", op, pat, collation)
    op = draw(st.sampled_from(["=", "<>", "<", "<=", ">", ">="]))
    if shape == "list":
        items = draw(st.lists(st.one_of(st.none(), constants(kind, pool)), max_size=5))
        return Qual("c", (op, draw(st.booleans())), items, collation)
    return Qual("c", op, draw(constants(kind, pool)), collation)


@st.composite
def awkward_stats(draw, kind, values):
    """True statistics of the chunk, then loosened or dropped at random."""
    rows = len(values)
    present = [v for v in values if v is not None]
    nulls = rows - len(present)
    is_float = kind in ("float32", "float64")
    ordered = [v for v in present if not (is_float and math.isnan(v))]
    lo = min(ordered) if ordered else None
    hi = max(ordered) if ordered else None
    has_nan = any(is_float and math.isnan(v) for v in present)
    if lo is not None and draw(st.booleans()):
        # a looser bound is still a bound
        if kind in ("text", "varchar", "bytea"):
            lo = lo[:draw(st.integers(0, len(lo)))]
            hi = hi + b"\xff" if draw(st.booleans()) else hi
        elif is_float:
            lo, hi = lo - draw(st.sampled_from([0.0, 0.5])), hi + draw(st.sampled_from([0.0, 0.5]))
        elif kind == "bool":
            pass
        else:
            lo, hi = lo - draw(st.integers(0, 3)), hi + draw(st.integers(0, 3))
    nan_flag = draw(st.sampled_from([has_nan, has_nan, None])) if is_float else None
    if draw(st.integers(0, 9)) == 0:
        lo = None
    return ColumnStats(rows, nulls, lo, hi, nan_flag)


def offsets_for(draw):
    return draw(st.sampled_from([0, 60, -60, 15 * 3600 + 59 * 60 + 59, -(15 * 3600 + 59 * 60 + 59),
                                 5 * 3600 + 30 * 60])) * 1_000_000


# ========================================================== the property

def _check(kind, values, qs, stats, offset_us):
    col = coldef(kind)
    bound = P.bind_quals(qs, {"c": col}, POLICY)
    truths = []
    for b in bound.quals:
        t = [sql_qual(kind, x, b.qual, offset_us) for x in values]
        truths.append(t)
        if b.exact:
            assert "unknown" not in t, f"exact qual {b.qual!r} whose result depends on the collation"
    all_true = [all(t[i] is True for t in truths) for i in range(len(values))]
    verdict = P.might_match(bound.prune, {"c": stats})
    assert P.pruner(bound.prune)({"c": stats}.get) is verdict, "the compiled pruner should answer as might_match"
    if verdict is ROWS_CANNOT_MATCH:
        hits = [values[i] for i, ok in enumerate(all_true) if ok]
        assert not hits, (f"should read: rows {hits[:3]} satisfy {list(qs)} (session offset "
                          f"{offset_us // 1_000_000}s) but pruning skipped stats {stats}")
    # every qual alone too: its own prune may not skip rows it accepts
    for b, t in zip(bound.quals, truths):
        if P.might_match(b.prune, {"c": stats}) is ROWS_CANNOT_MATCH:
            assert True not in t, f"should read: {b.qual!r} holds for some row; stats {stats}"
    exact_truth = [all(t[i] is True for b, t in zip(bound.quals, truths) if b.exact)
                   for i in range(len(values))]
    mask = P.evaluate(bound.filter, {"c": batch_column(kind, values)}, len(values))
    assert mask.astype(bool).tolist() == exact_truth, (
        f"filter {P.render(bound.filter)} selected {mask.tolist()}, Postgres would select "
        f"{exact_truth} of {values}")


@pytest.mark.parametrize("kind", KINDS)
@HYPO
@given(data=st.data())
def test_pruning_never_skips_a_matching_chunk_and_filters_exactly(kind, data):
    values = data.draw(chunk(kind))
    if kind == "float32":
        values = [None if v is None else _to_float(kind, v) for v in values]
    qs = data.draw(st.lists(quals(kind, values), min_size=1, max_size=3))
    stats = data.draw(awkward_stats(kind, values))
    _check(kind, values, qs, stats, offsets_for(data.draw))


ZONE_EDGE = (15 * 3600 + 59 * 60 + 59) * 1_000_000   # Postgres's largest UTC offset


@pytest.mark.parametrize("kind,const", [
    ("timestamptz", dt.date(2024, 3, 1)),
    ("timestamptz", dt.datetime(2024, 3, 1, 6)),
    ("timestamp", dt.datetime(2024, 3, 1, 6, tzinfo=UTC)),
    ("date", dt.datetime(2024, 3, 1, 6, tzinfo=UTC)),
])
@pytest.mark.parametrize("op", ["=", "<", "<=", ">", ">="])
def test_zoned_boundaries(kind, const, op):
    """Rows right at the edges of what any session time zone can make of the
    constant: pruning may never skip them (targeted, since random chunks
    rarely sit within a few hours of the edge)."""
    t, cv = const_time(const)
    centre = cv * D if t == "date" else cv
    qual = Qual("c", op, const)
    b = P.bind_qual(qual, coldef(kind))
    assert not b.exact
    for offset in (ZONE_EDGE, -ZONE_EDGE, 0):
        for shift in (-ZONE_EDGE - 1, -ZONE_EDGE, -1, 0, 1, ZONE_EDGE, ZONE_EDGE + 1, 6 * 3_600_000_000):
            x_us = centre + shift
            x = x_us // D if kind == "date" else x_us
            truth = sql_qual(kind, x, qual, offset)
            verdict = P.might_match(b.prune, {"c": ColumnStats(1, 0, x, x)})
            if truth is True:
                assert verdict is ROWS_MIGHT_MATCH, (
                    f"should read: {kind} value {x} satisfies {qual!r} at UTC offset {offset}")


@pytest.mark.parametrize("c", [0.1, -0.1, 1 / 3, 1e39, -1e39, 16777217.0, 1e-46, 3.4028235677973366e38])
@pytest.mark.parametrize("op", ["=", "<>", "<", "<=", ">", ">="])
def test_float4_against_float8_constants(c, op):
    """A float4 column compared with a float8 constant that float4 cannot
    hold: the float4 values on either side of it are filtered and pruned
    exactly as Postgres compares them (widened to float8)."""
    with np.errstate(over="ignore"):
        f = np.float32(c)
    near = {f, np.nextafter(f, np.float32(np.inf)), np.nextafter(f, np.float32(-np.inf)),
            np.float32(0), np.float32(np.nan)}
    values = sorted((float(v) for v in near), key=lambda v: (math.isnan(v), v))
    qual = Qual("c", op, c)
    b = P.bind_qual(qual, coldef("float32"))
    assert b.exact, b.reason
    truth = [sql_qual("float32", v, qual, 0) for v in values]
    mask = P.evaluate(b.expr, {"c": batch_column("float32", values)}, len(values))
    assert mask.astype(bool).tolist() == [t is True for t in truth], f"{values} {op} {c!r}"
    for v, t in zip(values, truth):
        stats = ColumnStats(1, 0, None if math.isnan(v) else v, None if math.isnan(v) else v,
                            has_nan=math.isnan(v))
        if t is True:
            assert P.might_match(b.prune, {"c": stats}) is ROWS_MIGHT_MATCH, f"should read: {v} {op} {c!r}"


# ============================================================ binding rules

@pytest.mark.parametrize("kind,op,value,expected", [
    ("int32", "=", 2.5, "false"),
    ("int32", "=", Decimal("2.5"), "false"),
    ("int32", "<", Decimal("2.5"), "c <= 2"),
    ("int32", "<=", Decimal("2.5"), "c <= 2"),
    ("int32", ">", Decimal("2.5"), "c >= 3"),
    ("int32", ">=", Decimal("-2.5"), "c >= -2"),
    ("int32", "<", Decimal("2"), "c < 2"),
    ("int32", "<>", Decimal("2.5"), "c IS NOT NULL"),
    ("int32", "=", 2**40, "false"),
    ("int32", "<", 2**40, "c IS NOT NULL"),
    ("int32", ">", 2**40, "false"),
    ("int32", ">", -(2**40), "c IS NOT NULL"),
    ("int32", "<>", 2**40, "c IS NOT NULL"),
    ("int16", "=", 40000, "false"),
    ("int16", "<=", 32767, "c IS NOT NULL"),
    ("int16", "<", 32767, "c < 32767"),
    ("int64", "=", 2**63, "false"),
    ("int64", "<", Decimal("NaN"), "c IS NOT NULL"),     # numeric NaN is above every number
    ("int64", "=", Decimal("NaN"), "false"),
    ("int64", ">", Decimal("-Infinity"), "c IS NOT NULL"),
    ("int32", ">", math.inf, "false"),
    ("float32", "=", 0.1, "false"),                     # 0.1 is no float4
    ("float32", "<>", 0.1, "c IS NOT NULL"),
    ("float32", "<", 0.1, f"c <= {float(np.nextafter(np.float32(0.1), np.float32(0)))!r}"),
    ("float32", ">", 0.1, f"c >= {float(np.float32(0.1))!r}"),
    ("float32", "=", 0.5, "c = 0.5"),
    ("float32", ">", 1e39, "c >= 'Infinity'"),
    ("float32", "<", 1e39, f"c <= {float(np.finfo(np.float32).max)!r}"),
    ("float64", "=", math.nan, "c = 'NaN'"),
    ("float64", "<", 3, "c < 3.0"),
    ("bool", "=", True, "c = true"),
    ("bool", "<", True, "c = false"),
    ("bool", ">", True, "false"),
    ("bool", ">=", False, "c IS NOT NULL"),
    ("date", "=", dt.date(2024, 1, 1), "c = '2024-01-01'"),
    ("date", "<", dt.datetime(2024, 1, 1, 12), "c <= '2024-01-01'"),
    ("date", "=", dt.datetime(2024, 1, 1), "c = '2024-01-01'"),
    ("date", "=", dt.datetime(2024, 1, 1, 0, 0, 1), "false"),
    ("date", ">", dt.datetime(2024, 1, 1, 0, 0, 1), "c >= '2024-01-02'"),
    ("date", "<", SpecialValue("date", I32[1], "infinity"), "c < 'infinity'"),
    ("date", "<", SpecialValue("timestamp without time zone", I64[1], "infinity"), "c < 'infinity'"),
    ("timestamp", ">=", dt.date(2024, 1, 1), "c >= '2024-01-01 00:00:00'"),
    ("timestamp", "=", SpecialValue("date", I32[0], "-infinity"), "c = '-infinity'"),
    ("timestamp", "<", SpecialValue("date", -2_451_545 + 10, "4713-12-03 BC"), "c < -211812624000000000"),  # outside Python's years: raw
    ("timestamptz", ">=", dt.datetime(2024, 1, 1, tzinfo=UTC), "c >= '2024-01-01 00:00:00+00'"),
    ("timestamptz", "<", dt.datetime(2024, 1, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2))),
     "c < '2024-01-01 00:00:00+00'"),
    ("timestamptz", "<", SpecialValue("timestamp with time zone", I64[1], "infinity"), "c < 'infinity'"),
    ("timestamptz", "<", SpecialValue("date", I32[1], "infinity"), "c < 'infinity'"),
    ("time", "<", dt.time(12, 30), "c < '12:30:00'"),
    ("time", "=", SpecialValue("time without time zone", D, "24:00:00"), "c = '24:00:00'"),
])
def test_binding_is_exact(kind, op, value, expected):
    b = bind1(kind, op, value)
    assert b.exact, b.reason
    assert P.render(b.expr) == expected


@pytest.mark.parametrize("kind,op,value,collation,why", [
    ("timestamptz", ">=", dt.date(2024, 1, 1), None, "time zone"),
    ("timestamptz", "=", dt.datetime(2024, 1, 1), None, "time zone"),
    ("timestamp", "<", dt.datetime(2024, 1, 1, tzinfo=UTC), None, "time zone"),
    ("date", "<", dt.datetime(2024, 1, 1, tzinfo=UTC), None, "time zone"),
    ("int64", "<", 2.0**60, None, "2^53"),
    ("float64", "=", Decimal("1.5"), None, "Decimal"),
    ("int32", "=", "12", None, "str"),
    ("text", "<", "abc", "en_US.utf8", "order"),
    ("text", "=", "abc", "my_nondeterministic", "nondeterministic"),
    ("text", "~~", "a_c%", "C", "pattern"),
    ("text", "~~", "%abc", "C", "pattern"),
    ("text", "~~", "abc\\", "C", "pattern"),
    ("text", "~~*", "abc%", "C", "left to Postgres"),
    ("text", "~~", "abc%", "my_nondeterministic", "nondeterministic"),
    ("numeric", "=", Decimal("1"), None, "not filtered"),
    ("date", "=", dt.time(1), None, "time"),
])
def test_binding_is_not_exact(kind, op, value, collation, why):
    b = bind1(kind, op, value, collation)
    assert not b.exact and b.expr is None
    assert why in b.reason


@pytest.mark.parametrize("collation,op,value,expected", [
    ("C", "<", "abc", "c < 'abc'"),
    ("POSIX", ">=", "é", "c >= 'é'"),
    ("default", "<", "abc", "c < 'abc'"),                 # the database default is C here
    ("en_US.utf8", "=", "abc", "c = 'abc'"),              # deterministic: = is byte equality
    ("und-x-icu", "<>", "abc", None),                     # not known to be deterministic
    ("C", "~~", "abc%", "c LIKE 'abc%'"),
    ("en_US.utf8", "~~", "abc%", "c LIKE 'abc%'"),        # LIKE matches bytes in any deterministic collation
    ("C", "~~", "ab\\%c%%", "c LIKE 'ab\\%c%'"),
    ("C", "~~", "abc", "c = 'abc'"),
    ("C", "!~~", "abc%", "c NOT LIKE 'abc%'"),
    ("C", "~~", "%", "c LIKE '%'"),
])
def test_text_binding(collation, op, value, expected):
    b = bind1("text", op, value, collation)
    if expected is None:
        assert not b.exact
    else:
        assert b.exact, b.reason
        assert P.render(b.expr) == expected


def test_text_binding_with_a_deterministic_lookup():
    policy = P.CollationPolicy(default_collation="en_US.utf8", is_deterministic=lambda n: n != "nd")
    assert P.bind_qual(Qual("c", "=", "x", "und-x-icu"), coldef("text"), policy).exact
    assert not P.bind_qual(Qual("c", "=", "x", "nd"), coldef("text"), policy).exact
    assert not P.bind_qual(Qual("c", "<", "x", "default"), coldef("text"), policy).exact
    latin1 = P.CollationPolicy(utf8=False)
    assert not P.bind_qual(Qual("c", "<", "x", "C"), coldef("text"), latin1).exact


@pytest.mark.parametrize("op,items,expected", [
    (("=", True), [1, None, 3], "c IN (1, 3)"),
    (("=", True), [], "false"),
    (("=", True), [None], "false"),
    (("=", True), [2.5, 2**40], "false"),
    (("<>", False), [1, None], "false"),                  # NOT IN with a NULL is never true
    (("<>", False), [], "true"),                          # ALL of nothing: true even for NULL rows
    (("<>", False), [3, 1, 3], "c NOT IN (1, 3)"),
    (("<>", False), [2.5], "c IS NOT NULL"),
    (("<", True), [1, 5], "c < 1 OR c < 5"),
    (("<", False), [1, 5], "c < 1 AND c < 5"),
    (("=", False), [1, 1], "c = 1"),
    (("=", False), [1, 2], "c = 1 AND c = 2"),
    (("<", False), [1, None], "false"),
    (("=", True), None, "false"),                         # a NULL array (a parameter set to NULL)
])
def test_list_binding(op, items, expected):
    b = P.bind_qual(Qual("c", op, items), coldef("int32"), POLICY)
    assert b.exact, b.reason
    assert P.render(b.expr) == expected


def test_list_binding_of_bools_and_floats():
    b = P.bind_qual(Qual("c", ("=", True), [True, False]), coldef("bool"))
    assert b.exact and P.render(b.expr) == "c = true OR c = false"
    b = P.bind_qual(Qual("c", ("=", True), [0.1, 0.5, math.nan]), coldef("float32"))
    assert b.exact and P.render(b.expr) == "c IN (0.5, 'NaN')"
    b = P.bind_qual(Qual("c", ("<", True), list(range(40))), coldef("int32"))
    assert not b.exact and "more than" in b.reason


def test_list_of_zoned_dates_prunes_with_every_item():
    """Regression: an inexact list must prune with the OR of all its items,
    not with the first item's range."""
    days = [dt.date(2024, 1, 1), dt.date(2024, 6, 1)]
    b = P.bind_qual(Qual("c", ("=", True), days), coldef("timestamptz"))
    assert not b.exact
    june = (dt.datetime(2024, 6, 1, tzinfo=UTC) - dt.datetime(2000, 1, 1, tzinfo=UTC)) // dt.timedelta(microseconds=1)
    stats = ColumnStats(10, 0, june - 3_600_000_000, june + 3_600_000_000)
    assert P.might_match(b.prune, {"c": stats}) is ROWS_MIGHT_MATCH, "should read: June 1 is in the list"
    far = ColumnStats(10, 0, june + 100 * D, june + 101 * D)
    assert P.might_match(b.prune, {"c": far}) is ROWS_CANNOT_MATCH, "should skip: no listed day is near"


def test_zoned_quals_prune_with_a_widened_range():
    b = bind1("timestamptz", ">=", dt.date(2024, 1, 1))
    assert not b.exact and b.prune is not ALWAYS_TRUE
    jan1 = (dt.datetime(2024, 1, 1, tzinfo=UTC) - dt.datetime(2000, 1, 1, tzinfo=UTC)) // dt.timedelta(microseconds=1)
    before = ColumnStats(5, 0, jan1 - 20 * 3_600_000_000, jan1 - 17 * 3_600_000_000)
    assert P.might_match(b.prune, {"c": before}) is ROWS_CANNOT_MATCH, "should skip: 17h before midnight UTC"
    edge = ColumnStats(5, 0, jan1 - 15 * 3_600_000_000, jan1 - 14 * 3_600_000_000)
    assert P.might_match(b.prune, {"c": edge}) is ROWS_MIGHT_MATCH, \
        "should read: midnight at UTC+15 is 15h before midnight UTC"
    assert bind1("timestamptz", "<>", dt.date(2024, 1, 1)).prune is ALWAYS_TRUE


def test_null_tests_bind_on_any_column():
    for kind in ("numeric", "int32", "text"):
        assert P.render(bind1(kind, "=", None).expr) == "c IS NULL"
        assert P.render(bind1(kind, "<>", None).expr) == "c IS NOT NULL"


def test_unknown_values_are_exact_by_type_alone():
    def exact(kind, op, collation=None):
        return bind1(kind, op, UNKNOWN, collation).exact

    assert exact("int32", "<") and exact("float32", "=") and exact("bool", "=") and exact("bytea", "<")
    assert exact("int64", ("=", True)) and exact("int64", ("<>", False))
    assert not exact("int64", ("<", True)), "an unknown list length may exceed the expansion limit"
    assert exact("text", "=", "en_US.utf8") and not exact("text", "<", "en_US.utf8")
    assert exact("text", "<", "C") and not exact("text", "~~", "C")
    for kind in ("date", "timestamp", "timestamptz"):
        assert not exact(kind, "="), f"{kind} may be compared with a zoned constant"
    b = bind1("int32", "<", UNKNOWN)
    assert b.expr is None and b.prune is ALWAYS_TRUE


def test_plan_time_exactness_is_enforced_at_execution():
    cols = {"c": coldef("timestamptz")}
    qs = [Qual("c", ">=", dt.date(2024, 1, 1))]
    with pytest.raises(WrapperError):
        P.bind_quals(qs, cols, must_be_exact=[True])
    assert P.bind_quals(qs, cols, must_be_exact=[False]).exact == [False]


def test_unknown_column():
    b = P.bind_qual(Qual("nope", "=", 1), None)
    assert not b.exact and b.reason == "no such column"


# ================================================================ pruning

def prune(kind, op, value, stats, collation=None):
    return P.might_match(bind1(kind, op, value, collation).prune, {"c": stats})


def test_missing_stats_read():
    b = bind1("int32", "=", 5)
    assert P.might_match(b.prune, {}) is ROWS_MIGHT_MATCH, "should read: no statistics"
    assert P.might_match(b.prune, lambda name: None) is ROWS_MIGHT_MATCH, "should read: no statistics"
    assert prune("int32", "=", 5, ColumnStats(10, 0, None, 9)) is ROWS_MIGHT_MATCH, "should read: min unknown"
    assert prune("int32", "<", 5, ColumnStats(10, None, 7, 9)) is ROWS_CANNOT_MATCH, \
        "should skip: bounds decide without null counts"
    assert prune("int32", "=", None, ColumnStats(10, None, 7, 9)) is ROWS_MIGHT_MATCH, \
        "should read: IS NULL without a null count"


def test_all_null_chunks():
    all_null = ColumnStats(10, 10)
    for op in ("=", "<", ">=", "<>"):
        assert prune("int32", op, 5, all_null) is ROWS_CANNOT_MATCH, f"should skip: all NULL ({op})"
    assert prune("int32", "=", None, all_null) is ROWS_MIGHT_MATCH, "should read: IS NULL on NULLs"
    assert prune("int32", "<>", None, all_null) is ROWS_CANNOT_MATCH, "should skip: IS NOT NULL on NULLs"
    assert prune("int32", "=", None, ColumnStats(10, 0, 1, 2)) is ROWS_CANNOT_MATCH, "should skip: no NULLs"
    assert prune("int32", "<>", 2.5, all_null) is ROWS_CANNOT_MATCH, "should skip: <> 2.5 is IS NOT NULL"


def test_ranges():
    s = ColumnStats(10, 2, 10, 20)
    cases = [("=", 9, False), ("=", 10, True), ("=", 21, False), ("<", 10, False), ("<", 11, True),
             ("<=", 10, True), ("<=", 9, False), (">", 20, False), (">", 19, True), (">=", 20, True),
             (">=", 21, False), ("<", Decimal("10.5"), True), (">", Decimal("19.5"), True),
             (">", Decimal("20.5"), False), ("=", 15.5, False)]
    for op, v, expected in cases:
        got = prune("int32", op, v, s)
        if expected:
            assert got is ROWS_MIGHT_MATCH, f"should read: c {op} {v} within [10, 20]"
        else:
            assert got is ROWS_CANNOT_MATCH, f"should skip: c {op} {v} outside [10, 20]"


def test_not_equal_and_not_in_always_read():
    same = ColumnStats(10, 0, 5, 5)
    assert prune("int32", "<>", 5, same) is ROWS_MIGHT_MATCH, "should read: <> is never pruned"
    b = P.bind_qual(Qual("c", ("<>", False), [5, 6]), coldef("int32"))
    assert P.might_match(b.prune, {"c": same}) is ROWS_MIGHT_MATCH, "should read: NOT IN is never pruned"


def test_in_lists():
    s = ColumnStats(10, 0, 100, 200)
    short = P.bind_qual(Qual("c", ("=", True), [1, 2, 300]), coldef("int32"))
    assert P.might_match(short.prune, {"c": s}) is ROWS_CANNOT_MATCH, "should skip: no item in [100, 200]"
    hit = P.bind_qual(Qual("c", ("=", True), [1, 150]), coldef("int32"))
    assert P.might_match(hit.prune, {"c": s}) is ROWS_MIGHT_MATCH, "should read: 150 in [100, 200]"
    long = P.bind_qual(Qual("c", ("=", True), list(range(1000, 1000 + P.IN_PREDICATE_LIMIT + 1))),
                       coldef("int32"))
    assert P.might_match(long.prune, {"c": s}) is ROWS_MIGHT_MATCH, "should read: long IN lists are not checked"
    assert P.might_match(P.bind_qual(Qual("c", ("=", True), [2.5]), coldef("int32")).prune,
                         {"c": s}) is ROWS_CANNOT_MATCH, "should skip: nothing equals 2.5"


def test_float_nan_statistics():
    nan_bound = ColumnStats(10, 0, 1.0, math.nan)
    assert prune("float64", "<", 0.0, nan_bound) is ROWS_MIGHT_MATCH, "should read: NaN bound"
    with_nan = ColumnStats(10, 0, 1.0, 2.0, has_nan=True)
    no_nan = ColumnStats(10, 0, 1.0, 2.0, has_nan=False)
    unknown = ColumnStats(10, 0, 1.0, 2.0, has_nan=None)
    assert prune("float64", ">", 5.0, with_nan) is ROWS_MIGHT_MATCH, "should read: NaN > 5"
    assert prune("float64", ">", 5.0, unknown) is ROWS_MIGHT_MATCH, "should read: NaN may be there"
    assert prune("float64", ">", 5.0, no_nan) is ROWS_CANNOT_MATCH, "should skip: max 2 and no NaN"
    assert prune("float64", "<", 0.5, with_nan) is ROWS_CANNOT_MATCH, "should skip: NaN is not < 0.5"
    assert prune("float64", "=", math.nan, no_nan) is ROWS_CANNOT_MATCH, "should skip: no NaN"
    assert prune("float64", "=", math.nan, with_nan) is ROWS_MIGHT_MATCH, "should read: NaN = NaN"
    assert prune("float64", "<", math.nan, no_nan) is ROWS_MIGHT_MATCH, "should read: 1.0 < NaN"
    assert prune("float64", ">", math.nan, with_nan) is ROWS_CANNOT_MATCH, "should skip: nothing > NaN"
    all_nan = ColumnStats(10, 0, None, None, has_nan=True)
    assert prune("float64", ">", 0.0, all_nan) is ROWS_MIGHT_MATCH, "should read: NaN rows, no bounds"


def test_text_bounds_unicode_and_truncated():
    s = ColumnStats(10, 0, "ábc".encode(), "ábd".encode())
    assert prune("text", "~~", "áb%", s, "C") is ROWS_MIGHT_MATCH, "should read: every value starts with áb"
    assert prune("text", "~~", "z%", s, "C") is ROWS_CANNOT_MATCH, "should skip: max < 'z'"
    assert prune("text", "~~", "a%", s, "C") is ROWS_CANNOT_MATCH, "should skip: 'á' sorts after every 'a...'"
    assert prune("text", "!~~", "áb%", s, "C") is ROWS_CANNOT_MATCH, "should skip: all start with áb"
    assert prune("text", "=", "ábcd", s, "en_US.utf8") is ROWS_MIGHT_MATCH, "should read: inside bounds"
    assert prune("text", "=", "z", s, "en_US.utf8") is ROWS_CANNOT_MATCH, \
        "should skip: byte equality prunes by byte bounds in any deterministic collation"
    assert prune("text", "<", "a", s, "en_US.utf8") is ROWS_MIGHT_MATCH, "should read: en_US order is not bytes"
    ff = ColumnStats(10, 0, b"\xff\xff", b"\xff\xff\xff")
    assert prune("bytea", "~~", b"\xff%", ff) is ROWS_MIGHT_MATCH, "should read: prefix of 0xFF bytes"
    assert prune("bytea", "~~", b"\xfe%", ff) is ROWS_CANNOT_MATCH, "should skip: min > every 0xFE..."
    # a truncated maximum (as the stripe writer stores) is still an upper bound
    truncated = ColumnStats(10, 0, b"a", b"ab")
    assert prune("text", ">=", "ab", truncated, "C") is ROWS_MIGHT_MATCH, "should read: max bound is 'ab'"
    assert prune("text", ">", "ab", truncated, "C") is ROWS_CANNOT_MATCH, "should skip: nothing above 'ab'"


def test_pruning_with_stripe_chunk_stats():
    """The stripe writer's own statistics plug in unchanged."""
    vals = np.array([1.5, np.nan, 3.0], dtype=np.float64)
    cs = chunk_stats(vals, None, "float64")
    assert prune("float64", ">", 10.0, cs) is ROWS_MIGHT_MATCH, "should read: the chunk has a NaN"
    assert prune("float64", "<", 1.0, cs) is ROWS_CANNOT_MATCH, "should skip: min 1.5"
    txt = chunk_stats((np.array([0, 3, 6], np.int64), np.frombuffer(b"abcabd", np.uint8)), None, "text")
    assert prune("text", "~~", "abc%", txt, "C") is ROWS_MIGHT_MATCH, "should read: 'abc' is there"
    assert prune("text", "~~", "abe%", txt, "C") is ROWS_CANNOT_MATCH, "should skip: max 'abd'"
    b = chunk_stats(np.array([False, False]), None, "bool")
    assert prune("bool", "=", True, b) is ROWS_CANNOT_MATCH, "should skip: no true value"
    assert prune("bool", "=", False, b) is ROWS_MIGHT_MATCH, "should read: false values"


def test_and_or_pruning():
    a = ref("int32", "a")
    e = And(Comparison(a, ">", 5), Or(Comparison(a, "<", 0), IsNull(a)))
    stats = {"a": ColumnStats(10, 0, 6, 9)}
    assert P.might_match(e, stats) is ROWS_CANNOT_MATCH, "should skip: neither branch of the OR"
    assert P.might_match(e, {"a": ColumnStats(10, 1, 6, 9)}) is ROWS_MIGHT_MATCH, "should read: NULLs"
    assert P.might_match(ALWAYS_FALSE, {}) is ROWS_CANNOT_MATCH, "should skip: false"
    assert P.might_match(ALWAYS_TRUE, {}) is ROWS_MIGHT_MATCH, "should read: true"
    for expr, st in [(e, stats), (e, {"a": ColumnStats(10, 1, 6, 9)}), (ALWAYS_FALSE, {}), (ALWAYS_TRUE, {})]:
        assert P.pruner(expr)(st.get) is P.might_match(expr, st), f"pruner of {P.render(expr)}"


# ============================================================ expressions

def test_expression_simplification_and_negation():
    a, b = ref("int32", "a"), ref("int32", "b")
    x, y = Comparison(a, "<", 5), IsNull(b)
    assert And(x, ALWAYS_TRUE) == x
    assert And(x, ALWAYS_FALSE) is ALWAYS_FALSE
    assert Or(x, ALWAYS_TRUE) is ALWAYS_TRUE
    assert And() is ALWAYS_TRUE and Or() is ALWAYS_FALSE
    assert And(x, And(y, x)) == And(x, y)
    assert Not(And(x, y)) == Or(Comparison(a, ">=", 5), NotNull(b))
    assert Not(Not(x)) == x
    assert ~In(a, ()) == NotIn(a, ())
    # a never-true comparison does not fold into false under And: its
    # negation differs from NOT false for NULL rows
    assert And(In(a, ()), y) != ALWAYS_FALSE
    assert hash(And(x, y)) == hash(And(x, y))
    with pytest.raises(AttributeError):
        And(x, y).children = ()
    with pytest.raises(InvalidParameterError):
        Comparison(a, "~", 1)


def test_negation_keeps_three_valued_logic():
    """NOT (a < 5) excludes NULL rows like a >= 5 does (evaluated through the kernels)."""
    a = ref("int32", "a")
    col = batch_column("int32", [1, None, 7, 5])
    assert P.evaluate(~Comparison(a, "<", 5), {"a": col}, 4).tolist() == [0, 0, 1, 1]
    assert P.evaluate(~In(a, ()), {"a": col}, 4).tolist() == [1, 0, 1, 1]
    # NOT (a = 2.5 AND a IS NULL): NULL AND TRUE is NULL, and NOT NULL is NULL
    assert P.evaluate(~And(In(a, ()), IsNull(a)), {"a": col}, 4).tolist() == [1, 0, 1, 1]
    # NOT (a = 2.5 AND a IS NOT NULL): NULL AND FALSE is FALSE, so NOT is TRUE
    assert P.evaluate(~And(In(a, ()), NotNull(a)), {"a": col}, 4).tolist() == [1, 1, 1, 1]


# ============================================================ evaluation

def test_evaluate_many_columns_and_selection():
    cols = {"id": coldef("int64", "id"), "price": coldef("float64", "price"),
            "name": coldef("text", "name"), "day": coldef("date", "day")}
    qs = [Qual("id", ">=", 2), Qual("id", "<", 6), Qual("price", "<>", math.nan),
          Qual("name", "~~", "ab%", "C"), Qual("day", "=", dt.date(2000, 1, 3)),
          Qual("name", "~~*", "AB%", "C")]
    bound = P.bind_quals(qs, cols)
    assert bound.exact == [True, True, True, True, True, False]
    assert [q.operator for q in bound.residual()] == ["~~*"]
    batch = {
        "id": batch_column("int64", [1, 2, 3, 4, 5, 6]),
        "price": batch_column("float64", [1.0, 2.0, math.nan, None, 3.0, 4.0]),
        "name": batch_column("text", [b"ab", b"abc", b"abd", b"ab", b"xab", None]),
        "day": batch_column("date", [2, 2, 2, 2, 2, 2]),
    }
    mask = P.evaluate(bound.filter, batch, 6)
    assert mask.tolist() == [0, 1, 0, 0, 0, 0]
    assert P.selection(mask).tolist() == [1]
    assert bound.columns == {"id", "price", "name", "day"}


def test_range_pairs_match_separate_comparisons():
    rng = np.random.default_rng(3)
    vals = [None if rng.random() < 0.1 else int(v) for v in rng.integers(-50, 50, 5000)]
    col = batch_column("int32", vals)
    a = ref("int32", "c")
    paired = And(Comparison(a, ">=", -10), Comparison(a, "<", 20), Comparison(a, "<>", 3))
    expected = np.array([v is not None and -10 <= v < 20 and v != 3 for v in vals], np.uint8)
    assert np.array_equal(P.evaluate(paired, {"c": col}, len(vals)), expected)
    # the same inside an Or (evaluated apart, then ORed) and ANDed into an existing mask
    either = Or(paired, Comparison(a, ">", 45))
    exp2 = expected | np.array([v is not None and v > 45 for v in vals], np.uint8)
    assert np.array_equal(P.evaluate(either, {"c": col}, len(vals)), exp2)


def test_dictionary_columns_filter_on_codes():
    entries = [b"apple", b"banana", b"apricot", b""]
    eo = np.zeros(len(entries) + 1, np.int64)
    np.cumsum([len(e) for e in entries], out=eo[1:])
    ed = np.frombuffer(b"".join(entries), np.uint8)
    codes = np.array([0, 1, 2, 3, 0, 1], np.int32)
    validity = np.array([1, 1, 0, 1, 1, 1], np.uint8)
    decoded = [entries[c] if v else None for c, v in zip(codes, validity)]
    full = P.DictionaryColumn(Column(WireKind.TEXT, ed, None, eo), codes, validity)
    # no codes: row i is entry i
    own = P.DictionaryColumn(Column(WireKind.TEXT, ed, None, eo), None, validity[:4])
    plain = batch_column("text", decoded)
    cols = {"c": coldef("text")}
    for q in [Qual("c", "~~", "ap%", "C"), Qual("c", "=", "banana", "C"), Qual("c", ">", "b", "C"),
              Qual("c", ("=", True), ["apple", ""], "C"), Qual("c", ("<>", False), ["apple"], "C"),
              Qual("c", "=", None), Qual("c", "!~~", "ap%", "C")]:
        f = P.bind_quals([q], cols).filter
        want = P.evaluate(f, {"c": plain}, 6).tolist()
        assert P.evaluate(f, {"c": full}, 6).tolist() == want, q
        assert P.evaluate(f, {"c": full.take(np.array([5, 2, 0]))}, 3).tolist() == [want[5], want[2], want[0]], q
        own_plain = batch_column("text", [e if v else None for e, v in zip(entries, validity[:4])])
        assert P.evaluate(f, {"c": own}, 4).tolist() == P.evaluate(f, {"c": own_plain}, 4).tolist(), q


def test_evaluate_errors_and_out():
    a = ref("int32", "a")
    with pytest.raises(InvalidParameterError):
        P.evaluate(Comparison(a, "=", 1), {}, 3)
    with pytest.raises(InvalidParameterError):
        P.evaluate(Comparison(a, "=", 1), {"a": np.zeros(3, np.int64)}, 3)
    out = np.full(3, 9, np.uint8)
    assert P.evaluate(Comparison(a, "=", 0), {"a": np.zeros(3, np.int32)}, 3, out=out) is out
    assert out.tolist() == [1, 1, 1]
    assert P.evaluate(ALWAYS_FALSE, {}, 2).tolist() == [0, 0]
    assert P.evaluate(ALWAYS_TRUE, {}, 0).tolist() == []


# =============================================================== EXPLAIN

def test_explain_lines():
    cols = {"ts": coldef("timestamptz", "ts"), "n": coldef("int32", "n")}
    bound = P.bind_quals([Qual("n", "<", Decimal("2.5")), Qual("ts", ">=", dt.date(2024, 1, 1))], cols)
    lines = bound.explain()
    assert lines[0] == "Orochi Filter: n <= 2"
    assert lines[1] == "Orochi Pruning Bounds: ts >= '2023-12-31 08:00:00+00'"
    assert lines[2].startswith("Rechecked by Postgres: ts >= ")
    assert "time zone" in bound.explain(verbose=True)[2]


def test_render_quoting():
    t = ref("text", "Name")
    assert P.render(Comparison(t, "=", "it's".encode())) == "\"Name\" = 'it''s'"
    assert P.render(StartsWith(t, b"50%_")) == "\"Name\" LIKE '50\\%\\_%'"
    ts = ref("timestamp", "ts")
    assert P.render(Comparison(ts, "<", 2**63 - 1)) == "ts < 'infinity'"
    assert P.render(Comparison(ref("bytea"), "=", b"\x00\xff")) == "c = '\\x00ff'"
    assert P.render(StartsWith(ref("bytea"), b"ab")) == "starts_with(c, '\\x6162')"


def test_docstring_examples():
    failures, tried = doctest.testmod(P, verbose=False)
    assert tried > 0 and failures == 0
