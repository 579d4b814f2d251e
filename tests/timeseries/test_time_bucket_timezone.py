"""TimescaleDB's time_bucket forms beyond the plain ones: a time zone argument
(with origin and offset, by position or by name), month buckets with an
origin, and the widths and offsets dates refuse. Expected values come from a
Python transcription of TimescaleDB's semantics (time_bucket_reference), from
date_bin where the two agree, and from heap tables for aggregates."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import time_bucket_reference as ref

UTC = dt.timezone.utc
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe",
         "America/Sao_Paulo", "Pacific/Apia", "Europe/Dublin", "America/St_Johns", "Asia/Kathmandu"]

instants = st.datetimes(min_value=dt.datetime(1901, 1, 1), max_value=dt.datetime(2099, 12, 1)).map(
    lambda d: d.replace(tzinfo=UTC))
# widths around daylight saving changes are the interesting ones: minutes to weeks, and months
time_widths = st.one_of(
    st.sampled_from([(0, 0, 60_000_000 * m) for m in (1, 15, 30, 45, 60, 90, 120, 180, 360, 720)]),
    st.integers(1, 10_000_000_000).map(lambda us: (0, 0, us)),
    st.tuples(st.just(0), st.integers(1, 14), st.sampled_from([0, 3_600_000_000])),
)
month_widths = st.integers(1, 30).map(lambda m: (m, 0, 0))
widths = st.one_of(time_widths, month_widths)
offsets = st.one_of(
    st.integers(-86_400_000_000, 86_400_000_000).map(lambda us: (0, 0, us)),
    st.tuples(st.just(0), st.integers(-3, 3), st.just(0)),
    st.tuples(st.integers(-2, 2), st.just(0), st.just(0)),
)


def _interval(width) -> str:
    return ref.interval_sql(*width)


def _bucket_sql(db, cases: list[tuple], session_zone: str) -> list[dt.datetime]:
    """orochi.time_bucket(width, ts, zone, origin, offset) for each case, in one query."""
    db.execute(f"SET TimeZone = '{session_zone}'")
    rows = db.execute(
        "SELECT orochi.time_bucket(w::interval, ts, z, o, off::interval)"
        "  FROM unnest(%s::text[], %s::timestamptz[], %s::text[], %s::timestamptz[], %s::text[])"
        "       WITH ORDINALITY AS u(w, ts, z, o, off, n) ORDER BY n",
        ([_interval(c[0]) for c in cases], [c[1] for c in cases], [c[2] for c in cases],
         [c[3] for c in cases], [None if c[4] is None else _interval(c[4]) for c in cases])).fetchall()
    return [r[0] for r in rows]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases=st.lists(st.tuples(widths, instants, st.sampled_from(ZONES), st.none() | instants,
                                st.none() | offsets), min_size=1, max_size=25),
       session_zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]))
def test_time_zone_form_matches_timescaledb(db, cases, session_zone):
    got = _bucket_sql(db, cases, session_zone)
    for case, value in zip(cases, got):
        width, ts, zone, origin, offset = case
        want = ref.bucket_in_zone(width, ts, zone, origin, offset, session_zone)
        assert value == want, case


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
def test_every_time_lies_in_its_bucket_around_daylight_saving(db, zone):
    """Minute by minute through a whole year's changes: each bucket starts at
    or before its time, TimescaleDB's rule."""
    widths = ["1 hour", "2 hours", "15 minutes", "1 day", "1 month"]
    checks = ", ".join(f"count(*) FILTER (WHERE orochi.time_bucket('{w}', ts, %(zone)s) > ts)" for w in widths)
    row = db.execute(
        f"SELECT count(*), {checks} FROM generate_series("
        " timestamptz '2021-03-01 00:00+00', timestamptz '2021-12-31 00:00+00', interval '7 minutes') ts",
        {"zone": zone}).fetchone()
    assert row[0] > 60_000 and row[1:] == (0,) * len(widths)


def test_known_values(db):
    db.execute("SET TimeZone = 'UTC'")
    cases = {
        # a repeated hour in Berlin (2021-10-31 02:00-03:00 happens twice)
        "orochi.time_bucket('1 hour', timestamptz '2021-10-31 00:30+00', 'Europe/Berlin')": "2021-10-31 00:00:00+00",
        "orochi.time_bucket('1 hour', timestamptz '2021-10-31 01:30+00', 'Europe/Berlin')": "2021-10-31 01:00:00+00",
        "orochi.time_bucket('1 day', timestamptz '2021-10-31 12:00+00', 'Europe/Berlin')": "2021-10-30 22:00:00+00",
        "orochi.time_bucket('1 day', timestamptz '2021-11-01 12:00+00', 'Europe/Berlin')": "2021-10-31 23:00:00+00",
        "orochi.time_bucket('1 month', timestamptz '2021-11-15 00:00+00', 'America/New_York')":
            "2021-11-01 04:00:00+00",
        # days from the origin's wall clock time (02:00 in Berlin)
        "orochi.time_bucket('1 day', timestamptz '2020-02-03', 'Europe/Berlin', '2020-04-01', NULL)":
            "2020-02-02 01:00:00+00",
        "orochi.time_bucket('1 day', timestamptz '2020-02-03 12:00+00', 'Europe/Berlin', \"offset\" => '2 hours')":
            "2020-02-03 01:00:00+00",
        "orochi.time_bucket('1 day', timestamptz '2020-02-03 12:00+00', timezone => 'Asia/Kolkata')":
            "2020-02-02 18:30:00+00",
        "orochi.time_bucket(bucket_width => '1 week', ts => timestamptz '2024-01-10 12:00+00',"
        " timezone => 'America/New_York', origin => timestamptz '2024-01-01 00:00-05')": "2024-01-08 05:00:00+00",
        "orochi.time_bucket('1 day', timestamptz 'infinity', 'Europe/Berlin')": "infinity",
        "orochi.time_bucket('1 day', timestamptz '-infinity', 'Europe/Berlin', \"offset\" => '1 day')": "-infinity",
    }
    for expr, expected in cases.items():
        assert db.execute(f"SELECT ({expr})::text").fetchone()[0] == expected, expr


def test_null_arguments(db):
    row = db.execute(
        "SELECT orochi.time_bucket(NULL::interval, now(), 'Europe/Berlin'),"
        " orochi.time_bucket('1 day', NULL::timestamptz, 'Europe/Berlin'),"
        " orochi.time_bucket('1 day', now(), NULL::text),"
        " orochi.time_bucket('1 day', timestamptz '2020-02-03 12:00+00', 'UTC', NULL, NULL),"
        " orochi.time_bucket('1 day', timestamptz '2020-02-03 12:00+00', 'UTC', origin => NULL::timestamptz),"
        " orochi.time_bucket('1 day', timestamptz '2020-02-03 12:00+00', 'UTC', \"offset\" => NULL::interval)"
    ).fetchone()
    day = dt.datetime(2020, 2, 3, tzinfo=UTC)
    assert row == (None, None, None, day, day, day)


def test_null_origin_or_offset_of_the_plain_forms_give_null(db):
    """The forms without a time zone are strict, as TimescaleDB's, infinite
    times included."""
    calls = ["orochi.time_bucket('1 day', timestamptz 'infinity', NULL::timestamptz)",
             "orochi.time_bucket('1 month', timestamptz 'infinity', NULL::timestamptz)",
             "orochi.time_bucket('1 month', timestamp '2024-01-05', NULL::timestamp)",
             "orochi.time_bucket('1 day', timestamptz 'infinity', NULL::interval)",
             "orochi.time_bucket('1 day', timestamp 'infinity', NULL::interval)",
             "orochi.time_bucket('1 day', date 'infinity', NULL::interval)",
             "orochi.time_bucket('1 month', date 'infinity', NULL::date)"]
    assert db.execute(f"SELECT {', '.join(calls)}").fetchone() == (None,) * len(calls)


def test_unknown_time_zone(db):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match='time zone "Mars/Olympus" not recognized'):
        db.execute("SELECT orochi.time_bucket('1 day', now(), 'Mars/Olympus')")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(instants, min_size=1, max_size=30), width=time_widths,
       hours=st.integers(-12, 14))
def test_fixed_offset_zones_equal_date_bin(db, values, width, hours):
    """In a zone with one fixed offset the time zone form is date_bin on that
    zone's clock, and in UTC it is the form without a time zone."""
    zone = "UTC" if hours == 0 else f"Etc/GMT{-hours:+d}"
    rows = db.execute(
        "SELECT orochi.time_bucket(%s::interval, ts, %s),"
        "       timezone(%s, date_bin(%s::interval, timezone(%s, ts), timestamp '2000-01-03')),"
        "       orochi.time_bucket(%s::interval, ts, 'UTC'), orochi.time_bucket(%s::interval, ts)"
        "  FROM unnest(%s::timestamptz[]) ts",
        (_interval(width), zone, zone, _interval(width), zone, _interval(width), _interval(width), values)).fetchall()
    for in_zone, binned, in_utc, plain in rows:
        assert in_zone == binned and in_utc == plain


# ------------------------------------------------------------- month origins


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(instants, min_size=1, max_size=20), months=st.integers(1, 30), origin=instants,
       session_zone=st.sampled_from(["UTC", "Asia/Tokyo", "America/Los_Angeles"]))
def test_month_buckets_count_from_the_origins_month(db, values, months, origin, session_zone):
    db.execute(f"SET TimeZone = '{session_zone}'")
    width = (months, 0, 0)
    rows = db.execute(
        "SELECT orochi.time_bucket(%s::interval, ts, %s::timestamptz),"
        "       orochi.time_bucket(%s::interval, (ts AT TIME ZONE 'UTC')::date, (%s::timestamptz AT TIME ZONE 'UTC')::date),"
        "       orochi.time_bucket(%s::interval, ts AT TIME ZONE 'UTC', %s::timestamptz AT TIME ZONE 'UTC')"
        "  FROM unnest(%s::timestamptz[]) ts",
        (_interval(width), origin, _interval(width), origin, _interval(width), origin, values)).fetchall()
    for ts, (tstz, date, plain) in zip(values, rows):
        want = ref.bucket_tstz(width, ts, origin)
        assert tstz == want
        assert date == want.date() and plain == want.replace(tzinfo=None)
        assert want.day == 1 and want.time() == dt.time(0)


def test_month_origin_known_values(db):
    db.execute("SET TimeZone = 'UTC'")
    cases = {
        # the origin's day and time do not count: buckets start on the first of a month
        "orochi.time_bucket('1 month', timestamptz '2024-03-20 10:00+00', timestamptz '2000-01-15 12:00+00')":
            "2024-03-01 00:00:00+00",
        "orochi.time_bucket('3 months', timestamptz '2024-03-20 10:00+00', timestamptz '2000-02-29 23:00+00')":
            "2024-02-01 00:00:00+00",
        "orochi.time_bucket('1 month', '0001-02-01 BC'::timestamp, '0001-01-15'::timestamp)": "0001-02-01 00:00:00 BC",
        "orochi.time_bucket('2 months', date '1990-01-03', date '2000-02-01')": "1989-12-01",
        "orochi.time_bucket('1 year', date '2024-05-15', date '2001-07-04')": "2023-07-01",
    }
    for expr, expected in cases.items():
        assert db.execute(f"SELECT ({expr})::text").fetchone()[0] == expected, expr


# ------------------------------------------------------------------- dates


@pytest.mark.parametrize("call,message", [
    ("orochi.time_bucket('1 hour', date '2012-01-01')", "interval must not have sub-day precision"),
    ("orochi.time_bucket('25 hours', date '2012-01-01')", "interval must be a multiple of a day"),
    ("orochi.time_bucket('1 day 1 second', date '2012-01-01', date '2000-01-01')", "interval must be a multiple of a day"),
    ("orochi.time_bucket('0 days', date '2012-01-01')", "interval must not have sub-day precision"),
    ("orochi.time_bucket('1 day', date '2012-01-01', interval '1 hour')", "interval must not have sub-day precision"),
    ("orochi.time_bucket('1 week', date '2012-01-01', interval '30 minutes')",
     "interval must not have sub-day precision"),
    ("orochi.time_bucket('1 week', date '2012-01-01', interval '-1 day -1 hour')",
     "interval must be a multiple of a day"),
    ("orochi.time_bucket('1 week', date '2012-01-01', interval '1 month')",
     "interval defined in terms of month, year, century etc. not supported"),
    ("orochi.time_bucket('1 day', date 'infinity', interval '1 hour')", "interval must not have sub-day precision"),
])
def test_dates_refuse_sub_day_widths_and_offsets(db, call, message):
    with pytest.raises(psycopg.errors.FeatureNotSupported, match=message):
        db.execute(f"SELECT {call}")


def test_date_checks_apply_to_values_from_rows(db):
    db.execute("CREATE TEMP TABLE a (w interval, d date, off interval)")
    db.execute("INSERT INTO a VALUES ('1 day', '2012-01-05', '2 days')")
    assert db.execute("SELECT orochi.time_bucket(w, d, off)::text FROM a").fetchone() == ("2012-01-05",)
    db.execute("UPDATE a SET w = '6 hours'")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="sub-day precision"):
        db.execute("SELECT orochi.time_bucket(w, d) FROM a")
    db.execute("UPDATE a SET w = '1 day', off = '36 hours'")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="multiple of a day"):
        db.execute("SELECT orochi.time_bucket(w, d, off) FROM a")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(days=st.lists(st.integers(-700_000, 2_900_000), min_size=1, max_size=30), width=st.integers(1, 60),
       offset=st.integers(-40, 40), origin=st.integers(-10_000, 10_000))
def test_dates_with_whole_days(db, days, width, offset, origin):
    base = dt.date(2000, 1, 1)
    values = [base + dt.timedelta(d) for d in days]
    origin_date = base + dt.timedelta(origin)
    rows = db.execute(
        "SELECT orochi.time_bucket(make_interval(days => %s), d), orochi.time_bucket(make_interval(days => %s), d,"
        " make_interval(days => %s)), orochi.time_bucket(make_interval(days => %s), d, %s::date)"
        "  FROM unnest(%s::date[]) d", (width, width, offset, width, origin_date, values)).fetchall()
    w = (0, width, 0)
    for d, (plain, shifted, from_origin) in zip(values, rows):
        midnight = dt.datetime.combine(d, dt.time())
        assert plain == ref.bucket(w, midnight).date()
        assert shifted == (ref.bucket(w, midnight - dt.timedelta(offset)) + dt.timedelta(offset)).date()
        assert from_origin == ref.bucket(w, midnight, dt.datetime.combine(origin_date, dt.time())).date()


# ------------------------------------------------------ queries and pushdown


def test_group_by_time_zone_buckets_equals_heap(db):
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi OPTIONS (delta_row_limit '10')")
    db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '3 days')")
    db.execute("CREATE TABLE h (ts timestamptz, v int)")
    for t in ("m", "h"):
        db.execute(f"INSERT INTO {t} SELECT timestamptz '2021-10-25 00:00+00' + i * interval '13 minutes', i"
                   f" FROM generate_series(0, 2000) i")
    for call in ("orochi.time_bucket('1 day', ts, 'Europe/Berlin')",
                 "orochi.time_bucket('1 hour', ts, 'Europe/Berlin', \"offset\" => '30 minutes')",
                 "orochi.time_bucket('1 day', ts, timezone => 'America/New_York', origin => '2021-10-01 06:00+00')",
                 "orochi.time_bucket('1 month', ts, 'Asia/Kolkata')"):
        q = f"SELECT {call} AS b, count(*), sum(v) FROM {{}} WHERE ts < '2021-11-05' GROUP BY b ORDER BY b"
        assert db.execute(q.format("m")).fetchall() == db.execute(q.format("h")).fetchall(), call


def test_pushdown_kept_for_the_forms_it_handles(db):
    """The forms pushed down before still are (and give heap's answer); the
    time zone form runs as an ordinary aggregate over the scan."""
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi OPTIONS (delta_row_limit '0')")
    db.execute("CREATE TABLE h (ts timestamptz, v int)")
    for t in ("m", "h"):
        db.execute(f"INSERT INTO {t} SELECT timestamptz '2024-03-01 00:00+00' + i * interval '7 minutes', i"
                   f" FROM generate_series(0, 5000) i")
    pushed = ["orochi.time_bucket('1 hour', ts)", "orochi.time_bucket('1 day', ts, timestamptz '2024-01-01 06:00+00')",
              "date_bin('15 minutes', ts, timestamptz '2000-01-01')"]
    for call in pushed + ["orochi.time_bucket('1 hour', ts, 'Europe/Berlin')"]:
        q = f"SELECT {call} AS b, count(*), sum(v) FROM {{}} GROUP BY b ORDER BY b"
        plan = "\n".join(r[0] for r in db.execute("EXPLAIN (VERBOSE, COSTS OFF) " + q.format("m")).fetchall())
        assert ("Aggregates:" in plan) == (call in pushed), plan
        assert db.execute(q.format("m")).fetchall() == db.execute(q.format("h")).fetchall(), call


def test_time_zone_form_is_inlined(db):
    db.execute("CREATE TABLE t (ts timestamptz)")
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN VERBOSE SELECT orochi.time_bucket('1 hour', ts, 'Europe/Berlin') FROM t").fetchall())
    assert "orochi.time_bucket(" not in plan and "date_bin" in plan, plan
