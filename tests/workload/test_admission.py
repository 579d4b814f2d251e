"""Admission: concurrency limits, queue order (priority, then arrival),
queue and query timeouts, rejections, cancel and statement_timeout while
queued, what holds a slot and for how long.

A running statement is made to stay running by waiting for an advisory
lock the test's admin session holds (one key per client); releasing the key
lets exactly that statement finish. Clients are started one at a time, each
only once the previous one shows in the shared state, so arrival order is
the test's own."""

from __future__ import annotations

import random
import threading

import psycopg
import pytest

from workload_helpers import pool_with_class, wait_until

LOCK_BASE = 7_000_000


def lock_key(i: int) -> int:
    return LOCK_BASE + i


def hold(wl, i: int) -> None:
    wl.q("SELECT pg_catalog.pg_advisory_lock(%s)", (lock_key(i),))


def let_go(wl, i: int) -> None:
    assert wl.one("SELECT pg_catalog.pg_advisory_unlock(%s)", (lock_key(i),))


def blocked_query(i: int) -> str:
    """A statement that runs until the admin releases key i."""
    return f"SELECT pg_catalog.pg_advisory_xact_lock_shared({lock_key(i)}), {i} AS client"


class Sampler:
    """Samples the pool's running count in shared memory, and the sessions
    the shared state shows running in it, until stopped."""

    def __init__(self, pg, pool: str):
        self.conn = psycopg.connect(pg.dsn("postgres", application_name="sampler"), autocommit=True)
        self.pool = pool
        self.max_running = 0
        self.max_sessions = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            running = self.conn.execute("SELECT running FROM orochi.pool_stats() WHERE pool_name = %s",
                                        (self.pool,)).fetchone()[0]
            sessions = self.conn.execute("SELECT count(*) FROM orochi.session_resources() "
                                         "WHERE pool_name = %s AND state = 'running'", (self.pool,)).fetchone()[0]
            self.max_running = max(self.max_running, running)
            self.max_sessions = max(self.max_sessions, sessions)
            self.samples += 1

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        self.conn.close()


def test_twenty_clients_on_two_slots_priority_then_arrival(wl):
    """20 clients, pool of concurrency 2, two classes of different
    priorities: never more than 2 run; the queue is high priority first, in
    arrival order within a priority; slots go to the queue's head."""
    wl.q("SELECT orochi.create_resource_pool('oltp2', 2)")
    wl.q("""SELECT orochi.create_workload_class('low', 'oltp2', '{"application_name": "lo-%"}')""")
    wl.q("""SELECT orochi.create_workload_class('high', 'oltp2', '{"application_name": "hi-%"}', priority => 10)""")
    rng = random.Random(21)
    kinds = ["lo", "lo"] + [rng.choice(["lo", "hi"]) for _ in range(18)]
    for i in range(20):
        hold(wl, i)
    clients = [wl.client(f"{kind}-{i}") for i, kind in enumerate(kinds)]

    with Sampler(wl.pg, "oltp2") as sampler:
        for i, c in enumerate(clients):
            c.start(blocked_query(i))
            if i < 2:
                wl.wait_running(c, "oltp2")
            else:
                wl.wait_queued(c, "oltp2")
        assert wl.running("oltp2") == {clients[0].pid, clients[1].pid}

        queued = [c for c in clients[2:]]
        expected_queue = [c.pid for c in queued if c.name.startswith("hi")] + \
                         [c.pid for c in queued if c.name.startswith("lo")]
        assert wl.queued("oltp2") == expected_queue, "queue: high priority first, then by arrival"
        rows = wl.q("SELECT class_name, priority, queue_position FROM orochi.queued_queries() "
                    "ORDER BY queue_position")
        n_high = sum(1 for c in queued if c.name.startswith("hi"))
        assert rows == [("high", 10, k + 1) for k in range(n_high)] + \
            [("low", 0, k + 1) for k in range(n_high, len(queued))]

        # free one slot at a time: the head of the queue gets it
        by_pid = {c.pid: (i, c) for i, c in enumerate(clients)}
        running = [clients[0].pid, clients[1].pid]
        admitted_order = list(running)
        while running:
            pid = running.pop(0)
            i, c = by_pid[pid]
            let_go(wl, i)
            assert c.result() == [("", i)]
            if expected_queue:
                nxt = expected_queue.pop(0)
                wait_until(lambda: nxt in wl.running("oltp2"), f"client {nxt} to get the slot")
                running.append(nxt)
                admitted_order.append(nxt)
            assert wl.running("oltp2") == set(running)
            assert wl.queued("oltp2") == expected_queue
        assert sampler.samples > 0

    assert sampler.max_running <= 2, f"pool ran {sampler.max_running} statements at once"
    assert sampler.max_sessions <= 2
    assert admitted_order == [clients[0].pid, clients[1].pid] + \
        [c.pid for c in clients[2:] if c.name.startswith("hi")] + \
        [c.pid for c in clients[2:] if c.name.startswith("lo")]
    s = wl.stats("oltp2")
    assert (s["running"], s["queued"], s["admitted"], s["waited"]) == (0, 0, 20, 18)
    assert (s["rejected"], s["timed_out"], s["canceled"], s["lock_admitted"]) == (0, 0, 0, 0)
    assert s["p95_wait_ms"] >= s["mean_wait_ms"] > 0


def test_queue_timeout(wl):
    pool_with_class(wl, "p", "cl-%", 1, queue_timeout_ms=200)
    hold(wl, 0)
    a = wl.client("cl-a").start(blocked_query(0))
    wl.wait_running(a, "p")
    b = wl.client("cl-b")
    with pytest.raises(psycopg.errors.QueryCanceled) as exc:
        b.execute("SELECT 1")
    assert exc.value.sqlstate == "57014"
    assert 'queue timeout of resource pool "p"' in str(exc.value)
    assert "200 ms" in exc.value.diag.message_detail
    # the session goes on, the queue is empty, the running one still runs
    assert wl.queued("p") == []
    s = wl.stats("p")
    assert (s["running"], s["queued"], s["timed_out"], s["canceled"]) == (1, 0, 1, 0)
    let_go(wl, 0)
    a.result()
    assert b.execute("SELECT 2") == [(2,)]
    assert wl.stats("p")["admitted"] == 2


def test_max_queue_rejects_at_once(wl):
    pool_with_class(wl, "p", "cl-%", 1, max_queue=1)
    hold(wl, 0)
    hold(wl, 1)
    a = wl.client("cl-a").start(blocked_query(0))
    wl.wait_running(a, "p")
    b = wl.client("cl-b").start(blocked_query(1))
    wl.wait_queued(b, "p")
    c = wl.client("cl-c")
    with pytest.raises(psycopg.errors.InsufficientResources) as exc:
        c.execute("SELECT 1")
    assert exc.value.sqlstate == "53000"
    assert 'resource pool "p" is full' in str(exc.value)
    assert "1 statements run and 1 wait" in exc.value.diag.message_detail
    s = wl.stats("p")
    assert (s["running"], s["queued"], s["rejected"]) == (1, 1, 1)
    let_go(wl, 0)
    let_go(wl, 1)
    a.result()
    b.result()
    assert c.execute("SELECT 3") == [(3,)]


def test_max_queue_zero_never_queues(wl):
    pool_with_class(wl, "p", "cl-%", 1, max_queue=0)
    hold(wl, 0)
    a = wl.client("cl-a").start(blocked_query(0))
    wl.wait_running(a, "p")
    with pytest.raises(psycopg.errors.InsufficientResources):
        wl.client("cl-b").execute("SELECT 1")
    let_go(wl, 0)
    a.result()


def test_cancel_while_queued_leaves_the_queue(wl):
    pool_with_class(wl, "p", "cl-%", 1)
    hold(wl, 0)
    hold(wl, 1)
    a = wl.client("cl-a").start(blocked_query(0))
    wl.wait_running(a, "p")
    b = wl.client("cl-b").start(blocked_query(1))
    c = None
    wl.wait_queued(b, "p")
    c = wl.client("cl-c").start("SELECT 'c'")
    wl.wait_queued(c, "p")
    assert wl.queued("p") == [b.pid, c.pid]
    assert wl.one("SELECT pg_catalog.pg_cancel_backend(%s)", (b.pid,))
    b.join()
    assert isinstance(b.error, psycopg.errors.QueryCanceled)
    assert "canceling statement due to user request" in str(b.error)
    assert wl.queued("p") == [c.pid]
    assert wl.stats("p")["canceled"] == 1
    let_go(wl, 0)
    a.result()
    assert c.result() == [("c",)]
    # the cancelled session works, and was not left holding anything
    assert b.execute("SELECT 'b again'") == [("b again",)]
    s = wl.stats("p")
    assert (s["running"], s["queued"], s["admitted"]) == (0, 0, 3)


def test_statement_timeout_while_queued(wl):
    pool_with_class(wl, "p", "cl-%", 1)
    hold(wl, 0)
    a = wl.client("cl-a").start(blocked_query(0))
    wl.wait_running(a, "p")
    b = wl.client("cl-b")
    b.execute("SET statement_timeout = '200ms'")
    with pytest.raises(psycopg.errors.QueryCanceled) as exc:
        b.execute("SELECT 1")
    assert "canceling statement due to statement timeout" in str(exc.value)
    assert wl.queued("p") == []
    assert wl.stats("p")["canceled"] == 1
    let_go(wl, 0)
    a.result()


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_query_timeout_is_a_statement_timeout_from_admission(wl, protocol):
    pool_with_class(wl, "p", "cl-%", 1, query_timeout_ms=300)
    b = wl.client("cl-b")

    def run(query: str):
        if protocol == "simple":
            res = b.conn.pgconn.exec_(query.encode())
            if res.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                raise psycopg.errors.lookup(res.error_field(psycopg.pq.DiagnosticField.SQLSTATE).decode())(
                    res.error_message.decode())
            return res
        return b.execute(query, ())

    with pytest.raises(psycopg.errors.QueryCanceled) as exc:
        run("SELECT pg_catalog.pg_sleep(30)")
    assert "canceling statement due to statement timeout" in str(exc.value)
    # the session's own statement_timeout is untouched, and the timer does not
    # stay armed for statements of other pools
    assert b.execute("SHOW statement_timeout") == [("0",)]
    wl.q("SELECT orochi.drop_workload_class('p_class')")
    run("SELECT pg_catalog.pg_sleep(0.5)")
    assert wl.session(b.pid)["pool_name"] == "default"


def test_query_timeout_in_a_transaction_block(wl):
    pool_with_class(wl, "p", "cl-%", 1, query_timeout_ms=300)
    b = wl.client("cl-b", autocommit=False)
    b.execute("SELECT 1")
    with pytest.raises(psycopg.errors.QueryCanceled):
        b.execute("SELECT pg_catalog.pg_sleep(30)")
    b.conn.rollback()
    assert b.execute("SELECT 2") == [(2,)]
    b.conn.commit()


def test_default_query_timeout_setting(wl):
    wl.q("SELECT orochi.create_resource_pool('p', 1)")
    wl.q("""SELECT orochi.create_workload_class('c', 'p', '{"application_name": "cl-%"}')""")
    b = wl.client("cl-b")
    b.execute("SET orochi.default_query_timeout_ms = 200")   # a superuser session may
    with pytest.raises(psycopg.errors.QueryCanceled):
        b.execute("SELECT pg_catalog.pg_sleep(30)")
    # a pool's own 0 means none, whatever the default
    wl.q("SELECT orochi.alter_resource_pool('p', query_timeout_ms => 0)")
    b.execute("SELECT pg_catalog.pg_sleep(0.4)")


def test_pool_work_mem_applies_while_the_statement_runs(wl):
    pool_with_class(wl, "p", "cl-%", 2, work_mem="1234kB")
    b = wl.client("cl-b")
    assert b.execute("SELECT current_setting('work_mem')") == [("1234kB",)]
    assert b.execute("SHOW work_mem") == [("4MB",)]
    b.execute("SET work_mem = '8MB'")
    assert b.execute("SELECT current_setting('work_mem')") == [("1234kB",)]
    assert b.execute("SHOW work_mem") == [("8MB",)]
    assert wl.one("SELECT work_mem FROM orochi.list_resource_pools() WHERE pool_name = 'p'") == "1234kB"


def test_nested_statements_use_the_parents_slot(wl):
    """A function running SQL, a DO block, a procedure: on a pool of one slot
    they do not wait for themselves."""
    pool_with_class(wl, "p", "cl-%", 1)
    wl.q("""CREATE OR REPLACE FUNCTION wl_nested(n int) RETURNS bigint LANGUAGE plpgsql AS $$
            DECLARE total bigint := 0; i int;
            BEGIN
              FOR i IN 1..n LOOP
                total := total + (SELECT count(*) FROM generate_series(1, i));
                EXECUTE 'SELECT 1';
              END LOOP;
              RETURN total;
            END $$""")
    wl.q("""CREATE OR REPLACE PROCEDURE wl_proc() LANGUAGE plpgsql AS $$
            BEGIN PERFORM wl_nested(3); COMMIT; PERFORM wl_nested(2); END $$""")
    b = wl.client("cl-b")
    try:
        b.execute("SET statement_timeout = '20s'")
        assert b.execute("SELECT wl_nested(10)") == [(55,)]
        b.execute("DO $$ BEGIN PERFORM wl_nested(5); END $$")
        b.execute("CALL wl_proc()")
        assert b.execute("SELECT sum(wl_nested(g)) FROM generate_series(1, 3) g") == [(10,)]
        s = wl.stats("p")
        assert (s["admitted"], s["waited"], s["running"]) == (4, 0, 0)
    finally:
        wl.q("DROP PROCEDURE wl_proc(); DROP FUNCTION wl_nested(int)")


def test_a_finished_query_frees_its_slot_though_its_portal_stays(wl):
    """The extended protocol keeps a finished SELECT's portal until the next
    statement or the end of the transaction: an idle transaction does not
    hold a slot for it."""
    pool_with_class(wl, "p", "cl-%", 1)
    a = wl.client("cl-a", autocommit=False)
    assert a.execute("SELECT %s::int", (41,)) == [(41,)]
    assert wl.session(a.pid)["state"] == "idle"
    b = wl.client("cl-b")
    b.execute("SET statement_timeout = '20s'")
    assert b.execute("SELECT 42") == [(42,)]
    a.conn.commit()


def test_an_open_cursor_holds_its_slot_until_closed(wl):
    pool_with_class(wl, "p", "cl-%", 1)
    a = wl.client("cl-a", autocommit=False)
    a.execute("DECLARE c CURSOR FOR SELECT g FROM generate_series(1, 10) g")
    assert a.execute("FETCH 2 FROM c") == [(1,), (2,)]
    assert wl.session(a.pid)["state"] == "running"
    # the session's own next statements run under that slot
    assert a.execute("SELECT 'same session'") == [("same session",)]
    b = wl.client("cl-b").start("SELECT 'b'")
    wl.wait_queued(b, "p")
    a.execute("CLOSE c")
    assert b.result() == [("b",)]
    a.conn.commit()
    # FETCH ALL runs a cursor to its end: that frees the slot too
    a.execute("DECLARE d CURSOR FOR SELECT g FROM generate_series(1, 3) g")
    assert wl.session(a.pid)["state"] == "running"
    assert len(a.execute("FETCH ALL FROM d")) == 3
    assert wl.session(a.pid)["state"] == "idle"
    a.conn.commit()
    # and so does a FETCH that finds fewer rows than it asked for
    a.execute("DECLARE e CURSOR FOR SELECT g FROM generate_series(1, 3) g")
    assert len(a.execute("FETCH 2 FROM e")) == 2
    assert wl.session(a.pid)["state"] == "running"
    assert len(a.execute("FETCH 2 FROM e")) == 1
    assert wl.session(a.pid)["state"] == "idle"
    a.conn.commit()


def test_explain_alone_is_not_admitted_explain_analyze_is(wl):
    pool_with_class(wl, "p", "cl-%", 1)
    b = wl.client("cl-b")
    b.execute("EXPLAIN SELECT 1")
    assert wl.stats("p")["admitted"] == 0
    b.execute("EXPLAIN ANALYZE SELECT 1")
    assert wl.stats("p")["admitted"] == 1


def test_transaction_control_and_settings_are_not_admitted(wl):
    """BEGIN, COMMIT, SET, SHOW never wait, even with the pool full."""
    pool_with_class(wl, "p", "cl-%", 1)
    hold(wl, 0)
    a = wl.client("cl-a").start(blocked_query(0))
    wl.wait_running(a, "p")
    b = wl.client("cl-b")
    b.execute("SET statement_timeout = '20s'")
    b.execute("SHOW work_mem")
    b.execute("BEGIN")
    b.execute("SAVEPOINT s")
    b.execute("RELEASE s")
    b.execute("COMMIT")
    assert wl.stats("p")["admitted"] == 1
    let_go(wl, 0)
    a.result()


def test_utility_statements_are_admitted(wl):
    pool_with_class(wl, "p", "cl-%", 1)
    hold(wl, 0)
    a = wl.client("cl-a").start(blocked_query(0))
    wl.wait_running(a, "p")
    b = wl.client("cl-b").start("CREATE TABLE wl_ddl_waits (x int)")
    wl.wait_queued(b, "p")
    assert wl.q("SELECT to_regclass('wl_ddl_waits')") == [(None,)]
    let_go(wl, 0)
    a.result()
    b.result()
    assert wl.q("SELECT to_regclass('wl_ddl_waits')::text") == [("wl_ddl_waits",)]
    with b.conn.cursor().copy("COPY wl_ddl_waits FROM STDIN") as copy:
        copy.write_row((1,))
    with b.conn.cursor().copy("COPY wl_ddl_waits TO STDOUT") as copy:
        assert [bytes(block) for block in copy] == [b"1\n"]
    b.execute("DROP TABLE wl_ddl_waits")
    assert wl.stats("p")["admitted"] == 5


def test_disabled_session_is_not_admitted(wl):
    """A superuser may turn admission off for a session (the way out when
    pools are full); a plain user may not."""
    pool_with_class(wl, "p", "cl-%", 1)
    hold(wl, 0)
    a = wl.client("cl-a").start(blocked_query(0))
    wl.wait_running(a, "p")
    b = wl.client("cl-b")
    b.execute("SET orochi.workload_enabled = off")
    assert b.execute("SELECT 'not admitted'") == [("not admitted",)]
    let_go(wl, 0)
    a.result()
    wl.q("DROP ROLE IF EXISTS wl_plain")
    wl.q("CREATE ROLE wl_plain LOGIN")
    try:
        c = wl.client("cl-c", user="wl_plain")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SET orochi.workload_enabled = off")
        c.close()
    finally:
        wl.reset()
        wl.q("DROP ROLE wl_plain")


@pytest.mark.parametrize("how", ["execute", "declare", "explain analyze", "explain", "plain"])
def test_the_planners_own_queries_are_not_admitted(wl, how):
    """Planning an orochi table runs SQL (the wrapper reads its catalog); in
    EXECUTE, DECLARE and EXPLAIN ANALYZE the planner runs inside the utility's
    portal: its queries are part of the statement, which is admitted once."""
    pool_with_class(wl, "p", "cl-%", 1)
    wl.q("DROP FOREIGN TABLE IF EXISTS wl_col")
    wl.q("CREATE FOREIGN TABLE wl_col (x int) SERVER orochi")
    wl.q("INSERT INTO wl_col SELECT g FROM generate_series(1, 100) g")
    try:
        c = wl.client("cl-c", autocommit=False)
        c.execute("PREPARE q AS SELECT count(*) FROM wl_col WHERE x > 10")
        before = wl.stats("p")["admitted"]
        if how == "execute":
            assert c.execute("EXECUTE q") == [(90,)]
        elif how == "declare":
            c.execute("DECLARE cur CURSOR FOR SELECT count(*) FROM wl_col WHERE x > 10")
            assert c.execute("FETCH ALL FROM cur") == [(90,)]
        elif how == "explain analyze":
            c.execute("EXPLAIN (ANALYZE, VERBOSE) SELECT count(*) FROM wl_col WHERE x > 10")
        elif how == "explain":
            c.execute("EXPLAIN (VERBOSE) SELECT count(*) FROM wl_col WHERE x > 10")
        else:
            assert c.execute("SELECT count(*) FROM wl_col WHERE x > 10") == [(90,)]
        assert wl.stats("p")["admitted"] == before + (0 if how == "explain" else 1)
        c.conn.rollback()
    finally:
        wl.reset()
        wl.q("DROP FOREIGN TABLE IF EXISTS wl_col")


def test_default_pool_concurrency_setting(wl):
    """The default pool takes what no class takes; its limit is a setting,
    read again at reload."""
    monitor = wl.client("monitor")
    monitor.execute("SET orochi.workload_enabled = off")     # watches without taking a slot
    wl.admin.execute("SET orochi.workload_enabled = off")
    wl.pg.configure({"orochi.default_pool_concurrency": 1})
    try:
        hold(wl, 0)
        a = wl.client("x").start(blocked_query(0))
        wait_until(lambda: monitor.execute(
            "SELECT 1 FROM orochi.session_resources() WHERE pid = %s AND state = 'running'", (a.pid,)),
            "a to run")
        b = wl.client("y").start("SELECT 'b'")
        wait_until(lambda: monitor.execute("SELECT pid FROM orochi.queued_queries()") == [(b.pid,)],
                   "b to wait in the default pool")
        assert monitor.execute("SELECT max_concurrency, running, queued FROM orochi.pool_stats() "
                               "WHERE pool_name = 'default'") == [(1, 1, 1)]
        let_go(wl, 0)
        a.result()
        assert b.result() == [("b",)]
    finally:
        wl.q("SELECT pg_catalog.pg_advisory_unlock_all()")
        wl.pg.configure({"orochi.default_pool_concurrency": 0})
        wl.admin.execute("RESET orochi.workload_enabled")
