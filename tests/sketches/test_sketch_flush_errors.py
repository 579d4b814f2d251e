"""A sketch aggregate whose flush of buffered values into Python fails (a
cancel, an error of SQL that Python ran) ends in a clean ERROR; the session
goes on, and the same aggregate then gives the result it gives untouched.
The flush pauses at the fault point ``sketch:flush`` (not a race)."""

from __future__ import annotations

import psycopg
import pytest

from orochi_fdw.testing.faults import FaultGate

# values the C side buffers (int8, float8): the flush runs before the final function
QUERIES = [
    "SELECT orochi.approx_count_distinct(x % 3000) FROM generate_series(1, 5000) x",
    "SELECT orochi.approx_percentile(x::float8 / 7, ARRAY[0.1, 0.5, 0.99]) FROM generate_series(1, 5000) x",
]


def _outcome(gate, body):
    op = gate.run(body=body)
    gate.wait_reached()
    return op


@pytest.mark.parametrize("query", QUERIES)
def test_a_cancelled_flush_is_a_clean_error(db, db_dsn, query):
    expected = db.execute(query).fetchone()
    seen = {}

    def body(conn):
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(query)
        seen["after"] = conn.execute(query).fetchone()  # the second flush does not pause

    with FaultGate(db_dsn, "sketch:flush") as gate:
        op = _outcome(gate, body)
        assert db.execute("SELECT pg_cancel_backend(%s)", (op.pid,)).fetchone() == (True,)
        op.join()
    assert op.error is None and op.finished
    assert seen["after"] == expected


def test_an_error_in_a_flush_rolls_back_to_a_savepoint(db, db_dsn):
    query = QUERIES[1]
    expected = db.execute(query).fetchone()
    seen = {}

    def body(conn):
        conn.execute("SET lock_timeout = '50ms'")  # the paused flush's lock wait fails: an ERROR in SPI
        with conn.transaction():
            with pytest.raises(psycopg.errors.LockNotAvailable):
                with conn.transaction():  # a savepoint
                    conn.execute(query)
            seen["after"] = conn.execute(query).fetchone()

    with FaultGate(db_dsn, "sketch:flush") as gate:
        op = gate.run(body=body)
        op.join()
    assert op.error is None and op.finished
    assert seen["after"] == expected


def test_an_error_in_a_parallel_workers_flush(db, db_dsn):
    """The workers' serialize function flushes their states: a worker's
    failed flush is the query's ERROR, and the session goes on."""
    db.execute("CREATE TABLE h AS SELECT x::float8 / 7 AS v FROM generate_series(1, 5000) x")
    db.execute("ANALYZE h")
    query = "SELECT orochi.approx_percentile(v, 0.5) FROM h"
    expected = db.execute(query).fetchone()
    seen = {}

    def body(conn):
        for setting in ("max_parallel_workers_per_gather = 2", "parallel_setup_cost = 0",
                        "parallel_tuple_cost = 0", "min_parallel_table_scan_size = 0",
                        "parallel_leader_participation = off", "lock_timeout = '50ms'"):
            conn.execute(f"SET {setting}")
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {query}"))
        seen["parallel"] = "Partial Aggregate" in plan
        with pytest.raises(psycopg.errors.LockNotAvailable):
            conn.execute(query)
        conn.execute("SET orochi.fault_injection = ''")
        seen["after"] = conn.execute(query).fetchone()

    with FaultGate(db_dsn, "sketch:flush") as gate:
        op = gate.run(body=body)
        op.join()
    assert op.error is None and op.finished
    assert seen["parallel"]
    assert seen["after"] == expected
