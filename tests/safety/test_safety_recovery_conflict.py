"""Recovery conflicts on a hot standby reach Python.

They arrive as a ProcSignal (SIGUSR1), not as SIGINT or SIGTERM: the bridge
wraps that handler too, so a query running Python is canceled ("canceling
statement due to conflict with recovery") or its session ended ("terminating
connection due to conflict with recovery") instead of holding WAL replay up
for as long as the Python runs.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

SLOW = ("CREATE FOREIGN TABLE slow (x int) SERVER orochi OPTIONS "
        "(wrapper 'orochi_fdw.testing.wrappers.SlowWrapper')")


@pytest.fixture
def primary_and_standby(make_cluster):
    primary = make_cluster("primary")
    standby = make_cluster("standby", start=False,
                           settings={"hot_standby": True, "max_standby_streaming_delay": 0})
    standby._run([standby.bin("pg_basebackup"), "-D", standby.datadir, "-h", primary.host,
                  "-p", str(primary.port), "-U", primary.user, "-X", "stream", "-R",
                  "--no-sync", "-c", "fast"])
    standby.initialized = True  # its configuration came with the base backup
    standby.start()
    return primary, standby


def _wait_replayed(primary, standby, timeout=30):
    lsn = primary.execute("SELECT pg_current_wal_lsn()")[0][0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn])[0][0]
        if done:
            return
        time.sleep(0.05)
    raise AssertionError("the standby did not replay the primary's WAL in time")


def _run_in_thread(conn, query):
    result = {}

    def run():
        try:
            conn.execute(query)
        except psycopg.Error as exc:
            result["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, result


def _wait_active(standby, dbname, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = standby.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
                               "AND query LIKE 'SELECT * FROM slow%%'", [dbname])
        if rows:
            return rows[0][0]
        time.sleep(0.02)
    raise AssertionError("the query did not start on the standby")


def test_lock_conflict_cancels_python_on_the_standby(primary_and_standby):
    primary, standby = primary_and_standby
    primary.create_database("app")
    primary.execute(SLOW, dbname="app")
    _wait_replayed(primary, standby)
    conn = standby.connect("app", autocommit=True)
    # a safety net: without the fix the query ends only by this timeout
    conn.execute("SET statement_timeout = '60s'")
    t, result = _run_in_thread(conn, "SELECT * FROM slow")
    _wait_active(standby, "app")
    # an AccessExclusiveLock on the table, replayed on the standby
    primary.execute("ALTER FOREIGN TABLE slow ADD COLUMN y int", dbname="app")
    t.join(60)
    assert isinstance(result.get("error"), psycopg.errors.SerializationFailure), result
    assert "canceling statement due to conflict with recovery" in str(result["error"])
    conn.close()  # (Postgres may also end the session: a second signal can find it idle)
    _wait_replayed(primary, standby)
    with standby.connect("app", autocommit=True) as after:
        assert after.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = 'slow'::regclass "
                             "AND attname = 'y'").fetchone() == (1,)
        assert after.execute("SELECT count(*) FROM (SELECT * FROM orochi.python_info()) i").fetchone()[0] >= 3


def test_database_conflict_terminates_python_on_the_standby(primary_and_standby):
    primary, standby = primary_and_standby
    primary.create_database("doomed")
    primary.execute(SLOW, dbname="doomed")
    _wait_replayed(primary, standby)
    bystander = standby.connect("postgres", autocommit=True)
    bystander_pid = bystander.info.backend_pid
    conn = standby.connect("doomed", autocommit=True)
    conn.execute("SET statement_timeout = '60s'")
    t, result = _run_in_thread(conn, "SELECT * FROM slow")
    _wait_active(standby, "doomed")
    primary.execute("DROP DATABASE doomed")
    t.join(60)
    assert isinstance(result.get("error"), psycopg.OperationalError), result
    assert "terminating connection due to conflict with recovery" in str(result["error"])
    _wait_replayed(primary, standby)
    assert bystander.execute("SELECT pg_backend_pid()").fetchone() == (bystander_pid,)
    assert "terminated by signal" not in standby.log_tail(50)
