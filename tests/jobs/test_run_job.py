"""Running jobs: CALL orochi.run_job in the caller's transaction, and the
scheduler's orochi.run_job_background with its statistics, retries with
backoff, locks and rollback of a failed body."""

from __future__ import annotations

import datetime

import pytest
from psycopg import errors

HOUR = datetime.timedelta(hours=1)
MINUTE = datetime.timedelta(minutes=1)


def _stats(db, job_id):
    cur = db.execute("SELECT * FROM orochi.job_stats WHERE job_id = %s", [job_id])
    return dict(zip([c.name for c in cur.description], cur.fetchone()))


def _make_due(db, job_id):
    db.execute("UPDATE orochi.jobs SET next_start = now() - interval '1 second' WHERE job_id = %s", [job_id])


def _background(db, job_id):
    return db.execute("SELECT status, message, next_start FROM orochi.run_job_background(%s)",
                      [job_id]).fetchone()


def _log(db):
    return [tuple(r) for r in db.execute("SELECT job_id, config FROM job_log ORDER BY at")]


def _fail_with(db, message):
    db.execute("UPDATE job_control SET fail_with = %s", [message])


def test_run_job_runs_now_and_updates_stats(db, steered_procedure):
    job_id = db.execute("SELECT orochi.add_job('steered', interval '1 hour', '{\"k\": \"v\"}', "
                        "initial_start => now() + interval '1 day')").fetchone()[0]
    db.execute("CALL orochi.run_job(%s)", [job_id])
    assert _log(db) == [(job_id, {"k": "v"})]
    stats = _stats(db, job_id)
    assert (stats["last_run_status"], stats["job_status"]) == ("Success", "Scheduled")
    assert (stats["total_runs"], stats["total_successes"], stats["total_failures"]) == (1, 1, 0)
    assert stats["last_summary"] == "called public.steered" and stats["last_error"] is None
    assert stats["next_start"] == stats["last_run_started_at"] + HOUR
    assert stats["last_successful_finish"] >= stats["last_run_started_at"]


def test_run_job_error_reaches_the_caller_and_keeps_nothing(db, steered_procedure, new_connection):
    job_id = db.execute("SELECT orochi.add_job('steered', interval '1 hour')").fetchone()[0]
    _fail_with(db, "disk on fire")
    with pytest.raises(errors.RaiseException, match=rf"job {job_id} \(User-Defined Action \[{job_id}\]\) "
                                                    r"failed: disk on fire"):
        db.execute("CALL orochi.run_job(%s)", [job_id])
    assert _log(db) == []
    assert _stats(db, job_id)["total_runs"] == 0
    conn = new_connection(autocommit=False)
    with pytest.raises(errors.RaiseException):
        conn.execute("CALL orochi.run_job(%s)", [job_id])
    conn.rollback()
    with pytest.raises(errors.UndefinedObject, match="job 999 not found"):
        db.execute("CALL orochi.run_job(999)")


def test_run_job_in_a_transaction_commits_with_it(db, steered_procedure, new_connection):
    job_id = db.execute("SELECT orochi.add_job('steered', interval '1 hour')").fetchone()[0]
    conn = new_connection(autocommit=False)
    conn.execute("CALL orochi.run_job(%s)", [job_id])
    assert _log(db) == [] and _stats(db, job_id)["job_status"] == "Running"
    conn.rollback()
    assert _log(db) == [] and _stats(db, job_id)["total_runs"] == 0
    assert _stats(db, job_id)["job_status"] == "Scheduled"
    conn.execute("CALL orochi.run_job(%s)", [job_id])
    conn.commit()
    assert len(_log(db)) == 1 and _stats(db, job_id)["total_runs"] == 1


def test_failures_are_recorded_and_retried_with_backoff_until_fixed(db, steered_procedure):
    job_id = db.execute("SELECT orochi.add_job('steered', interval '1 hour')").fetchone()[0]
    db.execute("SELECT orochi.alter_job(%s, retry_period => interval '1 minute')", [job_id])
    _fail_with(db, "upstream unavailable")
    delays = []
    for attempt in range(1, 9):
        _make_due(db, job_id)
        status, message, next_start = _background(db, job_id)
        assert (status, message) == ("Failed", "upstream unavailable")
        stats = _stats(db, job_id)
        assert stats["last_error"] == "upstream unavailable" and stats["consecutive_failures"] == attempt
        assert stats["last_run_status"] == "Failed" and stats["next_start"] == next_start
        delays.append(next_start - stats["last_run_started_at"])
    # retry_period doubling (1, 2, 4, ... minutes) up to schedule_interval
    for attempt, delay in enumerate(delays, start=1):
        expected = min(MINUTE * 2 ** (attempt - 1), HOUR)
        assert expected <= delay < expected + datetime.timedelta(seconds=30), (attempt, delay)
    assert _log(db) == []  # each failed body rolled back its own writes

    status, message, _ = _background(db, job_id)
    assert (status, message) == ("Skipped", f"job {job_id} is not due")
    _fail_with(db, None)
    _make_due(db, job_id)
    status, message, next_start = _background(db, job_id)
    assert (status, message) == ("Success", "called public.steered")
    stats = _stats(db, job_id)
    assert (stats["total_runs"], stats["total_successes"], stats["total_failures"]) == (9, 1, 8)
    assert stats["consecutive_failures"] == 0 and stats["last_error"] == "upstream unavailable"
    assert next_start == stats["last_run_started_at"] + HOUR
    assert len(_log(db)) == 1


def test_after_max_retries_a_job_waits_a_full_schedule_interval(db, steered_procedure):
    job_id = db.execute("SELECT orochi.add_job('steered', interval '1 day')").fetchone()[0]
    db.execute("SELECT orochi.alter_job(%s, max_retries => 2, retry_period => interval '10 minutes')", [job_id])
    _fail_with(db, "nope")
    delays = []
    for _ in range(4):
        _make_due(db, job_id)
        _, _, next_start = _background(db, job_id)
        delays.append(next_start - _stats(db, job_id)["last_run_started_at"])
    rounded = [round(d.total_seconds() / 60) for d in delays]
    assert rounded == [10, 20, 24 * 60, 24 * 60]
    assert _stats(db, job_id)["job_status"] == "Scheduled"


def test_background_skips_paused_and_busy_jobs(db, steered_procedure, new_connection):
    job_id = db.execute("SELECT orochi.add_job('steered', interval '1 hour', scheduled => false)").fetchone()[0]
    assert _background(db, job_id)[:2] == ("Skipped", f"job {job_id} is not due")
    db.execute("SELECT orochi.alter_job(%s, scheduled => true)", [job_id])
    holder = new_connection(autocommit=False)
    holder.execute("SELECT pg_advisory_xact_lock(orochi.job_lock_key(%s))", [job_id])
    assert _stats(db, job_id)["job_status"] == "Running"
    assert _background(db, job_id)[:2] == ("Skipped", f"job {job_id} is running in another session")
    holder.rollback()
    assert _background(db, job_id)[0] == "Success"
    assert _background(db, 4321)[:2] == ("Skipped", "job 4321 not found")


def test_one_job_at_a_time_per_table(db, new_connection):
    from jobs_helpers import make_hypertable
    relid = make_hypertable(db, "metrics")
    job_id = db.execute("SELECT orochi.add_retention_policy('metrics', interval '30 days')").fetchone()[0]
    holder = new_connection(autocommit=False)
    holder.execute("SELECT pg_advisory_xact_lock(orochi.job_table_lock_key(%s))", [relid])
    assert _background(db, job_id)[:2] == ("Skipped", 'another job is running on "metrics"')
    holder.rollback()


def test_a_failed_body_rolls_back_its_writes_but_the_failure_is_kept(db, steered_procedure):
    job_id = db.execute("SELECT orochi.add_job('steered', interval '1 hour')").fetchone()[0]
    _fail_with(db, "half way")
    assert _background(db, job_id)[0] == "Failed"
    assert _log(db) == []
    assert _stats(db, job_id)["total_failures"] == 1


def test_record_job_failure(db, steered_procedure):
    job_id = db.execute("SELECT orochi.add_job('steered', interval '1 hour')").fetchone()[0]
    next_start = db.execute("SELECT orochi.record_job_failure(%s, 'connection lost')", [job_id]).fetchone()[0]
    stats = _stats(db, job_id)
    assert stats["last_error"] == "connection lost" and stats["next_start"] == next_start
    assert db.execute("SELECT orochi.record_job_failure(4321, 'x')").fetchone()[0] is None


def test_jobs_run_as_their_owner(db, steered_procedure, pg_cluster, db_name):
    db.execute('DROP ROLE IF EXISTS "Job Owner"')
    db.execute('CREATE ROLE "Job Owner"')
    try:
        db.execute("CREATE TABLE whoami (who text)")
        db.execute('GRANT INSERT ON whoami TO "Job Owner"')
        db.execute("""CREATE PROCEDURE record_user(job_id int, config jsonb) LANGUAGE sql
                      AS $$ INSERT INTO whoami VALUES (current_user) $$""")
        job_id = db.execute("SELECT orochi.add_job('record_user', interval '1 hour')").fetchone()[0]
        db.execute("""UPDATE orochi.jobs SET owner = '"Job Owner"' WHERE job_id = %s""", [job_id])
        assert _background(db, job_id)[0] == "Success"
        assert db.execute("SELECT who FROM whoami").fetchall() == [("Job Owner",)]
        assert db.execute("SELECT current_user").fetchone()[0] != "Job Owner"
        db.execute('REVOKE INSERT ON whoami FROM "Job Owner"')
        _make_due(db, job_id)
        status, message, _ = _background(db, job_id)
        assert (status, message) == ("Failed", "permission denied for table whoami")
    finally:
        db.execute("DROP TABLE IF EXISTS whoami")
        db.execute('DROP ROLE "Job Owner"')


def test_builtin_policy_bodies_are_called_through_the_registry(db):
    """The retention policy's body comes from orochi_fdw.timeseries.policies;
    its outcome (whatever it is) is recorded as for any job."""
    from jobs_helpers import make_hypertable
    make_hypertable(db, "metrics")
    job_id = db.execute("SELECT orochi.add_retention_policy('metrics', interval '30 days')").fetchone()[0]
    status, message, _ = _background(db, job_id)
    stats = _stats(db, job_id)
    assert stats["total_runs"] == 1 and stats["last_run_status"] == status
    if status == "Failed":
        assert stats["last_error"] == message
    else:
        assert status == "Success" and stats["last_summary"] == message


def test_a_job_whose_procedure_was_dropped_fails_naming_it(db, steered_procedure):
    job_id = db.execute("SELECT orochi.add_job('steered', interval '1 hour')").fetchone()[0]
    db.execute("DROP PROCEDURE steered")
    status, message, _ = _background(db, job_id)
    assert (status, message) == ("Failed", "function or procedure public.steered(integer, jsonb) does not exist")
    with pytest.raises(errors.UndefinedFunction, match=rf"job {job_id} .* failed: function or procedure"):
        db.execute("CALL orochi.run_job(%s)", [job_id])
