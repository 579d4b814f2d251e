"""COPY text encoding of routed inserts (orochi_fdw.cluster.copyformat and
the copytext kernels), without a server: every value's text reads back as
the value, the layout is COPY's, escapes and NULLs included.  (Reading by
Postgres itself is covered by the round trips of test_writes.py.)"""

from __future__ import annotations

import datetime
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orochi_fdw.bridge.batch import Column, WireKind
from orochi_fdw.cluster import copyformat as cf
from orochi_fdw.cluster.hashing import hash_int8, hash_uint32

_EPOCH = datetime.datetime(2000, 1, 1)


@pytest.fixture(autouse=True, params=["kernels", "numpy"])
def path(request, monkeypatch):
    """Every test twice: through the Cython kernels (which must be built) and
    through the numpy path they replace."""
    if request.param == "kernels":
        from orochi_fdw.kernels import copytext  # noqa: F401 - fails when the kernels are not built
    else:
        monkeypatch.setattr(cf, "_kernel", lambda: None)
    return request.param


def texts_of(column: Column, n: int) -> list[str | None]:
    data, offsets, nulls = cf.column_text_fields(column, n)
    out = []
    for i in range(n):
        out.append(None if nulls is not None and nulls[i] else bytes(data[offsets[i]:offsets[i + 1]]).decode())
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), max_size=200))
def test_int64_text(values):
    arr = np.array(values, dtype=np.int64)
    assert [int(t) for t in texts_of(Column(WireKind.INT64, arr), len(arr))] == values


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-2 ** 15, 2 ** 15 - 1), max_size=200))
def test_int16_text(values):
    arr = np.array(values, dtype=np.int16)
    assert [int(t) for t in texts_of(Column(WireKind.INT16, arr), len(arr))] == values


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=200))
def test_float64_text_reads_back_exactly(values):
    arr = np.array(values, dtype=np.float64)
    for text, v in zip(texts_of(Column(WireKind.FLOAT64, arr), len(arr)), values):
        back = float(text)  # Python reads NaN / Infinity as Postgres does
        assert (math.isnan(back) and math.isnan(v)) or (back == v and math.copysign(1, back) == math.copysign(1, v))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False), max_size=100))
def test_float32_text_rounds_back_to_the_float32(values):
    arr = np.array(values, dtype=np.float32)
    for text, v in zip(texts_of(Column(WireKind.FLOAT32, arr), len(arr)), arr):
        assert np.float32(float(text)) == v


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-1990 * 365 * 86_400_000_000, 7900 * 365 * 86_400_000_000), max_size=100))
def test_timestamp_text(values):
    arr = np.array(values, dtype=np.int64)
    for text, v in zip(texts_of(Column(WireKind.TIMESTAMP, arr), len(arr)), values):
        when = _EPOCH + datetime.timedelta(microseconds=v)
        assert datetime.datetime.fromisoformat(text.replace("+00", "")) == when, text


def test_timestamp_and_date_special_values():
    us = np.array([-2 ** 63, 2 ** 63 - 1, cf._FIRST_DAY * cf._DAY_US - 1, 10 ** 18], dtype=np.int64)
    assert texts_of(Column(WireKind.TIMESTAMP, us), 4) == [
        "-infinity", "infinity", "0001-12-31 23:59:59.999999+00 BC", "33688-09-26 01:46:40.000000+00"]
    days = np.array([-2 ** 31, 2 ** 31 - 1, -730119 - 1, 0, 2921939, 2921940], dtype=np.int32)
    assert texts_of(Column(WireKind.DATE, days), 6) == [
        "-infinity", "infinity", "0001-12-31 BC", "2000-01-01", "9999-12-31", "10000-01-01"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-730119, 2921939), max_size=100))
def test_date_text(values):
    arr = np.array(values, dtype=np.int32)
    for text, v in zip(texts_of(Column(WireKind.DATE, arr), len(arr)), values):
        assert datetime.date.fromisoformat(text) == datetime.date(2000, 1, 1) + datetime.timedelta(days=v)


def test_other_kinds():
    iv = np.zeros(2, dtype=[("time", "<i8"), ("day", "<i4"), ("month", "<i4")])
    iv[0] = (5, 2, 14)
    iv[1] = (-1, -3, 0)
    assert texts_of(Column(WireKind.INTERVAL, iv), 2) == ["14 mons 2 days 5 microseconds",
                                                            "0 mons -3 days -1 microseconds"]
    raw = np.frombuffer(bytes(range(16)), dtype="V16")
    assert texts_of(Column(WireKind.UUID, raw), 1) == ["00010203-0405-0607-0809-0a0b0c0d0e0f"]
    b = np.array([1, 0], dtype=np.uint8)
    assert texts_of(Column(WireKind.BOOL, b), 2) == ["t", "f"]
    data = np.frombuffer(b"\x00\xffab", dtype=np.uint8)
    assert texts_of(Column(WireKind.BYTEA, data, None, np.array([0, 2, 4])), 2) == ["\\x00ff", "\\x6162"]
    t = Column(WireKind.TIME, np.array([0, 86_400_000_000, 45_296_000_001], dtype=np.int64))
    assert texts_of(t, 3) == ["00:00:00.000000", "24:00:00.000000", "12:34:56.000001"]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.none() | st.text(max_size=8), st.none() | st.integers(-5, 5)), max_size=40),
       st.data())
def test_rows_layout_escapes_and_nulls(rows, data):
    """Encoded rows parsed back by COPY text's rules give the values; any
    subset of rows, in order."""
    n = len(rows)
    texts = [r[0] for r in rows]
    encoded = [(t or "").encode() for t in texts]
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    tcol = Column(WireKind.TEXT, np.frombuffer(b"".join(encoded), np.uint8),
                  np.array([t is not None for t in texts], np.uint8), offsets)
    icol = Column(WireKind.INT32, np.array([r[1] or 0 for r in rows], np.int32),
                  np.array([r[1] is not None for r in rows], np.uint8))
    chosen = sorted(data.draw(st.sets(st.integers(0, max(n - 1, 0)), max_size=n))) if n else []
    out = cf.encode_rows([cf.column_text_fields(tcol, n), cf.column_text_fields(icol, n)], n,
                         np.array(chosen, dtype=np.int64))
    lines = out.split(b"\n")
    assert lines[-1] == b""
    parsed = []
    for line in lines[:-1]:
        fields = line.split(b"\t")
        assert len(fields) == 2
        parsed.append(tuple(None if f == b"\\N" else _unescape(f) for f in fields))
    expected = [(rows[i][0], None if rows[i][1] is None else str(rows[i][1])) for i in chosen]
    assert parsed == expected


def _unescape(field: bytes) -> str:
    out = bytearray()
    i = 0
    while i < len(field):
        c = field[i]
        if c == 92:
            nxt = field[i + 1]
            out.append({ord("n"): 10, ord("r"): 13, ord("t"): 9, 92: 92}[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    return out.decode()


def test_hash_uint32_known_values():
    """hashint4(0..2) and hashint8 of small and negative values as
    PostgreSQL 15 computes them (SELECT hashint4(0) ...)."""
    assert hash_uint32(np.array([0, 1, 2], dtype=np.uint32)).tolist() == [-272711505, -1905060026, 1134484726]
    assert hash_int8(np.array([0, 1, -1], dtype=np.int64)).tolist() == [-272711505, -1905060026, 385747274]
