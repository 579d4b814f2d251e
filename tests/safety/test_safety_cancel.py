"""A cancel reports its real reason, also when it lands inside SQL that
Python runs, and Python cannot swallow it.

The bridge forwards a cancel to Python (KeyboardInterrupt at its next
check); when Postgres itself already turned the cancel into an error inside
that SQL, Python must see that error, not a second, anonymous interrupt
("canceling statement due to an interrupt in Python").
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

LOCK_KEY = 424242


@pytest.fixture
def lock_holder(new_connection):
    """A session holding the advisory lock LOCK_KEY in an open transaction."""
    conn = new_connection(autocommit=False)
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
    yield conn
    conn.rollback()


@pytest.mark.parametrize("catch", ["false", "true"])
def test_lock_timeout_inside_python_sql_is_55P03(db, wrapper_table, lock_holder, catch):
    wrapper_table("locker", "x text", "SqlWrapper", sql=f"SELECT pg_advisory_xact_lock({LOCK_KEY})::text",
                  catch=catch)
    # handling an error needs a sub-transaction, which parallel mode refuses
    db.execute("SET force_parallel_mode = off")
    db.execute("SET lock_timeout = '200ms'")
    if catch == "true":
        # a lock timeout is an ordinary error: a wrapper may handle it
        row = db.execute("SELECT * FROM locker").fetchone()
        assert row[0].startswith("caught SPIError: canceling statement due to lock timeout"), row
    else:
        with pytest.raises(psycopg.errors.LockNotAvailable, match="canceling statement due to lock timeout"):
            db.execute("SELECT * FROM locker")
    db.execute("RESET lock_timeout")
    assert db.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("catch", ["false", "true"])
@pytest.mark.parametrize("subtransaction", ["false", "true"])
def test_statement_timeout_inside_python_sql(db, wrapper_table, lock_holder, catch, subtransaction):
    """Also inside spi.subtransaction(): the block is rolled back as the
    cancel passes (its hooks ran with Python's exception kept aside; before,
    the statement failed with "Python call failed without setting an
    exception")."""
    wrapper_table("locker", "x text", "SqlWrapper", sql=f"SELECT pg_advisory_xact_lock({LOCK_KEY})::text",
                  catch=catch, subtransaction=subtransaction)
    db.execute("SET statement_timeout = '300ms'")
    # a cancel ends the statement even if the wrapper catches exceptions
    with pytest.raises(psycopg.errors.QueryCanceled, match="canceling statement due to statement timeout"):
        db.execute("SELECT * FROM locker")
    db.execute("RESET statement_timeout")
    assert db.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("catch", ["false", "true"])
def test_user_cancel_inside_python_sql(db, new_connection, wrapper_table, lock_holder, catch):
    wrapper_table("locker", "x text", "SqlWrapper", sql=f"SELECT pg_advisory_xact_lock({LOCK_KEY})::text",
                  catch=catch)
    pid = db.info.backend_pid
    other = new_connection()

    def cancel_when_waiting():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            waiting = other.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                    [pid]).fetchone()
            if waiting and waiting[0] == "Lock":
                other.execute("SELECT pg_cancel_backend(%s)", [pid])
                return
            time.sleep(0.02)

    t = threading.Thread(target=cancel_when_waiting)
    t.start()
    with pytest.raises(psycopg.errors.QueryCanceled, match="canceling statement due to user request"):
        db.execute("SELECT * FROM locker")
    t.join()
    assert db.execute("SELECT 1").fetchone() == (1,)


def test_terminate_inside_python_sql_ends_that_backend_only(pg_cluster, db, new_connection, wrapper_table,
                                                           lock_holder):
    """pg_terminate_backend while SQL run by Python waits: the process exits
    from inside the Python call; it must not touch the frames still live
    (the crash watcher fails the test on a signal)."""
    wrapper_table("locker", "x text", "SqlWrapper", sql=f"SELECT pg_advisory_xact_lock({LOCK_KEY})::text",
                  catch="true")
    pid = db.info.backend_pid
    other = new_connection()
    postmaster = pg_cluster.postmaster_pid()

    def terminate_when_waiting():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            waiting = other.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                    [pid]).fetchone()
            if waiting and waiting[0] == "Lock":
                other.execute("SELECT pg_terminate_backend(%s)", [pid])
                return
            time.sleep(0.02)

    t = threading.Thread(target=terminate_when_waiting)
    t.start()
    with pytest.raises(psycopg.OperationalError):
        db.execute("SELECT * FROM locker")
    t.join()
    assert pg_cluster.postmaster_pid() == postmaster
    assert other.execute("SELECT 1").fetchone() == (1,)
    assert "terminated by signal" not in pg_cluster.log_tail(30)


# A kernel call of this many values runs for about 10 s on these machines
# (hashing zero pages: no memory used); a cancel must stop it long before.
KERNEL_ROWS = 1_000_000_000


def test_statement_timeout_stops_a_long_kernel(db, wrapper_table):
    wrapper_table("spin", "x int", "KernelWrapper", rows=KERNEL_ROWS)
    db.execute("SET statement_timeout = '300ms'")
    start = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled, match="canceling statement due to statement timeout"):
        db.execute("SELECT * FROM spin")
    # the kernel polls every 65,536 values (well under a millisecond)
    assert time.monotonic() - start < 3.0
    db.execute("RESET statement_timeout")
    assert db.execute("SELECT 1").fetchone() == (1,)


def test_user_cancel_stops_a_long_kernel(db, new_connection, wrapper_table):
    wrapper_table("spin", "x int", "KernelWrapper", rows=KERNEL_ROWS)
    pid = db.info.backend_pid
    other = new_connection()
    sent = {}

    def cancel_when_running():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = other.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
            if state and state[0] == "active":
                time.sleep(0.3)  # inside the kernel by now (numpy's allocation is instant)
                sent["at"] = time.monotonic()
                other.execute("SELECT pg_cancel_backend(%s)", [pid])
                return
            time.sleep(0.01)

    t = threading.Thread(target=cancel_when_running)
    t.start()
    with pytest.raises(psycopg.errors.QueryCanceled, match="canceling statement due to user request"):
        db.execute("SELECT * FROM spin")
    stopped = time.monotonic()
    t.join()
    assert stopped - sent["at"] < 3.0
    assert db.execute("SELECT * FROM (VALUES (1)) v").fetchone() == (1,)
