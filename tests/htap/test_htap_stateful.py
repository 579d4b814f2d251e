"""A stateful hypothesis test: random interleavings of INSERT (single rows
and batches), UPDATE, DELETE, compaction, vacuum and ROLLBACK on an orochi
table and a heap twin, compared after every step."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from columnar_helpers import rows_as_text

KEYS = st.integers(min_value=0, max_value=400)
WHERES = st.sampled_from(["id = {a}", "id BETWEEN {a} AND {a} + 40", "k = {a} % 7", "v IS NULL",
                          "id % 5 = {a} % 5", "true", "ts > '2024-01-01'::timestamptz + {a} * interval '1 hour'"])
SETS = st.sampled_from(["k = k + 1", "v = 'u' || id", "v = NULL", "id = id + 1000",
                        "ts = ts + interval '1 day'", "k = {a}, v = v || 'x'"])


def make_machine(conn, max_examples: int, steps: int):
    class HtapMachine(RuleBasedStateMachine):
        """The orochi table ``t`` and the heap table ``h`` get the same statements."""

        @initialize(limit=st.sampled_from([0, 3, 50]), chunk=st.sampled_from([4, 32]))
        def create(self, limit, chunk):
            self.conn = conn
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")  # left open by an example that failed
            conn.execute("DROP FOREIGN TABLE IF EXISTS t")
            conn.execute("DROP TABLE IF EXISTS h")
            cols = "id int, k int, v text, ts timestamptz"
            conn.execute(f"CREATE FOREIGN TABLE t ({cols}) SERVER orochi OPTIONS "
                         f"(delta_row_limit '{limit}', chunk_group_size '{chunk}', stripe_row_limit '60')")
            conn.execute(f"CREATE TABLE h ({cols})")
            self.in_txn = False

        def both(self, sql):
            for name in ("t", "h"):
                self.conn.execute(sql.replace("{t}", name))

        @rule(a=KEYS)
        def insert_one(self, a):
            self.both(f"INSERT INTO {{t}} VALUES ({a}, {a % 7}, 'r{a}', '2024-01-01'::timestamptz + {a} * interval '1 hour')")

        @rule(a=KEYS, n=st.integers(min_value=2, max_value=150))
        def insert_batch(self, a, n):
            self.both(f"INSERT INTO {{t}} SELECT g, g % 7, CASE WHEN g % 9 = 0 THEN NULL ELSE 'b' || g END,"
                      f" '2024-01-01'::timestamptz + g * interval '1 hour' FROM generate_series({a}, {a + n - 1}) g")

        @rule(a=KEYS, where=WHERES, set_=SETS)
        def update(self, a, where, set_):
            self.both(f"UPDATE {{t}} SET {set_.format(a=a)} WHERE {where.format(a=a)}")

        @rule(a=KEYS, where=WHERES)
        def delete(self, a, where):
            self.both(f"DELETE FROM {{t}} WHERE {where.format(a=a)}")

        @precondition(lambda self: not self.in_txn)
        @rule()
        def compact(self):
            self.conn.execute("SELECT orochi.compact('t')")

        @precondition(lambda self: not self.in_txn)
        @rule(fraction=st.sampled_from([0.0, 0.1, 0.5]))
        def vacuum(self, fraction):
            self.conn.execute("SELECT orochi.vacuum('t', %s)", (fraction,))

        @precondition(lambda self: not self.in_txn)
        @rule()
        def begin(self):
            self.conn.execute("BEGIN")
            self.in_txn = True

        @precondition(lambda self: self.in_txn)
        @rule()
        def rollback(self):
            self.conn.execute("ROLLBACK")
            self.in_txn = False

        @precondition(lambda self: self.in_txn)
        @rule()
        def commit(self):
            self.conn.execute("COMMIT")
            self.in_txn = False

        @precondition(lambda self: self.in_txn)
        @rule(a=KEYS)
        def savepoint_rolled_back(self, a):
            self.conn.execute("SAVEPOINT s")
            self.both(f"DELETE FROM {{t}} WHERE id % 3 = {a} % 3")
            self.both(f"UPDATE {{t}} SET k = -1 WHERE id < {a}")
            self.conn.execute("ROLLBACK TO SAVEPOINT s")

        @invariant()
        def same_rows(self):
            if not hasattr(self, "in_txn"):
                return
            conn = self.conn
            got, want = rows_as_text(conn, "t"), rows_as_text(conn, "h")
            assert got == want
            assert conn.execute("SELECT count(*), sum(id), count(v) FROM t").fetchone() == \
                conn.execute("SELECT count(*), sum(id), count(v) FROM h").fetchone()

        def teardown(self):
            if getattr(self, "in_txn", False):
                self.conn.execute("ROLLBACK")

    HtapMachine.TestCase.settings = settings(
        max_examples=max_examples, stateful_step_count=steps, deadline=None, derandomize=max_examples <= 10,
        suppress_health_check=list(HealthCheck))
    return HtapMachine


def test_random_writes_equal_the_heap_twin(db):
    make_machine(db, max_examples=20, steps=30).TestCase().runTest()


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_random_writes_equal_the_heap_twin_soak(db):
    make_machine(db, max_examples=150, steps=60).TestCase().runTest()
