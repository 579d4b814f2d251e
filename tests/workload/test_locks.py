"""A statement waiting in a queue may hold locks (its own, taken at parse
and plan time, and its transaction's): when a statement holding a slot of
its pool waits for one of them, neither could go on. The waiter sees the
cycle (when it joins the queue, and every deadlock_timeout after) and is
admitted beyond the limit; pool_stats counts it in lock_admitted."""

from __future__ import annotations

import pytest

from workload_helpers import pool_with_class

KEY = 7_100_000


@pytest.fixture
def table(wl):
    wl.q("DROP TABLE IF EXISTS wl_t")
    wl.q("CREATE TABLE wl_t (id int PRIMARY KEY, v int)")
    wl.q("INSERT INTO wl_t SELECT g, 0 FROM generate_series(1, 10) g")
    yield "wl_t"
    wl.reset()
    wl.q("DROP TABLE IF EXISTS wl_t")


def test_ddl_holding_the_slot_waits_for_a_queued_readers_lock(wl, table):
    pool_with_class(wl, "p", "cl-%", 1)
    a = wl.client("cl-a", autocommit=False)
    assert a.execute("SELECT count(*) FROM wl_t") == [(10,)]   # holds AccessShareLock until commit
    assert wl.session(a.pid)["state"] == "idle"
    ddl = wl.client("cl-ddl").start("ALTER TABLE wl_t ADD COLUMN w int")
    wl.wait_lock_wait(ddl)          # admitted (the pool's only slot), waiting for a's lock
    assert wl.running("p") == {ddl.pid}
    # a's next statement would queue behind the DDL, which waits for a
    a.start("SELECT sum(v) FROM wl_t")
    assert a.result() == [(0,)]
    s = wl.stats("p")
    assert s["lock_admitted"] == 1
    a.conn.commit()
    ddl.result()
    assert wl.q("SELECT count(*) FROM information_schema.columns WHERE table_name = 'wl_t' "
                "AND column_name = 'w'") == [(1,)]
    s = wl.stats("p")
    assert (s["running"], s["queued"]) == (0, 0)


def test_write_holding_the_slot_waits_for_a_queued_writers_row(wl, table):
    pool_with_class(wl, "p", "cl-%", 1)
    a = wl.client("cl-a", autocommit=False)
    a.execute("UPDATE wl_t SET v = 1 WHERE id = 1")             # row lock until commit
    writer = wl.client("cl-w").start("UPDATE wl_t SET v = 2 WHERE id = 1")
    wl.wait_lock_wait(writer)
    assert wl.running("p") == {writer.pid}
    assert a.execute("SELECT v FROM wl_t WHERE id = 1") == [(1,)]
    assert wl.stats("p")["lock_admitted"] == 1
    a.conn.commit()
    writer.result()
    assert wl.q("SELECT v FROM wl_t WHERE id = 1") == [(2,)]


def test_cycle_formed_after_the_waiter_queued(wl, table):
    """The holder starts waiting for the queued statement's lock only after it
    queued: found at a later deadlock_timeout check."""
    pool_with_class(wl, "p", "cl-%", 1)
    wl.q("""CREATE OR REPLACE FUNCTION wl_then_lock() RETURNS void LANGUAGE plpgsql AS $$
            BEGIN
              PERFORM pg_catalog.pg_advisory_xact_lock_shared(%s);
              LOCK TABLE wl_t IN ACCESS EXCLUSIVE MODE;
            END $$""" % KEY)
    try:
        wl.q("SELECT pg_catalog.pg_advisory_lock(%s)", (KEY,))
        a = wl.client("cl-a", autocommit=False)
        a.execute("SELECT count(*) FROM wl_t")
        holder = wl.client("cl-h").start("SELECT wl_then_lock()")
        wl.wait_running(holder, "p")
        wl.wait_lock_wait(holder)   # on the advisory lock: no cycle yet
        a.start("SELECT 'queued first'")
        wl.wait_queued(a, "p")
        assert wl.stats("p")["lock_admitted"] == 0
        wl.q("SELECT pg_catalog.pg_advisory_unlock(%s)", (KEY,))   # now the holder waits for a
        assert a.result() == [("queued first",)]
        assert wl.stats("p")["lock_admitted"] == 1
        a.conn.commit()
        holder.result()
    finally:
        wl.reset()
        wl.q("DROP FUNCTION IF EXISTS wl_then_lock()")


def test_a_lock_wait_that_is_no_cycle_keeps_the_limit(wl, table):
    """The holder waits for a lock of a session outside the pool: the queued
    statement waits for the slot."""
    pool_with_class(wl, "p", "cl-%", 1)
    outsider = wl.client("other", autocommit=False)     # default pool
    outsider.execute("LOCK TABLE wl_t IN ACCESS EXCLUSIVE MODE")
    # LOCK is admitted before it takes its lock (a SELECT would wait at parse time, unadmitted)
    holder = wl.client("cl-h", autocommit=False).start("LOCK TABLE wl_t IN ACCESS SHARE MODE")
    wl.wait_lock_wait(holder)
    assert wl.running("p") == {holder.pid}
    b = wl.client("cl-b").start("SELECT 'b'")
    wl.wait_queued(b, "p")
    # several deadlock_timeout checks pass; b stays queued
    wl.q("SELECT pg_catalog.pg_sleep(0.5)")
    assert wl.queued("p") == [b.pid]
    assert wl.stats("p")["lock_admitted"] == 0
    outsider.conn.commit()
    holder.result()
    assert b.result() == [("b",)]
    holder.conn.commit()


def test_cycle_through_two_pools(wl, table):
    """a queued in p1, whose holder h1 waits for b's row; b then queues in
    p2, whose holder h2 waits for a's row: b's wait closes the cycle (b -> h2
    -> a -> h1 -> b) and b is admitted; a, whose holder only waits for an idle
    transaction, keeps waiting until that one commits."""
    pool_with_class(wl, "p1", "one-%", 1)
    pool_with_class(wl, "p2", "two-%", 1)
    a = wl.client("one-a", autocommit=False)
    b = wl.client("two-b", autocommit=False)
    a.execute("UPDATE wl_t SET v = 10 WHERE id = 1")
    b.execute("UPDATE wl_t SET v = 20 WHERE id = 2")
    h1 = wl.client("one-h").start("UPDATE wl_t SET v = 11 WHERE id = 2")   # waits for b
    h2 = wl.client("two-h").start("UPDATE wl_t SET v = 21 WHERE id = 1")   # waits for a
    wl.wait_lock_wait(h1)
    wl.wait_lock_wait(h2)
    a.start("SELECT 'a'")
    wl.wait_queued(a, "p1")
    assert b.execute("SELECT 'b'") == [("b",)]
    assert (wl.stats("p1")["lock_admitted"], wl.stats("p2")["lock_admitted"]) == (0, 1)
    assert wl.queued("p1") == [a.pid]
    b.conn.commit()                 # h1 goes on and frees p1's slot for a
    h1.result()
    assert a.result() == [("a",)]
    a.conn.commit()
    h2.result()
    assert wl.q("SELECT id, v FROM wl_t WHERE id <= 2 ORDER BY id") == [(1, 21), (2, 11)]
