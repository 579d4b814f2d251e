"""Connections to the workers: a cached connection the worker closed is
noticed before use (also right after a read-only transaction whose COMMIT
was not waited for), and a node that accepts a TCP connection but never
answers fails the statements that need it within
``orochi.node_connect_timeout``, naming it, while statements pruned to
other nodes still run."""

from __future__ import annotations

import socket

import psycopg
import pytest


def _terminate_orochi_backends(dist, index: int) -> int:
    """End the coordinator's connections on worker ``index`` and wait until
    they are gone (pg_terminate_backend's timeout: no race with the clock)."""
    rows = dist.lc.workers[index].execute(
        "SELECT pg_terminate_backend(pid, 60000) FROM pg_stat_activity"
        " WHERE application_name = 'orochi' AND datname = %s", (dist.dbname,))
    assert all(ok for (ok,) in rows)
    return len(rows)


@pytest.fixture
def table(dist):
    dist.q("CREATE TABLE d (k int, v text)")
    dist.distribute("d", "k", 4)
    dist.q("INSERT INTO d SELECT generate_series(1, 100), 'x'")
    return dist


@pytest.mark.parametrize("last", ["read", "write", "read in a block"])
def test_connection_closed_by_the_worker_is_reopened(table, last):
    dist = table
    with dist.connect() as conn:
        if last == "read":
            # a read-only remote transaction: its COMMIT is sent, not waited for
            assert conn.execute("SELECT count(*) FROM d").fetchone() == (100,)
        elif last == "write":
            conn.execute("INSERT INTO d VALUES (1000, 'y'), (1001, 'y'), (1002, 'y')")
        else:
            conn.execute("BEGIN")
            assert conn.execute("SELECT count(*) FROM d").fetchone()[0] >= 100
            conn.execute("COMMIT")
        assert _terminate_orochi_backends(dist, 0) >= 1
        assert _terminate_orochi_backends(dist, 1) >= 1
        expected = 103 if last == "write" else 100
        assert conn.execute("SELECT count(*) FROM d").fetchone() == (expected,)
        conn.execute("INSERT INTO d VALUES (2000, 'z')")
        assert conn.execute("SELECT count(*) FROM d").fetchone() == (expected + 1,)


def test_connection_lost_inside_a_transaction_block_fails_its_commit(table):
    dist = table
    with dist.connect() as conn:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO d SELECT generate_series(101, 200), 'y'")
        _terminate_orochi_backends(dist, 0)
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT count(*) FROM d")
            conn.execute("COMMIT")
        assert info.value.sqlstate.startswith("08"), info.value.sqlstate
        conn.execute("ROLLBACK")
        # nothing of the transaction was kept on any node
        assert conn.execute("SELECT count(*) FROM d").fetchone() == (100,)


@pytest.fixture
def silent_port():
    """A TCP port that accepts connections (the kernel's backlog) and never
    says a word."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_silent_node_fails_within_the_connect_timeout_and_pruned_queries_run(cluster, fresh_db, silent_port):
    with cluster.connect(fresh_db) as conn:
        conn.execute("CREATE TABLE d (k int, v text)")
        conn.execute("SELECT orochi.create_distributed_table('d', 'k', 4, shard_storage => 'heap')")
        conn.execute("INSERT INTO d SELECT generate_series(1, 100), 'x'")
        on_node2 = [k for (k,) in conn.execute(
            "SELECT k FROM d WHERE (SELECT s.node_id FROM orochi.shards s WHERE s.table_name = 'd'::regclass"
            " AND ((hashint4extended(k, 0) & 4294967295)::bigint - CASE WHEN (hashint4extended(k, 0) & 4294967295)"
            "::bigint >= 2147483648 THEN 4294967296 ELSE 0 END) BETWEEN s.hash_min AND s.hash_max) = 2")]
        assert on_node2
        # node 1 now points at a port that never answers
        conn.execute("UPDATE orochi.dist_node SET port = %s WHERE node_id = 1", (silent_port,))
    try:
        with cluster.connect(fresh_db) as conn:
            conn.execute("SET orochi.node_connect_timeout = '500ms'")
            with pytest.raises(psycopg.OperationalError) as info:
                conn.execute("SELECT count(*) FROM d")
            assert info.value.sqlstate == "08001"
            assert f"127.0.0.1:{silent_port}" in str(info.value)
            assert "timeout" in str(info.value)
            k = on_node2[0]
            assert conn.execute("SELECT k, v FROM d WHERE k = %s", (k,)).fetchall() == [(k, "x")]
            # a write routed to the live node commits
            conn.execute("UPDATE d SET v = 'y' WHERE k = %s", (k,))
            assert conn.execute("SELECT v FROM d WHERE k = %s", (k,)).fetchall() == [("y",)]
            # statement_timeout (or a cancel) ends the wait for a connection too
            conn.execute("SET orochi.node_connect_timeout = '1h'")
            conn.execute("SET statement_timeout = '300ms'")
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT count(*) FROM d")
            conn.execute("RESET statement_timeout")
            assert conn.execute("SELECT count(*) FROM d WHERE k = %s", (k,)).fetchone() == (1,)
    finally:
        with cluster.connect(fresh_db) as conn:
            conn.execute("UPDATE orochi.dist_node SET port = %s WHERE node_id = 1", (cluster.workers[0].port,))
            conn.execute("DROP FOREIGN TABLE d")


def test_add_node_of_a_silent_node_fails_within_the_connect_timeout(cluster, fresh_db, silent_port):
    with cluster.connect(fresh_db) as conn:
        conn.execute("SET orochi.node_connect_timeout = '500ms'")
        with pytest.raises(psycopg.OperationalError) as info:
            conn.execute("SELECT orochi.add_node('127.0.0.1', %s)", (silent_port,))
        assert info.value.sqlstate == "08001"
        assert f"127.0.0.1:{silent_port}" in str(info.value)
        assert conn.execute("SELECT count(*) FROM orochi.nodes").fetchone()[0] == len(cluster.workers)


def test_copy_begins_its_remote_transaction_once(table):
    """COPY on a fresh remote transaction sends its BEGIN (and TimeZone)
    once: the workers never hear a second BEGIN."""
    dist = table
    offsets = [w.log_offset() for w in dist.lc.workers]
    with dist.connect() as conn:
        conn.execute("SET TimeZone = 'Asia/Tokyo'")  # a TimeZone the sessions must take first
        with conn.cursor().copy("COPY d (k, v) FROM STDIN") as copy:
            for i in range(1000, 1100):
                copy.write_row((i, "c"))
        with conn.cursor().copy("COPY (SELECT k FROM d WHERE k >= 1000 ORDER BY k) TO STDOUT") as copy:
            assert len(list(copy.rows())) == 100
        assert conn.execute("SELECT count(*) FROM d").fetchone() == (200,)
    for w, offset in zip(dist.lc.workers, offsets):
        assert "already a transaction in progress" not in w.log_since(offset)
