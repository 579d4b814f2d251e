"""The numeric(p, s) kernels (cython_kernels/decimal.pyx) against their
pure-Python references (orochi_fdw.storage.decimal): text of scaled int64
values digit for digit as numeric_out prints it, parsing with the type
modifier's rounding and precision check, and clean errors for bad input."""

from __future__ import annotations

import decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orochi_fdw.errors import NumericValueOutOfRangeError
from orochi_fdw.storage import decimal as dec
from orochi_fdw.storage.kinds import VarBytes

_values = st.one_of(st.integers(-(10**18) + 1, 10**18 - 1), st.sampled_from([0, 1, -1, dec.NAN, 10**18 - 1]))


@settings(max_examples=150, deadline=None)
@given(values=st.lists(_values, max_size=50), scale=st.integers(0, 18),
       nulls=st.lists(st.booleans(), max_size=50))
def test_format_matches_reference(values, scale, nulls):
    validity = np.array([not (i < len(nulls) and nulls[i]) for i in range(len(values))], dtype=bool)
    offsets, data = dec.format_text(np.array(values, dtype=np.int64), validity, scale)
    got = [bytes(data[offsets[i]:offsets[i + 1]]).decode() if validity[i] else None for i in range(len(values))]
    want = [dec.format_reference(v, scale) if validity[i] else None for i, v in enumerate(values)]
    assert got == want
    assert all(offsets[i + 1] == offsets[i] for i in range(len(values)) if not validity[i])
    # and the text is what Python's Decimal makes of the value at that scale
    for v, text in zip(values, got):
        if text is not None and v != dec.NAN:
            assert decimal.Decimal(text) == decimal.Decimal(v).scaleb(-scale)
            assert -decimal.Decimal(text).as_tuple().exponent == scale or v == 0 and scale == 0


_texts = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=8,
                min_value=-10**12, max_value=10**12).map(lambda d: format(d, "f")),
    st.from_regex(r"[+-]?[0-9]{0,20}(\.[0-9]{0,22})?", fullmatch=True),
    st.sampled_from(["NaN", "nan", "-0", "0.000", ".5", "5.", "1e5", "Infinity", "", "-", ".", " 1",
                     "1 ", "1_0", "0x10", "99.995", "-99.995", "999999999999999999.5"]),
)


@settings(max_examples=200, deadline=None)
@given(text=_texts, precision=st.integers(1, 18), data=st.data())
def test_parse_matches_reference(text, precision, data):
    scale = data.draw(st.integers(0, precision))
    vb, _ = VarBytes.from_values([text])
    try:
        want = dec.parse_reference(text, scale, precision)
    except NumericValueOutOfRangeError:
        with pytest.raises(NumericValueOutOfRangeError):
            dec.parse_text(vb.offsets, vb.data, None, scale, precision)
        return
    except dec.InvalidTextRepresentationError:
        with pytest.raises(dec.InvalidTextRepresentationError):
            dec.parse_text(vb.offsets, vb.data, None, scale, precision)
        return
    assert dec.parse_text(vb.offsets, vb.data, None, scale, precision).tolist() == [want]


def test_parse_rounds_half_away_from_zero_and_checks_precision():
    vb, validity = VarBytes.from_values(["1.005", "-1.005", "1.004", "NaN", None, "-0.001", "999.994"])
    out = dec.parse_text(vb.offsets, vb.data, validity, 2, 5)
    assert out.tolist() == [101, -101, 100, dec.NAN, 0, 0, 99999]
    for bad in ("999.995", "1000", "-1000.00"):
        vb, _ = VarBytes.from_values([bad])
        with pytest.raises(NumericValueOutOfRangeError) as e:
            dec.parse_text(vb.offsets, vb.data, None, 2, 5)
        assert e.value.sqlstate == "22003" and bad in str(e.value)
    vb, _ = VarBytes.from_values(["12", "1e3"])
    with pytest.raises(dec.InvalidTextRepresentationError) as e:
        dec.parse_text(vb.offsets, vb.data, None, 2, 5)
    assert e.value.sqlstate == "22P02" and '"1e3"' in str(e.value)


def test_kernel_bounds():
    from orochi_fdw.kernels import decimal as kd

    out = np.empty(2, dtype=np.int64)
    data = np.frombuffer(b"12", dtype=np.uint8)
    with pytest.raises(ValueError):
        kd.parse_decimal64(np.array([0, 1, 5], dtype=np.int64), data, None, 2, 5, out)  # past the data
    with pytest.raises(ValueError):
        kd.parse_decimal64(np.array([0, 1, 2], dtype=np.int64), data, None, 6, 5, out)  # scale > precision
    with pytest.raises(ValueError):
        kd.parse_decimal64(np.array([0, 1, 2], dtype=np.int64), data, None, 0, 19, out)
    with pytest.raises(ValueError):
        kd.parse_decimal64(np.array([0, 1, 2], dtype=np.int64), data, None, 0, 5, np.empty(1, np.int64))
    # descending offsets: a syntax error for that row, never a read out of bounds
    status, row = kd.parse_decimal64(np.array([0, 2, 1], dtype=np.int64), data, None, 0, 5, out)
    assert (status, row) == (1, 1)
    with pytest.raises(ValueError):
        kd.format_decimal64(np.zeros(3, np.int64), np.ones(2, np.uint8), 2)
    with pytest.raises(ValueError):
        kd.format_decimal64(np.zeros(3, np.int64), None, 19)


def test_typmod():
    assert dec.typmod_precision_scale(-1) is None
    assert dec.typmod_precision_scale(((15 << 16) | 2) + 4) == (15, 2)
    assert dec.typmod_precision_scale(((3 << 16) | (-2 & 0x7FF)) + 4) == (3, -2)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(-(10**17), 10**17), min_size=1, max_size=30))
def test_decimal_avg_at_scale_zero_is_avg_of_integers(values):
    """At scale 0 the numeric avg is avg(int8)'s (the reference of the
    integer kernels, tested against Postgres)."""
    from orochi_fdw.query.aggregate import _decimal_avg
    from orochi_fdw.query.aggregate_reference import avg_int

    assert _decimal_avg(sum(values), 0, len(values)) == format(avg_int(values), "f")


def test_decimal_aggregates_in_the_driver():
    from orochi_fdw.bridge.batch import Column, WireKind
    from orochi_fdw.query.aggregate import HashAggregator, supports

    def agg(func, result):
        return {"func": func, "schema": "pg_catalog", "star": False, "distinct": False, "column": "p",
                "arg_type_oid": 1700, "result_type_oid": result, "args": [], "arg_scale": 2}

    aggs = [agg("sum", 1700), agg("avg", 1700), agg("min", 1700), agg("max", 1700), agg("count", 20)]
    request = {"group_by": [{"kind": "column", "column": "g", "type_oid": 23}], "aggregates": aggs,
               "outputs": [{"name": "g", "kind": "group", "index": 0, "type_oid": 23}]
               + [{"name": f"a{i}", "kind": "aggregate", "index": i, "type_oid": a["result_type_oid"]}
                  for i, a in enumerate(aggs)]}
    assert supports(request)
    assert not supports({**request, "aggregates": [{**a, "arg_scale": None} for a in aggs[:1]],
                         "outputs": request["outputs"][:2]})
    h = HashAggregator(request)
    p = np.array([150, 150, -1, dec.NAN, 7, 0], dtype=np.int64)
    h.add({"g": np.array([1, 1, 1, 2, 2, 3], np.int32),
           "p": Column(WireKind.DECIMAL64, p, np.array([1, 1, 1, 1, 1, 0], np.uint8))})
    rows = [{k: str(v) for k, v in r.items()} for r in h.rows()]
    assert rows == [
        {"g": "1", "a0": "2.99", "a1": "0.99666666666666666667", "a2": "-0.01", "a3": "1.50", "a4": "3"},
        {"g": "2", "a0": "NaN", "a1": "NaN", "a2": "0.07", "a3": "NaN", "a4": "2"},
        {"g": "3", "a0": "None", "a1": "None", "a2": "None", "a3": "None", "a4": "0"},
    ]
