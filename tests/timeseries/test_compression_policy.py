"""The compression policy's body (orochi_fdw.timeseries.policies.run_compression)
through orochi.add_compression_policy + run_job: the chunks lying wholly
before now() - compress_after become Compressed, the others stay as they
were, partially compressed chunks are compressed again, and every query
answers as the heap table does; and kill -9 of the postmaster in the middle
of a compression (paused at a fault point) loses and doubles nothing."""

from __future__ import annotations

import pytest

from orochi_fdw.testing.faults import run_until

COLUMNS = "ts timestamptz NOT NULL, device int, v float8"
MIDNIGHT = "(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"


def _both(db, sql: str) -> None:
    db.execute(sql.format(t="m"))
    db.execute(sql.format(t="m_heap"))


def _same(db) -> None:
    for q in ("SELECT x::text FROM {t} x ORDER BY 1",
              "SELECT device, count(*), sum(v), min(ts), max(ts) FROM {t} GROUP BY device ORDER BY device",
              "SELECT ts, v FROM {t} ORDER BY ts DESC, v LIMIT 3"):
        assert db.execute(q.format(t="m")).fetchall() == db.execute(q.format(t="m_heap")).fetchall(), q


def _setup(db, rows_per_hour: int = 4, options: str = "delta_row_limit '30', stripe_row_limit '300'") -> None:
    db.execute(f"CREATE FOREIGN TABLE m ({COLUMNS}) SERVER orochi OPTIONS ({options})")
    db.execute("SELECT orochi.create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')")
    db.execute(f"CREATE TABLE m_heap ({COLUMNS})")
    n = rows_per_hour * 24 * 6
    _both(db, f"INSERT INTO {{t}} SELECT {MIDNIGHT} - interval '5 days'"
              f" + (g * 7 % {n}) * interval '1 hour' / {rows_per_hour}, g % 4, g FROM generate_series(0, {n - 1}) g")
    _both(db, f"INSERT INTO {{t}} SELECT {MIDNIGHT} - g * interval '1 day' + interval '1 minute', 8, -g"
              " FROM generate_series(0, 5) g")
    _both(db, "DELETE FROM {t} WHERE device = 3 AND v::int % 4 = 0")


def _statuses(db) -> list[tuple]:
    return db.execute("SELECT range_end <= now() - interval '2 days', compression_status FROM orochi.chunks"
                      " WHERE hypertable_name = 'm'::regclass ORDER BY range_start").fetchall()


def test_compression_policy(db):
    _setup(db)
    job = db.execute("SELECT orochi.add_compression_policy('m', interval '2 days')").fetchone()[0]
    summary = db.execute("SELECT orochi.run_job_now(%s)", (job,)).fetchone()[0]
    statuses = _statuses(db)
    old = sum(1 for wholly_old, _ in statuses if wholly_old)
    assert old >= 3
    assert summary.startswith(f"compressed {old} chunk(s)"), summary
    assert all(s == ("Compressed" if wholly_old else "Uncompressed") for wholly_old, s in statuses), statuses
    _same(db)
    # nothing to do the second time
    assert db.execute("SELECT orochi.run_job_now(%s)", (job,)).fetchone()[0] == "no chunk to compress"
    # late rows and a deletion in old chunks: partially compressed, compressed again by the next run
    _both(db, f"INSERT INTO {{t}} VALUES ({MIDNIGHT} - interval '4 days 3 hours', 9, 0.5)")
    _both(db, "DELETE FROM {t} WHERE device = 2 AND v::int % 10 = 0 AND ts < now() - interval '3 days'")
    assert "Partially compressed" in {s for _, s in _statuses(db)}
    _same(db)
    db.execute("CALL orochi.run_job(%s)", (job,))
    assert all(s == ("Compressed" if wholly_old else "Uncompressed") for wholly_old, s in _statuses(db))
    _same(db)
    stats = db.execute("SELECT last_run_status, total_successes, last_summary FROM orochi.job_stats"
                       " WHERE job_id = %s", (job,)).fetchone()
    assert stats[:2] == ("Success", 3) and stats[2].startswith("compressed"), stats


def test_compression_policy_integer_time(db):
    db.execute("CREATE FOREIGN TABLE mi (t int NOT NULL, v int) SERVER orochi"
               " OPTIONS (delta_row_limit '5', stripe_row_limit '40')")
    db.execute("SELECT orochi.create_hypertable('mi', 't', chunk_time_interval => 50)")
    db.execute("CREATE TABLE mi_heap (t int NOT NULL, v int)")
    for t in ("mi", "mi_heap"):
        db.execute(f"INSERT INTO {t} SELECT g * 13 % 400, g FROM generate_series(0, 399) g")
        db.execute(f"INSERT INTO {t} VALUES (7, -1), (399, -2)")
    job = db.execute("SELECT orochi.add_compression_policy('mi', 200)").fetchone()[0]
    assert db.execute("SELECT orochi.run_job_now(%s)", (job,)).fetchone()[0].startswith("compressed 4 chunk(s)")
    rows = db.execute("SELECT range_start_integer, compression_status FROM orochi.chunks"
                      " WHERE hypertable_name = 'mi'::regclass ORDER BY 1").fetchall()
    assert rows == [(s, "Compressed" if s + 50 <= 200 else "Uncompressed") for s in range(0, 400, 50)]
    for q in ("SELECT x::text FROM {t} x ORDER BY 1", "SELECT t, v FROM {t} ORDER BY t, v LIMIT 9"):
        assert db.execute(q.format(t="mi")).fetchall() == db.execute(q.format(t="mi_heap")).fetchall()


@pytest.mark.allow_backend_crash
@pytest.mark.parametrize("point", ["compress:after_read", "write_stripe:after_file@2", "compress:after_write",
                                   "compress:before_commit"])
def test_kill9_during_compression(make_cluster, point):
    pg = make_cluster("crashz")
    pg.create_database("c")
    conn = pg.connect("c", autocommit=True)
    _setup(conn, rows_per_hour=400, options="delta_row_limit '30', stripe_row_limit '2000', chunk_group_size '500'")
    expected = conn.execute("SELECT count(*), sum(v) FROM m_heap").fetchone()
    chunk = conn.execute("SELECT chunk_name FROM orochi.chunks ORDER BY range_start OFFSET 1 LIMIT 1").fetchone()[0]
    conn.close()
    run_until(pg.dsn("c"), point, body=lambda c: c.execute("SELECT orochi.compress_chunk(%s)", (chunk,)),
              kill=lambda: pg.kill9(kill_children=True))
    pg.start()
    with pg.connect("c", autocommit=True) as conn:
        assert conn.execute("SELECT count(*), sum(v) FROM m").fetchone() == expected
        _same(conn)
        assert conn.execute("SELECT compression_status FROM orochi.chunks WHERE chunk_name = %s",
                            (chunk,)).fetchone()[0] == "Uncompressed"
        conn.execute("SELECT * FROM orochi.vacuum()")  # the interrupted compression's files are orphans
        conn.execute("SELECT orochi.compress_chunk(%s)", (chunk,))
        assert conn.execute("SELECT compression_status FROM orochi.chunks WHERE chunk_name = %s",
                            (chunk,)).fetchone()[0] == "Compressed"
        _same(conn)
        # the table's folder holds exactly the catalog's files (and the retired ones)
        folder = conn.execute("SELECT regexp_replace(min(orochi._file_path(file_path)), '/[^/]*$', '')"
                              " FROM orochi.columnar_stripes WHERE relid = 'm'::regclass").fetchone()[0]
        on_disk = {f"{folder}/{r[0]}" for r in conn.execute("SELECT pg_ls_dir(%s)", (folder,)).fetchall()
                   if r[0].endswith(".stripe")}
        listed = {r[0] for r in conn.execute(
            "SELECT orochi._file_path(file_path) FROM orochi.columnar_stripes WHERE relid = 'm'::regclass"
            " UNION ALL SELECT orochi._file_path(file_path) FROM orochi.columnar_retired_files"
            " WHERE relid = 'm'::regclass").fetchall()}
        assert on_disk == listed
