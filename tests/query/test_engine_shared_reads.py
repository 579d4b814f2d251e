"""A table read once for several inputs of the join engine: within one run
(a self-join, a correlated subquery over a table of the join) and across
the runs of one statement (an InitPlan's and the query's), against the
same queries over heap tables holding the same rows (the oracle); a cursor
rewound and a prepared statement run with other parameter values; a
statement that writes (no sharing); the tables kept for later runs freed
at the statement's end, its abort and a cursor's close."""

from __future__ import annotations

import psycopg
import pytest

from oracle_pair_helpers import create_table_pairs, engine_pair

COLUMNS = "k int, g bigint, n numeric(10,2), v text, d date"
OPTS = "OPTIONS (stripe_row_limit '200', chunk_group_size '50')"
TABLES = ("o", "j")

#: Q11's shape: the InitPlan's join and the query's read o and j with the same quals
INITPLAN = ("SELECT o.k, sum(o.n) FROM {o} o JOIN {j} j ON o.g = j.g WHERE j.v = {v} GROUP BY o.k "
            "HAVING sum(o.n) > (SELECT 0.01 * sum(o2.n) FROM {o} o2 JOIN {j} j2 ON o2.g = j2.g WHERE j2.v = {v})")


def _fill(seed: int, rows: int) -> str:
    return (f"SELECT CASE WHEN x % {7 + seed} = 0 THEN NULL ELSE (x * {seed + 3}) % {41 + seed} END, "
            f"(x % {5 + seed})::bigint, "
            f"CASE WHEN x % 11 = 0 THEN NULL ELSE ((x % 17) * 1.25 - 5)::numeric(10,2) END, "
            f"CASE WHEN x % 5 = 0 THEN NULL ELSE 'v' || (x % 4) END, "
            f"CASE WHEN x % 9 = 0 THEN NULL ELSE date '2024-01-01' + (x % 29) END "
            f"FROM generate_series(1, {rows}) x")


@pytest.fixture(scope="module")
def conns(pg_cluster, module_database):
    with pg_cluster.connect(module_database, autocommit=True) as conn:
        create_table_pairs(conn, TABLES, COLUMNS, OPTS, lambda seed, target: [
            f"INSERT INTO {target} {_fill(seed, 900 - 600 * seed)}",
            f"DELETE FROM {target} WHERE g = 2 AND k < 9"])
        conn.execute("ANALYZE")
    with engine_pair(pg_cluster, module_database) as pair:
        yield pair


def _analyze(conn, query: str, params=None) -> str:
    return "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, VERBOSE, COSTS OFF) " + query,
                                                params).fetchall())


def _same(conns, template: str, params=None, **values) -> str:
    """The orochi session's rows are the heap's; its EXPLAIN ANALYZE."""
    oro, heap = conns
    q_oro = template.format(**{t: t for t in TABLES}, **values)
    plan = _analyze(oro, q_oro, params)
    got = sorted(oro.execute(q_oro, params).fetchall(), key=repr)
    want = sorted(heap.execute(template.format(**{t: f"{t}_h" for t in TABLES}, **values), params).fetchall(),
                  key=repr)
    assert got == want, (q_oro, plan)
    return plan


def _shared_reads(conn) -> str:
    return conn.execute("SELECT value FROM orochi.python_info() WHERE key = 'join_engine_shared_reads'"
                        ).fetchone()[0]


NONE_KEPT = "0 statements, 0 bytes"


def test_initplan_and_query(conns):
    plan = _same(conns, INITPLAN, v="'v1'")
    assert plan.count("Orochi Join (DuckDB)") == 2, plan
    assert "kept for another join of the statement" in plan, plan
    assert "read by another join of the statement" in plan, plan
    assert _shared_reads(conns[0]) == NONE_KEPT


def test_self_join(conns):
    plan = _same(conns, "SELECT a.k, b.g, a.v FROM {o} a JOIN {o} b ON a.k = b.k AND a.v = b.v "
                        "WHERE a.k < 30 AND b.k < 30")
    assert "Orochi Join (DuckDB)" in plan, plan
    assert "read once with t" in plan, plan
    # other quals on each side: each input read on its own
    plan = _same(conns, "SELECT a.k, b.g FROM {o} a JOIN {o} b ON a.k = b.k WHERE a.g = 1 AND b.g = 3")
    assert "read once with" not in plan, plan


def test_correlated_subquery_over_the_same_table(conns):
    plan = _same(conns, "SELECT o.k, o.n FROM {o} o, {j} j WHERE o.k = j.k AND o.n < "
                        "(SELECT 0.5 * avg(o2.n) FROM {o} o2 WHERE o2.k = o.k)")
    assert "with a subquery over" in plan and "read once with t" in plan, plan


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
def test_prepared_statement_twice(conns, mode):
    oro, heap = conns
    for c in conns:
        c.execute(f"SET plan_cache_mode = {mode}")
    try:
        for v in ("v1", "v3", "v1", "none"):
            template = INITPLAN.replace("{v}", "%s")
            got = sorted(oro.execute(template.format(o="o", j="j"), (v, v)).fetchall(), key=repr)
            want = sorted(heap.execute(template.format(o="o_h", j="j_h"), (v, v)).fetchall(), key=repr)
            assert got == want, (mode, v)
        assert _shared_reads(oro) == NONE_KEPT
    finally:
        for c in conns:
            c.execute("RESET plan_cache_mode")


def test_cursor_rewound(conns):
    oro, heap = conns
    want = sorted(heap.execute(INITPLAN.format(o="o_h", j="j_h", v="'v2'")).fetchall(), key=repr)
    with oro.transaction():
        oro.execute("DECLARE c SCROLL CURSOR FOR " + INITPLAN.format(o="o", j="j", v="'v2'"))
        first = oro.execute("FETCH 3 FROM c").fetchall()
        rest = oro.execute("FETCH ALL FROM c").fetchall()
        assert sorted(first + rest, key=repr) == want
        oro.execute("MOVE ABSOLUTE 0 IN c")
        assert sorted(oro.execute("FETCH ALL FROM c").fetchall(), key=repr) == want
        oro.execute("CLOSE c")
    assert _shared_reads(oro) == NONE_KEPT


def test_kept_table_freed_at_close_and_abort(conns):
    oro, _heap = conns
    # the InitPlan never runs (no row has k < 0): what the query's run kept
    # for it lives as long as the statement
    query = ("SELECT o.k, CASE WHEN o.k < 0 THEN (SELECT max(o2.n) FROM o o2 JOIN j j2 ON o2.g = j2.g "
             "WHERE j2.v = 'v1') END FROM o JOIN j ON o.g = j.g WHERE j.v = 'v1'")

    def open_cursor():
        oro.execute("DECLARE c CURSOR FOR " + query)
        assert oro.execute("FETCH 1 FROM c").fetchone() is not None
        kept = _shared_reads(oro)
        assert kept.startswith("1 statements, ") and kept != "1 statements, 0 bytes", kept

    with oro.transaction():
        open_cursor()
        oro.execute("CLOSE c")
        assert _shared_reads(oro) == NONE_KEPT
    with pytest.raises(psycopg.errors.DivisionByZero):
        with oro.transaction():
            open_cursor()
            oro.execute("SELECT 1 / 0")
    assert _shared_reads(oro) == NONE_KEPT
    with oro.transaction():
        oro.execute("SAVEPOINT s")
        open_cursor()
        with pytest.raises(psycopg.errors.DivisionByZero):
            oro.execute("SELECT 1 / 0")
        oro.execute("ROLLBACK TO SAVEPOINT s")
        assert _shared_reads(oro) == NONE_KEPT
    assert len(oro.execute(query).fetchall()) > 0
    assert _shared_reads(oro) == NONE_KEPT


def test_setting_off(conns):
    oro, _heap = conns
    oro.execute("SET orochi.duckdb_shared_reads = off")
    try:
        plan = _same(conns, INITPLAN, v="'v3'")
        assert "another join" not in plan, plan
        plan = _same(conns, "SELECT o.k, o.n FROM {o} o, {j} j WHERE o.k = j.k AND o.n < "
                            "(SELECT 0.5 * avg(o2.n) FROM {o} o2 WHERE o2.k = o.k)")
        assert "read once" not in plan, plan
    finally:
        oro.execute("RESET orochi.duckdb_shared_reads")


def test_statement_that_writes_shares_nothing(conns):
    oro, heap = conns
    template = ("WITH added AS (INSERT INTO {o} SELECT k + 1, g, n, v, d FROM {o} WHERE k = 5 RETURNING k) "
                + INITPLAN.replace("SELECT o.k,", "SELECT (SELECT count(*) FROM added), o.k,", 1))
    with oro.transaction():
        plan = _analyze(oro, template.format(o="o", j="j", v="'v1'"))
        assert "kept for another join" not in plan and "read by another join" not in plan, plan
        raise psycopg.Rollback()
    results = []
    for conn, names in ((oro, {"o": "o", "j": "j"}), (heap, {"o": "o_h", "j": "j_h"})):
        with conn.transaction():
            results.append(sorted(conn.execute(template.format(**names, v="'v1'")).fetchall(), key=repr))
            raise psycopg.Rollback()
    assert results[0] == results[1]


def test_rescanned_with_new_parameters(conns):
    # a self-join run once per outer row: one side restricted by the outer
    # row's value (its rows change with each rescan), the other not; the
    # query's own join reads the table too
    plan = _same(conns, "SELECT x.g, (SELECT count(*) FROM {o} a JOIN {o} b ON a.k = b.k WHERE a.g = x.g), "
                        "(SELECT sum(b.n) FROM {o} a JOIN {o} b ON a.k = b.g WHERE a.g = x.g + 1) "
                        "FROM (SELECT DISTINCT o.g FROM {o} o JOIN {j} j ON o.k = j.k) x")
    assert "kept for another join of the statement" in plan, plan
    assert _shared_reads(conns[0]) == NONE_KEPT


def test_parallel_plan(conns):
    oro, heap = conns
    for c in conns:
        for setting in ("max_parallel_workers_per_gather = 2", "parallel_setup_cost = 0",
                        "parallel_tuple_cost = 0", "min_parallel_table_scan_size = 0"):
            c.execute(f"SET {setting}")
    try:
        _same(conns, INITPLAN + " UNION ALL SELECT h.k, h.n FROM o_h h WHERE h.g = 1", v="'v2'")
    finally:
        for c in conns:
            c.execute("RESET ALL")
            c.execute("SET max_parallel_workers_per_gather = 0")
        for setting in ("enable_hashjoin", "enable_mergejoin", "enable_nestloop", "enable_hashagg"):
            oro.execute(f"SET {setting} = off")


@pytest.mark.parametrize("extra, merged", [
    ("o2.n > 0.00", True), ("o2.n >= -1.25 AND o2.g IN (1, 3)", True), ("o2.n IS NOT NULL", True),
    ("o2.k < 20", True), ("o2.d >= date '2024-01-10' AND o2.k IN (3, NULL, 12)", True),
    ("o2.n > 0.001", False), ("o2.v = 'v1'", False)])
def test_initplan_with_more_conditions(conns, extra, merged):
    # Q22's shape: the InitPlan's input has a condition the query's has not;
    # read once (the query's rows), the condition applied to them, where an
    # Arrow comparison gives the scan's answers (integers, numerics, dates)
    plan = _same(conns, "SELECT o.k, o.n, o.g, o.d FROM {o} o WHERE o.n > (SELECT avg(o2.n) FROM {o} o2 "
                        "JOIN {j} j2 ON o2.g = j2.g WHERE " + extra + ") "
                        "AND NOT EXISTS (SELECT 1 FROM {j} j WHERE j.k = o.k)")
    assert plan.count("Orochi Join (DuckDB)") == 2, plan
    assert ("conditions applied to the rows read" in plan) == merged, plan
    assert _shared_reads(conns[0]) == NONE_KEPT


def test_function_writing_between_the_runs(conns):
    # the query's run reads o (kept for the InitPlan), then each row calls a
    # function that inserts into o before the InitPlan runs: the statement's
    # scans see its snapshot, as the heap's do
    oro, heap = conns
    results = []
    for conn, (o, j), explained in ((oro, ("o", "j"), True), (oro, ("o", "j"), False),
                                    (heap, ("o_h", "j_h"), False)):
        with conn.transaction():
            conn.execute(f"CREATE FUNCTION add_row_{o}() RETURNS int LANGUAGE plpgsql VOLATILE AS $$ "
                         f"BEGIN INSERT INTO {o} VALUES (1000, 1, 999.00, 'v1', NULL); RETURN 0; END $$")
            q = (f"SELECT o.k, add_row_{o}(), (SELECT max(o2.n) FROM {o} o2 JOIN {j} j2 ON o2.g = j2.g "
                 f"WHERE j2.v = 'v1') FROM {o} o JOIN {j} j ON o.g = j.g WHERE j.v = 'v1'")
            if explained:
                plan = _analyze(conn, q)
                assert "kept for another join of the statement" in plan, plan
            else:
                results.append(sorted(conn.execute(q).fetchall(), key=repr))
            raise psycopg.Rollback()
    assert results[0] == results[1]
