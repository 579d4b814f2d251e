"""Aggregation kernels and HashAggregator against the plain-Python reference.

Every kernel is compared with orochi_fdw.query.aggregate_reference on random
columns (every dtype, NULLs, extremes, NaN/inf/-0.0, unicode text, every
selection form, inputs split into batches). Tolerance: none. The kernels and
the reference read rows in the same order, so integer and numeric results are
exact and float results are compared bit for bit (any NaN equals any NaN).
Against Postgres, float sums may differ by summation order only; the golden
values below were read from a PostgreSQL 15 server.
"""

from __future__ import annotations

import decimal
import doctest
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orochi_fdw.bridge.batch import Batch, Column, WireKind
from orochi_fdw.errors import (FeatureNotSupportedError, InvalidParameterError,
                               NumericValueOutOfRangeError)
from orochi_fdw.kernels import aggregate as K
from orochi_fdw.query import aggregate as driver_module
from orochi_fdw.query import aggregate_reference as R
from orochi_fdw.query.aggregate import DictionaryColumn, HashAggregator, supports, unsupported_reason

HYPO = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT_DTYPES = [np.int16, np.int32, np.int64]
FLOAT_DTYPES = [np.float32, np.float64]
SELECTION_FORMS = ["none", "bool", "uint8", "int64", "int32"]
WORDS = ["", "a", "ab", "b", "é", "日本語", "z", "ünïcödé ✓", "\U0001f600", "a\x00b", "x" * 40]


# ----------------------------------------------------------------- helpers

def same(a, b) -> bool:
    """Equal values, floats bit for bit (any NaN equals any NaN)."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, decimal.Decimal) and isinstance(b, decimal.Decimal):
        return a.as_tuple() == b.as_tuple()
    return type(a) is type(b) and a == b


def same_rows(got: list[dict], want: list[dict]) -> bool:
    return len(got) == len(want) and all(
        g.keys() == w.keys() and all(same(g[k], w[k]) for k in g) for g, w in zip(got, want))


def ints(dtype):
    info = np.iinfo(dtype)
    return st.one_of(st.integers(int(info.min), int(info.max)),
                     st.sampled_from([int(info.min), int(info.max), 0, -1, 1]))


def floats(dtype):
    width = 32 if dtype == np.float32 else 64
    big = float(np.finfo(dtype).max)
    return st.one_of(st.floats(width=width),
                     st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, big, -big, 1.5]),
                     st.sampled_from([big, big / 2, 1.0]))  # sums that overflow


def values_of(dtype):
    if dtype == "text":
        return st.one_of(st.sampled_from(WORDS), st.text(max_size=6))
    if dtype == np.bool_:
        return st.booleans()
    if dtype in FLOAT_DTYPES:
        return floats(dtype)
    return ints(dtype)


def column_lists(dtype, n, nulls=True, small=False):
    """A list of n Python values (None = NULL); small draws from few values
    so that groups repeat."""
    base = values_of(dtype)
    if small:
        base = st.sampled_from(WORDS[:5]) if dtype == "text" else (
            st.sampled_from([True, False]) if dtype == np.bool_ else
            st.sampled_from([0.0, -0.0, math.nan, 1.0, -math.inf]) if dtype in FLOAT_DTYPES else
            st.sampled_from([0, 1, -7, int(np.iinfo(dtype).max), int(np.iinfo(dtype).min)]))
    if nulls:
        base = st.one_of(st.none(), base)
    return st.lists(base, min_size=n, max_size=n)


def to_array(values, dtype):
    """(numpy values, validity or None) of a list with None for NULL."""
    validity = np.array([v is not None for v in values], dtype=np.uint8)
    filler = False if dtype == np.bool_ else 0
    arr = np.array([filler if v is None else v for v in values], dtype=dtype)
    if dtype == np.bool_:
        arr = arr.view(np.uint8)
    return arr, (None if validity.all() else validity)


def to_text(values):
    parts = [b"" if v is None else v.encode("utf-8") for v in values]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    validity = np.array([v is not None for v in values], dtype=np.uint8)
    return offsets, np.frombuffer(b"".join(parts), dtype=np.uint8), (None if validity.all() else validity)


def to_dict(values):
    """Dictionary coding, the dictionary in reverse first-seen order."""
    entries = list(dict.fromkeys(v for v in values if v is not None))[::-1]
    index = {v: i for i, v in enumerate(entries)}
    codes = np.array([0 if v is None else index[v] for v in values], dtype=np.int32)
    doff, ddata, _ = to_text(entries)
    validity = np.array([v is not None for v in values], dtype=np.uint8)
    if not entries:
        doff, ddata = np.zeros(2, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    return codes, doff, ddata, (None if validity.all() else validity)


def key_tuple(values, dtype, form="text"):
    """A kernel column tuple; text as offsets+bytes or dictionary codes."""
    if dtype == "text":
        return ("dict", *to_dict(values)) if form == "dict" else ("text", *to_text(values))
    return ("fixed", *to_array(values, dtype))


def py(values, dtype):
    """Python values as the reference sees them (floats rounded to float32)."""
    if dtype == np.float32:
        return [None if v is None else float(np.float32(v)) for v in values]
    return list(values)


def make_selection(form, mask):
    mask = np.asarray(mask, dtype=bool)
    if form == "none":
        return None
    if form == "bool":
        return mask
    if form == "uint8":
        return mask.astype(np.uint8)
    return np.flatnonzero(mask).astype(np.int64 if form == "int64" else np.int32)


@st.composite
def selections(draw, n):
    form = draw(st.sampled_from(SELECTION_FORMS))
    mask = [True] * n if form == "none" else draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return form, mask


def per_group(values, gids, rows, ngroups):
    groups = [[] for _ in range(ngroups)]
    for g, i in zip(gids, rows):
        groups[g].append(values[i])
    return groups


@st.composite
def batch_input(draw, dtype, nulls=True, max_rows=40, ngroups_max=5):
    """values, selection (form, mask), gids for the selected rows, ngroups."""
    n = draw(st.integers(0, max_rows))
    values = draw(column_lists(dtype, n, nulls=nulls))
    form, mask = draw(selections(n))
    nsel = sum(mask)
    ngroups = draw(st.integers(1, ngroups_max))
    gids = draw(st.lists(st.integers(0, ngroups - 1), min_size=nsel, max_size=nsel))
    return values, form, mask, np.array(gids, dtype=np.int64), ngroups


# ------------------------------------------------------------- GroupTable

KEY_DTYPES = [np.bool_, np.int16, np.int32, np.int64, np.float32, np.float64, "text", "dict"]


def _kind(dtype):
    return "float" if dtype in FLOAT_DTYPES else "bytes" if dtype in ("text", "dict") else "int"


@HYPO
@given(st.data())
def test_group_ids_match_reference_across_batches(data):
    dtypes = data.draw(st.lists(st.sampled_from(KEY_DTYPES), min_size=1, max_size=3))
    n = data.draw(st.integers(0, 60))
    cols = [data.draw(column_lists("text" if d == "dict" else d, n, small=True)) for d in dtypes]
    cols = [py(c, d) for c, d in zip(cols, dtypes)]
    form, mask = data.draw(selections(n))
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=3)))
    table = K.GroupTable([_kind(d) for d in dtypes])
    gids, firsts = [], []
    for lo, hi in zip([0] + cuts, cuts + [n]):
        keys = [key_tuple(c[lo:hi], "text" if d == "dict" else d, "dict" if d == "dict" else "text")
                for c, d in zip(cols, dtypes)]
        g, f = table.assign(keys, make_selection(form, mask[lo:hi]))
        assert g.dtype == np.int64 and f.dtype == np.int64
        gids += g.tolist()
        firsts += (f + lo).tolist()
    want_ids, want_first = R.group_ids(cols, make_selection("bool", mask))
    assert gids == want_ids, "group ids should be dense, in first-appearance order"
    assert firsts == want_first
    assert table.ngroups == len(want_first)
    for c, d in enumerate(dtypes):
        got = table.keys(c)
        want = [cols[c][i] for i in want_first]
        validity = got[-1].tolist()
        assert validity == [v is not None for v in want]
        if _kind(d) == "bytes":
            offsets, blob = got[0], got[1].tobytes()
            texts = [blob[offsets[j]:offsets[j + 1]].decode() for j in range(len(want))]
            assert [t if ok else None for t, ok in zip(texts, validity)] == want
        else:
            vals = got[0].tolist()
            for v, ok, w in zip(vals, validity, want):
                if ok:
                    assert same(float(v), float(w)) if _kind(d) == "float" else v == int(w), \
                        "a group's key should be its first row's value"


def test_group_table_float_keys_group_like_postgres():
    t = K.GroupTable(["float"])
    vals = np.array([0.0, -0.0, np.nan, -np.nan, 1.0, np.float64("nan")])
    gids, first = t.assign([("fixed", vals, None)])
    assert gids.tolist() == [0, 0, 1, 1, 2, 1], "-0.0 = 0.0 and NaN = NaN"
    t2 = K.GroupTable(["float", "int"])
    gids, _ = t2.assign([("fixed", np.array([-0.0, 0.0]), None), ("fixed", np.array([1, 1]), None)])
    assert gids.tolist() == [0, 0]
    assert math.copysign(1, t2.keys(0)[0][0]) == -1, "the key shown is the first row's (-0.0)"


def test_group_table_null_is_one_group_per_key():
    t = K.GroupTable(["int", "bytes"])
    a = ("fixed", np.array([1, 1, 1, 0]), np.array([1, 0, 0, 0], np.uint8))
    b = ("text", *to_text([None, None, "x", None]))
    gids, first = t.assign([a, b])
    assert gids.tolist() == [0, 1, 2, 1]
    assert first.tolist() == [0, 1, 2]


def test_group_table_many_groups_and_run_cache():
    rng = np.random.default_rng(1)
    keys = rng.integers(-2**62, 2**62, 100_000)
    rows = np.concatenate([keys, keys[::-1], np.repeat(keys[:1000], 3)])
    t = K.GroupTable(["int"])
    got = np.concatenate([t.assign([("fixed", chunk, None)])[0]
                          for chunk in np.array_split(rows, 7)])
    _, first_index, inverse = np.unique(rows, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first_index))  # unique rank -> first-appearance rank
    assert t.ngroups == 100_000
    assert np.array_equal(got, order[inverse])
    assert np.array_equal(t.keys(0)[0], keys)


def test_group_table_int_keys_widen_from_direct_table_to_hash():
    # small ranges use a direct table, re-based as the range grows, then a hash
    batches = [[5, 6, 5], [-100_000, 100_000, 6], [2**40, 5, None], [INT64_MIN, INT64_MAX],
               [6, 2**40, -100_000, INT64_MAX, None, 7]]
    t = K.GroupTable(["int"])
    got = []
    for b in batches:
        arr, validity = to_array(b, np.int64)
        got += t.assign([("fixed", arr, validity)])[0].tolist()
    want, _ = R.group_ids([[v for b in batches for v in b]])
    assert got == want
    keys, validity = t.keys(0)
    assert [int(k) if ok else None for k, ok in zip(keys, validity)] == \
        [5, 6, -100_000, 100_000, 2**40, None, INT64_MIN, INT64_MAX, 7]


def test_group_table_null_filler_does_not_widen_the_range():
    t = K.GroupTable(["int"])
    vals = np.array([10**12, 0, 10**12 + 1], np.int64)
    gids, _ = t.assign([("fixed", vals, np.array([1, 0, 1], np.uint8))])
    assert gids.tolist() == [0, 1, 2]
    assert t.keys(0)[1].tolist() == [1, 0, 1]


def test_group_table_text_keys_with_unicode_and_dictionaries():
    words = ["日本語", "", "é", "e\u0301", "\U0001f600", "é", "", "日本語"]
    t = K.GroupTable(["bytes"])
    g1, _ = t.assign([("text", *to_text(words))])
    g2, _ = t.assign([("dict", *to_dict(words[::-1]))])
    assert g1.tolist() == [0, 1, 2, 3, 4, 2, 1, 0]
    assert g2.tolist() == [0, 1, 2, 4, 3, 2, 1, 0], "a dictionary maps onto the same groups"
    assert t.ngroups == 5, "é precomposed and decomposed are different byte strings"


def test_group_table_rejects_bad_input():
    t = K.GroupTable(["int"])
    with pytest.raises(ValueError):
        t.assign([("fixed", np.array([1.5]), None)])
    with pytest.raises(ValueError):
        t.assign([("fixed", np.array([1, 2]), np.array([1], np.uint8))])
    with pytest.raises(ValueError):
        t.assign([("fixed", np.array([1, 2]), None)], selection=np.array([2]))
    with pytest.raises(ValueError):
        t.assign([("fixed", np.array([1, 2]), None)], selection=np.array([True]))
    with pytest.raises(ValueError):
        K.GroupTable([])
    tb = K.GroupTable(["bytes"])
    with pytest.raises(ValueError, match="dictionary code"):
        tb.assign([("dict", np.array([0, 3], np.int32), np.array([0, 1]), np.array([97], np.uint8), None)])
    with pytest.raises(ValueError, match="offsets"):
        tb.assign([("text", np.array([0, 2, 1]), np.zeros(2, np.uint8), None)])


def test_selection_forms_agree():
    rng = np.random.default_rng(3)
    vals = rng.integers(0, 50, 1000)
    mask = rng.random(1000) < 0.3
    results = []
    for form in SELECTION_FORMS[1:]:
        t = K.GroupTable(["int"])
        gids, first = t.assign([("fixed", vals, None)], make_selection(form, mask))
        counts = np.zeros(t.ngroups, np.int64)
        K.group_count(counts, gids, np.ones(1000, np.uint8), make_selection(form, mask))
        results.append((gids.tolist(), first.tolist(), counts.tolist()))
    assert all(r == results[0] for r in results)
    assert sum(results[0][2]) == mask.sum()


# ----------------------------------------------------------- accumulators

@HYPO
@given(st.data())
def test_count_matches_reference(data):
    values, form, mask, gids, ng = data.draw(batch_input(np.int32))
    rows = R.selected(len(values), make_selection("bool", mask))
    arr, validity = to_array(values, np.int32)
    star = np.zeros(ng, np.int64)
    K.group_count(star, gids)
    counts = np.zeros(ng, np.int64)
    K.group_count(counts, gids, np.ones(len(values), np.uint8) if validity is None else validity,
                  make_selection(form, mask))
    groups = per_group(values, gids.tolist(), rows, ng)
    assert star.tolist() == [len(g) for g in groups]
    assert counts.tolist() == [sum(v is not None for v in g) for g in groups]


@HYPO
@given(st.data())
def test_int_sum_and_avg_match_reference(data):
    dtype = data.draw(st.sampled_from(INT_DTYPES))
    values, form, mask, gids, ng = data.draw(batch_input(dtype))
    arr, validity = to_array(values, dtype)
    sums, carries, counts = (np.zeros(ng, np.int64) for _ in range(3))
    K.group_sum_int(sums, carries, counts, gids, arr, validity, make_selection(form, mask))
    groups = per_group(values, gids.tolist(), R.selected(len(values), make_selection("bool", mask)), ng)
    for g, vals in enumerate(groups):
        present = [v for v in vals if v is not None]
        assert int(carries[g]) * 2**64 + int(sums[g]) == sum(present), "sums should be exact"
        assert counts[g] == len(present)
    offsets, text, valid = K.numeric_sum_text(sums, carries, counts)
    got = [bytes(text[offsets[g]:offsets[g + 1]]).decode() if valid[g] else None for g in range(ng)]
    assert got == [None if R.sum_int(v, 20) is None else str(R.sum_int(v, 20)) for v in groups]
    offsets, text, valid = K.numeric_avg_text(sums, carries, counts)
    for g, vals in enumerate(groups):
        want = R.avg_int(vals)
        if want is None:
            assert not valid[g]
            continue
        s = bytes(text[offsets[g]:offsets[g + 1]]).decode()
        assert "E" not in s and same(decimal.Decimal(s), want), (s, want)
    out, out_valid = np.zeros(ng, np.int64), np.zeros(ng, np.uint8)
    if all(INT64_MIN <= sum(v for v in vals if v is not None) <= INT64_MAX for vals in groups):
        K.finalize_sum_int8(out, out_valid, sums, carries, counts)
        assert [int(o) if ok else None for o, ok in zip(out, out_valid)] == \
            [R.sum_int(v, 23) for v in groups]
    else:
        with pytest.raises(NumericValueOutOfRangeError, match="^bigint out of range$"):
            K.finalize_sum_int8(out, out_valid, sums, carries, counts)


@HYPO
@given(st.data())
def test_float_sum_matches_reference(data):
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    values, form, mask, gids, ng = data.draw(batch_input(dtype))
    values = py(values, dtype)
    arr, validity = to_array(values, dtype)
    sums, counts = np.full(ng, -0.0, dtype=dtype), np.zeros(ng, np.int64)
    groups = per_group(values, gids.tolist(), R.selected(len(values), make_selection("bool", mask)), ng)
    try:
        want = [R.sum_float(v, dtype == np.float32) for v in groups]
    except NumericValueOutOfRangeError:
        with pytest.raises(NumericValueOutOfRangeError, match="^value out of range: overflow$"):
            K.group_sum_float(sums, counts, gids, arr, validity, make_selection(form, mask))
        return
    K.group_sum_float(sums, counts, gids, arr, validity, make_selection(form, mask))
    for g in range(ng):
        assert (counts[g] > 0) == (want[g] is not None)
        if want[g] is not None:
            assert same(float(sums[g]), want[g]), "float sums should match in row order, bit for bit"


@HYPO
@given(st.data())
def test_float_avg_matches_reference(data):
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    values, form, mask, gids, ng = data.draw(batch_input(dtype))
    values = py(values, dtype)
    arr, validity = to_array(values, dtype)
    counts, sx, sxx = np.zeros(ng, np.int64), np.zeros(ng), np.zeros(ng)
    groups = per_group(values, gids.tolist(), R.selected(len(values), make_selection("bool", mask)), ng)
    try:
        want = [R.avg_float(v) for v in groups]
    except NumericValueOutOfRangeError:
        with pytest.raises(NumericValueOutOfRangeError):
            K.group_avg_float(counts, sx, sxx, gids, arr, validity, make_selection(form, mask))
        return
    K.group_avg_float(counts, sx, sxx, gids, arr, validity, make_selection(form, mask))
    out, valid = np.zeros(ng), np.zeros(ng, np.uint8)
    K.finalize_avg_float(out, valid, counts, sx)
    for g in range(ng):
        assert bool(valid[g]) == (want[g] is not None)
        if want[g] is not None:
            assert same(float(out[g]), want[g])


AVG_EDGES = [K.AVG_FAST_BOUND, -K.AVG_FAST_BOUND, math.nextafter(K.AVG_FAST_BOUND, math.inf),
             -math.nextafter(K.AVG_FAST_BOUND, math.inf), 1e200, -1e200, 1e308, -1e308, 1e160,
             -1e160, 1e154, math.nan, math.inf, -math.inf, 0.5, -3.25, 1e-300, 0.0, -0.0]


def _avg_batches(batches, dtype, ng):
    """The batches through the avg accumulator itself (fast batches while
    they stay within the bound, then the exact loop with the Sxx upper
    ends): the result column."""
    kind = WireKind.FLOAT64 if dtype == np.float64 else WireKind.FLOAT32
    acc = driver_module._FloatAvg({"func": "avg", "column": "x",
                                   "arg_type_oid": 701 if kind == WireKind.FLOAT64 else 700})
    acc.grow(ng)
    for values, form, mask, gids in batches:
        arr, validity = to_array(values, dtype)
        acc.update(gids, ng, Column(kind, arr, validity), make_selection(form, mask))
    return acc.finish(ng)


@HYPO
@given(st.data())
def test_float_avg_fast_path_across_batches_matches_reference(data):
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    ng = data.draw(st.integers(1, 4))
    edges = [v for v in AVG_EDGES if dtype == np.float64 or abs(v) < 3e38 or not math.isfinite(v)]
    value = st.one_of(st.none(), st.sampled_from(edges), st.floats(-1e6, 1e6, width=32))
    batches, rows = [], [[] for _ in range(ng)]
    for _ in range(data.draw(st.integers(1, 4))):
        n = data.draw(st.integers(0, 12))
        values = py(data.draw(st.lists(value, min_size=n, max_size=n)), dtype)
        form = data.draw(st.sampled_from(["none", "bool", "int32", "int64"]))
        mask = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
        if form == "none":
            mask = [True] * n
        picked = [i for i in range(n) if mask[i]]
        gids = np.array(data.draw(st.lists(st.integers(0, ng - 1), min_size=len(picked),
                                           max_size=len(picked))), dtype=np.int64)
        for i, g in zip(picked, gids.tolist()):
            rows[g].append(values[i])
        batches.append((values, form, mask, gids))
    try:
        want = [R.avg_float(v) for v in rows]
    except NumericValueOutOfRangeError:
        with pytest.raises(NumericValueOutOfRangeError, match="^value out of range: overflow$"):
            _avg_batches(batches, dtype, ng)
        return
    col = _avg_batches(batches, dtype, ng)
    out = col.values
    valid = np.ones(ng, np.uint8) if col.validity is None else col.validity
    for g in range(ng):
        assert bool(valid[g]) == (want[g] is not None)
        if want[g] is not None:
            assert same(float(out[g]), want[g]), "Sx should be the sequential sum, bit for bit"


def test_float_avg_fast_path_bound():
    for values, fast in [([1e100, -1e100, math.nan], True), ([math.nextafter(1e100, 2e100)], False),
                         ([math.inf], False), ([1e308, 1.0], False), ([3e38, -3e38], True)]:
        counts, sx, sxx = np.zeros(1, np.int64), np.zeros(1), np.zeros(1)
        arr = np.array(values)
        assert K.group_avg_float(counts, sx, sxx, np.zeros(len(values), np.int64), arr,
                                 fast=True) == fast
        assert counts[0] == (len(values) if fast else 0), "a batch beyond the bound is not folded in"
    # NULLs and rows not selected do not count against the bound
    counts, sx, sxx = np.zeros(1, np.int64), np.zeros(1), np.zeros(1)
    arr = np.array([1.0, 1e300, 2.0, 1e300])
    assert K.group_avg_float(counts, sx, sxx, np.zeros(2, np.int64), arr,
                             np.array([1, 0, 1, 1], np.uint8), np.array([False, True, True, False]),
                             fast=True)
    assert (counts[0], sx[0]) == (1, 2.0)
    # after fast batches of +-1e100, Postgres's Sxx is ~1e200 per row, far from overflow: a
    # later 1e153 (Sxx ~1e306) is fine, [1e154, -1e154] then overflows as in Postgres
    big = [[1e100, -1e100] * 4, [1e153], [1e154, -1e154]]
    with pytest.raises(NumericValueOutOfRangeError, match="^value out of range: overflow$"):
        R.avg_float([v for b in big for v in b])
    with pytest.raises(NumericValueOutOfRangeError, match="^value out of range: overflow$"):
        _avg_batches([(b, "none", [True] * len(b), np.zeros(len(b), np.int64)) for b in big],
                     np.float64, 1)
    col = _avg_batches([(b, "none", [True] * len(b), np.zeros(len(b), np.int64))
                        for b in big[:2]], np.float64, 1)
    assert col.values[0] == R.avg_float(big[0] + big[1])


@HYPO
@given(st.data())
def test_min_max_match_reference(data):
    dtype = data.draw(st.sampled_from(INT_DTYPES + FLOAT_DTYPES))
    is_max = data.draw(st.booleans())
    values, form, mask, gids, ng = data.draw(batch_input(dtype))
    values = py(values, dtype)
    arr, validity = to_array(values, dtype)
    state, counts = np.zeros(ng, dtype=dtype), np.zeros(ng, np.int64)
    K.group_minmax(state, counts, gids, arr, is_max, validity, make_selection(form, mask))
    groups = per_group(values, gids.tolist(), R.selected(len(values), make_selection("bool", mask)), ng)
    for g, vals in enumerate(groups):
        want = R.min_max(vals, is_max)
        assert (counts[g] > 0) == (want is not None)
        if want is not None:
            assert same(state[g].item(), want), (vals, state[g], want)


@HYPO
@given(st.data())
def test_bool_and_or_match_reference(data):
    is_and = data.draw(st.booleans())
    values, form, mask, gids, ng = data.draw(batch_input(np.bool_))
    arr, validity = to_array(values, np.bool_)
    state, counts = np.zeros(ng, np.uint8), np.zeros(ng, np.int64)
    K.group_bool(state, counts, gids, arr, is_and, validity, make_selection(form, mask))
    groups = per_group(values, gids.tolist(), R.selected(len(values), make_selection("bool", mask)), ng)
    spec = {"func": "bool_and" if is_and else "bool_or"}
    assert [bool(s) if c else None for s, c in zip(state, counts)] == \
        [R.aggregate(spec, v, len(v)) for v in groups]


@HYPO
@given(st.data())
def test_count_distinct_matches_reference(data):
    dtype = data.draw(st.sampled_from([np.bool_, np.int16, np.int64, np.float32, np.float64, "text", "dict"]))
    base = "text" if dtype == "dict" else dtype
    counter = K.DistinctCounter(_kind(dtype))
    ng = data.draw(st.integers(1, 4))
    counts = np.zeros(ng, np.int64)
    groups = [[] for _ in range(ng)]
    for _ in range(data.draw(st.integers(1, 3))):  # batches
        n = data.draw(st.integers(0, 30))
        values = py(data.draw(column_lists(base, n, small=data.draw(st.booleans()))), base)
        form, mask = data.draw(selections(n))
        rows = R.selected(n, make_selection("bool", mask))
        gids = data.draw(st.lists(st.integers(0, ng - 1), min_size=len(rows), max_size=len(rows)))
        counter.update(counts, np.array(gids, np.int64), key_tuple(values, base, "dict" if dtype == "dict" else "text"),
                       make_selection(form, mask))
        for g, i in zip(gids, rows):
            groups[g].append(values[i])
    spec = {"func": "count", "distinct": True, "column": "x"}
    assert counts.tolist() == [R.aggregate(spec, v, len(v)) for v in groups]


@HYPO
@given(st.data())
def test_text_min_max_match_reference(data):
    is_max = data.draw(st.booleans())
    ng = data.draw(st.integers(1, 4))
    ext = K.TextExtremes(is_max)
    groups = [[] for _ in range(ng)]
    for _ in range(data.draw(st.integers(1, 3))):
        n = data.draw(st.integers(0, 25))
        values = data.draw(column_lists("text", n))
        form, mask = data.draw(selections(n))
        rows = R.selected(n, make_selection("bool", mask))
        gids = data.draw(st.lists(st.integers(0, ng - 1), min_size=len(rows), max_size=len(rows)))
        ext.update(np.array(gids, np.int64), ng, key_tuple(values, "text", data.draw(st.sampled_from(["text", "dict"]))),
                   make_selection(form, mask))
        for g, i in zip(gids, rows):
            groups[g].append(values[i])
    offsets, blob, valid = ext.result(ng)
    got = [bytes(blob[offsets[g]:offsets[g + 1]]).decode() if valid[g] else None for g in range(ng)]
    assert got == [R.min_max(v, is_max) for v in groups], "text should compare by bytes (C collation)"


def test_text_extremes_compacts_its_arena():
    ext = K.TextExtremes(True)
    gids = np.zeros(1, np.int64)
    for i in range(3000):
        ext.update(gids, 1, ("text", *to_text([f"{i:06d}" + "x" * 100])))
    offsets, blob, valid = ext.result(1)
    assert bytes(blob).decode() == "002999" + "x" * 100
    assert ext.arena_bytes < 100_000, "replaced values should not pile up"


def test_accumulators_reject_bad_group_ids_and_lengths():
    vals = np.array([1, 2, 3], np.int64)
    with pytest.raises(ValueError, match="group id"):
        K.group_minmax(np.zeros(2, np.int64), np.zeros(2, np.int64), np.array([0, 2, 1]), vals, True)
    with pytest.raises(ValueError, match="group id"):
        K.group_count(np.zeros(1, np.int64), np.array([-1]))
    with pytest.raises(ValueError, match="group ids"):
        K.group_sum_int(*(np.zeros(2, np.int64) for _ in range(3)), np.array([0, 1]), vals)
    with pytest.raises(ValueError, match="group id"):
        K.DistinctCounter("int").update(np.zeros(1, np.int64), np.array([0, 1, 0]), ("fixed", vals, None))
    with pytest.raises(ValueError, match="group id"):
        K.TextExtremes(False).update(np.array([5]), 2, ("text", *to_text(["a"])))


# ------------------------------------------------- Postgres golden values

# (values, avg as PostgreSQL 15 prints it)
PG_AVG = [
    ([1, 2], "1.5000000000000000"),
    ([0, 0], "0.00000000000000000000"),
    ([-7, 2, 3], "-0.66666666666666666667"),
    ([123456789, 987654321, 5], "370370371.66666667"),
    ([1, 1, 1], "1.00000000000000000000"),
    ([1, 0, 0, 0, 0, 0, 0], "0.14285714285714285714"),
    ([INT64_MAX, INT64_MAX], "9223372036854775807"),
    ([INT64_MIN] * 3, "-9223372036854775808"),
    ([10**15, 1], "500000000000000.5000"),
    ([1, 2, 2], "1.6666666666666667"),
    (list(range(1, 20001)), "10000.5000000000000000"),
    ([1] * 113, "1.00000000000000000000"),
]


@pytest.mark.parametrize("values,text", PG_AVG, ids=[t for _, t in PG_AVG])
def test_numeric_avg_prints_as_postgres(values, text):
    sums, carries, counts = (np.zeros(1, np.int64) for _ in range(3))
    K.group_sum_int(sums, carries, counts, np.zeros(len(values), np.int64), np.array(values, np.int64))
    offsets, data, _ = K.numeric_avg_text(sums, carries, counts)
    assert bytes(data).decode() == text
    assert str(R.avg_int(values)) == str(decimal.Decimal(text)), "the reference should agree"


def test_avg_rounds_half_away_from_zero():
    # 1/32 and 5/(2*10^20): exact halves at the last digit
    for values in ([1] + [0] * 31, [-1] + [0] * 31, [5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]):
        sums, carries, counts = (np.zeros(1, np.int64) for _ in range(3))
        K.group_sum_int(sums, carries, counts, np.zeros(len(values), np.int64), np.array(values))
        _, data, _ = K.numeric_avg_text(sums, carries, counts)
        assert decimal.Decimal(bytes(data).decode()).as_tuple() == R.avg_int(values).as_tuple()


def test_int8_sums_beyond_int64_are_exact():
    values = np.array([INT64_MAX] * 5 + [INT64_MIN] * 2 + [INT64_MAX] * 4, np.int64)
    sums, carries, counts = (np.zeros(1, np.int64) for _ in range(3))
    K.group_sum_int(sums, carries, counts, np.zeros(len(values), np.int64), values)
    _, data, _ = K.numeric_sum_text(sums, carries, counts)
    assert int(bytes(data)) == 9 * INT64_MAX + 2 * INT64_MIN
    with pytest.raises(NumericValueOutOfRangeError) as err:
        K.finalize_sum_int8(np.zeros(1, np.int64), np.zeros(1, np.uint8), sums, carries, counts)
    assert err.value.sqlstate == "22003"


# --------------------------------------------------------- HashAggregator

TYPE_NAMES = {16: "boolean", 20: "bigint", 21: "smallint", 23: "integer", 25: "text", 700: "real",
              701: "double precision", 1082: "date", 1184: "timestamp with time zone",
              1700: "numeric"}


def agg(func, column, arg_oid, result_oid, distinct=False, collation=None):
    spec = {"func": func, "schema": "pg_catalog", "star": False, "distinct": distinct,
            "column": column, "arg_type": TYPE_NAMES[arg_oid], "arg_type_oid": arg_oid,
            "result_type": TYPE_NAMES[result_oid], "result_type_oid": result_oid, "args": []}
    if collation:
        spec["collation"] = collation
    return spec


COUNT_STAR = {"func": "count", "schema": "pg_catalog", "star": True, "distinct": False,
              "column": "", "arg_type_oid": 0, "result_type_oid": 20, "args": []}

#: name -> (type oid, wire kind, numpy dtype or "text", Python value strategy source)
TABLE = {
    "k_i4": (23, WireKind.INT32, np.int32),
    "k_t": (25, WireKind.TEXT, "text"),
    "k_f8": (701, WireKind.FLOAT64, np.float64),
    "k_b": (16, WireKind.BOOL, np.bool_),
    "v_i2": (21, WireKind.INT16, np.int16),
    "v_i4": (23, WireKind.INT32, np.int32),
    "v_i8": (20, WireKind.INT64, np.int64),
    "v_f4": (700, WireKind.FLOAT32, np.float32),
    "v_f8": (701, WireKind.FLOAT64, np.float64),
    "v_t": (25, WireKind.TEXT, "text"),
    "v_b": (16, WireKind.BOOL, np.bool_),
}

AGGREGATES = [
    COUNT_STAR,
    agg("count", "v_f8", 701, 20), agg("count", "v_t", 25, 20),
    agg("count", "v_i8", 20, 20, distinct=True), agg("count", "v_t", 25, 20, distinct=True),
    agg("count", "v_f4", 700, 20, distinct=True),
    agg("sum", "v_i2", 21, 20), agg("sum", "v_i4", 23, 20), agg("sum", "v_i8", 20, 1700),
    agg("avg", "v_i2", 21, 1700), agg("avg", "v_i4", 23, 1700), agg("avg", "v_i8", 20, 1700),
    agg("sum", "v_f4", 700, 700), agg("sum", "v_f8", 701, 701),
    agg("avg", "v_f4", 700, 701), agg("avg", "v_f8", 701, 701),
    agg("min", "v_i2", 21, 21), agg("max", "v_i8", 20, 20), agg("min", "v_f4", 700, 700),
    agg("max", "v_f8", 701, 701), agg("min", "v_t", 25, 25, collation="C"),
    agg("max", "v_t", 25, 25, collation="POSIX"),
    agg("bool_and", "v_b", 16, 16), agg("bool_or", "v_b", 16, 16),
]


def request_for(keys: list[str], aggregates: list[dict]) -> dict:
    group_by = [{"kind": "column", "column": k, "type_oid": TABLE[k][0]} for k in keys]
    outputs = [{"name": f"g{i}", "kind": "group", "index": i, "type_oid": g["type_oid"]}
               for i, g in enumerate(group_by)]
    outputs += [{"name": f"a{len(outputs) + j}", "kind": "aggregate", "index": j,
                 "type_oid": a["result_type_oid"]} for j, a in enumerate(aggregates)]
    return {"group_by": group_by, "aggregates": aggregates, "outputs": outputs[::-1]}


def batch_column(name, values, dictionary=False):
    oid, kind, dtype = TABLE[name]
    if dtype == "text":
        if dictionary:
            codes, doff, ddata, validity = to_dict(values)
            return DictionaryColumn(kind, codes, doff, ddata, validity)
        offsets, data, validity = to_text(values)
        return Column(kind, data, validity, offsets)
    arr, validity = to_array(values, dtype)
    return Column(kind, arr, validity)


def run_driver(request, table, n, form, mask, cuts, dictionary=False):
    aggregator = HashAggregator(request)
    for lo, hi in zip([0] + cuts, cuts + [n]):
        cols = {name: batch_column(name, vals[lo:hi], dictionary) for name, vals in table.items()}
        aggregator.add(Batch(hi - lo, cols), make_selection(form, mask[lo:hi]))
    return aggregator.rows()


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_hash_aggregator_matches_reference(data):
    n = data.draw(st.integers(0, 30))
    table = {}
    for name, (oid, kind, dtype) in TABLE.items():
        vals = data.draw(column_lists(dtype, n, small=name.startswith("k_")))
        table[name] = py(vals, dtype)
    keys = data.draw(st.lists(st.sampled_from([k for k in TABLE if k.startswith("k_")]),
                              max_size=2, unique=True))
    aggregates = data.draw(st.lists(st.sampled_from(AGGREGATES), min_size=1, max_size=5))
    request = request_for(keys, aggregates)
    assert supports(request), unsupported_reason(request)
    form, mask = data.draw(selections(n))
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=2)))
    try:
        want = R.aggregate_rows(request, table, n, make_selection("bool", mask))
    except NumericValueOutOfRangeError as exc:
        with pytest.raises(NumericValueOutOfRangeError, match=f"^{exc}$"):
            run_driver(request, table, n, form, mask, cuts)
        return
    got = run_driver(request, table, n, form, mask, cuts, dictionary=data.draw(st.booleans()))
    assert same_rows(got, want), (got, want)


def test_no_group_by_over_no_rows_is_one_row():
    request = request_for([], [COUNT_STAR, agg("sum", "v_i4", 23, 20), agg("avg", "v_f8", 701, 701),
                               agg("max", "v_t", 25, 25, collation="C"), agg("count", "v_i8", 20, 20, distinct=True)])
    a = HashAggregator(request)
    rows = a.rows()
    assert rows == [{"a4": 0, "a3": None, "a2": None, "a1": None, "a0": 0}]
    a.add({name: batch_column(name, []) for name in a.columns}, selection=None)
    assert a.rows() == rows
    grouped = HashAggregator(request_for(["k_i4"], [COUNT_STAR]))
    assert grouped.rows() == [], "GROUP BY over no rows gives no rows"


def test_count_star_alone_needs_only_row_counts():
    a = HashAggregator(request_for([], [COUNT_STAR]))
    assert a.columns == []
    a.add({}, nrows=10)
    a.add({}, selection=np.array([True, False, True]), nrows=3)
    a.add(Batch(5, {}), selection=np.array([4, 0], np.int32))
    assert a.rows() == [{"a0": 14}]
    with pytest.raises(InvalidParameterError):
        a.add({})


def test_result_batch_has_output_names_and_wire_kinds():
    request = request_for(["k_t", "k_b"], [agg("sum", "v_i8", 20, 1700), agg("avg", "v_f4", 700, 701),
                                         agg("sum", "v_f4", 700, 700), agg("min", "v_i2", 21, 21)])
    a = HashAggregator(request)
    a.add({"k_t": ["x", None, "x"], "k_b": np.array([True, False, True]),
           "v_i8": np.array([INT64_MAX, 1, INT64_MAX]), "v_f4": np.array([1.5, 2, 3], np.float32),
           "v_i2": np.array([3, -2, 1], np.int16)})
    batch = a.result()
    assert batch.nrows == 2
    assert list(batch.columns) == ["a5", "a4", "a3", "a2", "g1", "g0"]
    kinds = {name: col.kind for name, col in batch.columns.items()}
    assert kinds == {"a5": WireKind.INT16, "a4": WireKind.FLOAT32, "a3": WireKind.FLOAT64,
                     "a2": WireKind.CSTRING, "g1": WireKind.BOOL, "g0": WireKind.TEXT}
    assert batch.columns["a2"].to_pylist() == [str(2 * INT64_MAX), "1"]
    assert a.rows()[0] == {"a5": 1, "a4": 4.5, "a3": 2.25, "a2": decimal.Decimal(2 * INT64_MAX),
                           "g1": True, "g0": "x"}


def test_date_and_timestamp_keys_and_min_max():
    request = {
        "group_by": [{"kind": "column", "column": "d", "type_oid": 1082}],
        "aggregates": [agg("max", "ts", 1184, 1184), agg("min", "d", 1082, 1082)],
        "outputs": [{"name": "g0", "kind": "group", "index": 0, "type_oid": 1082},
                    {"name": "a1", "kind": "aggregate", "index": 0, "type_oid": 1184},
                    {"name": "a2", "kind": "aggregate", "index": 1, "type_oid": 1082}],
    }
    a = HashAggregator(request)
    a.add({"d": Column(WireKind.DATE, np.array([0, 1, 0], np.int32)),
           "ts": Column(WireKind.TIMESTAMP, np.array([5, 7, 9], np.int64))})
    batch = a.result()
    assert batch.columns["g0"].kind is WireKind.DATE and batch.columns["a1"].kind is WireKind.TIMESTAMP
    assert batch.columns["a1"].values.tolist() == [9, 7]
    assert batch.columns["g0"].values.tolist() == [0, 1]


def test_float_semantics_match_postgres():
    def one(func, oid, result, values, dtype=np.float64):
        a = HashAggregator(request_for([], [agg(func, "v_f8" if oid == 701 else "v_f4", oid, result)]))
        name = "v_f8" if oid == 701 else "v_f4"
        a.add({name: np.array(values, dtype=dtype)})
        return a.rows()[0]["a0"]

    # measured on PostgreSQL 15
    for func, values in [("sum", [1e308, 1e308]), ("avg", [1e160, -1e160]), ("avg", [1.0, 1e308])]:
        with pytest.raises(NumericValueOutOfRangeError, match="^value out of range: overflow$"):
            one(func, 701, 701, values)
    with pytest.raises(NumericValueOutOfRangeError):
        one("sum", 700, 700, [3e38, 3e38], np.float32)
    assert one("sum", 700, 700, [0.1, 0.2, 0.3], np.float32) == float(np.float32(0.1) + np.float32(0.2) + np.float32(0.3))
    assert math.isnan(one("sum", 701, 701, [math.inf, -math.inf]))
    assert one("sum", 701, 701, [math.inf, 1e308, 1e308]) == math.inf
    assert one("avg", 701, 701, [math.inf, 1e308, 1e308]) == math.inf
    assert one("min", 701, 701, [math.nan, 1, math.inf]) == 1.0
    assert math.isnan(one("max", 701, 701, [math.nan, 1, math.inf]))
    assert same(one("max", 701, 701, [-0.0, 0.0]), 0.0) and same(one("max", 701, 701, [0.0, -0.0]), -0.0)
    assert same(one("min", 701, 701, [0.0, -0.0]), -0.0)
    assert same(one("sum", 701, 701, [-0.0, -0.0]), -0.0)
    assert same(one("sum", 700, 700, [-0.0], np.float32), -0.0)
    a = HashAggregator(request_for([], [agg("count", "v_f8", 701, 20, distinct=True)]))
    a.add({"v_f8": np.array([math.nan, -math.nan, 0.0, -0.0])})
    assert a.rows() == [{"a0": 2}]


def test_many_groups_against_numpy():
    rng = np.random.default_rng(5)
    n, ngroups = 400_000, 100_000
    keys = rng.permutation(ngroups)[rng.integers(0, ngroups, n)].astype(np.int64)
    keys[:ngroups] = rng.permutation(ngroups)  # every group appears
    v = rng.integers(-10**6, 10**6, n).astype(np.int32)
    f = rng.normal(size=n)
    request = {"group_by": [{"kind": "column", "column": "k", "type_oid": 20}],
               "aggregates": [COUNT_STAR, agg("sum", "v", 23, 20), agg("max", "f", 701, 701),
                              agg("min", "v", 23, 23)],
               "outputs": [{"name": "g0", "kind": "group", "index": 0, "type_oid": 20}] +
                          [{"name": f"a{j + 1}", "kind": "aggregate", "index": j, "type_oid": t}
                           for j, t in enumerate([20, 20, 701, 23])]}
    a = HashAggregator(request)
    for chunk in np.array_split(np.arange(n), 40):
        a.add({"k": keys[chunk], "v": v[chunk], "f": f[chunk]})
    batch = a.result()
    order = batch.columns["g0"].values
    assert batch.nrows == ngroups and np.array_equal(order, pd_unique(keys))
    counts = np.bincount(keys, minlength=ngroups)
    sums = np.bincount(keys, weights=v.astype(np.float64), minlength=ngroups)
    maxf = np.full(ngroups, -np.inf)
    np.maximum.at(maxf, keys, f)
    minv = np.full(ngroups, np.iinfo(np.int32).max)
    np.minimum.at(minv, keys, v)
    assert np.array_equal(batch.columns["a1"].values, counts[order])
    assert np.array_equal(batch.columns["a2"].values, sums[order].astype(np.int64))
    assert np.array_equal(batch.columns["a3"].values, maxf[order])
    assert np.array_equal(batch.columns["a4"].values, minv[order])


def pd_unique(a):
    """Unique values in order of first appearance."""
    _, idx = np.unique(a, return_index=True)
    return a[np.sort(idx)]


def test_driver_rejects_wrong_columns():
    a = HashAggregator(request_for(["k_i4"], [agg("sum", "v_i8", 20, 1700)]))
    with pytest.raises(InvalidParameterError, match="no column"):
        a.add({"k_i4": np.array([1], np.int32)})
    with pytest.raises(InvalidParameterError, match="expected INT64"):
        a.add({"k_i4": np.array([1], np.int32), "v_i8": Column(WireKind.INT32, np.array([1], np.int32))})
    with pytest.raises(InvalidParameterError, match="rows"):
        a.add({"k_i4": np.array([1, 2], np.int32), "v_i8": np.array([1], np.int64)})


# --------------------------------------------------------------- supports

def test_supports_accepts_what_it_computes_exactly():
    assert supports(request_for(["k_i4", "k_t"], AGGREGATES))
    assert supports(request_for([], [agg("count", "n", 1700, 20)])), "count(col) needs only NULLs"


@pytest.mark.parametrize("request_change,why", [
    (lambda r: r["aggregates"].append(agg("sum", "n", 1700, 1700)), "numeric"),
    (lambda r: r["aggregates"].append(agg("min", "v_t", 25, 25)), "collation"),
    (lambda r: r["aggregates"].append(agg("max", "v_t", 25, 25, collation="en_US")), "collation"),
    (lambda r: r["aggregates"].append(agg("sum", "v_i4", 23, 20, distinct=True)), "DISTINCT"),
    (lambda r: r["aggregates"].append(agg("count", "n", 1700, 20, distinct=True)), "equality"),
    (lambda r: r["aggregates"].append(agg("stddev", "v_f8", 701, 701)), "stddev"),
    (lambda r: r["aggregates"].append({**agg("sum", "v_f8", 701, 701), "schema": "public"}), "built-in"),
    (lambda r: r["aggregates"].append(agg("sum", "v_i4", 23, 1700)), "returns"),
    (lambda r: r["group_by"].append({"kind": "time_bucket", "column": "ts", "type_oid": 1184}), "time_bucket"),
    (lambda r: r["group_by"].append({"kind": "column", "column": "n", "type_oid": 1700}), "type"),
    (lambda r: r["outputs"].append({"name": "x", "kind": "group", "index": 5, "type_oid": 23}), "refers"),
    (lambda r: r["outputs"].__setitem__(0, {**r["outputs"][0], "type_oid": 23}), "type"),
])
def test_supports_declines_what_postgres_must_compute(request_change, why):
    request = request_for(["k_i4"], [agg("sum", "v_i4", 23, 20)])
    assert supports(request)
    request_change(request)
    assert not supports(request)
    assert why in unsupported_reason(request)
    with pytest.raises(FeatureNotSupportedError):
        HashAggregator(request)


@pytest.mark.parametrize("module", [K, driver_module, R], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
