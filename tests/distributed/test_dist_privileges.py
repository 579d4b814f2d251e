"""Privileges of distributed tables and of the cluster functions, for a
table's owner (not a superuser), a role granted some privileges, a role
granted none, and a superuser.

The coordinator reaches the workers as the current user: every role here
exists on every node, and the owner may create tables in the schema on the
workers (where its shards are made)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

OWNER, READER, STRANGER = "orochi_dist_owner", "orochi_dist_reader", "orochi_dist_stranger"


@pytest.fixture
def roles(cluster, fresh_db):
    for c in cluster.all():
        for role in (OWNER, READER, STRANGER):
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            c.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        c.execute(sql.SQL("GRANT CREATE, USAGE ON SCHEMA public TO {}").format(sql.Identifier(OWNER)), dbname=fresh_db)
        c.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}, {}").format(
            sql.Identifier(READER), sql.Identifier(STRANGER)), dbname=fresh_db)
    yield fresh_db
    with cluster.connect(fresh_db) as conn:
        for (name,) in conn.execute("SELECT relid::regclass::text FROM orochi.dist_table").fetchall():
            conn.execute(sql.SQL("DROP FOREIGN TABLE IF EXISTS {} CASCADE").format(sql.SQL(name)))
    for c in cluster.all():
        for role in (OWNER, READER, STRANGER):
            c.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)), dbname=fresh_db)
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _as(cluster, dbname, role):
    return cluster.coordinator.connect(dbname, autocommit=True, user=role)


def _refused(conn, statement, params=None, text=None):
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
        conn.execute(statement, params)
    if text:
        assert text in str(info.value), str(info.value)
    return info.value


def test_owner_distributes_reads_writes_and_drops_its_table(cluster, roles):
    db = roles
    with _as(cluster, db, OWNER) as owner:
        owner.execute("CREATE TABLE t (id int NOT NULL, v text)")
        owner.execute("INSERT INTO t SELECT i, 'v' FROM generate_series(1, 40) i")
        owner.execute("SELECT orochi.create_distributed_table('t', 'id', 4)")
        owner.execute("INSERT INTO t SELECT i, 'w' FROM generate_series(41, 80) i")  # two-phase commit
        owner.execute("UPDATE t SET v = 'u' WHERE id <= 10")
        owner.execute("DELETE FROM t WHERE id > 70")
        assert owner.execute("SELECT count(*), count(*) FILTER (WHERE v = 'u') FROM t").fetchone() == (70, 10)
        owner.execute("CREATE TABLE r (id int, name text)")
        owner.execute("SELECT orochi.create_reference_table('r')")
        owner.execute("INSERT INTO r VALUES (1, 'one')")
        assert owner.execute("SELECT count(*) FROM t JOIN r USING (id)").fetchone() == (1,)
        owner.execute("ALTER TABLE t ADD COLUMN extra int DEFAULT 7")
        assert owner.execute("SELECT sum(extra) FROM t").fetchone() == (490,)
        owner.execute("SELECT orochi.undistribute_table('r')")
        owner.execute("DROP FOREIGN TABLE t")
    assert cluster.prepared_transactions(db) == []
    for w in cluster.workers:
        assert w.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 't\\_%' AND relkind IN ('r', 'f')",
                         dbname=db) == [(0,)]
    with cluster.connect(db) as su:
        assert su.execute("SELECT count(*) FROM orochi.dist_table").fetchone() == (0,)
        assert su.execute("SELECT count(*) FROM r").fetchone() == (1,)


def test_granted_ungranted_and_superuser(cluster, roles):
    db = roles
    with _as(cluster, db, OWNER) as owner:
        owner.execute("CREATE TABLE t (id int NOT NULL, v text)")
        owner.execute("SELECT orochi.create_distributed_table('t', 'id', 4)")
        owner.execute("INSERT INTO t SELECT i, 'v' FROM generate_series(1, 20) i")
        owner.execute(sql.SQL("GRANT SELECT ON t TO {}").format(sql.Identifier(READER)))
    with _as(cluster, db, READER) as reader:
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (20,)
        assert reader.execute("SELECT v FROM t WHERE id = 3").fetchall() == [("v",)]
        _refused(reader, "INSERT INTO t VALUES (100, 'x')")
        _refused(reader, "UPDATE t SET v = 'x' WHERE id = 3")
        _refused(reader, "DELETE FROM t")
        _refused(reader, "TRUNCATE t")
        # only the owner distributes, undistributes or changes it
        _refused(reader, "SELECT orochi.undistribute_table('t')", text="owner")
        _refused(reader, "ALTER TABLE t ADD COLUMN c int", text="owner")
    with _as(cluster, db, STRANGER) as stranger:
        _refused(stranger, "SELECT count(*) FROM t")
        _refused(stranger, "SELECT * FROM t WHERE id = 1")
        _refused(stranger, "INSERT INTO t VALUES (100, 'x')")
        stranger.execute("CREATE TEMP TABLE mine (id int)")  # its own business still works
        # the stranger cannot reach the shards on the workers either
        with cluster.connect(db) as su:
            shard = su.execute("SELECT shard_name, node_id FROM orochi.shards WHERE table_name = 't'::regclass"
                               " ORDER BY shard_id LIMIT 1").fetchone()
        with cluster.workers[shard[1] - 1].connect(db, autocommit=True, user=STRANGER) as w:
            _refused(w, sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(shard[0])))
    with cluster.connect(db) as su:  # a superuser reads and writes anything
        su.execute("INSERT INTO t SELECT i, 'su' FROM generate_series(21, 30) i")
        assert su.execute("SELECT count(*) FROM t").fetchone() == (30,)
    assert cluster.prepared_transactions(db) == []


def test_cluster_functions_are_for_superusers(cluster, roles):
    db = roles
    w = cluster.workers[0]
    with _as(cluster, db, OWNER) as owner:
        _refused(owner, "SELECT orochi.add_node(%s, %s)", (w.host, w.port + 1000))
        _refused(owner, "SELECT orochi.remove_node(%s, %s)", (w.host, w.port))
        _refused(owner, "SELECT orochi.recover_prepared_transactions()")
        _refused(owner, "INSERT INTO orochi.dist_transaction (node_id, gid) VALUES (1, 'orochi_1_1_1')")
        _refused(owner, "DELETE FROM orochi.dist_node")
        # the metadata is readable
        assert owner.execute("SELECT count(*) FROM orochi.nodes").fetchone() == (len(cluster.workers),)
    with cluster.connect(db) as su:
        assert su.execute("SELECT count(*) FROM orochi.nodes").fetchone() == (len(cluster.workers),)
        assert su.execute("SELECT orochi.recover_prepared_transactions()").fetchone() == (0,)
