"""show_chunks / drop_chunks as TimescaleDB selects chunks: by time range
(older_than, newer_than: the end must come after the start) or by creation
time (created_before, created_after); and chunk intervals that fit the time
column's type. The chunks' creation times are set in the catalog so that the
bounds are exact; the heap table is the oracle for the rows that remain."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

UTC = dt.timezone.utc
DAY0 = dt.datetime(2024, 1, 1, tzinfo=UTC)


def _make(db, name: str = "m", time_type: str = "timestamptz", interval: str = "interval '1 day'") -> None:
    db.execute(f"CREATE FOREIGN TABLE {name} (ts {time_type}, v int) SERVER orochi"
               f" OPTIONS (delta_row_limit '5')")
    db.execute(f"SELECT orochi.create_hypertable('{name}', 'ts', chunk_time_interval => {interval})")


def _names(db, sql: str, params=()) -> list[str]:
    return [r[0] for r in db.execute(sql, params).fetchall()]


def _ten_days(db) -> tuple[list[str], list[dt.datetime]]:
    """A hypertable m (one chunk a day for 10 days) and its heap twin h, chunk
    i created at 2030-01-01 + i hours; returns the chunk names in time order
    and the creation times."""
    _make(db)
    db.execute("CREATE TABLE h (ts timestamptz, v int)")
    for t in ("m", "h"):
        db.execute(f"INSERT INTO {t} SELECT timestamptz '2024-01-01 00:00+00' + i * interval '3 hours', i"
                   f" FROM generate_series(0, 10 * 8 - 1) i")
    names = _names(db, "SELECT orochi.show_chunks('m')")
    assert len(names) == 10
    created = [dt.datetime(2030, 1, 1, tzinfo=UTC) + dt.timedelta(hours=i) for i in range(10)]
    for name, at in zip(names, created):
        db.execute("UPDATE orochi.hypertable_chunks SET created_at = %s"
                   " WHERE '_hyper_' || relid || '_' || chunk_id || '_chunk' = %s", (at, name))
    return names, created


def test_chunks_have_a_creation_time(db):
    _make(db)
    before = db.execute("SELECT clock_timestamp()").fetchone()[0]
    db.execute("INSERT INTO m VALUES ('2024-01-01', 1), ('2024-01-05', 2)")
    after = db.execute("SELECT clock_timestamp()").fetchone()[0]
    times = [r[0] for r in db.execute("SELECT chunk_creation_time FROM orochi.chunks ORDER BY range_start")]
    assert len(times) == 2 and all(before <= t <= after for t in times)
    # a chunk made later in the same transaction has a later time (the clock, not now())
    db.execute("BEGIN")
    db.execute("INSERT INTO m VALUES ('2024-02-01', 3)")
    db.execute("INSERT INTO m VALUES ('2024-03-01', 4)")
    db.execute("COMMIT")
    feb, mar = [r[0] for r in db.execute(
        "SELECT chunk_creation_time FROM orochi.chunks WHERE range_start >= '2024-02-01' ORDER BY range_start")]
    assert feb < mar


@pytest.mark.parametrize("args,expect", [
    ("created_before => timestamptz '2030-01-01 03:00+00'", range(0, 3)),       # strictly before
    ("created_after => timestamptz '2030-01-01 03:00+00'", range(3, 10)),       # at or after
    ("created_before => timestamptz '2030-01-01 07:00+00', created_after => timestamptz '2030-01-01 02:30+00'",
     range(3, 7)),
    ("created_after => timestamp '2030-01-01 08:00'", range(8, 10)),            # a timestamp: in the session's zone
    ("created_before => date '2030-01-01'", range(0, 0)),
    ("created_before => '2030-01-01 01:00+00'", range(0, 1)),                  # an untyped literal: timestamptz
    ("created_before => timestamptz 'infinity'", range(0, 10)),
    ("created_after => timestamptz '-infinity'", range(0, 10)),
    ("created_before => interval '-10 years'", range(0, 10)),                  # now() - interval
    ("created_after => interval '-10 years'", range(0, 0)),
])
def test_show_chunks_by_creation_time(db, args, expect):
    db.execute("SET TimeZone = 'UTC'")
    names, _ = _ten_days(db)
    assert _names(db, f"SELECT orochi.show_chunks('m', {args})") == [names[i] for i in expect]


def test_drop_chunks_by_creation_time(db):
    db.execute("SET TimeZone = 'UTC'")
    names, created = _ten_days(db)
    db.execute("BEGIN")
    dropped = _names(db, "SELECT orochi.drop_chunks('m', created_before => %s::timestamptz)", (created[4],))
    db.execute("ROLLBACK")
    assert dropped == names[:4]
    assert db.execute("SELECT count(*) FROM m").fetchone() == (80,)
    dropped = _names(db, "SELECT orochi.drop_chunks('m', created_after => %s::timestamptz,"
                         " created_before => %s::timestamptz)", (created[2], created[5]))
    assert dropped == names[2:5]
    db.execute("DELETE FROM h WHERE ts >= '2024-01-03' AND ts < '2024-01-06'")
    assert _names(db, "SELECT x::text FROM m x ORDER BY 1") == _names(db, "SELECT x::text FROM h x ORDER BY 1")
    assert _names(db, "SELECT orochi.show_chunks('m')") == names[:2] + names[5:]


def test_drop_chunks_verbose_reports_each_chunk(db):
    db.execute("SET TimeZone = 'UTC'")
    names, created = _ten_days(db)
    notices = []
    db.add_notice_handler(lambda d: notices.append((d.severity, d.message_primary)))
    dropped = _names(db, "SELECT orochi.drop_chunks('m', older_than => timestamptz '2024-01-03', verbose => true)")
    assert dropped == names[:2]
    assert notices == [("INFO", f"dropping chunk {n}") for n in names[:2]]
    notices.clear()
    assert _names(db, "SELECT orochi.drop_chunks('m', created_before => %s::timestamptz)", (created[3],)) == \
        [names[2]]
    assert notices == []  # not verbose


def test_integer_hypertables_drop_by_creation_time(db):
    _make(db, "mi", "bigint", "10")
    db.execute("INSERT INTO mi SELECT g, g FROM generate_series(0, 49) g")
    names = _names(db, "SELECT orochi.show_chunks('mi')")
    assert len(names) == 5
    assert _names(db, "SELECT orochi.show_chunks('mi', created_after => now() + interval '1 hour')") == []
    assert _names(db, "SELECT orochi.drop_chunks('mi', created_before => now() + interval '1 hour')") == names
    assert db.execute("SELECT count(*) FROM mi").fetchone() == (0,)


@pytest.mark.parametrize("args", [
    "older_than => timestamptz '2024-01-03', newer_than => timestamptz '2024-01-03'",   # equal
    "older_than => timestamptz '2024-01-03', newer_than => timestamptz '2024-01-05'",   # inverted
    "older_than => interval '20 days', newer_than => interval '10 days'",
])
@pytest.mark.parametrize("function", ["show_chunks", "drop_chunks"])
def test_older_than_must_be_after_newer_than(db, args, function):
    names, _ = _ten_days(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid time range") as err:
        db.execute(f"SELECT orochi.{function}('m', {args})")
    assert err.value.diag.message_hint == "The start of the time range must be before the end."
    assert _names(db, "SELECT orochi.show_chunks('m')") == names


@pytest.mark.parametrize("function", ["show_chunks", "drop_chunks"])
def test_older_than_after_newer_than_on_integers(db, function):
    _make(db, "mi", "integer", "10")
    db.execute("INSERT INTO mi SELECT g, g FROM generate_series(0, 49) g")
    assert len(_names(db, "SELECT orochi.show_chunks('mi', older_than => 40, newer_than => 10)")) == 3
    for older, newer in ((10, 10), (10, 40)):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid time range"):
            db.execute(f"SELECT orochi.{function}('mi', older_than => {older}, newer_than => {newer})")


def test_selection_errors(db):
    _ten_days(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue,
                       match='cannot specify "older_than" or "newer_than" together with "created_before"'):
        db.execute("SELECT orochi.show_chunks('m', older_than => now(), created_before => now())")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="together with"):
        db.execute("SELECT orochi.drop_chunks('m', newer_than => now(), created_after => now())")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid chunk creation time range") as err:
        db.execute("SELECT orochi.show_chunks('m', created_before => timestamptz '2030-01-01',"
                   " created_after => timestamptz '2030-01-01')")
    assert err.value.diag.message_hint == "The start of the time range must be before the end."
    with pytest.raises(psycopg.errors.InvalidParameterValue, match='invalid time argument type "integer"'):
        db.execute("SELECT orochi.show_chunks('m', created_before => 5)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid time range for dropping chunks") as err:
        db.execute("SELECT orochi.drop_chunks('m')")
    assert "created_before/created_after" in err.value.diag.message_hint
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid time argument"):
        db.execute("SELECT orochi.show_chunks('m', older_than => 'not a time')")
    # an untyped literal is read as the time column's type
    assert len(_names(db, "SELECT orochi.show_chunks('m', older_than => '2024-01-03 00:00+00')")) == 2


@pytest.mark.parametrize("time_type,interval,ok", [
    ("smallint", 32767, True),
    ("smallint", 32768, False),
    ("smallint", 0, False),
    ("smallint", -5, False),
    ("integer", 2147483647, True),
    ("integer", 2147483648, False),
    ("bigint", 9223372036854775807, True),
    ("bigint", 0, False),
])
def test_chunk_interval_fits_the_time_column(db, time_type, interval, ok):
    db.execute(f"CREATE FOREIGN TABLE t (ts {time_type}, v int) SERVER orochi")
    sql = f"SELECT orochi.create_hypertable('t', 'ts', chunk_time_interval => {interval}::bigint)"
    if ok:
        db.execute(sql)
        db.execute(f"INSERT INTO t VALUES (-{2 ** (8 if time_type == 'smallint' else 20)}, 1), (7, 2)")
        assert db.execute("SELECT count(*), sum(v) FROM t").fetchone() == (2, 3)
    else:
        bound = {"smallint": 32767, "integer": 2147483647, "bigint": 9223372036854775807}[time_type]
        with pytest.raises(psycopg.errors.InvalidParameterValue,
                           match=f"invalid interval: must be between 1 and {bound}"):
            db.execute(sql)
        assert db.execute("SELECT count(*) FROM orochi.hypertables").fetchone() == (0,)
