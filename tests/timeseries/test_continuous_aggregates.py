"""Continuous aggregates: creation, refresh (whole buckets, invalidations),
real-time views, policies, DROP and errors.  The same query run live on the
hypertable is the oracle."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import sys

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orochi_fdw.testing.faults import run_until

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "columnar"))
from columnar_helpers import catalog_files, files_on_disk  # noqa: E402

AGGREGATES = ("count(*) AS n, sum(v) AS s, avg(v) AS a, min(v) AS lo, max(v) AS hi, "
              "count(DISTINCT note) AS notes")
TS_QUERY = f"SELECT orochi.time_bucket(interval '1 hour', ts) AS bucket, device, {AGGREGATES} FROM {{t}} GROUP BY 1, device"
INT_QUERY = f"SELECT orochi.time_bucket(10, ts) AS bucket, device, {AGGREGATES} FROM {{t}} GROUP BY 1, device"
_names = itertools.count(1)


def _make(db, name: str = "m", time_type: str = "timestamptz", interval: str = "interval '1 day'") -> None:
    db.execute(f"CREATE FOREIGN TABLE {name} (ts {time_type} NOT NULL, device int, v float8, note text)"
               f" SERVER orochi")
    db.execute(f"SELECT orochi.create_hypertable('{name}', 'ts', chunk_time_interval => {interval})")


def _rows(db, sql: str) -> list[tuple]:
    return db.execute(f"SELECT * FROM ({sql}) q ORDER BY 1, 2").fetchall()


def _create(db, name: str, query: str, **options) -> None:
    args = "".join(f", {k} => {str(v).lower()}" for k, v in options.items())
    db.execute(f"SELECT orochi.create_continuous_aggregate(%s, %s{args})", (name, query))


def _fill(db, table: str = "m", n: int = 1000) -> None:
    db.execute(f"INSERT INTO {table} SELECT timestamptz '2024-01-01' + i * interval '7 minutes', i % 3, i,"
               f" 'n' || (i % 5) FROM generate_series(1, {n}) i")


def test_create_refresh_and_real_time(db):
    _make(db)
    _fill(db)
    query = TS_QUERY.format(t="m")
    _create(db, "c", query, materialized_only=True)
    _create(db, "rt", query)
    _create(db, "live", query, with_data=False)
    assert _rows(db, "SELECT * FROM c") == _rows(db, query)
    assert _rows(db, "SELECT * FROM rt") == _rows(db, query)
    assert db.execute("SELECT count(*) FROM orochi._materialized_3").fetchone() == (0,)
    # writes into old buckets, a new bucket, a bucket emptied
    db.execute("INSERT INTO m VALUES ('2024-01-01 00:30', 1, 1000, 'x'), ('2025-01-01', 2, 5, 'y')")
    db.execute("DELETE FROM m WHERE ts >= '2024-01-02' AND ts < '2024-01-02 03:00'")
    db.execute("UPDATE m SET ts = ts + interval '1 day', v = v * 2 WHERE device = 1 AND ts < '2024-01-01 06:00'")
    assert _rows(db, "SELECT * FROM c") != _rows(db, query)
    # real-time: the new bucket above the watermark is there without a refresh
    assert ("2025-01-01",) in [(str(r[0].date()),) for r in _rows(db, "SELECT * FROM rt")]
    assert _rows(db, "SELECT * FROM live") == _rows(db, query)
    for view in ("c", "rt"):
        db.execute("SELECT orochi.refresh_continuous_aggregate(%s, NULL, NULL)", (view,))
        assert _rows(db, f"SELECT * FROM {view}") == _rows(db, query)
    db.execute("SET TimeZone = 'America/New_York'")
    assert _rows(db, "SELECT * FROM rt") == _rows(db, query)
    assert _rows(db, "SELECT * FROM live") == _rows(db, query)


def test_catalog_view(db):
    _make(db)
    _fill(db, n=100)
    _create(db, "public.c", TS_QUERY.format(t="m"))
    row = db.execute("SELECT view_schema, view_name, hypertable::text, bucket_column, bucket_width, watermark,"
                     " materialized_only FROM orochi.continuous_aggregates").fetchone()
    last = db.execute("SELECT max(orochi.time_bucket(interval '1 hour', ts)) + interval '1 hour' FROM m").fetchone()[0]
    assert row[:5] == ("public", "c", "m", "bucket", "01:00:00")
    assert row[5] == db.execute("SELECT %s::timestamptz::text", (last,)).fetchone()[0]
    assert row[6] is False
    assert db.execute("SELECT track_invalidations FROM orochi.hypertables").fetchone() == (True,)
    _create(db, "c2", "SELECT orochi.time_bucket('1 day', ts), count(*) FROM m GROUP BY 1")
    assert db.execute("SELECT bucket_column, bucket_width FROM orochi.continuous_aggregates"
                      " WHERE view_name = 'c2'").fetchone() == ("time_bucket", "1 day")


def test_partial_window_refreshes_whole_buckets_only(db):
    _make(db)
    db.execute("INSERT INTO m SELECT timestamptz '2024-01-01' + i * interval '10 minutes', 1, i, 'a'"
               " FROM generate_series(0, 35) i")  # hours 0..5
    query = TS_QUERY.format(t="m")
    _create(db, "c", query, materialized_only=True, with_data=False)

    def hours() -> list[int]:
        return [r[0].hour for r in _rows(db, "SELECT * FROM c")]

    db.execute("SELECT orochi.refresh_continuous_aggregate('c', timestamptz '2024-01-01 01:30', "
               "timestamptz '2024-01-01 04:00')")
    assert hours() == [2, 3]
    db.execute("SELECT orochi.refresh_continuous_aggregate('c', timestamptz '2024-01-01 04:00', "
               "timestamptz '2024-01-01 04:59')")  # no whole bucket
    assert hours() == [2, 3]
    # a write into bucket 2, refreshed by a window that holds it
    db.execute("INSERT INTO m VALUES ('2024-01-01 02:05', 1, 100, 'b')")
    db.execute("SELECT orochi.refresh_continuous_aggregate('c', timestamptz '2024-01-01 04:00', NULL)")
    assert hours() == [2, 3, 4, 5]
    assert _rows(db, "SELECT * FROM c WHERE bucket = '2024-01-01 02:00'")[0][2] == 6
    db.execute("SELECT orochi.refresh_continuous_aggregate('c', NULL, timestamptz '2024-01-01 03:00')")
    assert hours() == [0, 1, 2, 3, 4, 5]
    assert _rows(db, "SELECT * FROM c") == _rows(db, query)
    # timestamp and date bounds are accepted for a timestamptz column
    db.execute("SELECT orochi.refresh_continuous_aggregate('c', timestamp '2024-01-01', date '2024-01-02')")
    db.execute("SELECT orochi.refresh_continuous_aggregate('c', '2024-01-01', '2024-01-02 00:00+00')")
    with pytest.raises(psycopg.errors.InvalidDatetimeFormat):
        db.execute("SELECT orochi.refresh_continuous_aggregate('c', 'yesterday-ish', NULL)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="window_start must be before window_end"):
        db.execute("SELECT orochi.refresh_continuous_aggregate('c', '2024-01-02', '2024-01-01')")


def test_refresh_concurrent_with_writers(db, new_connection):
    """Writes committed after a refresh's snapshot stay logged for the next
    refresh; two refreshes of one aggregate take turns."""
    _make(db)
    _fill(db, n=300)
    query = TS_QUERY.format(t="m")
    _create(db, "c", query, materialized_only=True)
    _create(db, "c2", query, materialized_only=True)
    writer = new_connection()
    writer.execute("BEGIN")
    writer.execute("INSERT INTO m VALUES ('2024-01-01 00:10', 1, 500, 'w')")
    writer.execute("DELETE FROM m WHERE ts < '2024-01-01 02:00' AND device = 2")
    db.execute("SELECT orochi.refresh_continuous_aggregate('c', NULL, NULL)")
    writer.execute("COMMIT")
    assert _rows(db, "SELECT * FROM c") != _rows(db, query)
    other = new_connection()
    other.execute("BEGIN")
    other.execute("SELECT orochi.refresh_continuous_aggregate('c', NULL, NULL)")
    blocked = new_connection()
    blocked.execute("SET lock_timeout = '200ms'")
    for view in ("c", "c2"):  # the aggregates of one hypertable take turns
        with pytest.raises((psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)):
            blocked.execute(f"SELECT orochi.refresh_continuous_aggregate('{view}', NULL, NULL)")
    other.execute("COMMIT")
    blocked.execute("SELECT orochi.refresh_continuous_aggregate('c2', NULL, NULL)")
    assert _rows(db, "SELECT * FROM c2") == _rows(db, query)
    assert _rows(db, "SELECT * FROM c") == _rows(db, query)
    # a refresh rolled back leaves the writes logged
    db.execute("INSERT INTO m VALUES ('2024-01-01 05:10', 1, 7, 'w')")
    db.execute("BEGIN")
    db.execute("SELECT orochi.refresh_continuous_aggregate('c', NULL, NULL)")
    db.execute("ROLLBACK")
    assert _rows(db, "SELECT * FROM c") != _rows(db, query)
    db.execute("SELECT orochi.refresh_continuous_aggregate('c', NULL, NULL)")
    assert _rows(db, "SELECT * FROM c") == _rows(db, query)


def test_integer_and_date_time_columns(db):
    _make(db, "mi", "bigint", "100")
    db.execute("INSERT INTO mi SELECT i, i % 2, i, 'x' FROM generate_series(-25, 75) i")
    query = INT_QUERY.format(t="mi")
    _create(db, "ci", query, materialized_only=True, with_data=False)
    db.execute("SELECT orochi.refresh_continuous_aggregate('ci', 5, 40)")
    assert db.execute("SELECT DISTINCT bucket FROM ci ORDER BY 1").fetchall() == [(10,), (20,), (30,)]
    db.execute("SELECT orochi.refresh_continuous_aggregate('ci', NULL, NULL)")
    assert _rows(db, "SELECT * FROM ci") == _rows(db, query)
    with pytest.raises(psycopg.errors.DatatypeMismatch, match="invalid window_start"):
        db.execute("SELECT orochi.refresh_continuous_aggregate('ci', now(), NULL)")

    _make(db, "md", "date", "interval '30 days'")
    db.execute("INSERT INTO md SELECT date '2023-11-15' + i, i % 2, i, 'x' FROM generate_series(0, 120) i")
    query = ("SELECT orochi.time_bucket(interval '1 month', ts) AS month, device, count(*), sum(v)"
             " FROM md GROUP BY 1, 2")
    _create(db, "cd", query)
    assert _rows(db, "SELECT * FROM cd") == _rows(db, query)
    db.execute("DELETE FROM md WHERE ts < '2024-01-01'")
    db.execute("INSERT INTO md VALUES ('2024-06-30', 5, 1, 'z')")
    db.execute("SELECT orochi.refresh_continuous_aggregate('cd', date '2023-01-01', date '2024-03-01')")
    # December and the months before are gone, June is live (above the watermark), March not refreshed
    assert _rows(db, "SELECT * FROM cd") == _rows(db, query)
    with pytest.raises(psycopg.errors.DatatypeMismatch, match="invalid window_end"):
        db.execute("SELECT orochi.refresh_continuous_aggregate('cd', NULL, 10)")


def test_alter_materialized_only(db):
    _make(db)
    _fill(db, n=200)
    query = TS_QUERY.format(t="m")
    _create(db, "c", query)
    db.execute("INSERT INTO m VALUES ('2030-01-01', 1, 1, 'z')")
    assert _rows(db, "SELECT * FROM c") == _rows(db, query)
    db.execute("SELECT orochi.alter_continuous_aggregate('c', materialized_only => true)")
    assert _rows(db, "SELECT * FROM c") != _rows(db, query)
    assert db.execute("SELECT materialized_only FROM orochi.continuous_aggregates").fetchone() == (True,)
    db.execute("SELECT orochi.alter_continuous_aggregate('c', materialized_only => false)")
    assert _rows(db, "SELECT * FROM c") == _rows(db, query)
    # renames: the aggregate follows its hypertable and keeps working under its new name
    db.execute("ALTER FOREIGN TABLE m RENAME TO m_renamed")
    db.execute("ALTER VIEW c RENAME TO c_renamed")
    db.execute("INSERT INTO m_renamed VALUES ('2024-01-01 00:01', 1, 1, 'z')")
    db.execute("SELECT orochi.refresh_continuous_aggregate('c_renamed', NULL, NULL)")
    db.execute("SELECT orochi.alter_continuous_aggregate('c_renamed', materialized_only => true)")
    assert _rows(db, "SELECT * FROM c_renamed") == _rows(db, TS_QUERY.format(t="m_renamed"))


def test_query_shapes(db):
    """WHERE, HAVING, an alias, GROUP BY the expression, date_bin, expressions of aggregates."""
    _make(db)
    _fill(db, n=500)
    queries = [
        "SELECT time_bucket('30 minutes', x.ts) AS b, avg(v) * 2 AS a2 FROM m AS x WHERE v > 10 GROUP BY b",
        "SELECT device, orochi.time_bucket('1 day', ts), sum(v) FROM m GROUP BY device, orochi.time_bucket('1 day', ts)"
        " HAVING count(*) > 100",
        "SELECT date_bin('2 hours', ts, timestamptz '2000-01-01'), percentile_cont(0.5) WITHIN GROUP (ORDER BY v)"
        " FROM m GROUP BY 1",
        "SELECT orochi.time_bucket('1 hour', ts, \"offset\" => interval '15 minutes') AS b, note, string_agg(device::text, ',' ORDER BY v)"
        " FROM m GROUP BY 1, 2",
        "SELECT orochi.time_bucket('3 hours', ts), orochi.approx_count_distinct(note), orochi.hll_agg(device),"
        " orochi.approx_percentile(v, 0.9) FROM m GROUP BY 1",
    ]
    db.execute("SET search_path = public, orochi")
    for i, query in enumerate(queries):
        _create(db, f"c{i}", query)
        db.execute("INSERT INTO m VALUES ('2024-01-01 00:20', 7, 50, 'q'), ('2024-01-01 00:50', 7, 60, 'q')")
        db.execute("DELETE FROM m WHERE ts < '2024-01-01 00:15'")
        db.execute(f"SELECT orochi.refresh_continuous_aggregate('c{i}', NULL, NULL)")
        assert _rows(db, f"SELECT * FROM c{i}") == _rows(db, query), query
    db.execute("RESET search_path")
    db.execute("SELECT orochi.refresh_continuous_aggregate('c0', NULL, NULL)")  # query resolved by oid


def test_errors(db):
    _make(db)
    db.execute("CREATE FOREIGN TABLE plain (ts timestamptz, v int) SERVER orochi")
    db.execute("CREATE TABLE heap (ts timestamptz, v int)")
    db.execute("CREATE FOREIGN TABLE m2 (ts timestamptz NOT NULL, device int, v float8, note text) SERVER orochi")
    db.execute("SELECT orochi.create_hypertable('m2', 'ts')")
    bad = {
        "SELECT ts, v FROM m": "GROUP BY",
        "SELECT orochi.time_bucket('1 hour', ts), count(*) FROM plain GROUP BY 1": "not a hypertable",
        "SELECT orochi.time_bucket('1 hour', ts), count(*) FROM heap GROUP BY 1": "not a hypertable",
        "SELECT device, count(*) FROM m GROUP BY 1": "no time_bucket",
        "SELECT orochi.time_bucket(1, device), count(*) FROM m GROUP BY 1": "no time_bucket",
        "SELECT orochi.time_bucket('1 hour', ts), count(*) FROM m JOIN m2 USING (device) GROUP BY 1": "exactly one",
        "SELECT orochi.time_bucket('1 hour', ts), count(*) FROM m GROUP BY 1 ORDER BY 1": "ORDER BY",
        "SELECT orochi.time_bucket('1 hour', ts), count(*) FROM m GROUP BY 1 LIMIT 3": "LIMIT",
        "SELECT DISTINCT orochi.time_bucket('1 hour', ts), count(*) FROM m GROUP BY 1": "DISTINCT",
        "SELECT orochi.time_bucket('1 hour', ts), sum(v) OVER () FROM m GROUP BY 1, v": "window",
        "SELECT orochi.time_bucket('1 hour', ts), count(*) FROM m WHERE v IN (SELECT 1) GROUP BY 1": "subqueries",
        "SELECT orochi.time_bucket('1 hour', ts), count(*) FROM m GROUP BY 1 UNION ALL SELECT now(), 1": "UNION",
        "SELECT orochi.time_bucket(v * interval '1 hour', ts), count(*) FROM m GROUP BY 1, v": "constants",
        "SELECT orochi.time_bucket('1 hour', ts), count(*) FROM m GROUP BY ts": "must be in GROUP BY",
        "SELECT * FROM m": "not supported",
    }
    for query, message in bad.items():
        with pytest.raises(psycopg.errors.FeatureNotSupported, match=message):
            _create(db, "c", query)
    with pytest.raises(psycopg.errors.UndefinedTable):
        _create(db, "c", "SELECT orochi.time_bucket('1 hour', ts), count(*) FROM nope GROUP BY 1")
    with pytest.raises(psycopg.errors.SyntaxError):
        _create(db, "c", "SELEC 1")
    with pytest.raises(psycopg.errors.GroupingError):  # Postgres's own check, at creation
        _create(db, "c", "SELECT orochi.time_bucket('1 hour', ts), v FROM m GROUP BY 1")
    _create(db, "c", TS_QUERY.format(t="m"))
    with pytest.raises(psycopg.errors.DuplicateTable, match='"c" already exists'):
        _create(db, "c", TS_QUERY.format(t="m"))
    with pytest.raises(psycopg.errors.DuplicateTable):
        _create(db, "heap", TS_QUERY.format(t="m"))
    # nothing was left behind by the failed creations
    assert db.execute("SELECT count(*) FROM orochi.continuous_aggs").fetchone() == (1,)
    db.execute("CREATE VIEW v AS SELECT 1")
    with pytest.raises(psycopg.errors.WrongObjectType, match='"v" is not a continuous aggregate'):
        db.execute("SELECT orochi.refresh_continuous_aggregate('v', NULL, NULL)")
    with pytest.raises(psycopg.errors.UndefinedTable):
        db.execute("SELECT orochi.refresh_continuous_aggregate('nope', NULL, NULL)")
    with pytest.raises(psycopg.errors.DatatypeMismatch, match="invalid window_start"):
        db.execute("SELECT orochi.refresh_continuous_aggregate('c', 10, NULL)")


def test_drop(db):
    _make(db)
    _fill(db, n=100)
    _create(db, "c1", TS_QUERY.format(t="m"))
    _create(db, "c2", TS_QUERY.format(t="m"), materialized_only=True)

    def internal() -> int:
        return db.execute("SELECT count(*) FROM pg_class WHERE relname ~ '^_(materialized|direct_view)_'"
                          " AND relnamespace = 'orochi'::regnamespace").fetchone()[0]

    assert internal() == 4
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        db.execute("DROP FOREIGN TABLE m")
    db.execute("SELECT orochi.drop_continuous_aggregate('c1')")
    assert internal() == 2
    db.execute("DROP VIEW c2")
    assert internal() == 0
    assert db.execute("SELECT count(*) FROM orochi.continuous_aggs").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM orochi.continuous_agg_invalidations").fetchone() == (0,)
    assert db.execute("SELECT track_invalidations FROM orochi.hypertables").fetchone() == (False,)
    _create(db, "c3", TS_QUERY.format(t="m"), materialized_only=True)
    db.execute("DROP FOREIGN TABLE m CASCADE")
    assert internal() == 0
    assert db.execute("SELECT count(*) FROM orochi.continuous_aggs").fetchone() == (0,)
    # a DROP rolled back keeps everything
    _make(db)
    _create(db, "c4", TS_QUERY.format(t="m"))
    db.execute("BEGIN")
    db.execute("DROP VIEW c4")
    db.execute("ROLLBACK")
    assert internal() == 2
    assert _rows(db, "SELECT * FROM c4") == []


def test_policy(db):
    _make(db)
    db.execute("INSERT INTO m SELECT now() - i * interval '20 minutes', 1, i, 'a' FROM generate_series(1, 200) i")
    query = TS_QUERY.format(t="m")
    _create(db, "c", query, materialized_only=True, with_data=False)
    job = db.execute("SELECT orochi.add_continuous_aggregate_policy('c', start_offset => interval '1 day',"
                     " end_offset => interval '1 hour', schedule_interval => interval '1 hour')").fetchone()[0]
    row = db.execute("SELECT proc_name, relid::regclass::text, config->>'start_offset', config->>'end_offset'"
                     " FROM orochi.jobs WHERE job_id = %s", (job,)).fetchone()
    assert row == ("policy_refresh_continuous_aggregate", "orochi._materialized_1", "1 day", "01:00:00")
    with pytest.raises(psycopg.errors.DuplicateObject):
        db.execute("SELECT orochi.add_continuous_aggregate_policy('c', interval '1 day', interval '1 hour',"
                   " interval '1 hour')")
    assert db.execute("SELECT orochi.add_continuous_aggregate_policy('c', interval '1 day', interval '1 hour',"
                      " interval '1 hour', if_not_exists => true)").fetchone() == (job,)
    db.execute("CALL orochi.run_job(%s)", (job,))
    got = _rows(db, "SELECT * FROM c")
    expected = _rows(db, f"SELECT * FROM ({query}) q WHERE bucket >= orochi.time_bucket('1 hour', now() - interval '1 day')"
                         " + interval '1 hour' AND bucket < orochi.time_bucket('1 hour', now() - interval '1 hour')")
    assert got == expected and len(got) > 15
    assert db.execute("SELECT last_run_status FROM orochi.job_stats WHERE job_id = %s", (job,)).fetchone() == ("Success",)
    with pytest.raises(psycopg.errors.DatatypeMismatch, match="start_offset"):
        db.execute("SELECT orochi.add_continuous_aggregate_policy('c', 10, NULL, interval '1 hour')")
    db.execute("SELECT orochi.remove_continuous_aggregate_policy('c')")
    assert db.execute("SELECT count(*) FROM orochi.jobs").fetchone() == (0,)
    db.execute("SELECT orochi.remove_continuous_aggregate_policy('c', if_exists => true)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="too small"):
        db.execute("SELECT orochi.add_continuous_aggregate_policy('c', interval '1 hour', interval '1 day',"
                   " interval '1 hour')")
    # dropping the aggregate drops its policy
    db.execute("SELECT orochi.add_continuous_aggregate_policy('c', NULL, interval '1 hour', interval '1 hour')")
    db.execute("DROP VIEW c")
    assert db.execute("SELECT count(*) FROM orochi.jobs").fetchone() == (0,)


# ---------------------------------------------------------------- randomized

_TIME_TYPES = {
    "timestamptz": (TS_QUERY, "interval '6 hours'", lambda k: f"timestamptz '2024-01-01' + {k} * interval '1 minute'",
                    "interval '1 minute'"),
    "bigint": (INT_QUERY, "40", lambda k: str(k), "1"),
}
keys = st.integers(min_value=-100, max_value=400)
operations = st.lists(st.one_of(
    st.tuples(st.just("insert"), st.lists(st.tuples(keys, st.integers(0, 2), st.integers(-50, 50)),
                                          min_size=1, max_size=30)),
    st.tuples(st.just("bulk"), keys, st.integers(1, 3000)),
    st.tuples(st.just("update_time"), keys, keys, st.integers(-200, 200)),
    st.tuples(st.just("update_value"), keys, keys),
    st.tuples(st.just("delete"), keys, keys),
    st.tuples(st.just("refresh"), st.none() | keys, st.none() | keys),
), min_size=1, max_size=12)


@pytest.mark.parametrize("time_type", list(_TIME_TYPES))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_randomized_against_live_query(db, time_type, ops):
    """After any mix of writes, the materialized-only view refreshed over all
    time, and a real-time view never refreshed, equal the query run live."""
    _check_operations(db, time_type, ops)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("time_type", list(_TIME_TYPES))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_randomized_against_live_query_soak(db, time_type, ops):
    _check_operations(db, time_type, ops)


def _check_operations(db, time_type: str, ops: list[tuple]) -> None:
    template, chunk, at, unit = _TIME_TYPES[time_type]
    t = f"r{next(_names)}"
    _make(db, t, time_type, chunk)
    query = template.format(t=t)
    db.execute(f"INSERT INTO {t} SELECT {at('i')}, i % 3, i % 7, 'n' || (i % 4) FROM generate_series(0, 120) i")
    _create(db, f"{t}_mat", query, materialized_only=True)
    _create(db, f"{t}_live", query, with_data=False)
    _create(db, f"{t}_rt", query)
    for op in ops:
        if op[0] == "insert":
            values = ", ".join(f"({at(k)}, {d}, {v}, 'i{v % 3}')" for k, d, v in op[1])
            db.execute(f"INSERT INTO {t} VALUES {values}")
        elif op[0] == "bulk":  # enough rows for stripes
            db.execute(f"INSERT INTO {t} SELECT {at(op[1])} + (i % 50) * {unit}, i % 3, i % 11, 'b'"
                       f" FROM generate_series(1, {op[2]}) i")
        elif op[0] == "update_time":
            lo, hi = sorted(op[1:3])
            db.execute(f"UPDATE {t} SET ts = ts + {op[3]} * {unit} WHERE ts >= {at(lo)} AND ts < {at(hi)}")
        elif op[0] == "update_value":
            lo, hi = sorted(op[1:3])
            db.execute(f"UPDATE {t} SET v = v + 1, note = 'u' WHERE ts >= {at(lo)} AND ts <= {at(hi)}")
        elif op[0] == "delete":
            lo, hi = sorted(op[1:3])
            db.execute(f"DELETE FROM {t} WHERE ts >= {at(lo)} AND ts < {at(hi)}")
        else:
            lo, hi = op[1], op[2]
            if lo is not None and hi is not None:
                lo, hi = min(lo, hi), max(lo, hi) + 1
            start = "NULL" if lo is None else at(lo)
            end = "NULL" if hi is None else at(hi)
            db.execute(f"SELECT orochi.refresh_continuous_aggregate('{t}_mat', {start}, {end})")
            db.execute(f"SELECT orochi.refresh_continuous_aggregate('{t}_rt', {start}, {end})")
        assert _rows(db, f"SELECT * FROM {t}_live") == _rows(db, query)
    for view in ("mat", "rt"):
        db.execute(f"SELECT orochi.refresh_continuous_aggregate('{t}_{view}', NULL, NULL)")
        assert _rows(db, f"SELECT * FROM {t}_{view}") == _rows(db, query)
    db.execute(f"DROP FOREIGN TABLE {t} CASCADE")


def test_dropped_chunks_keep_their_buckets(db):
    """As in TimescaleDB, drop_chunks is not a write the aggregate forgets:
    the buckets of dropped chunks stay materialized."""
    _make(db)
    _fill(db, n=1000)  # 2024-01-01 .. 2024-01-05
    query = TS_QUERY.format(t="m")
    _create(db, "c", query, materialized_only=True)
    before = _rows(db, "SELECT * FROM c")
    dropped = db.execute("SELECT orochi.drop_chunks('m', older_than => timestamptz '2024-01-03')").fetchall()
    assert dropped
    db.execute("INSERT INTO m VALUES ('2024-01-04 00:10', 1, 1, 'x')")
    db.execute("SELECT orochi.refresh_continuous_aggregate('c', NULL, NULL)")
    after = _rows(db, "SELECT * FROM c")
    old = [r for r in before if r[0].day < 3]
    assert [r for r in after if r[0].day < 3] == old and old
    assert [r for r in after if r[0].day >= 3] == [r for r in _rows(db, query) if r[0].day >= 3]


def test_truncate(db):
    """TRUNCATE of the hypertable invalidates all time."""
    _make(db)
    _fill(db, n=300)
    query = TS_QUERY.format(t="m")
    _create(db, "c", query, materialized_only=True)
    db.execute("TRUNCATE m")
    db.execute("INSERT INTO m VALUES ('2024-01-01 00:10', 1, 1, 'x')")
    db.execute("SELECT orochi.refresh_continuous_aggregate('c', NULL, NULL)")
    assert _rows(db, "SELECT * FROM c") == _rows(db, query)


def test_timestamp_time_column(db):
    _make(db)
    _make(db, "mt", "timestamp", "interval '12 hours'")
    db.execute("INSERT INTO mt SELECT timestamp '2024-03-09' + i * interval '13 minutes', i % 2, i, 'x'"
               " FROM generate_series(0, 600) i")
    query = ("SELECT orochi.time_bucket(interval '1 day', ts, origin => timestamp '2024-01-01 06:00') AS day,"
             " device, count(*), avg(v) FROM mt GROUP BY 1, 2")
    _create(db, "ct", query, with_data=False)
    db.execute("SET TimeZone = 'America/New_York'")  # DST starts on 2024-03-10: no effect on timestamps
    db.execute("SELECT orochi.refresh_continuous_aggregate('ct', timestamp '2024-03-09 06:00',"
               " timestamp '2024-03-11 06:00')")
    mat = db.execute("SELECT materialization_table FROM orochi.continuous_aggregates").fetchone()[0]
    days = sorted({r[0] for r in _rows(db, f"SELECT * FROM {mat}")})
    assert days == [dt.datetime(2024, 3, 9, 6), dt.datetime(2024, 3, 10, 6)]
    db.execute("UPDATE mt SET v = -v WHERE ts < '2024-03-10'")
    db.execute("SELECT orochi.refresh_continuous_aggregate('ct', NULL, NULL)")
    assert _rows(db, "SELECT * FROM ct") == _rows(db, query)
    db.execute("INSERT INTO mt VALUES ('2024-04-01 07:00', 3, 1, 'y')")
    assert _rows(db, "SELECT * FROM ct") == _rows(db, query)
    weekly = "SELECT date_trunc('week', ts) AS week, device, max(v) FROM mt GROUP BY 1, 2"
    _create(db, "cw", weekly, materialized_only=True)
    db.execute("DELETE FROM mt WHERE ts >= '2024-03-11' AND ts < '2024-03-12'")
    db.execute("SELECT orochi.refresh_continuous_aggregate('cw', '2024-03-10', NULL)")  # from Monday the 11th
    assert _rows(db, "SELECT * FROM cw") == _rows(db, weekly)
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="date_trunc"):
        _create(db, "cw2", "SELECT date_trunc('week', ts), max(v) FROM m GROUP BY 1")


def test_policy_on_integer_time(db):
    _make(db, "mi", "integer", "100")
    db.execute("INSERT INTO mi SELECT i, i % 2, i, 'x' FROM generate_series(1, 1000) i")
    query = INT_QUERY.format(t="mi")
    _create(db, "ci", query, materialized_only=True, with_data=False)
    job = db.execute("SELECT orochi.add_continuous_aggregate_policy('ci', 300, 100, interval '1 minute')"
                     ).fetchone()[0]
    assert db.execute("SELECT config->'start_offset', config->'end_offset' FROM orochi.jobs WHERE job_id = %s",
                      (job,)).fetchone() == (300, 100)
    db.execute("CALL orochi.run_job(%s)", (job,))
    # "now" is the greatest time value, 1000: the window is [700, 900)
    assert db.execute("SELECT min(bucket), max(bucket) FROM ci").fetchone() == (700, 890)
    with pytest.raises(psycopg.errors.DatatypeMismatch, match="end_offset"):
        db.execute("SELECT orochi.add_continuous_aggregate_policy('ci', 300, interval '1 day', interval '1 hour',"
                   " if_not_exists => true)")


@pytest.mark.allow_backend_crash
@pytest.mark.parametrize("moment", ["idle after the refresh", "paused before its commit"])
def test_kill9_with_a_refresh_uncommitted(make_cluster, moment):
    """A refresh that never committed leaves no trace after kill -9: the
    materialization, the watermark and the logs are those of before, the
    refresh's stripe file is an orphan that the first vacuum removes, even
    with another transaction open that took the first transaction id after
    the restart, and the next refresh brings the aggregate up to date."""
    pg = make_cluster("cagg_crash")
    pg.create_database("c")
    conn = pg.connect("c", autocommit=True)
    _make(conn)
    _fill(conn, n=30000)
    query = TS_QUERY.format(t="m")
    _create(conn, "c", query, materialized_only=True)
    before = _rows(conn, "SELECT * FROM c")
    watermark = conn.execute("SELECT watermark FROM orochi.continuous_aggs").fetchone()
    conn.execute("INSERT INTO m SELECT ts + interval '1 year', device, v, note FROM m")  # stripes
    conn.execute("DELETE FROM m WHERE device = 1 AND ts < '2024-01-20'")
    committed = files_on_disk(conn)
    conn.close()
    refresh = "SELECT orochi.refresh_continuous_aggregate('c', NULL, NULL)"
    if moment == "idle after the refresh":
        refresher = pg.connect("c", autocommit=True)
        refresher.execute("BEGIN")
        refresher.execute(refresh)
        pg.kill9(kill_children=True)
    else:
        run_until(pg.dsn("c"), "refresh:before_commit", refresh, kill=lambda: pg.kill9(kill_children=True))
    pg.start()
    with pg.connect("c", autocommit=True) as conn:
        orphans = files_on_disk(conn) - committed
        assert orphans and not orphans & catalog_files(conn)
        other = pg.connect("c")
        other.execute("SELECT pg_current_xact_id()")  # the first id handed out after the restart
        assert _rows(conn, "SELECT * FROM c") == before
        assert conn.execute("SELECT watermark FROM orochi.continuous_aggs").fetchone() == watermark
        conn.execute("SELECT orochi.vacuum()")
        assert not files_on_disk(conn) & orphans, "the refresh's stripe files are orphans"
        other.rollback()
        other.close()
        conn.execute(refresh)
        assert _rows(conn, "SELECT * FROM c") == _rows(conn, query)
