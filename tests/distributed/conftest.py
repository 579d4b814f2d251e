"""Fixtures of the distributed-table tests: a coordinator and two workers
on 127.0.0.1 for the whole session.

- ``cluster`` (session): the :class:`LocalCluster`; its database
  ``orochi_dist`` has both workers added.
- ``dist`` (function): a :class:`DistSchema`, a schema of its own in that
  database (and on the workers, for the shards) with an autocommit
  connection whose search_path is it; every table in it, distributed or not,
  is dropped after the test, and the test fails if a prepared transaction
  is left on a worker.
- ``fresh_db`` (function): a further database copied from the template, the
  workers added, dropped after the test (for tests of the node metadata).

Any server process of these clusters killed by a signal other than SIGKILL
during a test fails it, as for the other clusters of the suite.
"""

from __future__ import annotations

import itertools

import psycopg
import pytest
from psycopg import sql

from orochi_fdw.testing.distributed import LocalCluster

_schemas = itertools.count(1)


@pytest.fixture(scope="session")
def cluster():
    lc = LocalCluster(workers=2, name="dist")
    try:
        lc.start()
        yield lc
    finally:
        lc.cleanup()


@pytest.fixture(autouse=True)
def _cluster_crash_check(request):
    """Fail a test during which a server process of the session's cluster
    crashed (SIGKILL is deliberate and ignored)."""
    if "cluster" not in request.fixturenames:
        yield
        return
    lc = request.getfixturevalue("cluster")
    offsets = [(c, c.log_offset()) for c in lc.all()]
    yield
    problems = []
    for c, offset in offsets:
        problems += [f"{c.name}: {line}" for line in c.crashes_since(offset)]
    if problems:
        pytest.fail("server process crashed during the test:\n" + "\n".join(problems), pytrace=False)


class DistSchema:
    """A test's schema in the shared distributed database."""

    def __init__(self, lc: LocalCluster, dbname: str, schema: str):
        self.lc = lc
        self.dbname = dbname
        self.schema = schema
        self.conn = self.connect()

    def connect(self, **kw) -> psycopg.Connection:
        return self.lc.connect(self.dbname, options=f"-c search_path={self.schema},public", **kw)

    def q(self, query, params=None) -> list[tuple]:
        cur = self.conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    def one(self, query, params=None):
        rows = self.q(query, params)
        return rows[0][0] if rows else None

    def distribute(self, table: str, column: str, shard_count: int = 4, **kw) -> None:
        args = [sql.Literal(table), sql.Literal(column), sql.Literal(shard_count)]
        extra = [sql.SQL("{} => {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in kw.items()]
        self.q(sql.SQL("SELECT orochi.create_distributed_table({})").format(sql.SQL(", ").join(args + extra)))

    def reference(self, table: str, **kw) -> None:
        extra = [sql.SQL("{} => {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in kw.items()]
        self.q(sql.SQL("SELECT orochi.create_reference_table({})").format(
            sql.SQL(", ").join([sql.Literal(table)] + extra)))

    def shard_names(self, table: str) -> list[tuple[int, str]]:
        """(node id, qualified shard name) of each placement, from the metadata
        alone (orochi.shards asks the workers for live figures)."""
        return self.q("SELECT p.node_id, quote_ident(t.shard_schema) || '.' || quote_ident(t.shard_base || '_' || s.shard_id)"
                      "  FROM orochi.dist_table t JOIN orochi.dist_shard s USING (relid)"
                      "  JOIN orochi.dist_placement p USING (shard_id) WHERE t.relid = %s::regclass"
                      " ORDER BY s.shard_index, p.node_id", (table,))

    def worker_rows(self, table: str) -> int:
        """Rows of the table counted over its shards on the workers."""
        return int(self.one("SELECT coalesce(sum(rows), 0) FROM orochi.shard_status(%s::regclass)"
                            " WHERE status = 'ok'", (table,)))

    def cleanup(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass
        with self.lc.connect(self.dbname) as conn:
            conn.execute("ROLLBACK") if conn.info.transaction_status != 0 else None
            for (name,) in conn.execute(
                    "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relkind = 'f'", (self.schema,)).fetchall():
                conn.execute(sql.SQL("DROP FOREIGN TABLE IF EXISTS {} CASCADE").format(sql.SQL(name)))
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))
        for w in self.lc.workers:
            w.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)),
                      dbname=self.dbname)


def _schema(cluster):
    schema = f"t{next(_schemas)}"
    cluster.coordinator.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)), dbname=cluster.dbname)
    d = DistSchema(cluster, cluster.dbname, schema)
    yield d
    left = cluster.prepared_transactions(cluster.dbname)
    d.cleanup()
    assert not left, f"prepared transactions left on the workers: {left}"


@pytest.fixture
def dist(cluster):
    yield from _schema(cluster)


@pytest.fixture(scope="module")
def dist_module(cluster):
    """A schema shared by a module's tests (for read-only tests over one data set)."""
    yield from _schema(cluster)


@pytest.fixture
def fresh_db(cluster):
    name = cluster.new_database()
    yield name
    cluster.drop_database(name)
