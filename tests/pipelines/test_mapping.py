"""Records to rows, without services: JSON paths, the line framer (byte
positions, CSV quotes across reads, oversize records), and the value
converters against PostgreSQL's own input functions (the oracle)."""

from __future__ import annotations

import csv
import io

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orochi_fdw.pipelines.errors import InvalidPipelineOptionError, RecordError
from orochi_fdw.pipelines.mapping import ColumnInfo, Converter, parse_path
from orochi_fdw.pipelines.records import LineFramer


def test_paths():
    assert parse_path("$.a.b[0]['c d']") == ("a", "b", 0, "c d")
    assert parse_path('a["x\\"y"]') == ("a", 'x"y')
    assert parse_path("$[2].k") == (2, "k")
    for bad in ("$.", "$..a", "$.a[", "$[x]", ""):
        with pytest.raises(InvalidPipelineOptionError):
            parse_path(bad)


class _Trickle(io.RawIOBase):
    """A stream that returns at most ``step`` bytes a read (records cut anywhere)."""

    def __init__(self, data: bytes, step: int):
        self.data, self.step, self.pos = data, step, 0

    def read(self, n: int = -1) -> bytes:
        chunk = self.data[self.pos:self.pos + min(self.step, n if n >= 0 else self.step)]
        self.pos += len(chunk)
        return chunk


_field = st.text(alphabet=st.sampled_from('ab,"\n x'), max_size=8)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(_field, min_size=1, max_size=4), min_size=1, max_size=12),
       step=st.integers(1, 40), start=st.integers(0, 1000))
def test_framer_cuts_csv_records_at_unquoted_line_breaks(rows, step, start):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    for row in rows:
        writer.writerow(row)
    data = out.getvalue().encode()
    framer = LineFramer(_Trickle(data, step), start, limit=1 << 20, quote=b'"')
    got, position = [], start
    while (item := framer.next(final=True)) is not None:
        begin, end, record, oversize = item
        assert begin == position and not oversize
        position = end
        got.append(next(csv.reader([record.decode()])) if record else [""])
    assert position == start + len(data)
    expected = [row if row != [""] else [""] for row in rows]
    assert got == expected


def test_framer_keeps_partial_lines_until_complete_and_skips_oversize():
    framer = LineFramer(io.BytesIO(b"one\n" + b"x" * 50 + b"\ntwo\nthr"), 100, limit=10)
    assert framer.next(final=False) == (100, 104, b"one", False)
    begin, end, data, oversize = framer.next(final=False)
    assert (begin, end, data, oversize) == (104, 155, b"x" * 10, True)
    assert framer.next(final=False) == (155, 159, b"two", False)
    assert framer.next(final=False) is None  # "thr" waits for its line break
    assert framer.position == 159
    assert framer.next(final=True) == (159, 162, b"thr", False)


def _pg_cast(db, text: str, sql_type: str):
    try:
        with db.transaction():
            return True, db.execute(f"SELECT %s::text::{sql_type}", [text]).fetchone()[0]
    except psycopg.errors.DataError:
        return False, None


def _ours(typname: str, sql_type: str, text: str):
    conv = Converter(ColumnInfo("c", typname, -1, sql_type))
    try:
        return True, conv.convert(text)
    except RecordError:
        return False, None


@pytest.mark.parametrize("typname,sql_type,strategy", [
    ("int4", "integer", st.one_of(st.integers(-2 ** 33, 2 ** 33).map(str),
                                  st.text(alphabet="0123456789-+ .e", max_size=6))),
    ("int8", "bigint", st.integers(-2 ** 64, 2 ** 64).map(str)),
    ("bool", "boolean", st.sampled_from(["t", "true", "TRUE", " yes ", "no", "of", "off", "on", "o", "1", "0",
                                         "2", "tr", "fal", "ye", "n", "maybe", ""])),
    ("float8", "double precision", st.one_of(st.floats(allow_nan=False).map(repr),
                                             st.sampled_from(["NaN", "Infinity", "-inf", "1e400", "abc", " 1.5"]))),
])
def test_converters_agree_with_postgres(db, typname, sql_type, strategy):
    @settings(max_examples=150, deadline=None)
    @given(text=strategy)
    def check(text):
        ok, value = _ours(typname, sql_type, text)
        pg_ok, pg_value = _pg_cast(db, text, sql_type)
        if ok:
            assert pg_ok, f"{text!r}: accepted here, refused by PostgreSQL"
            assert value == pg_value or (value != value and pg_value != pg_value), text
        else:
            assert not pg_ok, f"{text!r}: refused here, accepted by PostgreSQL as {pg_value!r}"
    check()


def test_timestamps_agree_with_postgres(db):
    conv = Converter(ColumnInfo("c", "timestamptz", -1, "timestamp with time zone"))
    for text in ("2024-01-02T03:04:05Z", "2024-01-02 03:04:05.123456+05:30", "2024-01-02T03:04:05",
                 "2024-01-02", "1999-12-31T23:59:59.5-08:00"):
        ok, pg_value = _pg_cast(db, text, "timestamptz")
        assert ok and conv.convert(text) == pg_value, text
    db.execute("SET TimeZone = 'UTC'")
    epoch = Converter(ColumnInfo("c", "timestamptz", -1, "timestamptz"), epoch_unit="ms")
    assert epoch.convert(1704067200123) == db.execute("SELECT to_timestamp(1704067200.123)").fetchone()[0]
