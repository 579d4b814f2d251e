"""A backend that ends frees what it holds: terminated (pg_terminate_backend,
the client going away) through its exit callback; killed with SIGKILL
through the postmaster's crash restart, after which shared memory is new
and the pools are read again from the catalog. Each test waits for the
state it kills in (running, queued), never for time."""

from __future__ import annotations

import signal

import psycopg

from workload_helpers import pool_with_class, wait_until

KEY = 7_200_000


def blocked(i: int) -> str:
    return f"SELECT pg_catalog.pg_advisory_xact_lock_shared({KEY + i})"


def test_terminated_running_and_queued_backends_free_their_slots(wl):
    pool_with_class(wl, "p", "cl-%", 1)
    wl.q("SELECT pg_catalog.pg_advisory_lock(%s)", (KEY,))
    a = wl.client("cl-a").start(blocked(0))
    wl.wait_running(a, "p")
    b = wl.client("cl-b").start(blocked(0))
    wl.wait_queued(b, "p")
    c = wl.client("cl-c").start(blocked(0))
    wl.wait_queued(c, "p")

    # a queued one
    assert wl.one("SELECT pg_catalog.pg_terminate_backend(%s, 30000)", (b.pid,))
    b.join()
    assert isinstance(b.error, psycopg.OperationalError)
    assert wl.queued("p") == [c.pid]
    s = wl.stats("p")
    assert (s["running"], s["queued"], s["canceled"]) == (1, 1, 1)

    # the running one: its slot goes to the next in the queue
    assert wl.one("SELECT pg_catalog.pg_terminate_backend(%s, 30000)", (a.pid,))
    a.join()
    wl.wait_running(c, "p")
    s = wl.stats("p")
    assert (s["running"], s["queued"], s["admitted"]) == (1, 0, 2)
    assert wl.session(a.pid) is None and wl.session(b.pid) is None

    wl.q("SELECT pg_catalog.pg_advisory_unlock(%s)", (KEY,))
    c.result()
    s = wl.stats("p")
    assert (s["running"], s["queued"], s["admitted"], s["canceled"]) == (0, 0, 2, 1)


def test_client_that_goes_away_while_queued(wl):
    """With client_connection_check_interval, a queued backend notices its
    client is gone (the check wakes its latch) and leaves the queue."""
    pool_with_class(wl, "p", "cl-%", 1)
    wl.q("SELECT pg_catalog.pg_advisory_lock(%s)", (KEY,))
    a = wl.client("cl-a").start(blocked(0))
    wl.wait_running(a, "p")
    b = wl.client("cl-b")
    b.execute("SET client_connection_check_interval = '50ms'")
    b.conn.pgconn.send_query(b"SELECT 'never answered'")
    wl.wait_queued(b, "p")
    b.conn.pgconn.finish()
    wait_until(lambda: wl.queued("p") == [], "the queue to empty")
    wait_until(lambda: not wl.q("SELECT 1 FROM pg_catalog.pg_stat_activity WHERE pid = %s", (b.pid,)),
               "the backend to exit")
    assert wl.stats("p")["canceled"] == 1
    wl.q("SELECT pg_catalog.pg_advisory_unlock(%s)", (KEY,))
    a.result()
    s = wl.stats("p")
    assert (s["running"], s["queued"]) == (0, 0)


def _crash_cycle(wl, victim: str):
    pool_with_class(wl, "p", "cl-%", 1)
    wl.q("SELECT pg_catalog.pg_advisory_lock(%s)", (KEY,))
    a = wl.client("cl-a").start(blocked(0))
    wl.wait_running(a, "p")
    b = wl.client("cl-b").start(blocked(0))
    wl.wait_queued(b, "p")
    pid = a.pid if victim == "running" else b.pid
    offset = wl.pg.log_offset()
    wl.pg.kill_backend(pid, signal.SIGKILL)
    wl.pg.wait_for_log(r"all server processes terminated; reinitializing", since=offset, timeout=60)
    a.join()
    b.join()
    assert a.error is not None and b.error is not None
    wl.reconnect()

    # a fresh shared memory: definitions read again from the catalog, nothing running
    status = wl.q("SELECT loaded, pools, classes, running, queued, load_error FROM orochi.workload_status()")
    assert status == [(True, 2, 1, 1, 0, None)]     # the one running: this statement (default pool)
    assert [r[0] for r in wl.q("SELECT pool_name FROM orochi.list_resource_pools()")] == ["default", "p"]
    s = wl.stats("p")
    assert (s["running"], s["queued"], s["admitted"], s["canceled"]) == (0, 0, 0, 0)
    assert wl.q("SELECT count(*) FROM orochi.session_resources() WHERE pool_name = 'p'") == [(0,)]

    # and admission works as before: one runs, one waits, both finish
    wl.q("SELECT pg_catalog.pg_advisory_lock(%s)", (KEY,))
    c = wl.client("cl-c").start(blocked(0))
    wl.wait_running(c, "p")
    d = wl.client("cl-d").start("SELECT 'd'")
    wl.wait_queued(d, "p")
    wl.q("SELECT pg_catalog.pg_advisory_unlock(%s)", (KEY,))
    c.result()
    assert d.result() == [("d",)]
    s = wl.stats("p")
    assert (s["running"], s["queued"], s["admitted"], s["waited"]) == (0, 0, 2, 1)


def test_sigkill_of_a_running_backend(wl):
    _crash_cycle(wl, "running")


def test_sigkill_of_a_queued_backend(wl):
    _crash_cycle(wl, "queued")


def test_pools_survive_a_restart(wl):
    pool_with_class(wl, "p", "cl-%", 3, max_queue=5, queue_timeout_ms=1000, priority=4, work_mem="2MB")
    before = wl.q("SELECT * FROM orochi.list_resource_pools() ORDER BY pool_name")
    classes = wl.q("SELECT * FROM orochi.list_workload_classes()")
    wl.admin.close()
    wl.pg.restart()
    wl.reconnect()
    assert wl.q("SELECT * FROM orochi.list_resource_pools() ORDER BY pool_name") == before
    assert wl.q("SELECT * FROM orochi.list_workload_classes()") == classes
    b = wl.client("cl-b")
    b.execute("SELECT 1")
    assert wl.session(b.pid)["pool_name"] == "p"
