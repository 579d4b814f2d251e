"""Hypertables: create_hypertable, routing of writes to chunks, show_chunks,
drop_chunks, the orochi.chunks view, DROP and TRUNCATE; heap tables are the
oracle."""

from __future__ import annotations

import collections
import datetime as dt

import psycopg
import pytest


def _make(db, name: str = "m", time_type: str = "timestamptz", interval: str = "interval '1 day'",
          options: str = "") -> None:
    db.execute(f"CREATE FOREIGN TABLE {name} (ts {time_type}, device int, v float8, note text)"
               f" SERVER orochi {options}")
    db.execute(f"SELECT orochi.create_hypertable('{name}', 'ts', chunk_time_interval => {interval})")


def _key(value) -> int:
    """TimescaleDB's time key of a value (the test's own reference)."""
    if isinstance(value, int):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return (value - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)
    return (value - dt.date(1970, 1, 1)).days * 86_400_000_000


def _chunks(db, name: str = "m") -> list[tuple]:
    return db.execute("SELECT range_start_integer, range_end_integer, stripes, rows FROM orochi.chunks"
                      " WHERE hypertable_name = %s::regclass ORDER BY 1", (name,)).fetchall()


def test_create_hypertable_returns_row(db):
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi")
    row = db.execute("SELECT * FROM orochi.create_hypertable('m', 'ts')").fetchone()
    assert row[1:] == ("public", "m", True)
    assert row[0] == db.execute("SELECT 'm'::regclass::oid").fetchone()[0]
    h = db.execute("SELECT time_column, time_attnum, time_type::text, chunk_interval"
                   "  FROM orochi.hypertables").fetchone()
    assert h == ("ts", 1, "timestamp with time zone", 7 * 86_400_000_000)


def test_create_hypertable_errors(db):
    db.execute("CREATE TABLE heap (ts timestamptz)")
    with pytest.raises(psycopg.errors.WrongObjectType, match="not an orochi columnar table"):
        db.execute("SELECT orochi.create_hypertable('heap', 'ts')")
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, t text, i int) SERVER orochi")
    with pytest.raises(psycopg.errors.UndefinedColumn, match='column "nope" does not exist'):
        db.execute("SELECT orochi.create_hypertable('m', 'nope')")
    with pytest.raises(psycopg.errors.DatatypeMismatch, match='invalid type for dimension "t"'):
        db.execute("SELECT orochi.create_hypertable('m', 't')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="integer time column"):
        db.execute("SELECT orochi.create_hypertable('m', 'i')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="greater than zero"):
        db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '-1 day')")
    db.execute("SELECT orochi.create_hypertable('m', 'ts')")
    with pytest.raises(psycopg.errors.DuplicateObject, match="already a hypertable"):
        db.execute("SELECT orochi.create_hypertable('m', 'ts')")
    row = db.execute("SELECT created FROM orochi.create_hypertable('m', 'ts', if_not_exists => true)").fetchone()
    assert row == (False,)


def test_non_empty_needs_migrate_data(db):
    db.execute("CREATE FOREIGN TABLE m (ts timestamptz, v int) SERVER orochi")
    db.execute("CREATE TABLE h (ts timestamptz, v int)")
    for t in ("m", "h"):
        db.execute(f"INSERT INTO {t} SELECT timestamptz '2024-01-01' + i * interval '1 hour', i"
                   f" FROM generate_series(1, 20000) i")
        db.execute(f"INSERT INTO {t} VALUES ('2023-06-01', -1)")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match='table "m" is not empty') as exc:
        db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '30 days')")
    assert "migrate_data" in exc.value.diag.message_hint
    db.execute("DELETE FROM m WHERE v % 7 = 0")
    db.execute("DELETE FROM h WHERE v % 7 = 0")
    db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '30 days',"
               " migrate_data => true)")
    assert db.execute("SELECT count(*) FROM orochi.columnar_stripes WHERE relid = 'm'::regclass"
                      " AND chunk_id IS NULL").fetchone() == (0,)
    assert db.execute("SELECT delta_rows FROM orochi.delta_size('m')").fetchone() == (0,)
    got = db.execute("SELECT ts, v FROM m ORDER BY v").fetchall()
    assert got == db.execute("SELECT ts, v FROM h ORDER BY v").fetchall()
    # every stripe lies in its chunk
    bad = db.execute("""
        SELECT count(*) FROM m
        JOIN LATERAL (SELECT 1) x ON true
        WHERE NOT EXISTS (SELECT 1 FROM orochi.hypertable_chunks c
                          WHERE c.relid = 'm'::regclass
                            AND (extract(epoch FROM ts) * 1000000)::bigint >= c.range_start
                            AND (extract(epoch FROM ts) * 1000000)::bigint < c.range_end)""").fetchone()
    assert bad == (0,)


@pytest.mark.parametrize("time_type,interval,values", [
    ("timestamptz", "interval '1 day'", "timestamptz '2024-01-01 00:00+00' + i * interval '37 minutes'"),
    ("timestamp", "interval '6 hours'", "timestamp '1969-12-25' + i * interval '7 minutes'"),
    ("date", "interval '3 days'", "date '1969-12-01' + i / 100"),
    ("bigint", "1000", "(i * 13 - 50000)::bigint"),
    ("integer", "777", "(i * 7 - 30000)"),
    ("smallint", "100", "(i % 30000 - 15000)::smallint"),
])
def test_insert_routes_rows_to_chunks(db, time_type, interval, values):
    _make(db, "m", time_type, interval, "OPTIONS (delta_row_limit '100', stripe_row_limit '2000')")
    db.execute(f"CREATE TABLE h (ts {time_type}, device int, v float8, note text)")
    for t in ("m", "h"):
        db.execute(f"INSERT INTO {t} SELECT {values}, i % 10, i * 0.5, 'n' || i FROM generate_series(1, 5000) i")
        db.execute(f"INSERT INTO {t} SELECT {values}, 1, 2, 'small' FROM generate_series(6000, 6002) i")
    assert db.execute("SELECT x::text FROM m x ORDER BY 1").fetchall() == \
        db.execute("SELECT x::text FROM h x ORDER BY 1").fetchall()
    # one chunk per stripe, and stripes never span two chunks
    rows = db.execute("""
        SELECT s.stripe_id, s.chunk_id, c.range_start, c.range_end
          FROM orochi.columnar_stripes s LEFT JOIN orochi.hypertable_chunks c USING (chunk_id)
         WHERE s.relid = 'm'::regclass""").fetchall()
    assert rows and all(r[1] is not None and r[2] is not None for r in rows)
    chunks = _chunks(db)
    assert sum(c[3] for c in chunks) == 5003
    assert len(chunks) > 1
    # each chunk holds exactly the heap's rows of its range
    interval = chunks[0][1] - chunks[0][0]
    per_chunk = collections.Counter((_key(r[0]) // interval) * interval
                                    for r in db.execute("SELECT ts FROM h").fetchall())
    assert {c[0]: c[3] for c in chunks if c[3]} == dict(per_chunk)
    # compaction keeps stripes in their chunks
    db.execute("SELECT orochi.compact('m')")
    assert db.execute("SELECT count(*) FROM orochi.columnar_stripes WHERE relid = 'm'::regclass"
                      " AND chunk_id IS NULL").fetchone() == (0,)
    assert sum(c[3] for c in _chunks(db)) == 5003
    assert db.execute("SELECT x::text FROM m x ORDER BY 1").fetchall() == \
        db.execute("SELECT x::text FROM h x ORDER BY 1").fetchall()


def test_null_time_is_refused(db):
    _make(db)
    with pytest.raises(psycopg.errors.NotNullViolation, match='null value in column "ts"'):
        db.execute("INSERT INTO m VALUES (NULL, 1, 1, 'x')")
    with pytest.raises(psycopg.errors.NotNullViolation):
        db.execute("INSERT INTO m SELECT CASE WHEN i = 500 THEN NULL ELSE now() END, i, 0, ''"
                   " FROM generate_series(1, 3000) i")
    db.execute("INSERT INTO m VALUES (now(), 1, 1, 'x')")
    with pytest.raises(psycopg.errors.NotNullViolation):
        db.execute("UPDATE m SET ts = NULL")
    assert db.execute("SELECT count(*) FROM m").fetchone() == (1,)


def test_infinite_time_is_refused(db):
    _make(db)
    with pytest.raises(psycopg.errors.DatetimeFieldOverflow, match="infinite"):
        db.execute("INSERT INTO m VALUES ('infinity', 1, 1, 'x')")


def test_show_and_drop_chunks(db):
    _make(db, interval="interval '1 day'")
    db.execute("CREATE TABLE h (ts timestamptz, device int, v float8, note text)")
    for t in ("m", "h"):
        db.execute(f"INSERT INTO {t} SELECT timestamptz '2024-01-01 00:00+00' + i * interval '1 hour', i, i, ''"
                   f" FROM generate_series(0, 10 * 24 - 1) i")
        db.execute(f"INSERT INTO {t} VALUES ('2024-01-02 05:00+00', -1, 0, 'delta')")
    db.execute("DELETE FROM m WHERE device = 30")
    db.execute("DELETE FROM h WHERE device = 30")
    all_chunks = [r[0] for r in db.execute("SELECT orochi.show_chunks('m')").fetchall()]
    assert len(all_chunks) == 10
    old = [r[0] for r in db.execute(
        "SELECT orochi.show_chunks('m', older_than => timestamptz '2024-01-04 00:00+00')").fetchall()]
    assert old == all_chunks[:3]
    new = [r[0] for r in db.execute(
        "SELECT orochi.show_chunks('m', newer_than => timestamptz '2024-01-08 12:00+00')").fetchall()]
    assert new == all_chunks[8:]
    # rolled back: nothing lost
    db.execute("BEGIN")
    db.execute("SELECT orochi.drop_chunks('m', older_than => timestamptz '2024-01-04 00:00+00')")
    db.execute("ROLLBACK")
    assert db.execute("SELECT count(*) FROM m").fetchone() == db.execute("SELECT count(*) FROM h").fetchone()
    dropped = [r[0] for r in db.execute(
        "SELECT orochi.drop_chunks('m', older_than => timestamptz '2024-01-04 00:00+00')").fetchall()]
    assert dropped == all_chunks[:3]
    db.execute("DELETE FROM h WHERE ts < '2024-01-04 00:00+00'")
    assert db.execute("SELECT x::text FROM m x ORDER BY 1").fetchall() == \
        db.execute("SELECT x::text FROM h x ORDER BY 1").fetchall()
    assert [r[0] for r in db.execute("SELECT orochi.show_chunks('m')").fetchall()] == all_chunks[3:]


def test_show_chunks_errors(db):
    db.execute("CREATE FOREIGN TABLE plain (ts timestamptz) SERVER orochi")
    with pytest.raises(psycopg.errors.WrongObjectType, match="not a hypertable"):
        db.execute("SELECT orochi.show_chunks('plain')")
    _make(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="older_than/newer_than"):
        db.execute("SELECT orochi.drop_chunks('m')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid time argument type"):
        db.execute("SELECT orochi.drop_chunks('m', older_than => 5)")
    _make(db, "mi", "bigint", "10")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid time argument type"):
        db.execute("SELECT orochi.drop_chunks('mi', older_than => interval '1 day')")


def test_drop_and_truncate_clean_catalog(db):
    _make(db)
    db.execute("INSERT INTO m VALUES (now(), 1, 1, 'x')")
    db.execute("TRUNCATE m")
    assert db.execute("SELECT count(*) FROM orochi.hypertable_chunks").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM orochi.hypertables").fetchone() == (1,)
    db.execute("INSERT INTO m VALUES (now(), 1, 1, 'x')")
    db.execute("DROP FOREIGN TABLE m")
    assert db.execute("SELECT count(*) FROM orochi.hypertable_chunks").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM orochi.hypertables").fetchone() == (0,)


def test_extreme_times(db):
    _make(db, interval="interval '100 years'")
    db.execute("CREATE TABLE h (ts timestamptz, device int, v float8, note text)")
    for t in ("m", "h"):
        db.execute(f"INSERT INTO {t} VALUES ('4713-01-01 00:00+00 BC', 1, 1, 'a'), ('200000-01-01 00:00+00', 2, 2, 'b'),"
                   f" ('1969-12-31 23:59:59.999999+00', 3, 3, 'c'), ('1970-01-01 00:00+00', 4, 4, 'd')")
    assert db.execute("SELECT x::text FROM m x WHERE ts < '1970-01-01 00:00+00' ORDER BY 1").fetchall() == \
        db.execute("SELECT x::text FROM h x WHERE ts < '1970-01-01 00:00+00' ORDER BY 1").fetchall()
    assert db.execute("SELECT x::text FROM m x WHERE ts > '10000-01-01 00:00+00' ORDER BY 1").fetchall() == \
        db.execute("SELECT x::text FROM h x WHERE ts > '10000-01-01 00:00+00' ORDER BY 1").fetchall()
    assert db.execute("SELECT count(*) FROM orochi.chunks").fetchone() == (4,)
    with pytest.raises(psycopg.errors.DatetimeFieldOverflow, match="out of range for a hypertable"):
        db.execute("INSERT INTO m VALUES ('294270-01-01 00:00+00', 1, 1, 'x')")


def test_only_the_owner(db):
    _make(db)
    db.execute("CREATE ROLE intruder")
    db.execute("GRANT ALL ON m TO intruder")
    db.execute("CREATE FOREIGN TABLE other (ts timestamptz) SERVER orochi")
    db.execute("GRANT ALL ON other TO intruder")
    db.execute("SET ROLE intruder")
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match='must be owner of table "m"'):
            db.execute("SELECT orochi.drop_chunks('m', older_than => now())")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match='must be owner of table "other"'):
            db.execute("SELECT orochi.create_hypertable('other', 'ts')")
    finally:
        db.execute("RESET ROLE")
        db.execute("DROP OWNED BY intruder")
        db.execute("DROP ROLE intruder")
