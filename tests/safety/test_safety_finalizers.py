"""Python code that runs while Postgres unwinds an error or aborts a
transaction (a generator closed by the bridge, a ``__del__``), or in another
thread, cannot call into Postgres: the call raises instead of running SQL in
the middle of error handling (or concurrently with the backend), and the
bridge's state (the stack of Python sub-transactions) matches Postgres's
afterwards.
"""

from __future__ import annotations

import os

import psycopg
import pytest


@pytest.fixture
def fin(wrapper_table, shared_dir):
    log = os.path.join(shared_dir, "finalizers.log")
    wrapper_table("fin", "x int", "FinalizerWrapper", rows=10, log=log)
    wrapper_table("fin_params", "x int", "FinalizerWrapper", params="true", log=log)
    wrapper_table("fin_holding", "x int", "FinalizerWrapper", rows=10, log=log, hold_subtransaction="true")

    def notes():
        if not os.path.exists(log):
            return []
        with open(log) as f:
            lines = f.read().splitlines()
        os.unlink(log)
        return lines

    return notes


def test_generator_finished_normally_may_run_sql(db, fin):
    assert db.execute("SELECT count(*) FROM fin").fetchone() == (10,)
    assert fin() == ["del: sql ran", "finally: sql ran"]


def test_generator_closed_early(db, fin):
    """Closed at the end of the statement (LIMIT): no active snapshot is left
    by then, and SPI says so with an error, which the finalizer gets."""
    for _ in range(3):
        assert db.execute("SELECT x FROM fin LIMIT 2").fetchall() == [(0,), (1,)]
        notes = fin()
        assert [n.split(":")[0] for n in notes] == ["del", "finally"], notes
        assert db.execute("SELECT count(*) FROM fin").fetchone() == (10,)
        assert fin() == ["del: sql ran", "finally: sql ran"]


def test_generator_closed_by_an_abort(db, fin):
    """The query fails at row 3: the abort closes the generator; its SQL is
    refused, and the next statements work."""
    for _ in range(3):
        with pytest.raises(psycopg.errors.DivisionByZero):
            db.execute("SELECT 1 / (x - 3) FROM fin")
        notes = fin()
        assert len(notes) == 2, notes
        assert all("SPIError: Postgres cannot run SQL here" in n for n in notes), notes
        assert db.execute("SELECT count(*) FROM fin").fetchone() == (10,)
        assert fin() == ["del: sql ran", "finally: sql ran"]


def test_sub_transaction_left_open_across_a_yield(db, fin):
    """A generator that yields inside spi.subtransaction() would have the
    executor go on inside its sub-transaction: the bridge rolls it back and
    fails the statement; the session stays usable (before, the transaction
    was left half-aborted and COMMIT failed with "unexpected state")."""
    db.execute("CREATE TABLE sink (x int)")
    for _ in range(3):
        with pytest.raises(psycopg.errors.ExternalRoutineException, match="still open when Python returned"):
            db.execute("INSERT INTO sink SELECT x FROM fin_holding")
        fin()
        assert db.execute("SELECT count(*) FROM sink").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM fin").fetchone() == (10,)
    with db.transaction():
        with pytest.raises(psycopg.errors.ExternalRoutineException):
            with db.transaction():
                db.execute("SELECT x FROM fin_holding")
        assert db.execute("SELECT count(*) FROM fin").fetchone() == (10,)


def test_generator_closed_by_an_abort_inside_a_transaction(db, fin):
    with pytest.raises(psycopg.errors.DivisionByZero):
        with db.transaction():
            db.execute("SAVEPOINT s")
            db.execute("SELECT 1 / (x - 3) FROM fin")
    fin()
    with db.transaction():
        db.execute("SAVEPOINT s")
        with pytest.raises(psycopg.errors.DivisionByZero):
            with db.transaction():
                db.execute("SELECT 1 / (x - 3) FROM fin")
        db.execute("ROLLBACK TO SAVEPOINT s")
        assert db.execute("SELECT count(*) FROM fin").fetchone() == (10,)
    assert fin()[-2:] == ["del: sql ran", "finally: sql ran"]


def test_finalizer_during_error_unwinding(db, fin):
    """A parameter object is released while Postgres unwinds its conversion
    error; its __del__ tries SQL that fails too.  Running it there would have
    flushed the error being handled."""
    for _ in range(3):
        with pytest.raises(psycopg.errors.InvalidTextRepresentation, match="invalid input syntax for type"):
            db.execute("SELECT * FROM fin_params")
        notes = fin()
        assert notes == ["param del: SPIError: Postgres cannot be used while it handles an error "
                         "(Python code running in a finalizer)"], notes
        assert db.execute("SELECT 1").fetchone() == (1,)


def test_sql_from_another_thread_is_refused(db, wrapper_table):
    wrapper_table("threaded", "x text", "SqlWrapper", sql="SELECT 'x'", thread="true", catch="true")
    for _ in range(3):
        row = db.execute("SELECT * FROM threaded").fetchone()
        assert row == ("caught RuntimeError: Postgres can only be called from the thread that runs the "
                       "backend, not from a Python thread",)
