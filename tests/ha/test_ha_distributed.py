"""The coordinator's metadata follows a worker group's failover: after
kill -9 of a worker's primary, orochi.nodes names its new primary and
distributed queries and writes on the coordinator reach it, with every row
(columnar shards, WAL-logged, are on the standby)."""

from __future__ import annotations

import psycopg
import pytest

from orochi_fdw.testing.ha import HaGroup, wait_until


@pytest.fixture(scope="module")
def dist():
    group = HaGroup(name="hadist", groups={"coordinator": 0, "worker1": 1}, databases=("app",))
    try:
        group.start()
        group.wait_ready()
        yield group
    finally:
        group.cleanup()


def _coordinator(group: HaGroup) -> psycopg.Connection:
    return psycopg.connect(group.clusters[group.primary(group="coordinator")].dsn("app"), autocommit=True)


def test_orochi_nodes_follows_a_worker_failover(dist):
    old = dist.primary(group="worker1")
    worker = dist.clusters[old]
    with _coordinator(dist) as conn:
        conn.execute("SELECT orochi.add_node(%s, %s)", (worker.host, worker.port))
        conn.execute("CREATE TABLE metrics (id int, v int)")
        conn.execute("SELECT orochi.create_distributed_table('metrics', 'id', 4)")
        conn.execute("INSERT INTO metrics SELECT g, g % 7 FROM generate_series(1, 2000) g")
        expected = conn.execute("SELECT count(*), sum(v) FROM metrics").fetchone()
    assert expected == (2000, sum(g % 7 for g in range(1, 2001)))
    generation = dist.generation(group="worker1")
    dist.kill_postmaster(old)
    new = dist.wait_failover(generation, group="worker1")
    assert new != old
    new_port = dist.clusters[new].port

    def moved() -> bool:
        with _coordinator(dist) as conn:
            return conn.execute("SELECT array_agg(port) FROM orochi.nodes").fetchone()[0] == [new_port]
    wait_until(moved, 60, "orochi.nodes to name the new primary")
    # the new primary waits for a synchronous standby: its only one is the old primary, rejoining
    wait_until(lambda: dist.in_recovery(old) is True and old in dist.streaming(new), 120,
               f"{old} to rejoin as a standby")
    with _coordinator(dist) as conn:
        assert conn.execute("SELECT count(*), sum(v) FROM metrics").fetchone() == expected
        conn.execute("INSERT INTO metrics VALUES (5001, 3), (5002, 4)")
        assert conn.execute("SELECT count(*), sum(v) FROM metrics WHERE id > 5000").fetchone() == (2, 7)
        assert conn.execute("SELECT v FROM metrics WHERE id = 1234").fetchone() == (1234 % 7,)
