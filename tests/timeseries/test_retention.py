"""The retention policy's body (orochi_fdw.timeseries.policies.run_retention),
run through orochi.add_retention_policy + orochi.run_job_now / CALL
orochi.run_job: it drops exactly the chunks lying wholly before now() -
drop_after, the heap table with the same rows is the oracle."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

COLUMNS = "ts timestamptz NOT NULL, device int, v float8"
#: midnight (UTC) of today, so that 1-day chunks line up with whole days
MIDNIGHT = "(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"


def _both(db, sql: str, name: str = "m") -> None:
    db.execute(sql.format(t=name))
    db.execute(sql.format(t=f"{name}_heap"))


def _same(db, name: str = "m") -> None:
    for q in ("SELECT x::text FROM {t} x ORDER BY 1",
              "SELECT count(*), sum(v), min(t), max(t) FROM {t}" if name == "r" else "SELECT count(*) FROM {t}"):
        assert db.execute(q.format(t=name)).fetchall() == db.execute(q.format(t=f"{name}_heap")).fetchall(), q


def _setup(db, name: str = "m") -> None:
    """Ten days and a half of hourly rows of 4 devices, in stripes, delta
    rows, with deletions and updates, one chunk compressed."""
    db.execute(f"CREATE FOREIGN TABLE {name} ({COLUMNS}) SERVER orochi"
               " OPTIONS (delta_row_limit '30', stripe_row_limit '200')")
    db.execute(f"SELECT orochi.create_hypertable('{name}', 'ts', chunk_time_interval => interval '1 day')")
    db.execute(f"CREATE TABLE {name}_heap ({COLUMNS})")
    _both(db, f"INSERT INTO {{t}} SELECT {MIDNIGHT} - interval '10 days' + (g / 4) * interval '1 hour',"
              " g % 4, g FROM generate_series(0, 4 * 252 - 1) g", name)
    _both(db, f"INSERT INTO {{t}} SELECT {MIDNIGHT} - g * interval '1 day' + interval '30 minutes', 9, -g"
              " FROM generate_series(0, 9) g", name)  # delta rows, one per day
    _both(db, "DELETE FROM {t} WHERE device = 1 AND v::int % 3 = 0", name)
    _both(db, "UPDATE {t} SET v = v + 0.5 WHERE device = 2 AND v::int % 5 = 0", name)


def _chunk_starts(db, name: str = "m") -> list:
    return [r[0] for r in db.execute("SELECT range_start FROM orochi.chunks WHERE hypertable_name = %s::regclass"
                                     " ORDER BY range_start", (name,)).fetchall()]


def test_retention_policy_drops_the_chunks_wholly_older_than_the_cutoff(db):
    _setup(db)
    chunk = db.execute("SELECT chunk_name FROM orochi.chunks ORDER BY range_start OFFSET 8 LIMIT 1").fetchone()[0]
    db.execute("SELECT orochi.compress_chunk(%s)", (chunk,))
    starts = _chunk_starts(db)
    assert len(starts) == 11
    job = db.execute("SELECT orochi.add_retention_policy('m', interval '3 days 12 hours')").fetchone()[0]
    # the chunks lying wholly before now() - 3.5 days: 6 or 7 by the time of day
    expected = db.execute("SELECT count(*) FROM orochi.chunks WHERE hypertable_name = 'm'::regclass"
                          " AND range_end <= now() - interval '3 days 12 hours'").fetchone()[0]
    assert expected in (6, 7)
    summary = db.execute("SELECT orochi.run_job_now(%s)", (job,)).fetchone()[0]
    assert f"dropped {expected} chunk(s)" in summary, summary
    db.execute("DELETE FROM m_heap WHERE ts < date_trunc('day', (now() - interval '3 days 12 hours')"
               " AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'")
    _same(db)
    assert _chunk_starts(db) == starts[expected:]
    # nothing of the dropped chunks is left: stripes, delta rows, chunk rows
    assert db.execute("SELECT count(*) FROM orochi.columnar_stripes s WHERE relid = 'm'::regclass"
                      " AND NOT EXISTS (SELECT 1 FROM orochi.hypertable_chunks c WHERE c.chunk_id = s.chunk_id)"
                      ).fetchone()[0] == 0
    # a second run finds nothing more to drop
    assert "dropped 0 chunk(s)" in db.execute("SELECT orochi.run_job_now(%s)", (job,)).fetchone()[0]
    stats = db.execute("SELECT last_run_status, total_successes FROM orochi.job_stats WHERE job_id = %s",
                       (job,)).fetchone()
    assert stats == ("Success", 2)
    # the table still takes writes in the remaining and in new chunks
    _both(db, f"INSERT INTO {{t}} VALUES ({MIDNIGHT} - interval '20 days', 5, 5), ({MIDNIGHT}, 6, 6)")
    _same(db)


def test_retention_through_call_run_job_and_rollback(db):
    _setup(db)
    job = db.execute("SELECT orochi.add_retention_policy('m', interval '1 day')").fetchone()[0]
    with pytest.raises(psycopg.errors.RaiseException):
        with db.transaction():
            db.execute("CALL orochi.run_job(%s)", (job,))
            assert db.execute("SELECT count(*) FROM orochi.chunks WHERE hypertable_name = 'm'::regclass"
                              ).fetchone()[0] == 2
            db.execute("DO $$ BEGIN RAISE EXCEPTION 'undo'; END $$")
    assert len(_chunk_starts(db)) == 11
    _same(db)
    db.execute("CALL orochi.run_job(%s)", (job,))
    db.execute(f"DELETE FROM m_heap WHERE ts < {MIDNIGHT} - interval '1 day'")
    _same(db)
    assert len(_chunk_starts(db)) == 2


def test_retention_of_an_integer_time_column(db):
    db.execute("CREATE FOREIGN TABLE mi (t bigint NOT NULL, v int) SERVER orochi"
               " OPTIONS (delta_row_limit '5', stripe_row_limit '50')")
    db.execute("SELECT orochi.create_hypertable('mi', 't', chunk_time_interval => 100)")
    db.execute("CREATE TABLE mi_heap (t bigint NOT NULL, v int)")
    _both(db, "INSERT INTO {t} SELECT g * 3, g FROM generate_series(0, 330) g", "mi")
    _both(db, "INSERT INTO {t} VALUES (150, -1), (999, -2)", "mi")
    job = db.execute("SELECT orochi.add_retention_policy('mi', 450)").fetchone()[0]
    assert "dropped 4 chunk(s)" in db.execute("SELECT orochi.run_job_now(%s)", (job,)).fetchone()[0]
    _both(db, "DELETE FROM {t} WHERE t < 400", "mi")
    _same(db, "mi")


def test_retention_policy_errors(db):
    db.execute("CREATE FOREIGN TABLE plain (ts timestamptz, v int) SERVER orochi")
    with pytest.raises(psycopg.Error, match="hypertable"):
        db.execute("SELECT orochi.add_retention_policy('plain', interval '1 day')")
    _setup(db)
    with pytest.raises(psycopg.Error, match="drop_after"):
        db.execute("SELECT orochi.add_retention_policy('m', 5)")


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(times=st.lists(st.integers(-50, 250), min_size=1, max_size=120),
       deleted=st.integers(0, 6), compress_after=st.integers(-60, 260), drop_after=st.integers(-60, 260))
def test_random_retention_and_compression_match_the_heap(db, times, deleted, compress_after, drop_after):
    db.execute("DROP FOREIGN TABLE IF EXISTS r")
    db.execute("DROP TABLE IF EXISTS r_heap")
    db.execute("CREATE FOREIGN TABLE r (t int NOT NULL, v int) SERVER orochi"
               " OPTIONS (delta_row_limit '10', stripe_row_limit '16')")
    db.execute("SELECT orochi.create_hypertable('r', 't', chunk_time_interval => 25)")
    db.execute("CREATE TABLE r_heap (t int NOT NULL, v int)")
    values = ", ".join(f"({t}, {i})" for i, t in enumerate(times))
    _both(db, f"INSERT INTO {{t}} VALUES {values}", "r")  # delta rows or stripes by the count
    _both(db, "INSERT INTO {t} SELECT g * 7 % 300 - 50, -g FROM generate_series(1, 40) g", "r")  # stripes
    _both(db, f"DELETE FROM {{t}} WHERE v % 7 = {deleted}", "r")
    compress = db.execute("SELECT orochi.add_compression_policy('r', %s)", (compress_after,)).fetchone()[0]
    db.execute("SELECT orochi.run_job_now(%s)", (compress,))
    # every chunk wholly below compress_after is Compressed, no other one is
    for end, status in db.execute("SELECT range_end_integer, compression_status FROM orochi.chunks"
                                  " WHERE hypertable_name = 'r'::regclass").fetchall():
        assert status == ("Compressed" if end <= compress_after else "Uncompressed"), (end, status)
    _same(db, "r")
    retention = db.execute("SELECT orochi.add_retention_policy('r', %s)", (drop_after,)).fetchone()[0]
    db.execute("SELECT orochi.run_job_now(%s)", (retention,))
    # the chunks wholly below drop_after are gone: the rows below the start of drop_after's chunk
    db.execute("DELETE FROM r_heap WHERE t < %s", ((drop_after // 25) * 25,))
    _same(db, "r")
    assert db.execute("SELECT count(*) FROM orochi.chunks WHERE hypertable_name = 'r'::regclass"
                      " AND range_end_integer <= %s", (drop_after,)).fetchone()[0] == 0
