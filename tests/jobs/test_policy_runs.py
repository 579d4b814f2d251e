"""The built-in policies run as jobs: bodies found through the registry, run
by CALL orochi.run_job and by orochi.run_job_background, with a heap table
as the oracle of what remains."""

from __future__ import annotations

import pytest
from psycopg import errors

from jobs_helpers import make_hypertable

# rows at 40, 35, 20 and 1 days ago (4 per day), in 1-day chunks
_ROWS = ("SELECT now() - make_interval(days => d) - make_interval(mins => m), d * 10 + m "
         "FROM unnest(ARRAY[40, 35, 20, 1]) d, generate_series(1, 4) m")


def _fill(db):
    make_hypertable(db, "metrics")
    db.execute("CREATE TABLE metrics_heap (ts timestamptz NOT NULL, v float8)")
    db.execute(f"INSERT INTO metrics SELECT * FROM ({_ROWS}) r")
    db.execute("INSERT INTO metrics_heap SELECT * FROM metrics")


def _rows(db, table):
    return db.execute(f"SELECT ts, v FROM {table} ORDER BY ts, v").fetchall()


def test_retention_policy_run_by_run_job_drops_old_chunks(db):
    _fill(db)
    job_id = db.execute("SELECT orochi.add_retention_policy('metrics', interval '30 days')").fetchone()[0]
    db.execute("CALL orochi.run_job(%s)", [job_id])
    db.execute("DELETE FROM metrics_heap WHERE ts < date_trunc('day', now() - interval '30 days', 'UTC')")
    assert _rows(db, "metrics") == _rows(db, "metrics_heap")
    assert len(_rows(db, "metrics")) == 8
    stats = db.execute("SELECT last_run_status, total_successes, last_summary FROM orochi.job_stats "
                       "WHERE job_id = %s", [job_id]).fetchone()
    assert stats[:2] == ("Success", 1) and stats[2].startswith("dropped 2 chunk")


def test_retention_policy_run_in_a_rolled_back_transaction_keeps_everything(db, new_connection):
    _fill(db)
    job_id = db.execute("SELECT orochi.add_retention_policy('metrics', interval '30 days')").fetchone()[0]
    conn = new_connection(autocommit=False)
    conn.execute("CALL orochi.run_job(%s)", [job_id])
    conn.rollback()
    assert _rows(db, "metrics") == _rows(db, "metrics_heap")


def test_compression_policy_run_in_the_background_keeps_the_rows(db):
    _fill(db)
    job_id = db.execute("SELECT orochi.add_compression_policy('metrics', interval '7 days')").fetchone()[0]
    status, message = db.execute("SELECT status, message FROM orochi.run_job_background(%s)",
                                 [job_id]).fetchone()
    assert status == "Success", message
    assert _rows(db, "metrics") == _rows(db, "metrics_heap")


def test_a_policy_on_a_table_no_longer_a_hypertable_fails_cleanly(db):
    _fill(db)
    job_id = db.execute("SELECT orochi.add_retention_policy('metrics', interval '30 days')").fetchone()[0]
    db.execute("UPDATE orochi.jobs SET config = config || '{\"drop_after\": \"not an interval\"}' "
               "WHERE job_id = %s", [job_id])
    with pytest.raises(errors.Error, match=rf"job {job_id} \(Retention Policy \[{job_id}\] on \"metrics\"\) failed"):
        db.execute("CALL orochi.run_job(%s)", [job_id])
    status, message = db.execute("SELECT status, message FROM orochi.run_job_background(%s)",
                                 [job_id]).fetchone()
    assert status == "Failed" and message
    assert _rows(db, "metrics") == _rows(db, "metrics_heap")
