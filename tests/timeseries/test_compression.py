"""Chunk compression (orochi.compress_chunk / decompress_chunk): every query
answers as the heap table with the same rows does, before and after, with
deletes, updates and delta rows in the chunks; writes after a compression
make the chunk partially compressed; a rollback leaves the chunk as it was;
readers keep reading during a compression and writers wait or get 40001."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

COLUMNS = "ts timestamptz NOT NULL, device int, cpu float8, temp float8, note text"

#: queries compared with the heap table (pushed-down aggregates, filters, top-N)
QUERIES = [
    "SELECT count(*), sum(cpu), min(ts), max(ts), count(note) FROM {t}",
    "SELECT device, count(*), sum(cpu), avg(temp), min(temp), max(ts) FROM {t} GROUP BY device ORDER BY device",
    "SELECT orochi.time_bucket('6 hours', ts) b, count(*), sum(cpu) FROM {t} GROUP BY b ORDER BY b",
    "SELECT ts, device, cpu FROM {t} WHERE ts >= '2024-01-02 03:00+00' AND ts < '2024-01-03 05:00+00'"
    " ORDER BY ts, device, cpu",
    # every ORDER BY decides between rows that differ in what is selected (ties
    # in ts come in order of storage, which differs between heap and columnar)
    "SELECT * FROM {t} WHERE device = 3 AND cpu > 50 ORDER BY ts, cpu, temp, note",
    "SELECT ts, device FROM {t} ORDER BY ts DESC, device DESC LIMIT 7",
    "SELECT ts, cpu FROM {t} WHERE device = 5 ORDER BY ts, cpu LIMIT 5",
    "SELECT count(*) FROM {t} WHERE note IS NULL",
    "SELECT x::text FROM {t} x ORDER BY 1",
]


def _create(db, name: str = "m", options: str = "delta_row_limit '50', stripe_row_limit '3000',"
            " chunk_group_size '500'") -> None:
    db.execute(f"CREATE FOREIGN TABLE {name} ({COLUMNS}) SERVER orochi OPTIONS ({options})")
    db.execute(f"SELECT orochi.create_hypertable('{name}', 'ts', chunk_time_interval => interval '1 day')")
    db.execute(f"CREATE TABLE {name}_heap ({COLUMNS})")


def _both(db, sql: str, name: str = "m") -> None:
    """Run a statement on the hypertable and on the heap table."""
    db.execute(sql.format(t=name))
    db.execute(sql.format(t=f"{name}_heap"))


def _load(db, name: str = "m") -> None:
    # stripes (big INSERTs, not in time order), delta rows, deletes, updates
    _both(db, "INSERT INTO {t} SELECT timestamptz '2024-01-01 00:00+00' + (g * 7919 % 4000) * interval '61 seconds',"
              " g % 10, (g * 37 % 1000) / 4.0, 20 + (g % 17) * 0.5,"
              " CASE WHEN g % 5 = 0 THEN NULL ELSE 'n' || (g % 13) END FROM generate_series(1, 4000) g", name)
    _both(db, "INSERT INTO {t} SELECT timestamptz '2024-01-02 12:00+00' + g * interval '1 hour', g, g, g, 'late'"
              " FROM generate_series(1, 20) g", name)  # delta rows (20 <= delta_row_limit)
    _both(db, "DELETE FROM {t} WHERE device = 7 AND cpu < 30", name)
    _both(db, "UPDATE {t} SET temp = temp + 1, note = 'upd' WHERE device = 2 AND cpu > 200", name)


def _check(db, name: str = "m") -> None:
    for q in QUERIES:
        got = db.execute(q.format(t=name)).fetchall()
        want = db.execute(q.format(t=f"{name}_heap")).fetchall()
        assert got == want, q


def _chunks(db, name: str = "m") -> list[str]:
    return [r[0] for r in db.execute(f"SELECT orochi.show_chunks('{name}')").fetchall()]


def _status(db, chunk: str) -> tuple:
    return db.execute("SELECT compression_status, is_compressed, stripes FROM orochi.chunks"
                      " WHERE chunk_name = %s", (chunk,)).fetchone()


def test_compress_every_chunk_answers_as_the_heap(db):
    _create(db)
    _load(db)
    _check(db)
    chunks = _chunks(db)
    assert len(chunks) >= 3
    assert {_status(db, c)[0] for c in chunks} == {"Uncompressed"}
    for c in chunks:
        assert db.execute("SELECT orochi.compress_chunk(%s)", (c,)).fetchone()[0] == c
    for c in chunks:
        status, is_compressed, stripes = _status(db, c)
        assert (status, is_compressed) == ("Compressed", True)
        assert stripes == 1  # fewer than stripe_row_limit rows per chunk: one stripe
    # every row left the delta store; the new stripes are sorted by time and zstd
    assert db.execute("SELECT delta_rows FROM orochi.delta_size('m')").fetchone()[0] == 0
    assert db.execute("SELECT bool_and(compression = 'zstd') FROM orochi.columnar_stripes"
                      " WHERE relid = 'm'::regclass").fetchone()[0]
    _check(db)
    # ordered by time inside each stripe: the chunk groups' ranges do not overlap,
    # so a narrow time filter reads one chunk group
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT count(cpu) FROM m"
        " WHERE ts >= '2024-01-02 00:10+00' AND ts < '2024-01-02 00:20+00'").fetchall())
    assert "Chunk Groups Read: 1 of" in plan, plan


def test_writes_after_compression_and_recompression(db):
    _create(db)
    _load(db)
    chunks = _chunks(db)
    for c in chunks:
        db.execute("SELECT orochi.compress_chunk(%s)", (c,))
    # a delete, an update and small inserts into compressed chunks
    _both(db, "DELETE FROM {t} WHERE device = 1 AND ts < '2024-01-02'")
    _both(db, "UPDATE {t} SET cpu = cpu * 2 WHERE device = 4")
    _both(db, "INSERT INTO {t} VALUES ('2024-01-01 05:00:00.5+00', 99, 1.5, 2.5, 'new')")
    _check(db)
    statuses = {c: _status(db, c)[0] for c in chunks}
    assert set(statuses.values()) == {"Partially compressed"}
    # compressing again (the default skips only Compressed chunks) folds it all back
    for c in chunks:
        db.execute("SELECT orochi.compress_chunk(%s)", (c,))
        assert _status(db, c)[:2] == ("Compressed", True)
    _check(db)
    # a second call is a NOTICE, or an error without if_not_compressed
    notices = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary))
    db.execute("SELECT orochi.compress_chunk(%s)", (chunks[0],))
    assert any("already compressed" in n for n in notices)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="already compressed"):
        db.execute("SELECT orochi.compress_chunk(%s, if_not_compressed => false)", (chunks[0],))
    # a new stripe in the chunk (big insert) also makes it partial
    _both(db, "INSERT INTO {t} SELECT timestamptz '2024-01-01 00:00+00' + g * interval '1 second', 1, 1, 1, 'big'"
              " FROM generate_series(1, 100) g")
    assert _status(db, chunks[0])[0] == "Partially compressed"
    _check(db)


def test_decompress_chunk(db):
    _create(db)
    _load(db)
    chunks = _chunks(db)
    db.execute("SELECT orochi.compress_chunk(%s)", (chunks[1],))
    assert db.execute("SELECT orochi.decompress_chunk(%s)", (chunks[1],)).fetchone()[0] == chunks[1]
    assert _status(db, chunks[1])[:2] == ("Uncompressed", False)
    assert db.execute("SELECT bool_and(s.compression = 'auto') FROM orochi.columnar_stripes s"
                      " JOIN orochi.chunks c USING (chunk_id) WHERE c.chunk_name = %s",
                      (chunks[1],)).fetchone()[0]
    _check(db)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="not compressed"):
        db.execute("SELECT orochi.decompress_chunk(%s, if_compressed => false)", (chunks[1],))


def test_bad_chunk_names(db):
    _create(db)
    _load(db)
    for name in ("nope", "_hyper_1_999999_chunk", "_hyper_x_chunk"):
        with pytest.raises(psycopg.errors.UndefinedTable, match="does not exist"):
            db.execute("SELECT orochi.compress_chunk(%s)", (name,))
    # a chunk of another table's oid is not found either
    other = _chunks(db)[0].replace("_hyper_", "_hyper_1")
    with pytest.raises(psycopg.errors.UndefinedTable):
        db.execute("SELECT orochi.compress_chunk(%s)", (other,))


def test_only_the_owner_compresses(db):
    _create(db)
    _load(db)
    chunk = _chunks(db)[0]
    db.execute("CREATE ROLE compression_stranger")
    try:
        db.execute("SET ROLE compression_stranger")
        for fn in ("compress_chunk", "decompress_chunk"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner"):
                db.execute(f"SELECT orochi.{fn}(%s)", (chunk,))
    finally:
        db.execute("RESET ROLE")
        db.execute("DROP ROLE compression_stranger")
    assert _status(db, chunk)[0] == "Uncompressed"


def test_rollback_leaves_the_chunk_as_it_was(db):
    _create(db)
    _load(db)
    chunk = _chunks(db)[1]
    before = db.execute("SELECT stripe_id, orochi._file_path(file_path) FROM orochi.columnar_stripes s"
                        " WHERE relid = 'm'::regclass ORDER BY 1").fetchall()
    delta_before = db.execute("SELECT delta_rows FROM orochi.delta_size('m')").fetchone()[0]
    with pytest.raises(psycopg.errors.RaiseException):
        with db.transaction():
            db.execute("SELECT orochi.compress_chunk(%s)", (chunk,))
            assert _status(db, chunk)[0] == "Compressed"
            db.execute("DO $$ BEGIN RAISE EXCEPTION 'undo'; END $$")
    assert _status(db, chunk)[0] == "Uncompressed"
    assert db.execute("SELECT stripe_id, orochi._file_path(file_path) FROM orochi.columnar_stripes s"
                      " WHERE relid = 'm'::regclass ORDER BY 1").fetchall() == before
    assert db.execute("SELECT delta_rows FROM orochi.delta_size('m')").fetchone()[0] == delta_before
    _check(db)
    # the files the rolled-back compression wrote are gone: the table's folder
    # holds exactly the files of its catalog rows
    assert _files_on_disk(db, "m") == {p for _, p in before}


def _files_on_disk(db, table: str) -> set[str]:
    folder = db.execute("SELECT regexp_replace(min(orochi._file_path(file_path)), '/[^/]*$', '')"
                        " FROM orochi.columnar_stripes WHERE relid = %s::regclass", (table,)).fetchone()[0]
    return {f"{folder}/{r[0]}" for r in db.execute("SELECT pg_ls_dir(%s)", (folder,)).fetchall()
            if r[0].endswith(".stripe")}


def test_stats_functions(db):
    _create(db)
    _load(db)
    chunks = _chunks(db)
    db.execute("SELECT orochi.compress_chunk(%s)", (chunks[0],))
    rows = db.execute("SELECT chunk_name, compression_status, before_compression_total_bytes > 0,"
                      " after_compression_total_bytes > 0, compressed_rows FROM orochi.chunk_compression_stats('m')"
                      ).fetchall()
    assert [r[0] for r in rows] == chunks
    assert rows[0][1:4] == ("Compressed", True, True)
    assert rows[0][4] == db.execute("SELECT count(*) FROM m_heap WHERE ts < %s",
                                    ("2024-01-02 00:00+00",)).fetchone()[0]
    assert all(r[1:] == ("Uncompressed", None, None, None) for r in rows[1:])
    total, compressed, before, after = db.execute(
        "SELECT * FROM orochi.hypertable_compression_stats('m')").fetchone()
    assert (total, compressed) == (len(chunks), 1) and before > 0 and after > 0


def _wait_for_lock(db, application_name: str) -> None:
    """Wait until the session named ``application_name`` waits for a lock."""
    deadline = time.monotonic() + 60
    while db.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                     " AND wait_event_type = 'Lock'", (application_name,)).fetchone()[0] == 0:
        assert time.monotonic() < deadline, f"{application_name} never waited for a lock"
        time.sleep(0.05)


def test_readers_keep_reading_and_writers_wait_or_fail(db, new_connection):
    _create(db)
    _load(db)
    chunk = _chunks(db)[0]
    expected = db.execute("SELECT count(*), sum(cpu) FROM m").fetchone()

    reader = new_connection()
    reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert reader.execute("SELECT count(*), sum(cpu) FROM m").fetchone() == expected

    compressor = new_connection()
    compressor.execute("BEGIN")
    compressor.execute("SELECT orochi.compress_chunk(%s)", (chunk,))

    # a deleter of rows in the chunk waits for the compression, then fails with 40001
    outcome = []

    def delete() -> None:
        with new_connection() as w:
            w.execute("SET application_name = 'compression-writer'")
            try:
                w.execute("DELETE FROM m WHERE ts < '2024-01-01 06:00+00' AND device = 3")
                outcome.append("ok")
            except psycopg.errors.SerializationFailure:
                outcome.append("40001")

    thread = threading.Thread(target=delete)
    thread.start()
    _wait_for_lock(db, "compression-writer")
    # readers do not wait, in the middle of the compression
    assert db.execute("SELECT count(*), sum(cpu) FROM m").fetchone() == expected
    compressor.execute("COMMIT")
    thread.join(30)
    assert outcome == ["40001"]
    # the old snapshot still reads the replaced files; a new one the new stripes
    assert reader.execute("SELECT count(*), sum(cpu) FROM m").fetchone() == expected
    # no vacuum removes the files the open snapshot reads
    db.execute("SELECT * FROM orochi.vacuum('m')")
    assert reader.execute("SELECT count(*), sum(cpu) FROM m").fetchone() == expected
    reader.execute("COMMIT")
    _check(db)
    # the retry succeeds
    _both(db, "DELETE FROM {t} WHERE ts < '2024-01-01 06:00+00' AND device = 3")
    _check(db)


def test_two_compressions_of_one_chunk_take_turns(db, new_connection):
    _create(db)
    _load(db)
    chunk = _chunks(db)[0]
    first = new_connection()
    first.execute("BEGIN")
    first.execute("SELECT orochi.compress_chunk(%s)", (chunk,))
    notices = []

    def second() -> None:
        with new_connection() as c:
            c.add_notice_handler(lambda d: notices.append(d.message_primary))
            c.execute("SET application_name = 'second-compression'")
            c.execute("SELECT orochi.compress_chunk(%s)", (chunk,))

    thread = threading.Thread(target=second)
    thread.start()
    _wait_for_lock(db, "second-compression")
    first.execute("COMMIT")
    thread.join(30)
    assert any("already compressed" in n for n in notices)
    assert _status(db, chunk)[0] == "Compressed"
    _check(db)


def test_every_kind_of_column_survives_compression(db):
    cols = ("ts timestamp NOT NULL, b bool, s smallint, n numeric, j jsonb, u uuid, by bytea, d date,"
            " i interval, a text[], f float4, tx varchar(20)")
    db.execute(f"CREATE FOREIGN TABLE k ({cols}) SERVER orochi OPTIONS (delta_row_limit '20', stripe_row_limit '150')")
    db.execute("SELECT orochi.create_hypertable('k', 'ts', chunk_time_interval => interval '6 hours')")
    db.execute(f"CREATE TABLE k_heap ({cols})")
    gen = ("SELECT timestamp '2024-03-01' + (g * 7 % {n}) * interval '5 minutes', CASE WHEN g % 4 = 0 THEN NULL"
           " ELSE g % 3 = 0 END, (g % 300)::smallint, CASE WHEN g % 6 = 0 THEN NULL ELSE g / 7.0 END,"
           " jsonb_build_object('g', g, 'x', repeat('y', g % 5)), md5(g::text)::uuid,"
           " CASE WHEN g % 5 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END, date '2020-01-01' + g,"
           " g * interval '1 minute 3 seconds', ARRAY['a' || g, NULL, ''], g / 3.0::float4,"
           " CASE WHEN g % 9 = 0 THEN '' ELSE 'v' || g END FROM generate_series(1, {n}) g")
    _both(db, "INSERT INTO {t} " + gen.format(n=500), "k")
    _both(db, "INSERT INTO {t} " + gen.format(n=15), "k")  # delta rows
    _both(db, "DELETE FROM {t} WHERE s % 11 = 0", "k")
    for c in _chunks(db, "k"):
        db.execute("SELECT orochi.compress_chunk(%s)", (c,))
        assert _status(db, c)[0] == "Compressed"
    q = "SELECT x::text FROM {t} x ORDER BY 1"
    assert db.execute(q.format(t="k")).fetchall() == db.execute(q.format(t="k_heap")).fetchall()


def test_columns_added_dropped_and_retyped(db):
    _create(db)
    _load(db)
    chunks = _chunks(db)
    db.execute("SELECT orochi.compress_chunk(%s)", (chunks[0],))
    for t in ("m", "m_heap"):
        db.execute(f"ALTER {'FOREIGN ' if t == 'm' else ''}TABLE {t} ADD COLUMN extra int")
        db.execute(f"ALTER {'FOREIGN ' if t == 'm' else ''}TABLE {t} DROP COLUMN note")
    _both(db, "INSERT INTO {t} VALUES ('2024-01-01 00:00:01+00', 1, 2, 3, 4)")
    for c in chunks:
        db.execute("SELECT orochi.compress_chunk(%s)", (c,))
        assert _status(db, c)[0] == "Compressed"
    q = "SELECT x::text FROM {t} x ORDER BY 1"
    assert db.execute(q.format(t="m")).fetchall() == db.execute(q.format(t="m_heap")).fetchall()
    # a stripe holding a column of an older type is left as it is: the chunk stays partial
    for t in ("m", "m_heap"):
        db.execute(f"ALTER {'FOREIGN ' if t == 'm' else ''}TABLE {t} ALTER COLUMN device TYPE bigint")
    assert _status(db, chunks[1])[0] == "Compressed"  # its data did not change
    _both(db, "INSERT INTO {t} VALUES ('2024-01-02 00:00:01+00', 1, 2, 3, 4)")
    notices = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary))
    db.execute("SELECT orochi.compress_chunk(%s)", (chunks[1],))
    assert any("older type" in n for n in notices), notices
    assert _status(db, chunks[1])[0] == "Partially compressed"
    assert db.execute(q.format(t="m")).fetchall() == db.execute(q.format(t="m_heap")).fetchall()


def test_integer_and_date_time_columns(db):
    for name, typ, interval, gen in (
            ("mi", "bigint", "100", "g * 7"),
            ("md", "date", "interval '7 days'", "date '2020-01-01' + g % 60")):
        db.execute(f"CREATE FOREIGN TABLE {name} (t {typ} NOT NULL, v int, s text) SERVER orochi"
                   " OPTIONS (delta_row_limit '10', stripe_row_limit '100')")
        db.execute(f"SELECT orochi.create_hypertable('{name}', 't', chunk_time_interval => {interval})")
        db.execute(f"CREATE TABLE {name}_heap (t {typ} NOT NULL, v int, s text)")
        _both(db, f"INSERT INTO {{t}} SELECT {gen}, g, md5(g::text) FROM generate_series(1, 300) g", name)
        _both(db, f"INSERT INTO {{t}} SELECT {gen}, g, 'd' FROM generate_series(301, 305) g", name)
        _both(db, "DELETE FROM {t} WHERE v % 9 = 0", name)
        for c in _chunks(db, name):
            db.execute("SELECT orochi.compress_chunk(%s)", (c,))
            assert _status(db, c)[0] == "Compressed"
        for q in ("SELECT x::text FROM {t} x ORDER BY 1", "SELECT t, count(*), sum(v) FROM {t} GROUP BY t ORDER BY t",
                  "SELECT t, v FROM {t} ORDER BY t DESC, v LIMIT 5"):
            assert db.execute(q.format(t=name)).fetchall() == db.execute(q.format(t=f"{name}_heap")).fetchall()


_op = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 5000), st.integers(1, 60)),
    st.tuples(st.just("delete"), st.integers(0, 9), st.integers(0, 100)),
    st.tuples(st.just("update"), st.integers(0, 9), st.integers(0, 100)),
    st.tuples(st.just("compress"), st.integers(0, 9), st.just(0)),
    st.tuples(st.just("decompress"), st.integers(0, 9), st.just(0)),
)
_qual = st.tuples(st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 9))


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=st.lists(_op, min_size=1, max_size=8), quals=st.lists(_qual, min_size=1, max_size=3))
def test_random_writes_and_compressions_match_the_heap(db, ops, quals):
    db.execute("DROP FOREIGN TABLE IF EXISTS m")
    db.execute("DROP TABLE IF EXISTS m_heap")
    if True:
        _create(db, options="delta_row_limit '30', stripe_row_limit '400', chunk_group_size '64'")
        _both(db, "INSERT INTO {t} SELECT timestamptz '2024-01-01 00:00+00' + (g * 7919 % 5000) * interval '90 seconds',"
                  " g % 10, g % 101, g % 7, 'x' || g % 3 FROM generate_series(1, 1500) g")
        for op, a, b in ops:
            if op == "insert":
                _both(db, f"INSERT INTO {{t}} SELECT timestamptz '2024-01-01 00:00+00' + ({a} + g) * interval '90 seconds',"
                          f" g % 10, g, g, NULL FROM generate_series(1, {b}) g")
            elif op == "delete":
                _both(db, f"DELETE FROM {{t}} WHERE device = {a} AND cpu < {b}")
            elif op == "update":
                _both(db, f"UPDATE {{t}} SET cpu = cpu + 1000, ts = ts + interval '1 minute'"
                          f" WHERE device = {a} AND cpu >= {b} AND cpu < {b + 10}")
            else:
                chunks = _chunks(db)
                if chunks:
                    db.execute(f"SELECT orochi.{op}_chunk(%s)", (chunks[a % len(chunks)],))
        _check(db)
        for lo, hi, dev in quals:
            lo, hi = min(lo, hi), max(lo, hi)
            q = ("SELECT device, count(*), sum(cpu), min(ts), max(ts) FROM {t}"
                 f" WHERE ts >= timestamptz '2024-01-01 00:00+00' + {lo} * interval '90 seconds'"
                 f" AND ts < timestamptz '2024-01-01 00:00+00' + {hi} * interval '90 seconds'"
                 f" AND device <> {dev} GROUP BY device ORDER BY device")
            assert db.execute(q.format(t="m")).fetchall() == db.execute(q.format(t="m_heap")).fetchall(), q
