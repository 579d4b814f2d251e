"""Cancel, statement_timeout and terminate reach Python code."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest


@pytest.mark.parametrize("wrapper", ["SlowWrapper", "SleepWrapper"])
def test_statement_timeout_stops_python(db, foreign_table, wrapper):
    foreign_table("slow", "x int", wrapper)
    db.execute("SET statement_timeout = '300ms'")
    start = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
        db.execute("SELECT * FROM slow")
    assert time.monotonic() - start < 1.3
    db.execute("RESET statement_timeout")
    assert db.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("wrapper", ["SlowWrapper", "SleepWrapper"])
def test_cancel_backend_stops_python(db, new_connection, foreign_table, wrapper):
    foreign_table("slow", "x int", wrapper)
    pid = db.execute("SELECT pg_backend_pid()").fetchone()[0]
    other = new_connection()
    result = {}

    def cancel():
        time.sleep(0.5)
        result["sent"] = time.monotonic()
        other.execute("SELECT pg_cancel_backend(%s)", [pid])

    t = threading.Thread(target=cancel)
    t.start()
    with pytest.raises(psycopg.errors.QueryCanceled, match="user request"):
        db.execute("SELECT * FROM slow")
    stopped = time.monotonic()
    t.join()
    assert stopped - result["sent"] < 1.0
    # the session is usable, and Python in it too
    assert db.execute("SELECT count(*) FROM (SELECT * FROM orochi.python_info()) i").fetchone()[0] >= 3


def test_terminate_backend_ends_that_backend_only(pg_cluster, db, new_connection, foreign_table):
    foreign_table("slow", "x int", "SlowWrapper")
    bystander = new_connection()
    bystander_pid = bystander.execute("SELECT pg_backend_pid()").fetchone()[0]
    postmaster = pg_cluster.postmaster_pid()
    pid = db.execute("SELECT pg_backend_pid()").fetchone()[0]

    def terminate():
        time.sleep(0.5)
        bystander.execute("SELECT pg_terminate_backend(%s)", [pid])

    t = threading.Thread(target=terminate)
    t.start()
    with pytest.raises(psycopg.OperationalError):
        db.execute("SELECT * FROM slow")
    t.join()
    # no cluster restart: the postmaster and the other backend are the same
    assert pg_cluster.postmaster_pid() == postmaster
    assert bystander.execute("SELECT pg_backend_pid()").fetchone()[0] == bystander_pid
    assert "terminated by signal" not in pg_cluster.log_tail(20)


def test_interrupt_does_not_leak_into_next_query(db, foreign_table):
    """A cancel that arrives as Python returns must not fire later."""
    foreign_table("s", "id int8", "SeriesWrapper", rows=1000, mode="batch")
    db.execute("SET statement_timeout = '50ms'")
    for _ in range(20):
        try:
            db.execute("SELECT count(*) FROM s, pg_sleep(0.04)")
        except psycopg.errors.QueryCanceled:
            pass
    db.execute("RESET statement_timeout")
    for _ in range(20):
        assert db.execute("SELECT count(*) FROM s").fetchone() == (1000,)
