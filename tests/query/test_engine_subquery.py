"""Correlated scalar subqueries in the join engine (TPC-H Q2, Q17, Q20's
shape): ``x op (SELECT agg(...) FROM t WHERE t.k = outer.k ...)`` run as
DuckDB's correlated subquery over engine-read scans of the subquery's
tables, against the same queries over heap tables holding the same rows
(the oracle), randomized: NULL correlation keys and values, keys matching
no row (NULL from sum/min/max/avg, 0 from count), the subquery's own
restrictions with prepared-statement parameters, a join inside the
subquery, a subquery in one table's restriction; and the privileges on the
subquery's table (checked by the executor as for PostgreSQL's own plan)."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oracle_pair_helpers import SUBQUERY_TABLES, create_subquery_tables, engine_pair

TABLES = SUBQUERY_TABLES


@pytest.fixture(scope="module")
def sdb(pg_cluster, module_database):
    name = module_database
    with pg_cluster.connect(name, autocommit=True) as conn:
        create_subquery_tables(conn)
    yield name


@pytest.fixture(scope="module")
def conns(pg_cluster, sdb):
    with engine_pair(pg_cluster, sdb) as pair:
        yield pair


def _plan(conn, query: str, params=None) -> str:
    return "\n".join(r[0] for r in conn.execute("EXPLAIN (VERBOSE) " + query, params).fetchall())


def _run_both(conns, template: str, params=None, pushed: bool = True) -> str:
    oro, heap = conns
    q_oro = template.format(**{t: t for t in TABLES})
    q_heap = template.format(**{t: f"{t}_h" for t in TABLES})
    plan = _plan(oro, q_oro, params)
    if pushed:
        assert "with a subquery over" in plan, plan
    got = sorted(oro.execute(q_oro, params).fetchall(), key=repr)
    want = sorted(heap.execute(q_heap, params).fetchall(), key=repr)
    assert got == want, (q_oro, plan)
    return plan


def test_q17_shape(conns):
    # avg of numerics at PostgreSQL's scale, correlation keys that are NULL or match nothing
    plan = _run_both(conns, "SELECT o.k, o.n, o.m FROM {o} o, {j} j WHERE o.k = j.k AND o.n < "
                            "(SELECT 0.2 * avg(i.n) FROM {i} i WHERE i.k = o.k)")
    assert "DuckDB SQL:" in plan and "orochi_numeric_avg" in plan, plan
    _run_both(conns, "SELECT o.k, o.m FROM {o} o, {j} j WHERE o.g = j.g AND o.m >= "
                     "(SELECT avg(i.m) FROM {i} i WHERE i.g = o.g AND i.k = j.k)")


@pytest.mark.parametrize("agg", ["count(*)", "count(i.n)", "sum(i.n)", "min(i.n)", "max(i.m)",
                                 "0.5 * sum(i.m)", "sum(i.k)", "max(i.k) + 1"])
def test_aggregates(conns, agg):
    # count gives 0 where nothing matches, the others NULL
    _run_both(conns, f"SELECT o.k, o.g, j.v FROM {{o}} o JOIN {{j}} j ON o.k = j.k "
                     f"WHERE coalesce(o.g, 0) <= coalesce((SELECT {agg} FROM {{i}} i WHERE i.k = o.k), -1)")


def test_dates(conns):
    _run_both(conns, "SELECT o.k, o.d FROM {o} o JOIN {j} j ON o.k = j.k "
                     "WHERE o.d > (SELECT min(i.d) FROM {i} i WHERE i.g = o.g AND i.v = j.v)")


def test_restriction_of_one_table(conns):
    # Q20's shape: the subquery in one table's restriction, two correlation keys
    _run_both(conns, "SELECT o.k, o.g FROM {o} o, {j} j WHERE o.k = j.k AND o.m > "
                     "(SELECT 0.5 * sum(i.n) FROM {i} i WHERE i.k = o.k AND i.g = o.g "
                     "AND i.d >= date '2024-01-03' AND i.d < date '2024-01-20')")


def test_join_inside(conns):
    # Q2's shape: a join in the subquery, equality with its min
    _run_both(conns, "SELECT o.k, o.n FROM {o} o, {j} j WHERE o.k = j.k AND o.n = "
                     "(SELECT min(i.n) FROM {i} i, {j} j2 WHERE i.g = j2.g AND i.k = o.k AND j2.v = 'v1')")


def test_prepared_parameters(conns):
    _run_both(conns, "SELECT o.k FROM {o} o, {j} j WHERE o.k = j.k AND o.n <= "
                     "(SELECT max(i.n) FROM {i} i WHERE i.k = o.k AND i.g < %s AND i.v <> %s)", (2, "v1"))


@st.composite
def subquery_query(draw):
    agg = draw(st.sampled_from(["count(*)", "count(i.m)", "sum(i.n)", "min(i.m)", "max(i.n)", "avg(i.n)",
                                "0.2 * avg(i.m)", "2 * sum(i.k)", "sum(i.g)", "min(i.v)"]))
    keys = draw(st.sampled_from([["k"], ["g"], ["k", "g"]]))
    corr = " AND ".join(f"i.{c} = o.{c}" for c in keys)
    extra = draw(st.sampled_from(["", " AND i.d < %(d)s", " AND i.n > %(n)s", " AND i.v IS NOT NULL",
                                  " AND (i.g = 1 OR i.m < 2)"]))
    op = draw(st.sampled_from(["<", "<=", "=", ">", "<>"]))
    outer = {"count(*)": "o.g", "count(i.m)": "o.k", "sum(i.n)": "o.n", "min(i.m)": "o.m", "max(i.n)": "o.n",
             "avg(i.n)": "o.n", "0.2 * avg(i.m)": "o.m", "2 * sum(i.k)": "o.g", "sum(i.g)": "o.g",
             "min(i.v)": "o.v"}[agg]
    where = f"{outer} {op} (SELECT {agg} FROM {{i}} i WHERE {corr}{extra})"
    shape = draw(st.sampled_from(["value", "value", "in", "exists"]))
    if shape == "in":
        # NOT IN with NULLs on either side, correlated or not
        column = draw(st.sampled_from(["k", "g", "n", "v"]))
        inner_corr = draw(st.sampled_from(["", "i.g = o.g AND "]))
        where = (f"o.{column} {draw(st.sampled_from(['IN', 'NOT IN']))} "
                 f"(SELECT i.{column} FROM {{i}} i WHERE {inner_corr}TRUE{extra})")
        if "NOT IN" not in where:
            where += " OR o.g = 1"  # (not pulled up into a semi join)
    elif shape == "exists":
        where = f"{draw(st.sampled_from(['', 'NOT ']))}EXISTS (SELECT 1 FROM {{i}} i WHERE {corr}{extra}) OR o.g = 1"
    if draw(st.booleans()):
        where = f"NOT ({where})" if draw(st.booleans()) else f"({where} OR o.k IS NULL)"
    return (f"SELECT o.k, o.g, o.n, j.m FROM {{o}} o JOIN {{j}} j ON o.k = j.k WHERE {where}",
            {"d": draw(st.sampled_from(["2024-01-10", "2023-01-01"])), "n": draw(st.sampled_from([0, -10, 50]))},
            shape != "value" or agg != "min(i.v)")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subquery_query())
def test_randomized(conns, case):
    template, params, pushed = case
    if "%(" not in template:
        params = None
    _run_both(conns, template, params, pushed=pushed)



def test_generic_plan_parameters(conns):
    # $n inside the subquery under a generic plan: slots given their values at each execution
    oro, heap = conns
    for conn, (o, i, j) in ((oro, TABLES), (heap, tuple(f"{t}_h" for t in TABLES))):
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(f"PREPARE sq(bigint, numeric) AS SELECT o.k, o.n FROM {o} o, {j} j WHERE o.k = j.k "
                     f"AND o.n > (SELECT 0.1 * avg(i.n) FROM {i} i WHERE i.k = o.k AND i.g <> $1 AND i.m < $2)")
    try:
        assert "with a subquery over" in _plan(oro, "EXECUTE sq(1, 5)")
        for args in ("1, 5", "0, 100", "NULL, 5", "2, NULL", "3, -1"):
            got = sorted(oro.execute(f"EXECUTE sq({args})").fetchall(), key=repr)
            assert got == sorted(heap.execute(f"EXECUTE sq({args})").fetchall(), key=repr), args
    finally:
        for conn in (oro, heap):
            conn.execute("DEALLOCATE sq")
            conn.execute("RESET plan_cache_mode")


@pytest.mark.parametrize("where", [
    # NOT IN (never pulled up): NULLs in the list or the value make it NULL
    "o.k NOT IN (SELECT i.k FROM {i} i WHERE i.v = 'v1')",
    "o.g NOT IN (SELECT i.g FROM {i} i WHERE i.n > 5)",
    "o.k NOT IN (SELECT i.k FROM {i} i WHERE i.v = 'nothing')",
    "NOT (o.v IN (SELECT i.v FROM {i} i WHERE i.k < 3))",
    # correlated NOT IN, IN and EXISTS under OR (not pulled up either)
    "o.k NOT IN (SELECT i.k FROM {i} i WHERE i.g = o.g)",
    "o.n IN (SELECT i.n FROM {i} i WHERE i.g = o.g) OR o.k IS NULL",
    "EXISTS (SELECT 1 FROM {i} i WHERE i.k = o.k AND i.m > o.m) OR o.g = 1",
    "NOT EXISTS (SELECT 1 FROM {i} i WHERE i.k = o.k AND i.v = j.v) OR o.g = 2",
])
def test_any_and_exists(conns, where):
    _run_both(conns, f"SELECT o.k, o.g, o.v FROM {{o}} o JOIN {{j}} j ON o.k = j.k WHERE {where}")


@settings(max_examples=60, deadline=None)
@given(st.integers(-10**20, 10**20) | st.sampled_from([0, 1, -1, 5, 9999, 10000, 123456789]),
       st.integers(1, 10**12) | st.sampled_from([1, 2, 3, 7, 9999, 10000, 10001]),
       st.integers(0, 6), st.integers(0, 3))
def test_avg_macro_is_numeric_avg(total, n, scale, spare):
    # the engine's avg of numerics (DuckDB integers) against numeric_avg's
    # Python reading, which the aggregate pushdown's tests hold to PostgreSQL
    from decimal import Decimal

    from orochi_fdw.query import engine
    from orochi_fdw.query.aggregate import _decimal_avg

    want = Decimal(_decimal_avg(total, scale, n))
    x = max(-want.as_tuple().exponent, 0) + spare  # (at least the result's scale)
    got = engine.database().execute("SELECT CAST(orochi_numeric_avg(CAST($1 AS HUGEINT), CAST($2 AS BIGINT), "
                                    "$3, $4) AS VARCHAR)", [str(total), n, scale, x]).fetchone()[0]
    assert Decimal(got).scaleb(-x) == want
    assert engine.database().execute("SELECT orochi_numeric_avg(CAST(0 AS HUGEINT), CAST(0 AS BIGINT), 2, 20)"
                                     ).fetchone()[0] is None
