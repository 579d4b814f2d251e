"""Cancel and statement_timeout on the coordinator cancel the queries on
the workers.  A worker's query is made to wait on a lock another session
holds, so the cancel always lands while it runs."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from psycopg import sql


def _remote_waiters(dist):
    out = []
    for w in dist.lc.workers:
        out += w.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'orochi'"
                         " AND wait_event_type = 'Lock'", dbname=dist.dbname)
    return out


@pytest.fixture
def locked(dist):
    """A distributed table whose every shard is locked by another session on
    its worker until the test ends."""
    dist.q("CREATE TABLE d (k int, v text)")
    dist.distribute("d", "k", 4, shard_storage="heap")
    dist.q("INSERT INTO d SELECT generate_series(1, 100), 'x'")
    holders = []
    for w_index, worker in enumerate(dist.lc.workers):
        conn = dist.lc.worker_connect(w_index, dist.dbname)
        conn.execute("BEGIN")
        for node_id, name in dist.shard_names("d"):
            if node_id != w_index + 1:
                continue
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.SQL(name)))
        holders.append(conn)
    yield dist
    for conn in holders:
        conn.execute("ROLLBACK")
        conn.close()


def test_statement_timeout_cancels_remote_queries(locked):
    dist = locked
    with dist.connect() as conn:
        conn.execute("SET statement_timeout = '300ms'")
        with pytest.raises(psycopg.errors.QueryCanceled) as info:
            conn.execute("SELECT count(*) FROM d")
        assert "statement timeout" in str(info.value)
        assert _remote_waiters(dist) == []
        conn.execute("RESET statement_timeout")
        assert conn.execute("SELECT 1").fetchall() == [(1,)]


def test_cancel_cancels_remote_queries(locked):
    dist = locked
    with dist.connect() as conn:
        pid = conn.info.backend_pid
        done = threading.Event()
        errors = []

        def run():
            try:
                conn.execute("SELECT * FROM d")
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
            done.set()

        t = threading.Thread(target=run)
        t.start()
        # the coordinator's query waits on the workers' locks: wait until both do
        deadline = time.monotonic() + 30
        while len(_remote_waiters(dist)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(_remote_waiters(dist)) == 2
        dist.lc.coordinator.execute("SELECT pg_cancel_backend(%s)", (pid,))
        assert done.wait(30)
        t.join()
        assert errors and isinstance(errors[0], psycopg.errors.QueryCanceled)
        assert _remote_waiters(dist) == []


def test_cancel_inside_a_transaction_block_rolls_back(locked):
    dist = locked
    with dist.connect(autocommit=False) as conn:
        conn.execute("SET LOCAL statement_timeout = '300ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("UPDATE d SET v = 'y'")
        conn.rollback()
    assert _remote_waiters(dist) == []
    assert dist.lc.prepared_transactions(dist.dbname) == []
