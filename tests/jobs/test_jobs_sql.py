"""The jobs catalog through SQL: user-defined actions, alter_job,
delete_job, the retention and compression policies, and their errors."""

from __future__ import annotations

import datetime

import pytest
from psycopg import errors

from jobs_helpers import make_hypertable


def _job(db, job_id):
    # relid is a regclass (written by name in dumps): read it as its oid here
    cur = db.execute("SELECT *, relid::oid AS relid FROM orochi.jobs WHERE job_id = %s", [job_id])
    row = cur.fetchone()
    return dict(zip([c.name for c in cur.description], row)) if row else None


def _stats(db, job_id):
    cur = db.execute("SELECT * FROM orochi.job_stats WHERE job_id = %s", [job_id])
    row = cur.fetchone()
    return dict(zip([c.name for c in cur.description], row)) if row else None


# ---------------------------------------------------------------- user-defined actions

def test_add_job_stores_a_user_defined_action(db, steered_procedure):
    first = db.execute("SELECT orochi.add_job('steered', interval '1 hour', '{\"x\": 1}')").fetchone()[0]
    second = db.execute("SELECT orochi.add_job('public.steered', '2 hours', scheduled => false, "
                        "initial_start => '2030-01-01 00:00+00')").fetchone()[0]
    assert (first, second) == (1000, 1001)
    job = _job(db, first)
    assert job["application_name"] == "User-Defined Action [1000]"
    assert (job["proc_schema"], job["proc_name"], job["relid"]) == ("public", "steered", None)
    assert job["schedule_interval"] == datetime.timedelta(hours=1)
    assert job["config"] == {"x": 1}
    assert job["scheduled"] is True and job["max_retries"] == -1
    later = _job(db, second)
    assert later["config"] is None and later["scheduled"] is False
    assert later["next_start"] == datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    stats = _stats(db, first)
    assert stats["job_status"] == "Scheduled" and stats["total_runs"] == 0
    assert _stats(db, second)["job_status"] == "Paused"


def test_add_job_refuses_bad_procedures_and_arguments(db, steered_procedure):
    db.execute("CREATE PROCEDURE wrong_args(a int) LANGUAGE sql AS 'SELECT 1'")
    with pytest.raises(errors.UndefinedFunction, match=r"public.wrong_args\(integer, jsonb\) does not exist"):
        db.execute("SELECT orochi.add_job('wrong_args', interval '1 hour')")
    with pytest.raises(errors.UndefinedFunction):
        db.execute("SELECT orochi.add_job('no_such_procedure', interval '1 hour')")
    with pytest.raises(errors.InvalidParameterValue, match="schedule_interval cannot be NULL"):
        db.execute("SELECT orochi.add_job('steered', NULL)")
    with pytest.raises(errors.InvalidParameterValue, match="invalid job setting"):
        db.execute("SELECT orochi.add_job('steered', interval '-1 hour')")
    assert db.execute("SELECT count(*) FROM orochi.jobs").fetchone()[0] == 0


def test_alter_job_changes_only_what_is_given(db, steered_procedure):
    job_id = db.execute("SELECT orochi.add_job('steered', interval '1 hour', '{\"a\": 1}')").fetchone()[0]
    row = db.execute(
        "SELECT * FROM orochi.alter_job(%s, schedule_interval => interval '10 minutes', max_retries => 3, "
        "retry_period => interval '1 minute', max_runtime => interval '30 seconds', "
        "next_start => '2031-02-03 04:05+00')", [job_id]).fetchone()
    assert row == (job_id, datetime.timedelta(minutes=10), datetime.timedelta(seconds=30), 3,
                   datetime.timedelta(minutes=1), True, {"a": 1},
                   datetime.datetime(2031, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
    db.execute("SELECT orochi.alter_job(%s, scheduled => false, config => '{\"b\": 2}')", [job_id])
    job = _job(db, job_id)
    assert job["scheduled"] is False and job["config"] == {"b": 2}
    assert job["schedule_interval"] == datetime.timedelta(minutes=10) and job["max_retries"] == 3
    assert _stats(db, job_id)["job_status"] == "Paused"


def test_alter_job_errors(db, steered_procedure):
    job_id = db.execute("SELECT orochi.add_job('steered', interval '1 hour')").fetchone()[0]
    with pytest.raises(errors.UndefinedObject, match="job 4242 not found"):
        db.execute("SELECT orochi.alter_job(4242, scheduled => false)")
    notices = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary))
    assert db.execute("SELECT orochi.alter_job(4242, scheduled => false, if_exists => true)").fetchone() == (None,)
    assert notices == ["job 4242 not found, skipping"]
    with pytest.raises(errors.InvalidParameterValue, match=f"invalid setting for job {job_id}"):
        db.execute("SELECT orochi.alter_job(%s, max_retries => -2)", [job_id])
    with pytest.raises(errors.InvalidParameterValue):
        db.execute("SELECT orochi.alter_job(%s, schedule_interval => interval '0')", [job_id])
    assert _job(db, job_id)["max_retries"] == -1


def test_delete_job(db, steered_procedure):
    job_id = db.execute("SELECT orochi.add_job('steered', interval '1 hour')").fetchone()[0]
    db.execute("SELECT orochi.delete_job(%s)", [job_id])
    assert _job(db, job_id) is None
    assert db.execute("SELECT count(*) FROM orochi.bgw_job_stat").fetchone()[0] == 0
    with pytest.raises(errors.UndefinedObject, match=f"job {job_id} not found"):
        db.execute("SELECT orochi.delete_job(%s)", [job_id])


def test_only_the_owner_alters_runs_or_deletes_a_job(db, steered_procedure, db_name, pg_cluster):
    job_id = db.execute("SELECT orochi.add_job('steered', interval '1 hour')").fetchone()[0]
    db.execute("DROP ROLE IF EXISTS job_outsider")
    db.execute("CREATE ROLE job_outsider LOGIN")
    try:
        db.execute("GRANT USAGE ON SCHEMA orochi TO job_outsider")
        with pg_cluster.connect(db_name, autocommit=True, user="job_outsider") as other:
            for statement in ("SELECT orochi.alter_job(%s, scheduled => false)", "CALL orochi.run_job(%s)",
                              "SELECT orochi.delete_job(%s)"):
                with pytest.raises(errors.InsufficientPrivilege):
                    other.execute(statement, [job_id])
        assert _job(db, job_id)["scheduled"] is True
    finally:
        db.execute("REVOKE ALL ON SCHEMA orochi FROM job_outsider")
        db.execute("DROP ROLE job_outsider")


# ---------------------------------------------------------------- policies

def test_retention_policy_add_and_remove(db):
    relid = make_hypertable(db, "metrics")
    job_id = db.execute("SELECT orochi.add_retention_policy('metrics', interval '30 days')").fetchone()[0]
    job = _job(db, job_id)
    assert job["application_name"] == f"Retention Policy [{job_id}]"
    assert (job["proc_schema"], job["proc_name"], job["relid"]) == ("orochi", "policy_retention", relid)
    assert job["config"] == {"hypertable_id": relid, "drop_after": "30 days"}
    assert job["schedule_interval"] == datetime.timedelta(days=1)
    assert _stats(db, job_id)["hypertable_name"] == "metrics"

    with pytest.raises(errors.DuplicateObject, match='retention policy already exists for "metrics"'):
        db.execute("SELECT orochi.add_retention_policy('metrics', interval '60 days')")
    notices = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary))
    again = db.execute("SELECT orochi.add_retention_policy('metrics', interval '60 days', "
                       "if_not_exists => true)").fetchone()[0]
    assert again == job_id and notices == ['retention policy already exists for "metrics", skipping']
    assert _job(db, job_id)["config"]["drop_after"] == "30 days"

    db.execute("SELECT orochi.remove_retention_policy('metrics')")
    assert _job(db, job_id) is None
    with pytest.raises(errors.UndefinedObject, match='retention policy not found for "metrics"'):
        db.execute("SELECT orochi.remove_retention_policy('metrics')")
    db.execute("SELECT orochi.remove_retention_policy('metrics', if_exists => true)")
    assert notices[-1] == 'retention policy not found for "metrics", skipping'


def test_policies_take_text_intervals_a_schedule_and_coexist(db):
    relid = make_hypertable(db, "metrics")
    retention = db.execute("SELECT orochi.add_retention_policy('metrics', '2 weeks', "
                           "schedule_interval => interval '6 hours')").fetchone()[0]
    compression = db.execute("SELECT orochi.add_compression_policy('metrics', interval '7 days')").fetchone()[0]
    assert _job(db, retention)["config"] == {"hypertable_id": relid, "drop_after": "14 days"}
    assert _job(db, retention)["schedule_interval"] == datetime.timedelta(hours=6)
    job = _job(db, compression)
    assert job["application_name"] == f"Compression Policy [{compression}]"
    assert (job["proc_name"], job["config"]) == ("policy_compression",
                                                 {"hypertable_id": relid, "compress_after": "7 days"})
    with pytest.raises(errors.DuplicateObject, match='compression policy already exists for "metrics"'):
        db.execute("SELECT orochi.add_compression_policy('metrics', interval '1 day')")
    db.execute("SELECT orochi.remove_compression_policy('metrics')")
    assert _job(db, retention) is not None and _job(db, compression) is None


@pytest.mark.parametrize("time_type", ["integer", "bigint", "smallint"])
def test_integer_hypertables_take_integer_lags(db, time_type):
    relid = make_hypertable(db, "ticks", time_type)
    job_id = db.execute("SELECT orochi.add_retention_policy('ticks', 1000)").fetchone()[0]
    assert _job(db, job_id)["config"] == {"hypertable_id": relid, "drop_after": 1000}
    job_id = db.execute("SELECT orochi.add_compression_policy('ticks', 50::bigint)").fetchone()[0]
    assert _job(db, job_id)["config"] == {"hypertable_id": relid, "compress_after": 50}
    db.execute("SELECT orochi.remove_retention_policy('ticks')")
    with pytest.raises(errors.InvalidParameterValue, match="invalid value for parameter drop_after") as info:
        db.execute("SELECT orochi.add_retention_policy('ticks', interval '1 day')")
    assert info.value.diag.message_hint == "Use an integer for drop_after."
    with pytest.raises(errors.InvalidParameterValue, match="drop_after"):
        db.execute("SELECT orochi.add_retention_policy('ticks', 'ten')")


def test_timestamp_hypertables_refuse_integer_lags(db):
    make_hypertable(db, "metrics", "timestamp")
    with pytest.raises(errors.InvalidParameterValue, match="invalid value for parameter drop_after") as info:
        db.execute("SELECT orochi.add_retention_policy('metrics', 30)")
    assert "interval" in info.value.diag.message_hint
    with pytest.raises(errors.InvalidParameterValue, match="compress_after"):
        db.execute("SELECT orochi.add_compression_policy('metrics', 'not an interval')")
    with pytest.raises(errors.InvalidParameterValue, match="drop_after cannot be NULL"):
        db.execute("SELECT orochi.add_retention_policy('metrics', NULL::interval)")
    assert db.execute("SELECT count(*) FROM orochi.jobs").fetchone()[0] == 0


def test_policies_refuse_tables_that_are_not_hypertables(db):
    db.execute("CREATE FOREIGN TABLE plain_columnar (ts timestamptz, v float8) SERVER orochi")
    db.execute("CREATE TABLE heap (ts timestamptz)")
    for table in ("plain_columnar", "heap"):
        with pytest.raises(errors.WrongObjectType, match=f'table "{table}" is not a hypertable') as info:
            db.execute("SELECT orochi.add_retention_policy(%s, interval '1 day')", [table])
        assert "create_hypertable" in info.value.diag.message_hint
        with pytest.raises(errors.WrongObjectType):
            db.execute("SELECT orochi.remove_compression_policy(%s)", [table])
    with pytest.raises(errors.UndefinedTable):
        db.execute("SELECT orochi.add_retention_policy('no_such_table', interval '1 day')")


def test_dropping_a_hypertable_drops_its_jobs(db, steered_procedure):
    make_hypertable(db, "metrics")
    make_hypertable(db, "other")
    db.execute("SELECT orochi.add_retention_policy('metrics', interval '30 days')")
    kept = db.execute("SELECT orochi.add_retention_policy('other', interval '30 days')").fetchone()[0]
    action = db.execute("SELECT orochi.add_job('steered', interval '1 hour')").fetchone()[0]
    db.execute("DROP FOREIGN TABLE metrics")
    assert [r[0] for r in db.execute("SELECT job_id FROM orochi.jobs ORDER BY 1")] == [kept, action]


def test_policy_added_in_a_rolled_back_transaction_is_gone(db, new_connection):
    make_hypertable(db, "metrics")
    conn = new_connection(autocommit=False)
    conn.execute("SELECT orochi.add_retention_policy('metrics', interval '30 days')")
    conn.rollback()
    assert db.execute("SELECT count(*) FROM orochi.jobs").fetchone()[0] == 0
    db.execute("SELECT orochi.add_retention_policy('metrics', interval '30 days')")


def test_drop_extension_takes_the_jobs_with_it(db, steered_procedure):
    make_hypertable(db, "metrics")
    db.execute("SELECT orochi.add_retention_policy('metrics', interval '1 day')")
    db.execute("SELECT orochi.add_job('steered', interval '1 hour')")
    db.execute("DROP EXTENSION orochi CASCADE")
    db.execute("CREATE EXTENSION orochi")
    assert db.execute("SELECT count(*) FROM orochi.jobs").fetchone()[0] == 0
    assert db.execute("SELECT orochi.add_job('steered', interval '1 hour')").fetchone()[0] == 1000


def test_a_role_without_rights_on_the_jobs_catalog_drops_its_own_tables(db, pg_cluster, db_name):
    db.execute("DROP ROLE IF EXISTS table_owner")
    db.execute("CREATE ROLE table_owner LOGIN")
    try:
        db.execute("GRANT CREATE ON SCHEMA public TO table_owner")
        db.execute("GRANT USAGE ON SCHEMA orochi TO table_owner")  # the columnar drop trigger reads its catalog
        with pg_cluster.connect(db_name, autocommit=True, user="table_owner") as other:
            other.execute("CREATE TABLE mine (a int)")
            other.execute("DROP TABLE mine")
    finally:
        db.execute("DROP OWNED BY table_owner")
        db.execute("DROP ROLE table_owner")
