"""The parts that need no server: the message payload, pgoutput's messages,
the text forms parsed and printed (against Python's own calendar and
arithmetic), the options and the file sink's recovery of a cut line."""

from __future__ import annotations

import datetime
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orochi_fdw.bridge.batch import Column, WireKind
from orochi_fdw.cdc import capture, payload, pgoutput, values
from orochi_fdw.cdc.errors import InvalidCdcOptionError
from orochi_fdw.cdc.events import Event, RenderContext
from orochi_fdw.cdc.options import check_options, parse_bytes
from orochi_fdw.cdc.sinks.files import FileSink, line_id
from orochi_fdw.errors import CorruptDataError

EPOCH = datetime.datetime(1970, 1, 1)

_KINDS = {
    WireKind.INT64: st.integers(-2**63, 2**63 - 1),
    WireKind.FLOAT64: st.floats(allow_nan=False),
    WireKind.BOOL: st.booleans(),
    WireKind.TEXT: st.text(),
    WireKind.BYTEA: st.binary(),
    WireKind.DATE: st.dates().map(lambda d: d),
}


@settings(max_examples=60, deadline=None)
@given(st.data(), st.integers(0, 300), st.lists(st.sampled_from(list(_KINDS)), min_size=1, max_size=5),
       st.sampled_from(["c", "d", "u"]))
def test_payload_round_trip(data, nrows, kinds, op):
    metas = [payload.ColumnMeta(f"c{i}", 0, -1, k) for i, k in enumerate(kinds)]

    def section():
        cols = {}
        for m in metas:
            vals = data.draw(st.lists(st.none() | _KINDS[m.kind], min_size=nrows, max_size=nrows))
            cols[m.name] = Column.from_pylist(m.kind, vals)
        return cols

    before = section() if op in ("d", "u") else None
    after = section() if op in ("c", "u") else None
    raw = payload.encode(op, 42, "s", "t", metas, nrows, before, after)
    change = payload.decode(raw)
    assert (change.op, change.relid, change.schema, change.table, change.rows) == (op, 42, "s", "t", nrows)
    for mine, theirs in ((before, change.before), (after, change.after)):
        if mine is None:
            assert theirs is None
            continue
        for name in mine:
            assert theirs[name].to_pylist() == mine[name].to_pylist()


def test_payload_refuses_garbage():
    with pytest.raises(CorruptDataError):
        payload.decode(b"nope")
    good = payload.encode("c", 1, "s", "t", [payload.ColumnMeta("a", 23, -1, WireKind.INT32)], 2,
                          after={"a": Column.from_pylist(WireKind.INT32, [1, 2])})
    with pytest.raises(CorruptDataError):
        payload.decode(good[:-3])


def test_signatures():
    key = b"k" * 32
    signed = capture.sign(key, b"content")
    assert bytes(capture.verify(key, signed)) == b"content"
    assert capture.verify(b"x" * 32, signed) is None
    assert capture.verify(key, signed[:-1] + b"X") is None
    assert capture.verify(key, b"short") is None


def test_pgoutput_messages():
    def s(text):
        return text.encode() + b"\0"

    rel = b"R" + struct.pack(">I", 77) + s("public") + s("t") + b"d" + struct.pack(">h", 2) + \
        b"\x01" + s("id") + struct.pack(">Ii", 23, -1) + b"\x00" + s("v") + struct.pack(">Ii", 25, -1)
    parsed = pgoutput.parse(rel)
    assert (parsed.relid, parsed.schema, parsed.table, [(c.name, c.key) for c in parsed.columns]) == \
        (77, "public", "t", [("id", True), ("v", False)])
    tup = struct.pack(">h", 3) + b"t" + struct.pack(">i", 1) + b"7" + b"n" + b"u"
    upd = pgoutput.parse(b"U" + struct.pack(">I", 77) + b"K" + tup + b"N" + tup)
    assert upd.old_kind == "K" and upd.new == ["7", None, pgoutput.UNCHANGED]
    msg = pgoutput.parse(b"M\x01" + struct.pack(">Q", 99) + s("orochi.cdc") + struct.pack(">i", 3) + b"abc")
    assert (msg.transactional, msg.lsn, msg.prefix, bytes(msg.content)) == (True, 99, "orochi.cdc", b"abc")
    with pytest.raises(CorruptDataError):
        pgoutput.parse(b"Z")
    with pytest.raises(CorruptDataError):
        pgoutput.parse(b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 1) + b"t" + struct.pack(">i", 9))


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 12, 31)))
def test_dates_and_timestamps_against_pythons_calendar(dt):
    us = (dt - EPOCH) // datetime.timedelta(microseconds=1)
    text = dt.isoformat(sep=" ")
    assert values.parse_timestamp(text) == us
    expected = dt.isoformat()
    if dt.microsecond:
        expected = expected.rstrip("0")
    assert values.format_timestamp(us) == expected
    assert values.parse_timestamp(text + "+02:30") == us - 9_000_000_000
    d = dt.date()
    assert values.parse_date(d.isoformat()) == (d - EPOCH.date()).days
    assert values.format_date((d - EPOCH.date()).days) == d.isoformat()


@settings(max_examples=300, deadline=None)
@given(st.integers(-3_000_000, 3_000_000))
def test_days_round_trip_also_before_christ(days):
    text = values.format_date(days)
    assert values.parse_date(text) == days


@settings(max_examples=300, deadline=None)
@given(st.integers(-10**6, 10**6), st.integers(-10**6, 10**6), st.integers(-10**15, 10**15))
def test_intervals_round_trip(months, days, us):
    assert values.parse_interval(values.format_iso_interval(months, days, us)) == (months, days, us)


def test_interval_styles():
    assert values.parse_interval("1 year 2 mons 3 days 04:05:06.5") == (14, 3, 14_706_500_000)
    assert values.parse_interval("-1 days +02:03:00") == (0, -1, 7_380_000_000)
    assert values.parse_interval("@ 1 hour 30 mins ago") == (0, 0, -5_400_000_000)
    assert values.parse_interval("3 mons 4 days 5 microseconds") == (3, 4, 5)
    assert values.parse_interval("PT0S") == (0, 0, 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.none() | st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")),
                max_size=6))
def test_array_literals(items):
    literal = capture.pg_text(items)
    assert values.parse_array(literal) == items


def test_nested_and_decorated_arrays():
    assert values.parse_array("{{1,2},{NULL,4}}") == [["1", "2"], [None, "4"]]
    assert values.parse_array("[0:1]={a,b}") == ["a", "b"]
    assert values.parse_array('{"NULL",NULL}') == ["NULL", None]


def test_converter_formats():
    debezium = values.Converter(values.TypeInfo(values.TIMESTAMPTZ), "debezium")
    assert debezium.from_text("2024-03-01 10:00:00.5+00") == "2024-03-01T10:00:00.5Z"
    assert debezium.from_text("infinity") == "infinity"
    plain_ts = values.Converter(values.TypeInfo(values.TIMESTAMP, 3), "debezium")
    assert plain_ts.from_text("1970-01-01 00:00:01.234") == 1234
    col = Column(WireKind.TIMESTAMP, np.array([0, 2**63 - 1], dtype="<i8"))
    assert plain_ts.from_wire(col) == [946_684_800_000, values.JDBC_INFINITY]
    numeric = values.Converter(values.TypeInfo(values.NUMERIC, ((12 << 16) | 3) + 4), "debezium")
    assert numeric.from_text("-1.5") == "+iQ="  # -1500 as two's complement: 0xFA24
    assert values.Converter(values.TypeInfo(values.NUMERIC), "json").from_text("0.0000001") == "0.0000001"
    assert values.Converter(values.TypeInfo(values.JSON), "json").from_text('{"a": [1]}') == {"a": [1]}
    unknown = values.Converter(values.TypeInfo(values.DATE), "json")
    assert unknown.from_text("not a date") == "not a date"  # a form not foreseen stays text


def test_options():
    checked = check_options("file", "json", {"directory": "/tmp", "max_lag": "2GB"})
    assert checked.max_lag_bytes == 2 << 30 and checked["batch_size"] == 1000
    assert check_options("file", "json", {"directory": "/tmp", "max_lag": -1}).max_lag_bytes is None
    assert parse_bytes("512 kB") == 512 << 10
    with pytest.raises(InvalidCdcOptionError, match='option "retry_min_delay" must not exceed'):
        check_options("webhook", "json", {"url": "http://x", "retry_min_delay": 5, "retry_max_delay": 1})
    with pytest.raises(InvalidCdcOptionError, match="topic_prefix"):
        check_options("kafka", "json", {"bootstrap_servers": "x:1", "topic_prefix": "no spaces"})


def _event(lsn, index, table="t"):
    return Event(lsn, index, "c", "public", table, {"id": index}, None, {"id": index}, 5, 0)


def test_file_sink_cuts_a_partial_line_and_skips_what_it_has(tmp_path):
    options = check_options("file", "json", {"directory": str(tmp_path), "max_file_bytes": 400})
    ctx = RenderContext("json", "s", "db")
    sink = FileSink("s", options, ctx)
    assert sink.deliver([_event(10, i) for i in range(5)]).delivered == 5
    sink.close()
    path = tmp_path / "s.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"id": "10:5", "lsn"')  # a crash in the middle of a line
    sink = FileSink("s", options, ctx)
    result = sink.deliver([_event(10, i) for i in range(3, 8)])
    assert (result.skipped, result.delivered) == (2, 3)
    sink.close()
    lines = []
    for name in sorted(os.listdir(tmp_path), key=lambda n: (n.count("."), n)):
        with open(tmp_path / name, "rb") as f:
            lines += [line_id(line) for line in f]
    assert sorted(lines) == [(10, i) for i in range(8)]
    assert len(os.listdir(tmp_path)) > 1  # rotated by size
    assert all(os.path.getsize(tmp_path / n) <= 400 for n in os.listdir(tmp_path))


def test_line_ids_of_both_formats():
    debezium = {"source": {"lsn": 7}, "transaction": {"total_order": 3}}
    assert line_id(json.dumps(debezium).encode()) == (7, 2)
    assert line_id(b'{"lsn": 8, "index": 0}') == (8, 0)
    assert line_id(b"[]") is None and line_id(b"{") is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-2**62, 2**62) | st.sampled_from([0, 2**63 - 1, -2**63, -63082281600000000]),
                min_size=1, max_size=20),
       st.sampled_from([(values.TIMESTAMPTZ, -1), (values.TIMESTAMP, -1), (values.TIMESTAMP, 3)]),
       st.sampled_from(["debezium", "json"]))
def test_wire_timestamps_vectorized_as_one_by_one(raw, kind_typmod, fmt):
    conv = values.Converter(values.TypeInfo(*kind_typmod), fmt)
    col = Column(WireKind.TIMESTAMP, np.array(raw, dtype="<i8"))
    expected = []
    for v in raw:
        if v in (2**63 - 1, -2**63):
            expected.append(conv.out(values.Infinity(1 if v > 0 else -1)))
        else:
            expected.append(conv.out(v + values.PG_EPOCH_US))
    assert conv.from_wire(col) == expected
