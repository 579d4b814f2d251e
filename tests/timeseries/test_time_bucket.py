"""orochi.time_bucket against a plain Python reference of TimescaleDB's
semantics, and the planner inlining it."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DEFAULT_ORIGIN = dt.datetime(2000, 1, 3)
MONTH_ORIGIN = dt.datetime(2000, 1, 1)
US = dt.timedelta(microseconds=1)


def ref_bucket(width: dt.timedelta | int, ts: dt.datetime, origin: dt.datetime | None = None) -> dt.datetime:
    """TimescaleDB's time_bucket for widths in microseconds or whole months
    (buckets of months start on the first of a month, counted from the month
    of the origin's date)."""
    if isinstance(width, int):  # months
        origin = origin or MONTH_ORIGIN
        index = ts.year * 12 + ts.month - 1
        o_index = origin.year * 12 + origin.month - 1
        start = (index - o_index) // width * width + o_index
        return dt.datetime(start // 12, start % 12 + 1, 1)
    origin = origin or DEFAULT_ORIGIN
    w = width // US
    d = (ts - origin) // US
    return origin + ((d // w) * w) * US


def _interval(width: dt.timedelta | int) -> str:
    if isinstance(width, int):
        return f"{width} months"
    return f"{width.days} days {width.seconds} seconds {width.microseconds} microseconds"


timestamps = st.datetimes(min_value=dt.datetime(1, 3, 1), max_value=dt.datetime(9998, 12, 1))
widths = st.one_of(
    st.sampled_from([dt.timedelta(minutes=1), dt.timedelta(minutes=5), dt.timedelta(hours=1),
                     dt.timedelta(hours=7), dt.timedelta(days=1), dt.timedelta(days=7),
                     dt.timedelta(seconds=90), dt.timedelta(microseconds=1500)]),
    st.timedeltas(min_value=dt.timedelta(microseconds=1), max_value=dt.timedelta(days=400)),
    st.integers(min_value=1, max_value=36),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ts=timestamps, width=widths, with_origin=st.booleans(),
       origin=st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 1, 1)))
def test_matches_reference(db, ts, width, with_origin, origin):
    if with_origin:
        got = db.execute("SELECT orochi.time_bucket(%s::interval, %s::timestamp, %s::timestamp)",
                         [_interval(width), ts, origin]).fetchone()[0]
        assert got == ref_bucket(width, ts, origin), (width, ts, origin)
    else:
        got = db.execute("SELECT orochi.time_bucket(%s::interval, %s::timestamp)",
                         [_interval(width), ts]).fetchone()[0]
        assert got == ref_bucket(width, ts), (width, ts)


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_timestamptz_is_bucketed_in_utc(db, tz):
    db.execute(f"SET timezone = '{tz}'")
    rows = db.execute(
        "SELECT orochi.time_bucket('1 day', t)::text, orochi.time_bucket('1 month', t)::text, "
        "orochi.time_bucket('1 hour', t, interval '15 minutes')::text "
        "FROM (VALUES ('2024-03-10 06:30:00+00'::timestamptz)) v(t)").fetchone()
    expect = db.execute(
        "SELECT '2024-03-10 00:00+00'::timestamptz::text, '2024-03-01 00:00+00'::timestamptz::text, "
        "'2024-03-10 06:15+00'::timestamptz::text").fetchone()
    assert rows == expect


def test_known_values(db):
    cases = {
        "orochi.time_bucket('1 week', '2024-01-10 13:00'::timestamp)": "2024-01-08 00:00:00",
        "orochi.time_bucket('5 minutes', '2020-01-01 12:03:00'::timestamp)": "2020-01-01 12:00:00",
        "orochi.time_bucket('1 month', '2024-02-15'::date)": "2024-02-01",
        "orochi.time_bucket('3 months', '2024-05-15'::date)": "2024-04-01",
        "orochi.time_bucket('1 year', '2024-05-15'::date)": "2024-01-01",
        "orochi.time_bucket('7 hours', '2000-01-01 00:00'::timestamp)": "1999-12-31 23:00:00",
        "orochi.time_bucket('1 day', 'infinity'::timestamptz)": "infinity",
        "orochi.time_bucket('1 day', '-infinity'::date)": "-infinity",
        "orochi.time_bucket('1 year', '0001-03-01 BC'::timestamp)": "0001-01-01 00:00:00 BC",
        "orochi.time_bucket('1 month', '0001-02-01 BC'::timestamp, '0001-01-15'::timestamp)": "0001-02-01 00:00:00 BC",
        "orochi.time_bucket('1 hour', '2024-01-01 10:40'::timestamp, interval '30 minutes')": "2024-01-01 10:30:00",
        "orochi.time_bucket('1 day', '2024-01-01'::date, '2023-12-31'::date)": "2024-01-01",
        "orochi.time_bucket(10, 27)": "20",
        "orochi.time_bucket(10, -3)": "-10",
        "orochi.time_bucket(10::bigint, 27::bigint, 5::bigint)": "25",
        "orochi.time_bucket(3::smallint, (-1)::smallint)": "-3",
    }
    for expr, expected in cases.items():
        assert db.execute(f"SELECT ({expr})::text").fetchone()[0] == expected, expr


@pytest.mark.parametrize("width,message", [
    ("'1 month 2 days'", "month intervals cannot have day or time component"),
    ("'-1 hour'", "bucket width must be greater than zero"),
    ("'0'", "bucket width must be greater than zero"),
    ("0", "bucket width must be greater than zero"),
])
def test_bad_widths(db, width, message):
    arg = "42" if width == "0" else "now()"
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        db.execute(f"SELECT orochi.time_bucket({width}, {arg})")
    # also when the width is a column, not a constant
    db.execute("CREATE TEMP TABLE w (w text)")
    db.execute("INSERT INTO w VALUES (%s)", [width.strip("'")])
    cast = "::int" if width == "0" else "::interval"
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        db.execute(f"SELECT orochi.time_bucket(w{cast}, {arg}) FROM w")


def test_inlined_into_the_query(db):
    db.execute("CREATE TABLE m (ts timestamptz)")
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN VERBOSE SELECT orochi.time_bucket('1 hour', ts) FROM m").fetchall())
    assert "time_bucket" not in plan, plan  # expanded into its expression: no function call per row


def test_null_gives_null(db):
    assert db.execute("SELECT orochi.time_bucket(NULL::interval, now()), orochi.time_bucket('1 hour', NULL::timestamp), "
                      "orochi.time_bucket('1 month', NULL::date), orochi.time_bucket(5, NULL::int)").fetchone() == (
        None, None, None, None)
