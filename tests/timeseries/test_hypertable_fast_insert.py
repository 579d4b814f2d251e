"""One-row INSERTs into a hypertable: the bridge writes a row whose time falls
in a chunk it knows straight into the delta store (pgext/fdw_modify.c,
Hypertables.fast_insert_layout); any other row takes the ordinary path, which
creates the chunk. The rows and chunks must be those the ordinary path makes
(a heap table is the oracle for the rows), also when the chunks change under
a backend that has learned them: chunks dropped, made or compressed by
another session, invalidation logging switched on, columns added.

Whether a statement took the fast path shows in the backend's table
statistics not yet reported: the ordinary path reads orochi.hypertables, the
fast path does not."""

from __future__ import annotations

import datetime as dt
import threading

import psycopg
import pytest

UTC = dt.timezone.utc
DAY = dt.timedelta(days=1)
T0 = dt.datetime(2024, 3, 1, 6, tzinfo=UTC)

INSERT = "INSERT INTO {} (ts, device, v) VALUES (%s, %s, %s)"
ROWS = "SELECT ts, device, v FROM {} ORDER BY ts, device, v"
CATALOG_READS = ("SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0) FROM pg_stat_xact_user_tables"
                 " WHERE relid = 'orochi.hypertables'::regclass")


def make_tables(db, name: str = "m", time_type: str = "timestamptz", interval: str = "interval '1 day'"):
    db.execute(f"CREATE TABLE {name}_heap (ts {time_type}, device int, v float8)")
    db.execute(f"CREATE FOREIGN TABLE {name} (ts {time_type}, device int, v float8) SERVER orochi")
    db.execute(f"SELECT orochi.create_hypertable('{name}', 'ts', {interval})")


def insert(conn, name: str, row, heap: bool = True) -> bool:
    """Insert a row into the hypertable (and the heap oracle); whether the
    bridge took the fast path."""
    with conn.transaction():   # (the counts are flushed only outside a transaction)
        before = conn.execute(CATALOG_READS).fetchone()[0]
        conn.execute(INSERT.format(name), row, prepare=True)
        fast = conn.execute(CATALOG_READS).fetchone()[0] == before
    if heap:
        conn.execute(INSERT.format(name + "_heap"), row, prepare=True)
    return fast


def chunks(db, name: str = "m") -> list[str]:
    return [r[0] for r in db.execute(f"SELECT orochi.show_chunks('{name}')").fetchall()]


def same_as_heap(db, name: str = "m") -> None:
    assert db.execute(ROWS.format(name)).fetchall() == db.execute(ROWS.format(name + "_heap")).fetchall()


TIME_TYPES = [
    ("timestamptz", "interval '1 day'", [T0, T0 + dt.timedelta(hours=3), T0 + 2 * DAY]),
    ("timestamp", "interval '1 day'", [T0.replace(tzinfo=None), T0.replace(tzinfo=None, hour=23, minute=59),
                                       T0.replace(tzinfo=None) + 3 * DAY]),
    ("date", "interval '7 days'", [dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 4, 1)]),
    ("bigint", "1000", [-5, -1000, 10**15]),
]


def test_rows_and_chunks_equal_the_ordinary_path(db, new_connection):
    writer = new_connection()
    for n, (time_type, interval, values) in enumerate(TIME_TYPES):
        fast, slow = f"m{n}", f"slow{n}"
        make_tables(db, fast, time_type, interval)
        make_tables(db, slow, time_type, interval)
        first, same_chunk, other_chunk = values
        order = [first, first, same_chunk, other_chunk, other_chunk, same_chunk]
        taken = [insert(writer, fast, (ts, k, k / 2)) for k, ts in enumerate(order)]
        # a new chunk takes the ordinary path; the next statement learns the
        # chunks (reading the catalog) and writes fast, as do the ones after it
        assert taken == [False, False, True, False, False, True], time_type
        writer.execute("SET orochi.insert_fast_path = off")
        assert not any(insert(writer, slow, (ts, k, k / 2)) for k, ts in enumerate(order))
        writer.execute("RESET orochi.insert_fast_path")
        same_as_heap(db, fast)
        same_as_heap(db, slow)
        assert len(chunks(db, fast)) == len(chunks(db, slow)) == 2
        ranges = "SELECT range_start, range_end FROM orochi.hypertable_chunks WHERE relid = %s::regclass ORDER BY 1"
        assert db.execute(ranges, (fast,)).fetchall() == db.execute(ranges, (slow,)).fetchall()
        # the rows are ordinary delta rows
        for t in (fast, fast + "_heap"):
            db.execute(f"UPDATE {t} SET v = v + 100 WHERE device = 1")
            db.execute(f"DELETE FROM {t} WHERE device = 2")
        same_as_heap(db, fast)


def test_null_infinite_and_refused_rows(db, new_connection):
    make_tables(db)
    db.execute("ALTER FOREIGN TABLE m ADD CONSTRAINT v_positive CHECK (v > 0)")
    writer = new_connection()
    insert(writer, "m", (T0, 1, 1.0), heap=False)
    insert(writer, "m", (T0, 2, 2.0), heap=False)
    with pytest.raises(psycopg.errors.NotNullViolation, match='null value in column "ts"'):
        writer.execute(INSERT.format("m"), (None, 3, 3.0), prepare=True)
    with pytest.raises(psycopg.errors.DatetimeFieldOverflow):
        writer.execute(INSERT.format("m"), ("infinity", 4, 4.0), prepare=True)
    with pytest.raises(psycopg.errors.CheckViolation):
        writer.execute(INSERT.format("m"), (T0, 5, -5.0), prepare=True)
    assert insert(writer, "m", (T0, 6, 6.0), heap=False)
    assert writer.execute("SELECT device FROM m ORDER BY device").fetchall() == [(1,), (2,), (6,)]
    # RETURNING takes the ordinary path
    assert writer.execute("INSERT INTO m VALUES (%s, 7, 7.0) RETURNING device", (T0,)).fetchall() == [(7,)]
    # a rolled back fast row leaves nothing; a chunk made by a rolled back statement is forgotten
    with pytest.raises(psycopg.errors.DivisionByZero):
        with writer.transaction():
            writer.execute(INSERT.format("m"), (T0, 8, 8.0), prepare=True)
            writer.execute(INSERT.format("m"), (T0 + 5 * DAY, 9, 9.0), prepare=True)
            writer.execute(INSERT.format("m"), (T0 + 5 * DAY, 10, 10.0), prepare=True)
            writer.execute("SELECT 1 / 0")
    assert len(chunks(db)) == 1
    assert not insert(writer, "m", (T0 + 5 * DAY, 11, 11.0), heap=False)
    assert len(chunks(db)) == 2
    assert db.execute("SELECT count(*) FROM m").fetchone() == (5,)


def test_chunks_changed_by_another_session(db, new_connection):
    make_tables(db)
    writer = new_connection()
    insert(writer, "m", (T0, 1, 1.0))
    insert(writer, "m", (T0 + DAY, 2, 2.0))
    insert(writer, "m", (T0, 3, 3.0))
    assert insert(writer, "m", (T0, 3, 3.5))
    # drop_chunks in another session: the writer's next row in that range
    # makes the chunk again (it is not written into a chunk that is gone)
    end = dt.datetime(2024, 3, 2, tzinfo=UTC)   # of the first chunk
    assert len(db.execute("SELECT orochi.drop_chunks('m', older_than => %s)", (end,)).fetchall()) == 1
    db.execute("DELETE FROM m_heap WHERE ts < %s", (end,))
    assert len(chunks(db)) == 1
    assert not insert(writer, "m", (T0, 4, 4.0))
    assert len(chunks(db)) == 2
    insert(writer, "m", (T0, 5, 5.0))
    assert insert(writer, "m", (T0, 5, 5.5))
    same_as_heap(db)
    # a chunk made by another session: learned, then written fast
    insert(db, "m", (T0 + 2 * DAY, 6, 6.0))
    insert(writer, "m", (T0 + 2 * DAY, 7, 7.0))
    assert insert(writer, "m", (T0 + 2 * DAY, 7, 7.5))
    assert len(chunks(db)) == 3
    same_as_heap(db)
    # compression of a chunk by another session
    name = chunks(db)[0]
    db.execute("SELECT orochi.compress_chunk(%s)", (name,))
    insert(writer, "m", (T0, 8, 8.0))
    assert insert(writer, "m", (T0, 9, 9.0))
    same_as_heap(db)
    status = db.execute("SELECT chunk_name, compression_status, rows FROM orochi.chunks"
                        " WHERE hypertable_name = 'm'::regclass ORDER BY range_start_integer").fetchall()
    in_chunk = db.execute("SELECT count(*) FROM m_heap WHERE ts < %s", (end,)).fetchone()[0]
    assert status[0] == (name, "Partially compressed", in_chunk)
    # ALTER TABLE under the writer
    db.execute("ALTER FOREIGN TABLE m ADD COLUMN note text")
    writer.execute("INSERT INTO m (ts, device, v, note) VALUES (%s, 10, 10.0, 'x')", (T0,))
    writer.execute("INSERT INTO m (ts, device, v, note) VALUES (%s, 11, 11.0, 'y')", (T0,))
    assert db.execute("SELECT device, note FROM m WHERE note IS NOT NULL ORDER BY 1").fetchall() == [
        (10, "x"), (11, "y")]
    # TRUNCATE: every chunk goes, the next row makes its chunk again
    db.execute("TRUNCATE m")
    assert not insert(writer, "m", (T0, 12, 12.0), heap=False)
    assert len(chunks(db)) == 1


def test_invalidation_logging_switched_on_by_another_session(db, new_connection):
    make_tables(db)
    writer = new_connection()
    insert(writer, "m", (T0, 1, 1.0), heap=False)
    insert(writer, "m", (T0, 2, 2.0), heap=False)
    assert insert(writer, "m", (T0, 2, 2.5), heap=False)
    db.execute("UPDATE orochi.hypertables SET track_invalidations = true WHERE relid = 'm'::regclass")
    assert not insert(writer, "m", (T0, 3, 3.0), heap=False)
    assert not insert(writer, "m", (T0, 4, 4.0), heap=False)
    key = int((T0 - dt.datetime(1970, 1, 1, tzinfo=UTC)) / dt.timedelta(microseconds=1))
    assert db.execute("SELECT lowest, greatest FROM orochi.hypertable_invalidation_log").fetchall() == [
        (key, key), (key, key)]


def test_drop_chunks_waits_for_a_fast_writer(db, new_connection):
    make_tables(db)
    writer = new_connection()
    insert(writer, "m", (T0, 1, 1.0), heap=False)
    insert(writer, "m", (T0, 1, 1.5), heap=False)
    with writer.transaction():
        before = writer.execute(CATALOG_READS).fetchone()[0]
        writer.execute(INSERT.format("m"), (T0, 2, 2.0), prepare=True)
        assert writer.execute(CATALOG_READS).fetchone()[0] == before
        dropper = new_connection()
        pid = dropper.info.backend_pid
        result = {}

        def drop():
            result["dropped"] = dropper.execute("SELECT orochi.drop_chunks('m', older_than => %s)",
                                                (T0 + DAY,)).fetchall()

        thread = threading.Thread(target=drop)
        thread.start()
        # wait (without a clock) until drop_chunks waits for the writer's lock
        while not db.execute("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted"
                             " AND locktype = 'advisory')", (pid,)).fetchone()[0]:
            db.execute("SELECT pg_sleep(0.01)")
    thread.join()
    assert len(result["dropped"]) == 1
    # what the fast writer wrote was dropped with the chunk
    assert db.execute("SELECT count(*) FROM m").fetchone() == (0,)
    assert chunks(db) == []


def test_privileges(db, new_connection):
    make_tables(db)
    db.execute("CREATE ROLE fast_granted LOGIN")
    db.execute("CREATE ROLE fast_reader LOGIN")
    db.execute("GRANT SELECT, INSERT ON m TO fast_granted")
    db.execute("GRANT SELECT ON m TO fast_reader")
    insert(db, "m", (T0, 1, 1.0), heap=False)
    insert(db, "m", (T0, 2, 2.0), heap=False)
    assert insert(db, "m", (T0, 2, 2.5), heap=False)        # the owner
    granted = new_connection(user="fast_granted")
    insert(granted, "m", (T0, 3, 3.0), heap=False)
    assert insert(granted, "m", (T0, 4, 4.0), heap=False)   # granted INSERT
    reader = new_connection(user="fast_reader")
    for _ in range(2):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute(INSERT.format("m"), (T0, 5, 5.0), prepare=True)
    db.execute("REVOKE INSERT ON m FROM fast_granted")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        granted.execute(INSERT.format("m"), (T0, 6, 6.0), prepare=True)
    assert db.execute("SELECT array_agg(device ORDER BY device) FROM m").fetchone() == ([1, 2, 2, 3, 4],)
