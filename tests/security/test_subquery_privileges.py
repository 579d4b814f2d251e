"""A correlated subquery the join engine runs reads its tables through the
engine's own scans, while PostgreSQL's plan of it stays in the statement:
the executor checks the privileges on the subquery's tables as for
PostgreSQL's own plan (a role without SELECT on them gets PostgreSQL's
permission error), and a table under security quals (a security_barrier view's) keeps
the subquery in PostgreSQL (the conditions apply as there)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

QUERY = ("SELECT o.k, o.n FROM so o, sj j WHERE o.k = j.k AND o.n < "
         "(SELECT 0.5 * sum(i.n) FROM si i WHERE i.k = o.k)")


@pytest.fixture(scope="module")
def tables(actors):
    owner = actors.conns["owner"]
    for t in ("so", "sj", "si"):
        owner.execute(f"CREATE FOREIGN TABLE {t} (k int, n numeric(10,2)) SERVER orochi")
        owner.execute(f"INSERT INTO {t} SELECT x % 17, (x % 23) * 1.5 FROM generate_series(1, 300) x")
    for t in ("so", "sj"):
        for actor in ("granted", "ungranted"):
            owner.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(t), actors.ident(actor)))
    owner.execute(sql.SQL("GRANT SELECT ON si TO {}").format(actors.ident("granted")))
    owner.execute("ANALYZE so")
    owner.execute("ANALYZE sj")
    owner.execute("ANALYZE si")
    return actors


def _engine_plan(conn) -> str:
    for setting in ("enable_hashjoin", "enable_mergejoin", "enable_nestloop"):
        conn.execute(f"SET {setting} = off")
    return "\n".join(r[0] for r in conn.execute("EXPLAIN (VERBOSE) " + QUERY).fetchall())


def _without_engine(conn) -> list:
    conn.execute("SET orochi.duckdb_join_enabled = off")
    try:
        return sorted(conn.execute(QUERY).fetchall())
    finally:
        conn.execute("RESET orochi.duckdb_join_enabled")


@pytest.mark.parametrize("actor", ["owner", "granted"])
def test_allowed(tables, actor):
    conn = tables.conns[actor]
    assert "with a subquery over si" in _engine_plan(conn)
    got = sorted(conn.execute(QUERY).fetchall())
    assert got and got == _without_engine(conn)


def test_ungranted_gets_permission_error(tables):
    conn = tables.conns["ungranted"]
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="si"):
        conn.execute(QUERY).fetchall()


def test_security_barrier_keeps_subquery_in_postgres(tables):
    # (foreign tables have no row-level security in PostgreSQL 15; a
    # security_barrier view's conditions are security quals the same way)
    owner = tables.conns["owner"]
    owner.execute("CREATE VIEW si_even WITH (security_barrier) AS SELECT * FROM si WHERE k % 2 = 0")
    owner.execute(sql.SQL("GRANT SELECT ON si_even TO {}").format(tables.ident("ungranted")))
    try:
        conn = tables.conns["ungranted"]
        query = QUERY.replace("FROM si i", "FROM si_even i")
        for setting in ("enable_hashjoin", "enable_mergejoin", "enable_nestloop"):
            conn.execute(f"SET {setting} = off")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (VERBOSE) " + query).fetchall())
        assert "with a subquery over" not in plan, plan
        got = sorted(conn.execute(query).fetchall())
        conn.execute("SET orochi.duckdb_join_enabled = off")
        try:
            assert got and got == sorted(conn.execute(query).fetchall())
        finally:
            conn.execute("RESET orochi.duckdb_join_enabled")
    finally:
        owner.execute("DROP VIEW si_even")
