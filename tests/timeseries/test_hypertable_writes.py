"""Hypertables: the invalidation log, UPDATE moving rows between chunks,
drop_chunks with delta rows and deleted rows (against a heap DELETE of the
same ranges), its files, integer time columns, DROP EXTENSION."""

from __future__ import annotations

import datetime as dt

import os
import sys

import psycopg
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "columnar"))
from columnar_helpers import catalog_files, files_on_disk  # noqa: E402

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def _key(ts: dt.datetime) -> int:
    return (ts - EPOCH) // dt.timedelta(microseconds=1)


def _log(db) -> list[tuple[int, int]]:
    rows = db.execute("SELECT lowest, greatest FROM orochi.hypertable_invalidation_log ORDER BY logged_at, lowest"
                      ).fetchall()
    db.execute("DELETE FROM orochi.hypertable_invalidation_log")
    return rows


def test_invalidation_log(db):
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi OPTIONS (delta_row_limit '10')")
    db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')")
    t0 = dt.datetime(2024, 3, 1, tzinfo=UTC)
    db.execute("INSERT INTO m VALUES (%s, 1)", (t0,))
    assert _log(db) == []  # not tracked yet
    db.execute("UPDATE orochi.hypertables SET track_invalidations = true WHERE relid = 'm'::regclass")

    db.execute("INSERT INTO m VALUES (%s, 2), (%s, 3)", (t0 + dt.timedelta(hours=5), t0 - dt.timedelta(hours=3)))
    assert _log(db) == [(_key(t0 - dt.timedelta(hours=3)), _key(t0 + dt.timedelta(hours=5)))]

    # a big insert (stripes): one row for the statement
    db.execute("INSERT INTO m SELECT %s + i * interval '1 hour', 100 + i FROM generate_series(0, 99) i",
               (t0 + dt.timedelta(days=10),))
    assert _log(db) == [(_key(t0 + dt.timedelta(days=10)), _key(t0 + dt.timedelta(days=10, hours=99)))]

    # UPDATE of a delta row: its old and its new time
    db.execute("UPDATE m SET ts = %s WHERE v = 2", (t0 + dt.timedelta(days=2),))
    assert _log(db) == [(_key(t0 + dt.timedelta(hours=5)), _key(t0 + dt.timedelta(days=2)))]

    # DELETE of stripe rows: at least the stripes' range (over-invalidation is allowed)
    db.execute("DELETE FROM m WHERE v = 150")
    [(lo, hi)] = _log(db)
    hit = _key(t0 + dt.timedelta(days=10, hours=50))
    assert lo <= hit <= hi

    # nothing touched, rolled back: no row
    db.execute("DELETE FROM m WHERE v = -5")
    db.execute("BEGIN")
    db.execute("INSERT INTO m VALUES (%s, 7)", (t0,))
    db.execute("ROLLBACK")
    assert _log(db) == []


def test_update_moves_rows_between_chunks(db):
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi OPTIONS (delta_row_limit '0')")
    db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')")
    db.execute("CREATE TABLE h (ts timestamptz, v int)")
    for t in ("m", "h"):
        db.execute(f"INSERT INTO {t} SELECT timestamptz '2024-01-01 00:00+00' + i * interval '1 hour', i"
                   f" FROM generate_series(0, 47) i")
        db.execute(f"UPDATE {t} SET ts = ts + interval '30 days' WHERE v % 5 = 0")
    assert db.execute("SELECT count(*) FROM orochi.chunks WHERE hypertable_name = 'm'::regclass").fetchone() == (4,)
    q = "SELECT ts, v FROM {} WHERE ts >= '2024-01-20' ORDER BY v"
    assert db.execute(q.format("m")).fetchall() == db.execute(q.format("h")).fetchall()
    db.execute("SELECT orochi.compact('m')")
    assert db.execute(q.format("m")).fetchall() == db.execute(q.format("h")).fetchall()
    assert db.execute("SELECT count(*) FROM orochi.columnar_stripes WHERE chunk_id IS NULL").fetchone() == (0,)


@pytest.mark.parametrize("cutoff,heap_cut", [
    ("older_than => timestamptz '2024-01-05 00:00+00'", "ts < '2024-01-05 00:00+00'"),
    ("older_than => timestamptz '2024-01-05 07:00+00'", "ts < '2024-01-05 00:00+00'"),
    ("newer_than => timestamptz '2024-01-08 00:00+00'", "ts >= '2024-01-08 00:00+00'"),
    ("newer_than => date '2024-01-08'", "ts >= '2024-01-08 00:00+00'"),
    ("older_than => timestamptz '2024-01-06 00:00+00', newer_than => timestamptz '2024-01-03 00:00+00'",
     "ts >= '2024-01-03 00:00+00' AND ts < '2024-01-06 00:00+00'"),
])
def test_drop_chunks_against_heap(db, cutoff, heap_cut):
    db.execute("SET TimeZone = 'UTC'")
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int, note text) SERVER orochi"
               " OPTIONS (delta_row_limit '20', stripe_row_limit '100')")
    db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')")
    db.execute("CREATE TABLE h (ts timestamptz, v int, note text)")
    for t in ("m", "h"):
        db.execute(f"INSERT INTO {t} SELECT timestamptz '2024-01-01 00:00+00' + i * interval '17 minutes', i, 'n'"
                   f" FROM generate_series(0, 10 * 24 * 60 / 17) i")
        db.execute(f"DELETE FROM {t} WHERE v % 7 = 0")
        db.execute(f"UPDATE {t} SET note = 'u' WHERE v % 9 = 0")
        db.execute(f"INSERT INTO {t} VALUES ('2024-01-02 03:00+00', -1, 'd'), ('2024-01-09 03:00+00', -2, 'd')")
    before = {r[0] for r in db.execute("SELECT orochi.show_chunks('m')").fetchall()}
    dropped = [r[0] for r in db.execute(f"SELECT orochi.drop_chunks('m', {cutoff})").fetchall()]
    assert dropped and set(dropped) <= before
    db.execute(f"DELETE FROM h WHERE {heap_cut}")
    assert db.execute("SELECT x::text FROM m x ORDER BY 1").fetchall() == \
        db.execute("SELECT x::text FROM h x ORDER BY 1").fetchall()
    left = {r[0] for r in db.execute("SELECT orochi.show_chunks('m')").fetchall()}
    assert left == before - set(dropped)
    # the stripes' files go once no snapshot can read them
    db.execute("SELECT orochi.vacuum('m')")
    db.execute("SELECT orochi.vacuum()")
    assert files_on_disk(db) == catalog_files(db)


def test_integer_time_column(db):
    db.execute("CREATE FOREIGN TABLE m (t bigint, v int) SERVER orochi OPTIONS (delta_row_limit '0')")
    row = db.execute("SELECT created FROM orochi.create_hypertable('m', 't', chunk_time_interval => 100)").fetchone()
    assert row == (True,)
    db.execute("INSERT INTO m SELECT i, i FROM generate_series(-250, 249) i")
    chunks = db.execute("SELECT range_start, range_end, range_start_integer, range_end_integer, rows"
                        "  FROM orochi.chunks ORDER BY range_start_integer").fetchall()
    assert chunks == [(None, None, s, s + 100, 100 if -200 <= s < 200 else 50) for s in range(-300, 300, 100)]
    dropped = [r[0] for r in db.execute("SELECT orochi.drop_chunks('m', older_than => 0)").fetchall()]
    assert len(dropped) == 3
    assert db.execute("SELECT min(t), count(*) FROM m").fetchone() == (0, 250)
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN SELECT * FROM m WHERE t BETWEEN 120 AND 130").fetchall())
    assert "Chunks: 3 (2 excluded)" in plan


def test_chunks_view(db):
    db.execute("SET TimeZone = 'UTC'")
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi OPTIONS (delta_row_limit '10')")
    db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')")
    db.execute("INSERT INTO m SELECT timestamptz '2024-01-01 00:00+00' + i * interval '1 hour', i"
               " FROM generate_series(0, 47) i")
    db.execute("INSERT INTO m VALUES ('2024-01-02 05:00+00', -1)")
    rows = db.execute("SELECT hypertable_name::text, primary_dimension::text, primary_dimension_type::text,"
                      " range_start::text, range_end::text, stripes, rows, before_compression_bytes > 0,"
                      " after_compression_bytes > 0, is_compressed FROM orochi.chunks ORDER BY range_start").fetchall()
    assert rows == [
        ("m", "ts", "timestamp with time zone", "2024-01-01 00:00:00+00", "2024-01-02 00:00:00+00",
         1, 24, True, True, False),
        ("m", "ts", "timestamp with time zone", "2024-01-02 00:00:00+00", "2024-01-03 00:00:00+00",
         1, 25, True, True, False),
    ]


def test_drop_extension_cleans_up(db):
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi OPTIONS (delta_row_limit '0')")
    db.execute("SELECT orochi.create_hypertable('m', 'ts')")
    db.execute("INSERT INTO m SELECT now() + i * interval '1 day', i FROM generate_series(1, 30) i")
    db.execute("DROP EXTENSION orochi CASCADE")
    assert db.execute("SELECT to_regclass('orochi.hypertable_chunks')").fetchone() == (None,)
    db.execute("CREATE EXTENSION orochi")
    assert db.execute("SELECT count(*) FROM orochi.hypertables").fetchone() == (0,)


def test_interval_cutoffs(db):
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi OPTIONS (delta_row_limit '0')")
    db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')")
    db.execute("INSERT INTO m SELECT now() - i * interval '1 hour', i FROM generate_series(0, 10 * 24) i")
    want = db.execute("SELECT chunk_name FROM orochi.chunks"
                      " WHERE range_end <= now() - interval '3 days' ORDER BY range_start").fetchall()
    assert db.execute("SELECT orochi.show_chunks('m', older_than => interval '3 days')").fetchall() == want
    assert db.execute("SELECT orochi.drop_chunks('m', older_than => interval '3 days')").fetchall() == want
    assert db.execute("SELECT min(ts) >= now() - interval '4 days' FROM m").fetchone() == (True,)


def test_dropped_time_column(db):
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi")
    db.execute("SELECT orochi.create_hypertable('m', 'ts')")
    db.execute("ALTER FOREIGN TABLE m RENAME COLUMN ts TO t2")
    db.execute("INSERT INTO m VALUES (now(), 1)")
    assert db.execute("SELECT count(*) FROM orochi.chunks").fetchone() == (1,)
    db.execute("ALTER FOREIGN TABLE m DROP COLUMN t2")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="was dropped or changed type"):
        db.execute("INSERT INTO m VALUES (1)")


def test_vacuum_keeps_stripes_in_their_chunks(db):
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi OPTIONS (delta_row_limit '0')")
    db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')")
    db.execute("CREATE TABLE h (ts timestamptz, v int)")
    for t in ("m", "h"):
        db.execute(f"INSERT INTO {t} SELECT timestamptz '2024-01-01 00:00+00' + i * interval '10 minutes', i"
                   f" FROM generate_series(0, 6 * 24 * 6 - 1) i")
        db.execute(f"DELETE FROM {t} WHERE v % 3 = 0")
    before = db.execute("SELECT chunk_id, count(*) FROM orochi.columnar_stripes WHERE relid = 'm'::regclass"
                        " GROUP BY 1 ORDER BY 1").fetchall()
    assert db.execute("SELECT stripes_rewritten FROM orochi.vacuum('m', 0)").fetchone()[0] == len(before)
    after = db.execute("SELECT chunk_id, count(*) FROM orochi.columnar_stripes WHERE relid = 'm'::regclass"
                       " GROUP BY 1 ORDER BY 1").fetchall()
    assert after == before
    for q in ("", "WHERE ts >= '2024-01-03 00:00+00' AND ts < '2024-01-04 12:00+00'"):
        assert db.execute(f"SELECT x::text FROM m x {q} ORDER BY 1").fetchall() == \
            db.execute(f"SELECT x::text FROM h x {q} ORDER BY 1").fetchall()


def test_drop_chunks_random_cutoffs(db):
    """Random rows, chunk widths and cutoffs: exactly the chunks wholly
    before older_than / wholly at or after newer_than go, with all their rows
    (stripes, delta, updated), checked against a heap DELETE of their ranges;
    a rolled back drop changes nothing; older_than not after newer_than is
    an error."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(values=st.lists(st.integers(-5000, 5000), min_size=1, max_size=120),
           width=st.integers(1, 900), older=st.none() | st.integers(-6000, 6000),
           newer=st.none() | st.integers(-6000, 6000), rollback=st.booleans())
    def check(values, width, older, newer, rollback):
        if older is None and newer is None:
            older = 0
        db.execute("DROP FOREIGN TABLE IF EXISTS m")
        db.execute("DROP TABLE IF EXISTS h")
        db.execute("CREATE FOREIGN TABLE m (t bigint, v int) SERVER orochi"
                   " OPTIONS (delta_row_limit '10', stripe_row_limit '50')")
        db.execute("SELECT orochi.create_hypertable('m', 't', chunk_time_interval => %s::bigint)", (width,))
        db.execute("CREATE TABLE h (t bigint, v int)")
        for name in ("m", "h"):
            with db.cursor() as cur, cur.copy(f"COPY {name} (t, v) FROM STDIN") as copy:
                for i, v in enumerate(values):
                    copy.write_row((v, i))
            db.execute(f"UPDATE {name} SET t = t + 7 WHERE v % 5 = 0")
            db.execute(f"DELETE FROM {name} WHERE v % 4 = 0")
            db.execute(f"INSERT INTO {name} VALUES ({values[0]}, -1)")
        args = ", ".join(f"{k} => {v}" for k, v in (("older_than", older), ("newer_than", newer)) if v is not None)
        ranges = {r[0]: (r[1], r[2]) for r in db.execute(
            "SELECT chunk_name, range_start_integer, range_end_integer FROM orochi.chunks").fetchall()}
        want = sorted((name for name, (lo, hi) in ranges.items()
                       if (older is None or hi <= older) and (newer is None or lo >= newer)),
                      key=lambda n: ranges[n][0])
        db.execute("BEGIN")
        if older is not None and newer is not None and older <= newer:
            # as TimescaleDB: the end of the range must come after its start
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid time range"):
                db.execute(f"SELECT orochi.drop_chunks('m', {args})")
            db.execute("ROLLBACK")
            got = []
        else:
            got = [r[0] for r in db.execute(f"SELECT orochi.drop_chunks('m', {args})").fetchall()]
            assert got == want
        if rollback or not got:
            db.execute("ROLLBACK")
        else:
            db.execute("COMMIT")
            for name in got:
                lo, hi = ranges[name]
                db.execute("DELETE FROM h WHERE t >= %s AND t < %s", (lo, hi))
        assert db.execute("SELECT x::text FROM m x ORDER BY 1").fetchall() == \
            db.execute("SELECT x::text FROM h x ORDER BY 1").fetchall()

    check()
