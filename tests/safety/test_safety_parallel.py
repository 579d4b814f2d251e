"""Parallel plans around orochi scans.

In parallel mode (the leader executing a parallel plan, or any query under
``force_parallel_mode``) Postgres refuses sub-transactions, and SQL that
Python runs cannot use one: it runs without, and an error in it ends the
statement with the original Postgres error (Python cannot swallow it).
Before this was handled, the first such statement failed with "cannot start
subtransactions during a parallel operation" raised through live Python
frames, the next got ``SystemError: unknown opcode`` and the one after
crashed the backend.
"""

from __future__ import annotations

import json
import pathlib

import psycopg
import pytest

QUERIES = [
    "SELECT count(*) FROM {t}",
    "SELECT count(*), sum(id), min(v), max(t) FROM {t}",
    "SELECT g, count(*), sum(v) FROM {t} GROUP BY g ORDER BY g",
    "SELECT count(*) FROM {t} WHERE id > 2500 AND t = 't3'",
    "SELECT id, v FROM {t} WHERE g = 3 ORDER BY id LIMIT 20",
    "SELECT count(DISTINCT t) FROM {t} WHERE v IS NULL OR v < 0",
]


@pytest.mark.parametrize("mode", ["on", "regress"])
def test_force_parallel_mode_equals_heap(db, htap_table, mode):
    ct, ht = htap_table()
    db.execute(f"SET force_parallel_mode = {mode}")
    for _ in range(3):  # the statements after the first are where it used to crash
        for q in QUERIES:
            assert db.execute(q.format(t=ct)).fetchall() == db.execute(q.format(t=ht)).fetchall(), q
    # the session's Python is intact
    assert db.execute("SELECT count(*) FROM (SELECT * FROM orochi.python_info()) i").fetchone()[0] >= 3


def test_join_with_big_heap_table_under_gather(db, htap_table):
    """With default settings a columnar table joined to a big heap table gets
    a Gather over the heap side; the orochi scan runs in the leader, in
    parallel mode."""
    ct, ht = htap_table()
    db.execute("CREATE TABLE big AS SELECT i % 6000 AS id, i AS n FROM generate_series(1, 400000) i")
    db.execute("ANALYZE big")
    db.execute("SET parallel_setup_cost = 0")
    db.execute("SET parallel_tuple_cost = 0")
    q = "SELECT count(*), sum(b.n), sum(c.v) FROM big b JOIN {t} c ON c.id = b.id"
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + q.format(t=ct)))
    assert "Gather" in plan, plan
    for _ in range(3):
        assert db.execute(q.format(t=ct)).fetchone() == db.execute(q.format(t=ht)).fetchone()


def test_orochi_scan_never_runs_in_a_worker(db, htap_table):
    """The scan declares itself not parallel safe: it never appears below a
    Gather (where a worker would run it)."""
    ct, _ = htap_table()
    db.execute("CREATE TABLE big AS SELECT i % 6000 AS id FROM generate_series(1, 200000) i")
    db.execute("ANALYZE big")
    for setting in ("parallel_setup_cost = 0", "parallel_tuple_cost = 0",
                    "min_parallel_table_scan_size = 0", "force_parallel_mode = on"):
        db.execute("SET " + setting)
    for q in ("SELECT count(*) FROM big b JOIN {t} c ON c.id = b.id",
              "SELECT * FROM {t} WHERE id IN (SELECT id FROM big)",
              "SELECT count(*) FROM {t}"):
        lines = [r[0] for r in db.execute("EXPLAIN (COSTS OFF) " + q.format(t=ct))]
        gather_indent = min((len(line) - len(line.lstrip()) for line in lines if "Gather" in line),
                            default=None)
        for line in lines:
            if "Foreign Scan" in line and gather_indent is not None:
                assert len(line) - len(line.lstrip()) <= gather_indent, "\n".join(lines)


def test_functions_running_python_are_parallel_unsafe(db):
    """Every SQL function whose body is Python (orochi_py_call) is PARALLEL
    UNSAFE: they may write through SPI and keep per-backend state (sketch
    builders), which a parallel worker does not share."""
    rows = db.execute(
        "SELECT p.oid::regprocedure::text, p.proparallel FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'orochi' AND p.prosrc = 'orochi_py_call' AND p.proparallel <> 'u'"
    ).fetchall()
    assert rows == []


def test_sql_error_in_parallel_mode_cannot_be_swallowed(db, wrapper_table):
    """Without a sub-transaction, a failed statement cannot be rolled back:
    the wrapper catches the error, yet the statement ends with it, exactly as
    Postgres reported it; the next statements work."""
    wrapper_table("careless", "x text", "SqlWrapper", sql="SELECT 1 / 0", catch="true")
    # outside parallel mode the wrapper may catch it and carry on
    db.execute("SET force_parallel_mode = off")
    assert db.execute("SELECT * FROM careless").fetchone()[0].startswith("caught SPIError: division by zero")
    db.execute("SET force_parallel_mode = on")
    for _ in range(3):
        with pytest.raises(psycopg.errors.DivisionByZero, match="division by zero"):
            db.execute("SELECT * FROM careless")
        assert db.execute("SELECT 1").fetchone() == (1,)
    db.execute("SET force_parallel_mode = off")
    assert db.execute("SELECT * FROM careless").fetchone()[0].startswith("caught SPIError")


def test_reads_in_parallel_mode_work(db, wrapper_table):
    db.execute("CREATE TABLE src AS SELECT i AS x FROM generate_series(1, 5) i")
    wrapper_table("reader", "x int", "SqlWrapper", sql="SELECT x FROM src ORDER BY x")
    wrapper_table("reader_sub", "x int", "SqlWrapper", sql="SELECT x FROM src ORDER BY x",
                  subtransaction="true")
    wrapper_table("reader_ro", "x int", "SqlWrapper", sql="SELECT x FROM src ORDER BY x", read_only="true")
    db.execute("SET force_parallel_mode = on")
    for t in ("reader", "reader_sub", "reader_ro"):
        assert db.execute(f"SELECT x FROM {t}").fetchall() == [(i,) for i in range(1, 6)]


@pytest.mark.parametrize("subtransaction", ["false", "true"])
def test_writes_in_parallel_mode_fail_cleanly(db, wrapper_table, subtransaction):
    db.execute("CREATE TABLE target (x int)")
    wrapper_table("writer", "x int", "SqlWrapper", sql="INSERT INTO target VALUES (1) RETURNING x",
                  subtransaction=subtransaction)
    db.execute("SET force_parallel_mode = off")
    assert db.execute("SELECT x FROM writer").fetchall() == [(1,)]
    db.execute("SET force_parallel_mode = on")
    with pytest.raises(psycopg.errors.InvalidTransactionState,
                       match="cannot execute INSERT during a parallel operation"):
        db.execute("SELECT x FROM writer")
    assert db.execute("SELECT count(*) FROM target").fetchone() == (1,)
    db.execute("SET force_parallel_mode = off")
    assert db.execute("SELECT x FROM writer").fetchall() == [(1,)]
    assert db.execute("SELECT count(*) FROM target").fetchone() == (2,)


def test_savepoints_after_parallel_mode_errors(db, wrapper_table, shared_dir):
    """The bridge's internal state (sub-transaction depth, pending error) is
    reset when a statement aborts: the user's savepoints are still reported
    to wrappers afterwards."""
    log = pathlib.Path(shared_dir) / "hooks.log"
    wrapper_table("careless", "x text", "SqlWrapper", sql="SELECT 1 / 0", catch="true")
    wrapper_table("hooks", "x int", "HooksWrapper", log=str(log))
    db.execute("SET force_parallel_mode = on")
    with pytest.raises(psycopg.errors.DivisionByZero):
        db.execute("SELECT * FROM careless")
    db.execute("SET force_parallel_mode = off")
    with db.transaction():
        db.execute("SELECT * FROM hooks")
        db.execute("SAVEPOINT a")
        db.execute("SELECT * FROM hooks")
        db.execute("ROLLBACK TO SAVEPOINT a")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events == [["begin", False], ["sub_begin", 1], ["sub_rollback", 1], ["sub_begin", 1],
                      ["sub_commit", 1], ["pre_commit"], ["commit"]]


def test_pg_setting_option_reaches_the_clusters(pg_cluster, make_cluster):
    """--pg-setting / OROCHI_PG_SETTINGS: every cluster gets the settings (the
    CI pass under force_parallel_mode = regress relies on it)."""
    from orochi_fdw.testing.cluster import env_settings

    extra = env_settings()
    for cluster in (pg_cluster, make_cluster("settings")):
        for name, value in extra.items():
            assert cluster.execute("SELECT current_setting(%s)", [name])[0][0] == value
