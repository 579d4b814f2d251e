"""The query of a continuous aggregate read and rewritten with pglast, without
a server: shapes accepted and refused, the bucket found, the time range added."""

from __future__ import annotations

import pytest

from orochi_fdw.timeseries.continuous_query import ContinuousAggregateError, find_bucket, parse_query, with_time_range


def _bucket(sql: str, column: str = "ts"):
    return find_bucket(parse_query(sql), column)


@pytest.mark.parametrize("sql, position, name, width", [
    ("SELECT orochi.time_bucket('1 hour', ts) AS b, count(*) FROM m GROUP BY b", 0, "b", "'1 hour'"),
    ("SELECT d, time_bucket(interval '1 day', m.ts), sum(v) FROM m GROUP BY 1, 2", 1, None,
     "CAST('1 day' AS interval)"),
    ("SELECT time_bucket(10, x.ts), max(v) FROM public.m AS x GROUP BY time_bucket(10, x.ts)", 0, None, "10"),
    ("SELECT date_bin('15 minutes', ts, '2000-01-01'), avg(v) FROM m GROUP BY 1", 0, None, "'15 minutes'"),
    ("SELECT orochi.time_bucket('1 month', ts, \"offset\" => '1 day') AS b, count(*) FROM m GROUP BY 1",
     0, "b", "'1 month'"),
])
def test_bucket_found(sql, position, name, width):
    bucket = _bucket(sql)
    assert (bucket.position, bucket.output_name, bucket.width_sql) == (position, name, width)


def test_bucket_applied_to_another_argument():
    bucket = _bucket("SELECT orochi.time_bucket('1 month', m.ts, origin => '2000-01-15') FROM m GROUP BY 1")
    assert bucket.applied_to("$1") == "orochi.time_bucket('1 month', $1, origin => '2000-01-15')"


@pytest.mark.parametrize("sql, message", [
    ("SELECT 1", "exactly one hypertable"),
    ("SELECT time_bucket(1, ts), count(*) FROM a, b GROUP BY 1", "exactly one hypertable"),
    ("SELECT time_bucket(1, ts), count(*) FROM a JOIN b ON true GROUP BY 1", "exactly one hypertable"),
    ("SELECT time_bucket(1, ts), count(*) FROM (SELECT * FROM a) s GROUP BY 1", "exactly one hypertable"),
    ("SELECT time_bucket(1, ts), count(*) FROM ONLY a GROUP BY 1", "FROM ONLY"),
    ("WITH w AS (SELECT 1) SELECT time_bucket(1, ts), count(*) FROM a GROUP BY 1", "WITH"),
    ("SELECT time_bucket(1, ts), count(*) FROM a GROUP BY 1 ORDER BY 1", "ORDER BY"),
    ("SELECT time_bucket(1, ts), count(*) FROM a GROUP BY 1 OFFSET 2", "LIMIT and OFFSET"),
    ("SELECT DISTINCT ON (1) time_bucket(1, ts), count(*) FROM a GROUP BY 1", "DISTINCT"),
    ("SELECT time_bucket(1, ts), rank() OVER w FROM a GROUP BY 1 WINDOW w AS ()", "window"),
    ("SELECT time_bucket(1, ts), count(*) FROM a GROUP BY ROLLUP (1)", "GROUPING SETS"),
    ("SELECT time_bucket(1, ts), count(*) FROM a WHERE v = $1 GROUP BY 1", "parameters"),
    ("SELECT time_bucket(1, ts), (SELECT 1) FROM a GROUP BY 1", "subqueries"),
    ("SELECT time_bucket(1, ts), count(*) FROM a GROUP BY 1 FOR UPDATE", "FOR UPDATE"),
    ("SELECT a.*, time_bucket(1, ts) FROM a GROUP BY 2", r"\* in the select list"),
    ("SELECT time_bucket(1, ts) FROM a", "GROUP BY"),
    ("SELECT time_bucket(1, ts) FROM a GROUP BY 1; SELECT 2", "exactly one statement"),
    ("INSERT INTO a VALUES (1)", "SELECT statement"),
    ("VALUES (1)", "SELECT statement"),
])
def test_shapes_refused(sql, message):
    with pytest.raises(ContinuousAggregateError, match=message) as exc:
        _bucket(sql)
    assert exc.value.sqlstate == "0A000"


@pytest.mark.parametrize("sql, message", [
    ("SELECT time_bucket(1, other), count(*) FROM a GROUP BY 1", "no time_bucket"),
    ("SELECT time_bucket(1, b.ts), count(*) FROM a GROUP BY 1", "no time_bucket"),  # another relation's column
    ("SELECT public.time_bucket(1, ts), count(*) FROM a GROUP BY 1", "no time_bucket"),
    ("SELECT time_bucket(1, ts), time_bucket(2, ts), count(*) FROM a GROUP BY 1, 2", "more than one"),
    ("SELECT time_bucket(v, ts), count(*) FROM a GROUP BY 1, v", "constants"),
    ("SELECT time_bucket(1, ts), count(*) FROM a GROUP BY ts", "must be in GROUP BY"),
    ("SELECT time_bucket(1, ts) AS b, count(*) FROM a GROUP BY 2", "must be in GROUP BY"),
])
def test_bucket_refused(sql, message):
    with pytest.raises(ContinuousAggregateError, match=message):
        _bucket(sql)


def test_syntax_error():
    with pytest.raises(ContinuousAggregateError) as exc:
        parse_query("SELEC 1")
    assert exc.value.sqlstate == "42601"


def test_time_range_added_to_where():
    parsed = parse_query("SELECT time_bucket(10, x.ts), count(*) FROM m AS x WHERE v > 0 OR v < -5 GROUP BY 1")
    assert with_time_range(parsed, "ts", "$1", "$2") == (
        "SELECT time_bucket(10, x.ts), count(*) FROM m AS x WHERE ((v > 0 OR v < -5) AND ts >= $1) AND ts < $2"
        " GROUP BY 1")
    parsed = parse_query("SELECT time_bucket(10, \"Time\"), count(*) FROM m GROUP BY 1")
    assert with_time_range(parsed, "Time", None, "$1", relation_sql='s."M"') == (
        'SELECT time_bucket(10, "Time"), count(*) FROM s."M" AS m WHERE "Time" < $1 GROUP BY 1')
    assert with_time_range(parsed, "Time", None, None) == 'SELECT time_bucket(10, "Time"), count(*) FROM m GROUP BY 1'


def test_date_trunc_on_timestamp_only():
    sql = "SELECT date_trunc('Quarter', ts) AS q, count(*) FROM m GROUP BY 1"
    assert _bucket_typed(sql, "timestamp without time zone").width_sql == "CAST('3 months' AS interval)"
    assert _bucket_typed("SELECT date_trunc('week'::text, m.ts), count(*) FROM m GROUP BY 1",
                         "timestamp without time zone").width_sql == "CAST('7 days' AS interval)"
    for time_type in ("timestamp with time zone", "date", None):
        with pytest.raises(ContinuousAggregateError, match="timestamp \\(without time zone\\) time columns only"):
            _bucket_typed(sql, time_type)
    with pytest.raises(ContinuousAggregateError, match="field 'dow' is not supported"):
        _bucket_typed("SELECT date_trunc('dow', ts), count(*) FROM m GROUP BY 1", "timestamp without time zone")


def _bucket_typed(sql: str, time_type: str | None):
    return find_bucket(parse_query(sql), "ts", time_type)


@pytest.mark.parametrize("call", [
    "orochi.time_bucket('1 day', ts, 'Europe/Berlin')",
    "time_bucket('1 day', ts, timezone => 'Europe/Berlin')",
    "time_bucket('1 day', ts, 'Europe/Berlin'::text)",
    "time_bucket('1 day', ts, 'UTC', NULL, '1 hour')",
    "time_bucket('1 day', ts, origin => timestamptz '2000-01-01', timezone => 'UTC')",
])
def test_time_zone_buckets_refused(call):
    with pytest.raises(ContinuousAggregateError, match="time_bucket with a time zone is not supported") as exc:
        _bucket(f"SELECT {call} AS b, count(*) FROM m GROUP BY 1")
    assert exc.value.sqlstate == "0A000"


@pytest.mark.parametrize("call", [
    "time_bucket('1 day', ts, origin => '2000-01-01')",
    "time_bucket('1 day', ts, timestamptz '2000-01-01')",
    "time_bucket('1 day', ts, interval '1 hour')",
    "time_bucket('1 day', ts, \"offset\" => '1 hour')",
])
def test_buckets_without_time_zone_accepted(call):
    assert _bucket(f"SELECT {call} AS b, count(*) FROM m GROUP BY 1").output_name == "b"
