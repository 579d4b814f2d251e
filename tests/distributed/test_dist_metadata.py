"""Nodes and distributed tables: the SQL API, its views, and bad input
(clear errors, nothing half-done on any node)."""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg import sql

from orochi_fdw.testing.cluster import find_free_port


def _worker_tables(cluster, dbname, schema):
    out = []
    for w in cluster.workers:
        out += w.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                         " WHERE n.nspname = %s AND c.relkind IN ('r', 'f') ORDER BY 1", (schema,), dbname=dbname)
    return sorted(r[0] for r in out)


# ------------------------------------------------------------------ nodes


def test_nodes_view_lists_the_workers(cluster, fresh_db):
    with cluster.connect(fresh_db) as conn:
        rows = conn.execute("SELECT node_id, host, port, role, is_active FROM orochi.nodes ORDER BY node_id").fetchall()
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [(w.host, w.port, "worker", True) for w in cluster.workers]


def test_add_node_again_returns_its_id(cluster, fresh_db):
    w = cluster.workers[0]
    with cluster.connect(fresh_db) as conn:
        first = conn.execute("SELECT node_id FROM orochi.nodes WHERE port = %s", (w.port,)).fetchone()[0]
        again = conn.execute("SELECT orochi.add_node(%s, %s)", (w.host, w.port)).fetchone()[0]
        count = conn.execute("SELECT count(*) FROM orochi.nodes").fetchone()[0]
    assert again == first
    assert count == len(cluster.workers)


def test_add_node_unreachable_names_the_node_within_the_timeout(cluster, fresh_db):
    port = find_free_port()
    with cluster.connect(fresh_db) as conn:
        conn.execute("SET orochi.node_connect_timeout = '2s'")
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as info:
            conn.execute("SELECT orochi.add_node('127.0.0.1', %s)", (port,))
        elapsed = time.monotonic() - started
        assert conn.execute("SELECT count(*) FROM orochi.nodes").fetchone()[0] == len(cluster.workers)
    assert info.value.sqlstate == "08001"
    assert f"127.0.0.1:{port}" in str(info.value)
    assert elapsed < 30


def test_add_node_without_the_extension(cluster, fresh_db, make_cluster):
    other = make_cluster("noext")
    other.create_database(fresh_db, extension=False)
    with cluster.connect(fresh_db) as conn:
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT orochi.add_node(%s, %s)", (other.host, other.port))
    assert info.value.sqlstate == "55000"
    assert "does not have the orochi extension" in str(info.value)
    assert f"{other.host}:{other.port}" in str(info.value)


def test_add_node_without_prepared_transactions(cluster, fresh_db, make_cluster):
    other = make_cluster("no2pc", settings={"max_prepared_transactions": 0})
    other.create_database(fresh_db)
    with cluster.connect(fresh_db) as conn:
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT orochi.add_node(%s, %s)", (other.host, other.port))
    assert info.value.sqlstate == "55000"
    assert "prepared transactions" in str(info.value)


def test_add_node_refuses_the_coordinator_itself(cluster, fresh_db):
    c = cluster.coordinator
    with cluster.connect(fresh_db) as conn:
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT orochi.add_node(%s, %s)", (c.host, c.port))
    assert info.value.sqlstate == "55000"


def test_remove_node_refused_while_it_holds_shards(cluster, fresh_db):
    w = cluster.workers[0]
    with cluster.connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id int)")
        conn.execute("SELECT orochi.create_distributed_table('t', 'id', 4)")
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT orochi.remove_node(%s, %s)", (w.host, w.port))
        assert info.value.sqlstate == "2BP01"
        assert "t" in str(info.value)
        conn.execute("DROP FOREIGN TABLE t")
        conn.execute("SELECT orochi.remove_node(%s, %s)", (w.host, w.port))
        assert conn.execute("SELECT count(*) FROM orochi.nodes").fetchone()[0] == len(cluster.workers) - 1
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT orochi.remove_node(%s, %s)", (w.host, w.port))
        assert info.value.sqlstate == "42704"


def test_add_node_copies_reference_tables(cluster, fresh_db):
    w = cluster.workers[1]
    with cluster.connect(fresh_db) as conn:
        conn.execute("SELECT orochi.remove_node(%s, %s)", (w.host, w.port))
        conn.execute("CREATE TABLE r (k int, name text)")
        conn.execute("INSERT INTO r SELECT i, 'n' || i FROM generate_series(1, 50) i")
        conn.execute("SELECT orochi.create_reference_table('r')")
        conn.execute("SELECT orochi.add_node(%s, %s)", (w.host, w.port))
        status = conn.execute("SELECT node_id, rows FROM orochi.shard_status('r') ORDER BY node_id").fetchall()
    assert [r[1] for r in status] == [50, 50]


# ------------------------------------------------------------------ tables


def test_create_distributed_table_moves_rows(dist):
    dist.q("CREATE TABLE t (id int NOT NULL, name text DEFAULT 'x', v numeric(10,2))")
    dist.q("INSERT INTO t SELECT i, 'n' || i, i / 3.0 FROM generate_series(1, 1000) i")
    before = dist.q("SELECT id, name, v FROM t ORDER BY id")
    dist.distribute("t", "id", 8)
    assert dist.q("SELECT id, name, v FROM t ORDER BY id") == before
    assert dist.worker_rows("t") == 1000
    info = dist.q("SELECT distribution_type, distribution_column, shard_count, shard_storage"
                  " FROM orochi.distributed_tables WHERE table_name = 't'::regclass")
    assert info == [("hash", "id", 8, "columnar")]
    # the replacement keeps NOT NULL and the default
    dist.q("INSERT INTO t (id) VALUES (5000)")
    assert dist.q("SELECT name FROM t WHERE id = 5000") == [("x",)]
    # shards cover the int32 space in order, each on a node
    shards = dist.q("SELECT shard_index, hash_min, hash_max FROM orochi.shards WHERE table_name = 't'::regclass"
                    " ORDER BY shard_index")
    assert shards[0][1] == -2 ** 31 and shards[-1][2] == 2 ** 31 - 1
    assert all(shards[i][2] + 1 == shards[i + 1][1] for i in range(len(shards) - 1))


def test_distributed_rows_land_in_the_shard_of_their_hash(dist):
    """The shard of a row is the one whose range holds the low 32 bits of
    the type's extended hash (seed 0) of its distribution value."""
    dist.q("CREATE TABLE t (k bigint, s text)")
    dist.distribute("t", "k", 5, shard_storage="heap")
    dist.q("INSERT INTO t SELECT i * 7919 - 500000, 'v' FROM generate_series(1, 300) i")
    for (index, lo, hi, node_id, name) in dist.q(
            "SELECT s.shard_index, s.hash_min, s.hash_max, s.node_id, s.shard_name FROM orochi.shards s"
            " WHERE s.table_name = 't'::regclass"):
        worker = dist.lc.workers[node_id - 1]
        rows = worker.execute(sql.SQL("SELECT (hashint8extended(k, 0) & 4294967295)::bigint FROM {}").format(
            sql.SQL(name)), dbname=dist.dbname)
        for (h,) in rows:
            h32 = h - 2 ** 32 if h >= 2 ** 31 else h
            assert lo <= h32 <= hi, f"row with hash {h32} in shard {index} [{lo}, {hi}]"


def test_create_distributed_table_bad_input_leaves_nothing(dist):
    dist.q("CREATE TABLE t (id int, p point, s text)")
    dist.q("INSERT INTO t VALUES (1, point(1, 2), 'a')")
    cases = [
        ("SELECT orochi.create_distributed_table('t', 'nope')", "42703", 'column "nope"'),
        ("SELECT orochi.create_distributed_table('t', 'id', 0)", "22023", "shard_count"),
        ("SELECT orochi.create_distributed_table('t', 'id', 10001)", "22023", "shard_count"),
        ("SELECT orochi.create_distributed_table('t', 'p')", "42883", "hash function for type point"),
        ("SELECT orochi.create_distributed_table('t', 'id', shard_storage => 'rows')", "22023", "shard_storage"),
        ("SELECT orochi.create_distributed_table('t', 'id', colocate_with => 'nonexistent_table')", "42P01",
         "nonexistent_table"),
    ]
    for stmt, state, text in cases:
        with pytest.raises(psycopg.Error) as info:
            dist.q(stmt)
        assert info.value.sqlstate == state, (stmt, info.value.sqlstate, str(info.value))
        assert text in str(info.value), (stmt, str(info.value))
        assert dist.q("SELECT relkind FROM pg_class WHERE oid = 't'::regclass") == [("r",)]
        assert dist.q("SELECT count(*) FROM orochi.dist_table WHERE relid = 't'::regclass") == [(0,)]
        assert dist.q("SELECT id, s FROM t") == [(1, "a")]
    assert _worker_tables(dist.lc, dist.dbname, dist.schema) == []


def test_already_distributed(dist):
    dist.q("CREATE TABLE t (id int)")
    dist.distribute("t", "id")
    with pytest.raises(psycopg.Error) as info:
        dist.distribute("t", "id")
    assert info.value.sqlstate == "42710"
    assert "already distributed" in str(info.value)
    with pytest.raises(psycopg.Error) as info:
        dist.reference("t")
    assert info.value.sqlstate == "42710"


def test_refuses_tables_whose_constraints_would_be_lost(dist):
    dist.q("CREATE TABLE t (id int PRIMARY KEY, v int)")
    with pytest.raises(psycopg.Error) as info:
        dist.distribute("t", "id")
    assert info.value.sqlstate == "0A000"
    assert "constraint" in str(info.value)
    dist.q("CREATE TEMP TABLE tt (id int)")
    with pytest.raises(psycopg.Error) as info:
        dist.distribute("tt", "id")
    assert info.value.sqlstate == "0A000" and "temporary" in str(info.value)
    dist.q("CREATE TABLE u (id int)")
    dist.q("CREATE VIEW uv AS SELECT * FROM u")
    with pytest.raises(psycopg.Error) as info:
        dist.distribute("u", "id")
    assert info.value.sqlstate == "0A000" and "view" in str(info.value)


def test_undistribute_brings_rows_back(dist):
    dist.q("CREATE TABLE t (id int, s text)")
    dist.q("INSERT INTO t SELECT i, 's' || i FROM generate_series(1, 200) i")
    dist.distribute("t", "id", 4)
    dist.q("SELECT orochi.undistribute_table('t')")
    assert dist.q("SELECT relkind FROM pg_class WHERE oid = 't'::regclass") == [("r",)]
    assert dist.q("SELECT count(*), sum(id) FROM t") == [(200, 20100)]
    assert dist.q("SELECT count(*) FROM orochi.dist_table WHERE relid = 't'::regclass") == [(0,)]
    assert _worker_tables(dist.lc, dist.dbname, dist.schema) == []


def test_drop_removes_shards_and_metadata(dist):
    dist.q("CREATE TABLE t (id int)")
    dist.distribute("t", "id", 4)
    assert len(_worker_tables(dist.lc, dist.dbname, dist.schema)) == 4
    dist.q("DROP FOREIGN TABLE t")
    assert _worker_tables(dist.lc, dist.dbname, dist.schema) == []
    assert dist.q("SELECT count(*) FROM orochi.dist_shard s LEFT JOIN orochi.dist_table t USING (relid)"
                  " WHERE t.relid IS NULL") == [(0,)]


def test_drop_in_a_rolled_back_transaction_keeps_everything(dist):
    dist.q("CREATE TABLE t (id int)")
    dist.q("INSERT INTO t SELECT generate_series(1, 10)")
    dist.distribute("t", "id", 4)
    with dist.connect(autocommit=False) as conn:
        conn.execute("DROP FOREIGN TABLE t")
        conn.rollback()
    assert len(_worker_tables(dist.lc, dist.dbname, dist.schema)) == 4
    assert dist.q("SELECT count(*) FROM t") == [(10,)]


def test_create_in_a_rolled_back_transaction_leaves_nothing(dist):
    dist.q("CREATE TABLE t (id int)")
    dist.q("INSERT INTO t SELECT generate_series(1, 10)")
    with dist.connect(autocommit=False) as conn:
        conn.execute("SELECT orochi.create_distributed_table('t', 'id', 4)")
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 10
        conn.rollback()
    assert dist.q("SELECT relkind FROM pg_class WHERE oid = 't'::regclass") == [("r",)]
    assert _worker_tables(dist.lc, dist.dbname, dist.schema) == []


def test_colocation(dist):
    dist.q("CREATE TABLE a (id int)")
    dist.q("CREATE TABLE b (id int)")
    dist.q("CREATE TABLE c (id bigint)")
    dist.q("CREATE TABLE d (id int)")
    dist.distribute("a", "id", 6)
    dist.distribute("b", "id", 6)
    dist.distribute("c", "id", 6)
    dist.distribute("d", "id", 6, colocate_with="none")
    groups = dict(dist.q("SELECT table_name::text, colocation_id FROM orochi.distributed_tables"
                         " WHERE table_name::text IN ('a', 'b', 'c', 'd')"))
    assert groups["a"] == groups["b"]
    assert groups["c"] != groups["a"] and groups["d"] != groups["a"]
    place = dist.q("SELECT s.table_name::text, s.shard_index, s.node_id FROM orochi.shards s"
                   " WHERE s.table_name::text IN ('a', 'b')")
    by_table = {}
    for t, i, n in place:
        by_table.setdefault(t, {})[i] = n
    assert by_table["a"] == by_table["b"]
    dist.q("CREATE TABLE e (id int)")
    with pytest.raises(psycopg.Error) as info:
        dist.distribute("e", "id", 4, colocate_with="a")
    assert info.value.sqlstate == "55000" and "6 shards" in str(info.value), (str(info.value), info.value.diag.message_detail)
    with pytest.raises(psycopg.Error) as info:
        dist.distribute("e", "id", 6, colocate_with="c")
    assert info.value.sqlstate == "55000"


def test_reference_table_everywhere(dist):
    dist.q("CREATE TABLE r (k int, name text)")
    dist.q("INSERT INTO r VALUES (1, 'a'), (2, 'b')")
    dist.reference("r")
    status = dist.q("SELECT node_id, rows, status FROM orochi.shard_status('r') ORDER BY node_id")
    assert status == [(1, 2, "ok"), (2, 2, "ok")]
    dist.q("INSERT INTO r VALUES (3, 'c')")
    dist.q("UPDATE r SET name = 'B' WHERE k = 2")
    dist.q("DELETE FROM r WHERE k = 1")
    for w in dist.lc.workers:
        name = dist.q("SELECT shard_name FROM orochi.shards WHERE table_name = 'r'::regclass LIMIT 1")[0][0]
        rows = w.execute(sql.SQL("SELECT k, name FROM {} ORDER BY k").format(sql.SQL(name)), dbname=dist.dbname)
        assert rows == [(2, "B"), (3, "c")]
    assert dist.q("SELECT k, name FROM r ORDER BY k") == [(2, "B"), (3, "c")]


def test_user_mapping_options_are_checked(dist):
    with pytest.raises(psycopg.Error) as info:
        dist.q("CREATE USER MAPPING FOR CURRENT_USER SERVER orochi_cluster OPTIONS (colour 'blue')")
    assert info.value.sqlstate == "HV00D"
    dist.q("CREATE USER MAPPING FOR CURRENT_USER SERVER orochi_cluster OPTIONS (sslmode 'disable')")
    try:
        dist.q("CREATE TABLE t (id int)")
        dist.distribute("t", "id", 2)
        dist.q("INSERT INTO t VALUES (1)")
        assert dist.q("SELECT count(*) FROM t") == [(1,)]
    finally:
        dist.q("DROP USER MAPPING FOR CURRENT_USER SERVER orochi_cluster")


def test_shard_count_at_the_limits(dist):
    dist.q("CREATE TABLE one (id int)")
    dist.distribute("one", "id", 1)
    dist.q("INSERT INTO one SELECT generate_series(1, 20)")
    assert dist.q("SELECT count(*), sum(id) FROM one") == [(20, 210)]


def test_privileges_follow_the_table_to_its_shards(cluster, fresh_db):
    """The coordinator reaches the workers as the current user: a role
    granted the table reads and writes it (two-phase commit included), one
    without the grant is refused on the coordinator, and GRANT / REVOKE
    reach the shards.  (Heap shards: reading a columnar table as a role
    other than its owner is the columnar layer's own privilege question.)"""
    role = "orochi_dist_user"
    for c in cluster.all():
        c.execute(f"DROP ROLE IF EXISTS {role}")
        c.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with cluster.connect(fresh_db) as conn:
            conn.execute("CREATE TABLE t (id int, v text)")
            conn.execute("INSERT INTO t SELECT i, 'v' FROM generate_series(1, 20) i")
            conn.execute("SELECT orochi.create_distributed_table('t', 'id', 4, shard_storage => 'heap')")
            conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON t TO {role}")
            conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        with cluster.coordinator.connect(fresh_db, autocommit=True, user=role) as user:
            assert user.execute("SELECT count(*) FROM t").fetchone() == (20,)
            user.execute("INSERT INTO t SELECT i, 'u' FROM generate_series(100, 140) i")  # two-phase
            user.execute("UPDATE t SET v = 'w' WHERE id < 5")
            assert user.execute("SELECT count(*) FROM t WHERE v = 'w'").fetchone() == (4,)
        with cluster.connect(fresh_db) as conn:
            conn.execute(f"REVOKE UPDATE ON t FROM {role}")
            names = [r[0] for r in conn.execute(
                "SELECT quote_ident(t.shard_schema) || '.' || quote_ident(t.shard_base || '_' || s.shard_id)"
                "  FROM orochi.dist_table t JOIN orochi.dist_shard s USING (relid) WHERE t.relid = 't'::regclass")]
        for w in cluster.workers:
            for name in names:
                ok = w.execute(
                    "SELECT has_table_privilege(%s, c.oid, 'UPDATE') FROM pg_class c WHERE c.oid = to_regclass(%s)",
                    (role, name), dbname=fresh_db)
                assert ok in ([], [(False,)])
        with cluster.coordinator.connect(fresh_db, autocommit=True, user=role) as user:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                user.execute("UPDATE t SET v = 'x'")
            assert user.execute("SELECT count(*) FROM t").fetchone() == (61,)
    finally:
        with cluster.connect(fresh_db) as conn:
            conn.execute("DROP FOREIGN TABLE IF EXISTS t")
        for c in cluster.all():
            c.execute(f"DROP OWNED BY {role}", dbname=fresh_db)
            c.execute(f"DROP ROLE IF EXISTS {role}")
