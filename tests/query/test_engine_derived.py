"""Subqueries of the join tree as inputs of the join engine (TPC-H Q18's
shape): ``x IN (SELECT k FROM t GROUP BY k HAVING ...)``, which PostgreSQL
pulls up into a semi join with the subquery, and GROUP BY subqueries in
FROM, run as a derived table of the join's DuckDB SQL over engine-read
scans of the subquery's tables, against the same queries over heap tables
holding the same rows (the oracle): NULL keys (a NULL group, NULL outer
keys), HAVING over NULL aggregates, a subquery matching no row, duplicates
in the subquery's output (one key of two grouped), prepared-statement
parameters inside the subquery; and what stays in PostgreSQL (a subquery
over a heap table, LIMIT, DISTINCT, a window function, a HAVING the engine
does not translate)."""

from __future__ import annotations

import psycopg
import pytest

from oracle_pair_helpers import SUBQUERY_TABLES, create_subquery_tables, engine_pair

TABLES = SUBQUERY_TABLES


@pytest.fixture(scope="module")
def ddb(pg_cluster, module_database):
    name = module_database
    with pg_cluster.connect(name, autocommit=True) as conn:
        create_subquery_tables(conn)
    yield name


@pytest.fixture(scope="module")
def conns(pg_cluster, ddb):
    with engine_pair(pg_cluster, ddb) as pair:
        yield pair


def _run_both(conns, template: str, params=None, derived: bool = True) -> str:
    oro, heap = conns
    q_oro = template.format(**{t: t for t in TABLES})
    q_heap = template.format(**{t: f"{t}_h" for t in TABLES})
    plan = "\n".join(r[0] for r in oro.execute("EXPLAIN (VERBOSE) " + q_oro, params).fetchall())
    if derived:
        assert "subquery (aggregate over" in plan and "with a subquery over i" in plan, plan
    else:
        assert "subquery (aggregate over" not in plan, plan
    got = sorted(oro.execute(q_oro, params).fetchall(), key=repr)
    want = sorted(heap.execute(q_heap, params).fetchall(), key=repr)
    assert got == want, (q_oro, plan)
    return plan


@pytest.mark.parametrize("having", ["sum(i.n) > 10", "sum(i.n) IS NULL", "count(*) > 3 AND max(i.n) < 8",
                                    "sum(i.n) > 100000"])
def test_in_group_by_having(conns, having):
    # NULL keys on both sides, groups whose sum is NULL, a subquery matching no row
    _run_both(conns, "SELECT o.k, o.g, j.v FROM {o} o, {j} j WHERE o.k = j.k AND o.k IN "
                     f"(SELECT i.k FROM {{i}} i GROUP BY i.k HAVING {having})")


def test_duplicate_keys(conns):
    # the subquery's output has duplicates (grouped by two keys, one output)
    _run_both(conns, "SELECT o.k, o.n FROM {o} o, {j} j WHERE o.g = j.g AND o.k IN "
                     "(SELECT i.k FROM {i} i WHERE i.v IS NOT NULL GROUP BY i.k, i.g HAVING count(*) >= 2)")


def test_q18_shape(conns):
    _run_both(conns, "SELECT o.k, o.g, sum(j.n) FROM {o} o, {j} j WHERE o.k = j.k AND o.k IN "
                     "(SELECT i.k FROM {i} i GROUP BY i.k HAVING sum(i.n) > 5) "
                     "GROUP BY o.k, o.g ORDER BY o.k DESC, o.g LIMIT 7")


def test_derived_table(conns):
    # a GROUP BY subquery in FROM: an inner join with it, its outputs read
    _run_both(conns, "SELECT o.k, s.g, o.v FROM {o} o, "
                     "(SELECT i.k, i.g FROM {i} i GROUP BY i.g, i.k HAVING count(i.n) > 1) s "
                     "WHERE o.k = s.k AND s.g < 3")


def test_left_join(conns):
    # the subquery on the nullable side: its restriction applies before the join
    _run_both(conns, "SELECT o.k, o.g, s.k, s.g FROM {o} o LEFT JOIN "
                     "(SELECT i.k, i.g FROM {i} i GROUP BY i.k, i.g HAVING sum(i.n) > 2) s "
                     "ON o.k = s.k AND o.g = s.g WHERE o.v <> 'v3'")


def test_prepared_parameters(conns):
    _run_both(conns, "SELECT o.k, j.g FROM {o} o, {j} j WHERE o.k = j.k AND o.k IN "
                     "(SELECT i.k FROM {i} i WHERE i.v <> %s GROUP BY i.k HAVING sum(i.n) > %s)", ("v1", 3))


@pytest.mark.parametrize("subquery", [
    "SELECT k FROM i_h GROUP BY k HAVING sum(n) > 10",  # a heap table
    "SELECT i.k FROM {i} i GROUP BY i.k ORDER BY i.k LIMIT 5",
    "SELECT DISTINCT i.k FROM {i} i WHERE i.n > 1",
    "SELECT i.k FROM (SELECT k, row_number() OVER (ORDER BY n) r FROM {i}) i GROUP BY i.k HAVING max(r) > 20",
    "SELECT i.k FROM {i} i GROUP BY i.k HAVING min(i.v) > 'v2'",  # text under the default collation
])
def test_stays_in_postgres(conns, subquery):
    _run_both(conns, f"SELECT o.k, j.v FROM {{o}} o, {{j}} j WHERE o.k = j.k AND o.k IN ({subquery})",
              derived=False)


def test_privileges_on_the_subquery_table(pg_cluster, ddb):
    # the subquery's table is no scan of the join: the executor checks the
    # privileges on it all the same (a plan made before the REVOKE too)
    query = "SELECT o.k FROM o, j WHERE o.k = j.k AND o.k IN (SELECT i.k FROM i GROUP BY i.k HAVING count(*) > 1)"
    with pg_cluster.connect(ddb, autocommit=True) as conn:
        for setting in ("enable_hashjoin", "enable_mergejoin", "enable_nestloop", "enable_hashagg"):
            conn.execute(f"SET {setting} = off")
        conn.execute("CREATE ROLE derived_reader")
        conn.execute("GRANT SELECT ON o, j, i TO derived_reader")
        conn.execute("SET ROLE derived_reader")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query).fetchall())
        assert "with a subquery over i" in plan, plan
        conn.execute(f"PREPARE q AS {query}")
        expected = conn.execute("EXECUTE q").fetchall()
        assert expected
        conn.execute("RESET ROLE")
        conn.execute("REVOKE SELECT ON i FROM derived_reader")
        conn.execute("SET ROLE derived_reader")
        for statement in (query, "EXECUTE q"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match='table i'):
                conn.execute(statement)
        conn.execute("RESET ROLE")


def test_generic_plan(conns):
    # a plan made once for every value of the subquery's parameters
    oro, heap = conns
    query = ("SELECT o.k, j.v FROM {o} o, {j} j WHERE o.k = j.k AND o.k IN "
             "(SELECT i.k FROM {i} i WHERE i.g <> $2 GROUP BY i.k HAVING sum(i.n) > $1)")
    for conn, names in ((oro, TABLES), (heap, [f"{t}_h" for t in TABLES])):
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("PREPARE g(numeric, bigint) AS " + query.format(**dict(zip(TABLES, names))))
    try:
        plan = "\n".join(r[0] for r in oro.execute("EXPLAIN EXECUTE g(1, 0)").fetchall())
        assert "with a subquery over i" in plan, plan
        for values in ((1, 0), (8, 2), (None, 1), (-100, None), (100000, 3)):
            execute = f"EXECUTE g({', '.join('NULL' if v is None else str(v) for v in values)})"
            assert sorted(oro.execute(execute).fetchall(), key=repr) == \
                sorted(heap.execute(execute).fetchall(), key=repr), values
    finally:
        for conn in (oro, heap):
            conn.execute("DEALLOCATE g")
            conn.execute("RESET plan_cache_mode")
