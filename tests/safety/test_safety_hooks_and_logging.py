"""Transaction hooks and logging at the edges: a wrapper whose begin hook
fails takes no part in the transaction; a failing log call reports its own
error."""

from __future__ import annotations

import json
import os

import psycopg
import pytest


def _events(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line)[0] for line in f]


def test_wrapper_whose_begin_fails_is_not_called_later(db, wrapper_table, shared_dir):
    """Its begin fails while the statement is planned; neither that
    transaction's rollback nor a later transaction's commit reaches it."""
    failing = os.path.join(shared_dir, "failing.log")
    good = os.path.join(shared_dir, "good.log")
    wrapper_table("failing", "x int", "HooksWrapper", log=failing, fail_in="begin")
    wrapper_table("good", "x int", "HooksWrapper", log=good)
    for _ in range(2):
        with pytest.raises(psycopg.errors.ExternalRoutineException, match="failing in begin on purpose"):
            db.execute("SELECT * FROM failing")
        assert db.execute("SELECT * FROM good").fetchall() == [(1,)]
        with db.transaction():
            db.execute("SELECT * FROM good")
            db.execute("SAVEPOINT s")
            db.execute("RELEASE s")
    assert set(_events(failing)) == {"begin"}
    once = ["begin", "pre_commit", "commit", "begin", "sub_begin", "sub_commit", "pre_commit", "commit"]
    assert _events(good) == once * 2


def test_transaction_touched_only_at_planning_is_ended(db, wrapper_table, shared_dir):
    """EXPLAIN plans (and so joins the wrapper to the transaction) without
    executing: the transaction's end still reaches the wrapper, and the next
    transaction starts it afresh."""
    log = os.path.join(shared_dir, "hooks.log")
    wrapper_table("h", "x int", "HooksWrapper", log=log)
    db.execute("EXPLAIN SELECT * FROM h")
    db.execute("EXPLAIN SELECT * FROM h")
    assert _events(log) == ["begin", "pre_commit", "commit", "begin", "pre_commit", "commit"]


def test_log_error_is_reported_with_its_own_data(db, wrapper_table):
    """The error of a log call (a NUL character) reaches Python with its
    SQLSTATE and message, copied before Postgres's error state is reset."""
    wrapper_table("logger", "outcome text", "LogWrapper", message="hello from python")
    for _ in range(3):
        rows = db.execute("SELECT * FROM logger").fetchall()
        assert rows == [("logged",),
                        ("22P05 a string from Python contains a NUL character, which text cannot hold",)]
