"""Filter kernels against plain numpy references with PostgreSQL semantics.

Masks are compared exactly (there is no tolerance: a row passes or not).
References follow Postgres, not IEEE: NaN = NaN, NaN sorts above everything,
-0.0 = 0.0, and a NULL row never passes a comparison.
"""

from __future__ import annotations

import io
import operator
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from orochi_fdw.errors import CorruptDataError
from orochi_fdw.kernels import filters as F

NUM_DTYPES = [np.int8, np.uint8, np.int16, np.int32, np.int64, np.float32, np.float64]
INT_DTYPES = [np.int8, np.uint8, np.int16, np.int32, np.int64]
FLOAT_DTYPES = [np.float32, np.float64]
OPS = {F.OP_EQ: "=", F.OP_NE: "<>", F.OP_LT: "<", F.OP_LE: "<=", F.OP_GT: ">", F.OP_GE: ">="}
COMBINES = [F.COMBINE_SET, F.COMBINE_AND, F.COMBINE_OR]
# Around the kernels' block size (2048), and the empty column.
SIZES = [0, 1, 7, 2047, 2048, 2049, 5000]


# ----------------------------------------------------------------- references

def pg_cmp_ref(values: np.ndarray, op: int, c) -> np.ndarray:
    """values <op> c in Postgres's total order, as bools (NULLs not applied)."""
    v = np.asarray(values)
    if v.dtype.kind == "f":
        c = v.dtype.type(c)
        vn = np.isnan(v)
        cn = bool(np.isnan(c))
        with np.errstate(invalid="ignore"):
            if cn:
                lt, eq = ~vn, vn
            else:
                lt = ~vn & (v < c)
                eq = ~vn & (v == c)
    else:
        lt, eq = v < c, v == c
    gt = ~lt & ~eq
    return {F.OP_EQ: eq, F.OP_NE: ~eq, F.OP_LT: lt, F.OP_LE: lt | eq,
            F.OP_GT: gt, F.OP_GE: gt | eq}[op]


def apply_ref(result: np.ndarray, validity, out_before: np.ndarray, combine: int) -> np.ndarray:
    r = np.asarray(result, dtype=bool)
    if validity is not None:
        r = r & (validity != 0)
    before = out_before != 0
    if combine == F.COMBINE_AND:
        r = before & r
    elif combine == F.COMBINE_OR:
        r = before | r
    return r.astype(np.uint8)


def random_values(rng: np.random.Generator, dtype, n: int) -> np.ndarray:
    """Values with the awkward ones mixed in: extremes, NaN, ±inf, -0.0."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        v = rng.normal(0, 100, n).round(1).astype(dtype)
        specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, np.finfo(dtype).max,
                             np.finfo(dtype).min], dtype=dtype)
    else:
        info = np.iinfo(dtype)
        lo, hi = max(info.min, -50), min(info.max, 50)
        v = rng.integers(lo, hi, n, endpoint=True).astype(dtype)
        specials = np.array([info.min, info.max, 0], dtype=dtype)
    if n:
        k = max(1, n // 20)
        v[rng.integers(0, n, k)] = rng.choice(specials, k)
    return v


def random_validity(rng, n: int, kind: str):
    if kind == "none":
        return None
    if kind == "all_null":
        return np.zeros(n, dtype=np.uint8)
    # any nonzero byte means "present"
    return (rng.random(n) < 0.8).astype(np.uint8) * rng.choice(np.array([1, 3, 255], np.uint8), n)


def initial_out(rng, n: int) -> np.ndarray:
    # existing masks may hold any nonzero byte for "passes"
    return rng.choice(np.array([0, 1, 7], dtype=np.uint8), n)


def constants_for(values: np.ndarray, dtype) -> list:
    dtype = np.dtype(dtype)
    out = [values[0].item()] if len(values) else []
    if dtype.kind == "f":
        out += [0.0, -0.0, 2.5, float("nan"), float("inf"), float("-inf"),
                float(np.finfo(dtype).max)]
    else:
        info = np.iinfo(dtype)
        out += [0, 1, int(info.min), int(info.max)]
    return out


# ---------------------------------------------------------------- comparisons

@pytest.mark.parametrize("dtype", NUM_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("valid_kind", ["none", "some", "all_null"])
def test_compare_matches_reference(dtype, n, valid_kind):
    rng = np.random.default_rng(n * 31 + len(valid_kind))
    values = random_values(rng, dtype, n)
    validity = random_validity(rng, n, valid_kind)
    for c in constants_for(values, dtype):
        for op, name in OPS.items():
            for combine in COMBINES:
                before = initial_out(rng, n)
                out = before.copy()
                F.compare(values, validity, op, c, out, combine)
                expected = apply_ref(pg_cmp_ref(values, op, c), validity, before, combine)
                assert np.array_equal(out, expected), f"{np.dtype(dtype).name} {name} {c!r} combine={combine}"


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_compare_nan_semantics(dtype):
    """Postgres: NaN = NaN, NaN > +inf, -0.0 = 0.0 (regression: IEEE makes
    NaN > x false, so `x > 5` would lose the NaN rows)."""
    v = np.array([np.nan, np.inf, 1.0, -0.0, 0.0, -np.inf], dtype=dtype)
    out = np.empty(len(v), np.uint8)
    F.compare(v, None, F.OP_GT, 5.0, out)
    assert out.tolist() == [1, 1, 0, 0, 0, 0]
    F.compare(v, None, F.OP_EQ, float("nan"), out)
    assert out.tolist() == [1, 0, 0, 0, 0, 0]
    F.compare(v, None, F.OP_LT, float("nan"), out)
    assert out.tolist() == [0, 1, 1, 1, 1, 1]
    F.compare(v, None, F.OP_GE, float("nan"), out)
    assert out.tolist() == [1, 0, 0, 0, 0, 0]
    F.compare(v, None, F.OP_EQ, 0.0, out)
    assert out.tolist() == [0, 0, 0, 1, 1, 0]
    F.compare(v, None, F.OP_NE, 1.0, out)
    assert out.tolist() == [1, 1, 0, 1, 1, 1]


def test_null_never_passes():
    v = np.array([1, 2, 3], dtype=np.int32)
    valid = np.array([0, 0, 0], dtype=np.uint8)
    for op in OPS:
        out = np.ones(3, np.uint8)
        F.compare(v, valid, op, 2, out)
        assert out.tolist() == [0, 0, 0]
        out = np.ones(3, np.uint8)
        F.compare(v, valid, op, 2, out, F.COMBINE_OR)
        assert out.tolist() == [1, 1, 1]


def test_compare_rejects_inexact_constants():
    out = np.empty(2, np.uint8)
    with pytest.raises(ValueError):
        F.compare(np.zeros(2, np.float32), None, F.OP_EQ, 0.1, out)   # 0.1 is not a float32
    F.compare(np.zeros(2, np.float32), None, F.OP_EQ, 0.5, out)
    with pytest.raises(OverflowError):
        F.compare(np.zeros(2, np.int16), None, F.OP_EQ, 40000, out)
    with pytest.raises(TypeError):
        F.compare(np.zeros(2, np.int32), None, F.OP_LT, 2.5, out)
    with pytest.raises(ValueError):
        F.compare(np.zeros(2, np.int32), None, 17, 1, out)
    with pytest.raises(ValueError):
        F.compare(np.zeros(2, np.int32), None, F.OP_EQ, 1, np.empty(3, np.uint8))
    with pytest.raises(ValueError):
        F.compare(np.zeros(2, np.int32), np.ones(3, np.uint8), F.OP_EQ, 1, out)
    with pytest.raises(ValueError):
        F.compare(np.zeros(2, np.int32), None, F.OP_EQ, 1, out, 9)


@pytest.mark.parametrize("dtype", NUM_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [0, 3, 2049])
def test_compare_range(dtype, n):
    rng = np.random.default_rng(n)
    values = random_values(rng, dtype, n)
    validity = random_validity(rng, n, "some")
    consts = constants_for(values, dtype)
    for lo in consts[:4]:
        for hi in consts[-4:]:
            for op1 in (F.OP_GT, F.OP_GE):
                for op2 in (F.OP_LT, F.OP_LE, F.OP_NE):
                    for combine in COMBINES:
                        before = initial_out(rng, n)
                        out = before.copy()
                        F.compare_range(values, validity, op1, lo, op2, hi, out, combine)
                        ref = pg_cmp_ref(values, op1, lo) & pg_cmp_ref(values, op2, hi)
                        assert np.array_equal(out, apply_ref(ref, validity, before, combine))


def test_compare_extremes_int64():
    info = np.iinfo(np.int64)
    v = np.array([info.min, -1, 0, 1, info.max], dtype=np.int64)
    out = np.empty(5, np.uint8)
    F.compare(v, None, F.OP_LE, int(info.min), out)
    assert out.tolist() == [1, 0, 0, 0, 0]
    F.compare(v, None, F.OP_GE, int(info.max), out)
    assert out.tolist() == [0, 0, 0, 0, 1]


# ---------------------------------------------------------------------- IN

def pg_in_ref(values, items, negate):
    v = np.asarray(values)
    found = np.zeros(len(v), dtype=bool)
    for it in items:
        found |= pg_cmp_ref(v, F.OP_EQ, it)
    return ~found if negate else found


def pg_sorted(items: np.ndarray) -> np.ndarray:
    return np.sort(items)  # numpy sorts NaN last, as Postgres orders it


@pytest.mark.parametrize("dtype", NUM_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [0, 5, 2049, 5000])
@pytest.mark.parametrize("k", [0, 1, 3, 8, 9, 40, 300])
def test_in_list(dtype, n, k):
    rng = np.random.default_rng(n * 7 + k)
    values = random_values(rng, dtype, n)
    validity = random_validity(rng, n, "some" if n % 2 else "none")
    pool = np.concatenate([values, random_values(rng, dtype, max(k, 1))]) if n else random_values(rng, dtype, max(k, 1))
    items = pg_sorted(rng.choice(pool, k)) if k else np.zeros(0, dtype)
    for negate in (False, True):
        for combine in COMBINES:
            before = initial_out(rng, n)
            out = before.copy()
            F.in_list(values, validity, items.astype(dtype), negate, out, combine)
            expected = apply_ref(pg_in_ref(values, items, negate), validity, before, combine)
            assert np.array_equal(out, expected), (k, negate, combine)


@pytest.mark.parametrize("dtype", [np.int32, np.int64], ids=lambda d: np.dtype(d).name)
def test_in_list_strategies(dtype):
    """Each lookup strategy: linear (short list), table (narrow integer span),
    binary search (wide span), on the same rows."""
    info = np.iinfo(dtype)
    values = np.array([info.min, -3, 0, 5, 99, 1000, info.max], dtype=dtype)
    lists = {
        "linear": [-3, 5, int(info.max)],
        "table": list(range(-10, 20, 2)) + [99],
        "binary": [int(info.min), -3, 5, 10**6, 10**7, 10**8, 10**9, 2 * 10**9, int(info.max)],
    }
    for name, items in lists.items():
        arr = np.array(sorted(items), dtype=dtype)
        out = np.empty(len(values), np.uint8)
        F.in_list(values, None, arr, False, out)
        assert np.array_equal(out, pg_in_ref(values, arr, False).astype(np.uint8)), name


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_in_list_nan(dtype):
    v = np.array([np.nan, 1.0, -0.0, 2.0], dtype=dtype)
    out = np.empty(4, np.uint8)
    F.in_list(v, None, np.array([0.0, np.nan], dtype=dtype), False, out)
    assert out.tolist() == [1, 0, 1, 0]
    F.in_list(v, None, np.array([0.0, np.nan], dtype=dtype), True, out)
    assert out.tolist() == [0, 1, 0, 1]
    many = np.array(list(range(20)) + [np.nan, np.nan], dtype=dtype)
    F.in_list(v, None, many, False, out)
    assert out.tolist() == [1, 1, 1, 1]


def test_in_list_rejects_unsorted():
    with pytest.raises(ValueError):
        F.in_list(np.zeros(3, np.int32), None, np.array([3, 1], np.int32), False, np.empty(3, np.uint8))
    with pytest.raises(ValueError):
        F.in_list(np.zeros(3, np.float64), None, np.array([np.nan, 1.0]), False, np.empty(3, np.uint8))


def test_validity_filter():
    valid = np.array([1, 0, 5, 0], np.uint8)
    out = np.empty(4, np.uint8)
    F.validity_filter(valid, True, out)
    assert out.tolist() == [0, 1, 0, 1]
    F.validity_filter(valid, False, out)
    assert out.tolist() == [1, 0, 1, 0]
    F.validity_filter(None, True, out)
    assert out.tolist() == [0, 0, 0, 0]
    out[:] = [1, 1, 0, 0]
    F.validity_filter(None, False, out, F.COMBINE_AND)
    assert out.tolist() == [1, 1, 0, 0]


# --------------------------------------------------------------------- text

def var_column(items: list[bytes | None]):
    lengths = [0 if x is None else len(x) for x in items]
    offsets = np.zeros(len(items) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.frombuffer(b"".join(x or b"" for x in items), np.uint8)
    validity = np.array([x is not None for x in items], np.uint8)
    return offsets, data, validity


TEXT_ROWS = [b"", b"a", b"ab", b"abc", b"abd", b"b", b"\xff", b"\xff\x00", b"ab\x00",
             "été".encode(), "e\u0301".encode(), None, b"abc" * 30, None, b"A"]
# short constants take a one-word path, longer ones (> 8 bytes) the byte loop
TEXT_CONSTS = [b"", b"a", b"ab", b"abc", b"ab\x00", b"\xff", "été".encode(), b"zzz",
               b"abcabcab", b"abcabcabc", b"abc" * 30, b"abc" * 30 + b"a", b"abc" * 6]
PY_OPS = {F.OP_EQ: operator.eq, F.OP_NE: operator.ne, F.OP_LT: operator.lt,
          F.OP_LE: operator.le, F.OP_GT: operator.gt, F.OP_GE: operator.ge}


@pytest.mark.parametrize("repeat", [1, 300])
def test_text_compare(repeat):
    rows = TEXT_ROWS * repeat
    offsets, data, validity = var_column(rows)
    for c in TEXT_CONSTS:
        for op, fn in PY_OPS.items():
            for combine in COMBINES:
                before = initial_out(np.random.default_rng(op), len(rows))
                out = before.copy()
                F.text_compare(offsets, data, validity, op, c, out, combine)
                ref = np.array([x is not None and fn(x, c) for x in rows])
                assert np.array_equal(out, apply_ref(ref, None, before, combine)), (c, OPS[op])


def test_text_prefix_and_in_list():
    offsets, data, validity = var_column(TEXT_ROWS)
    out = np.empty(len(TEXT_ROWS), np.uint8)
    for p in [b"", b"a", b"ab", b"\xff", b"abcabc", b"q", b"abcabcab", b"abcabcabc", b"abc" * 8, b"A"]:
        for negate in (False, True):
            F.text_prefix(offsets, data, validity, p, negate, out)
            ref = [x is not None and (x.startswith(p) != negate) for x in TEXT_ROWS]
            assert out.astype(bool).tolist() == ref, (p, negate)
    for items in ([], [b"ab"], [b"", b"abc", b"\xff"], sorted(set(x for x in TEXT_ROWS if x))):
        io, idata, _ = var_column(sorted(items))
        for negate in (False, True):
            F.text_in_list(offsets, data, validity, io, idata, negate, out)
            ref = [x is not None and ((x in items) != negate) for x in TEXT_ROWS]
            assert out.astype(bool).tolist() == ref, (items, negate)


def test_text_empty_column_and_no_validity():
    offsets = np.zeros(1, np.int64)
    out = np.empty(0, np.uint8)
    F.text_compare(offsets, np.zeros(0, np.uint8), None, F.OP_EQ, b"x", out)
    F.text_prefix(offsets, np.zeros(0, np.uint8), None, b"x", False, out)
    o, d, _ = var_column([b"x", b"y"])
    out = np.empty(2, np.uint8)
    F.text_compare(o, d, None, F.OP_GE, b"y", out)
    assert out.tolist() == [0, 1]


def test_text_bad_offsets_raise():
    out = np.empty(2, np.uint8)
    data = np.frombuffer(b"abc", np.uint8)
    for bad in ([0, 2, 9], [0, 2, 1], [-1, 1, 2]):
        with pytest.raises(ValueError):
            F.text_compare(np.array(bad, np.int64), data, None, F.OP_EQ, b"a", out)
        with pytest.raises(ValueError):
            F.text_prefix(np.array(bad, np.int64), data, None, b"a", False, out)
    io, idata, _ = var_column([b"b", b"a"])
    with pytest.raises(ValueError):
        F.text_in_list(np.array([0, 1, 2], np.int64), data, None, io, idata, False, out)


# --------------------------------------------------------------- dictionary

def test_dict_filter_matches_decoded():
    rng = np.random.default_rng(5)
    entries = [b"apple", b"banana", b"cherry", b"", b"apricot"]
    eo, ed, _ = var_column(entries)
    entry_mask = np.empty(len(entries), np.uint8)
    F.text_prefix(eo, ed, None, b"ap", False, entry_mask)   # once per entry
    n = 5000
    codes = rng.integers(0, len(entries), n).astype(np.int32)
    validity = (rng.random(n) < 0.9).astype(np.uint8)
    decoded = [entries[c] if v else None for c, v in zip(codes, validity)]
    expected = np.array([x is not None and x.startswith(b"ap") for x in decoded], np.uint8)
    out = np.empty(n, np.uint8)
    F.dict_filter(codes, entry_mask, validity, out)
    assert np.array_equal(out, expected)
    out3 = np.ones(n, np.uint8)
    F.dict_filter(codes, entry_mask, None, out3, F.COMBINE_AND)
    assert np.array_equal(out3, entry_mask[codes])


def test_dict_filter_bad_codes():
    out = np.empty(3, np.uint8)
    with pytest.raises(CorruptDataError):
        F.dict_filter(np.array([0, 5, 1], np.int32), np.ones(2, np.uint8), None, out)
    with pytest.raises(CorruptDataError):
        F.dict_filter(np.array([0, -1, 1], np.int32), np.ones(2, np.uint8), None, out)
    # a NULL row's code is not looked at
    F.dict_filter(np.array([0, 99, 1], np.int32), np.ones(2, np.uint8), np.array([1, 0, 1], np.uint8), out)
    assert out.tolist() == [1, 0, 1]


# ---------------------------------------------------------------- selection

@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000, 4099])
@pytest.mark.parametrize("density", [0.0, 0.01, 0.5, 1.0])
@pytest.mark.parametrize("idx_dtype", [np.int32, np.int64], ids=lambda d: np.dtype(d).name)
def test_selection(n, density, idx_dtype):
    rng = np.random.default_rng(n)
    mask = ((rng.random(n) < density) * rng.choice(np.array([1, 2, 255], np.uint8), n)).astype(np.uint8)
    expected = np.flatnonzero(mask)
    assert F.count_selected(mask) == len(expected)
    out = np.empty(len(expected), idx_dtype)
    assert F.mask_to_indices(mask, out) == len(expected)
    assert np.array_equal(out, expected)
    if len(expected):
        with pytest.raises(ValueError):
            F.mask_to_indices(mask, np.empty(len(expected) - 1, idx_dtype))


def compress_ref(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The values of the rows whose mask byte is nonzero, in order."""
    return values[mask != 0]


@pytest.mark.parametrize("n", [0, 1, 7, 9, 1000, 4099])
@pytest.mark.parametrize("density", [0.0, 0.01, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.int64, np.float64],
                         ids=lambda d: np.dtype(d).name)
def test_compress_matches_reference(n, density, dtype):
    rng = np.random.default_rng(n + 17)
    mask = ((rng.random(n) < density) * rng.choice(np.array([1, 2, 255], np.uint8), n)).astype(np.uint8)
    values = random_values(rng, dtype, n)
    width = np.dtype(dtype).itemsize
    expected = compress_ref(mask, values)
    out = np.full(len(expected) + 3, 7, dtype)  # room to spare: nothing past the kept rows is written
    assert F.compress(mask, values.view(np.uint8), out.view(np.uint8), width) == len(expected)
    assert out[:len(expected)].tobytes() == expected.tobytes()  # bit for bit (NaN too)
    assert np.all(out[len(expected):] == 7)
    if len(expected):
        with pytest.raises(ValueError):
            F.compress(mask, values.view(np.uint8), np.empty((len(expected) - 1) * width, np.uint8), width)
    with pytest.raises(ValueError):
        F.compress(mask, np.zeros((n + 1) * width, np.uint8), np.empty((n + 1) * width, np.uint8), width)
    with pytest.raises(ValueError):
        F.compress(mask, values.view(np.uint8), out.view(np.uint8), 3)


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_compress_runs_of_kept_rows(width):
    """Masks of runs (eight rows all kept, none kept, mixed) and of a last
    kept row anywhere: the stretches copied whole, skipped, and the end."""
    rng = np.random.default_rng(width)
    for n in (8, 63, 64, 1000):
        for _ in range(20):
            mask = np.repeat(rng.random(n // 4 + 1) < 0.5, 4)[:n].astype(np.uint8)
            mask[rng.integers(0, n, n // 10)] ^= 1
            mask[rng.integers(0, n):] = 0
            values = np.frombuffer(rng.bytes(n * width), np.uint8)
            expected = compress_ref(mask, values.reshape(n, width))
            out = np.zeros(len(expected) * width, np.uint8)
            assert F.compress(mask, values, out, width) == len(expected)
            assert out.tobytes() == expected.tobytes()


def test_portable_loops_match_the_avx2_ones(tmp_path):
    """The 32/64-bit comparison loops have an AVX2 version and a portable
    one; run the comparisons again in a process that is denied AVX2 and
    check both give the same masks."""
    script = textwrap.dedent("""
        import sys
        import numpy as np
        from orochi_fdw.kernels import filters as F
        rng = np.random.default_rng(9)
        out = []
        for dtype in (np.int32, np.int64, np.float32, np.float64):
            v = rng.integers(-3, 4, 1003).astype(dtype)
            if v.dtype.kind == "f":
                v[::7] = np.nan
                consts = (0.0, 2.0, float("nan"))
            else:
                consts = (0, 2, -3)
            for c in consts:
                for op in range(6):
                    m = np.empty(len(v), np.uint8)
                    F.compare(v, None, op, c, m)
                    out.append(m)
        np.save(sys.stdout.buffer, np.concatenate(out))
    """)
    runs = []
    for env_extra in ({}, {"OROCHI_KERNELS_NO_AVX2": "1"}):
        env = {**os.environ, **env_extra}
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, check=True,
                              cwd=tmp_path)  # the installed package, not the source tree
        runs.append(np.load(io.BytesIO(proc.stdout)))
    assert np.array_equal(runs[0], runs[1])
