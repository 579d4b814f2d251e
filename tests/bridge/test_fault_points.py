"""Fault points (orochi.fault_injection): only a superuser sets them; an
operation pauses at the named point (the N-th time with name@N) until the
test opens the gate; a paused operation can be cancelled."""

from __future__ import annotations

import psycopg
import pytest

from orochi_fdw.testing.faults import FaultGate, FaultGateError


def _table(db):
    db.execute("CREATE FOREIGN TABLE t (id int8) SERVER orochi OPTIONS (delta_row_limit '0')")


def test_only_a_superuser_sets_fault_points(db, new_connection):
    db.execute("CREATE ROLE plain LOGIN")
    try:
        db.execute("SELECT * FROM orochi.python_info()")  # the library is loaded: the setting exists
        db.execute("SET ROLE plain")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("SET orochi.fault_injection = 'vacuum:after_write'")
        db.execute("RESET ROLE")
        # a new session of the role: the library is preloaded, the setting exists from the start
        other = new_connection(user="plain")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            other.execute("SET orochi.fault_injection = 'vacuum:after_write'")
    finally:
        db.execute("RESET ROLE")
        db.execute("DROP ROLE plain")


def test_pauses_at_the_nth_time_and_goes_on_when_opened(db, db_dsn):
    _table(db)
    with FaultGate(db_dsn, "write_stripe:after_file@2") as gate:
        op = gate.run("INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)", "INSERT INTO t VALUES (3)")
        gate.wait_reached()
        # the first INSERT committed, the second waits with its file written
        assert db.execute("SELECT array_agg(id) FROM t").fetchone() == ([1],)
        gate.open()
        op.join()
    assert op.finished and op.error is None
    assert db.execute("SELECT array_agg(id ORDER BY id) FROM t").fetchone() == ([1, 2, 3],)


def test_a_paused_operation_can_be_cancelled(db, db_dsn):
    _table(db)
    with FaultGate(db_dsn, "write_stripe:after_file") as gate:
        op = gate.run("INSERT INTO t VALUES (1)")
        gate.wait_reached()
        assert db.execute("SELECT pg_cancel_backend(%s)", (op.pid,)).fetchone() == (True,)
        op.join()
    assert isinstance(op.error, psycopg.errors.QueryCanceled)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_an_operation_that_never_reaches_the_point_is_reported(db, db_dsn):
    _table(db)
    with FaultGate(db_dsn, "vacuum:after_write") as gate:
        gate.run("INSERT INTO t VALUES (1)")
        with pytest.raises(FaultGateError, match="ended before reaching fault point vacuum:after_write"):
            gate.wait_reached()
