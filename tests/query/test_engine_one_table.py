"""Aggregations over one columnar table that the aggregate pushdown and the
expression JIT do not take (numeric arithmetic in the aggregates, GROUP BY
over it: TPC-H Q1) run in the join engine over that one table, against the
same queries over a heap table holding the same rows (the oracle): NULLs,
conditions matching no row, NULL parameters of a generic plan, numeric
results at PostgreSQL's display scale.

Products of numeric(15, 2) columns are wider than DuckDB's 38 digits by
their declared precision; the catalog's min/max statistics narrow each
column to the digits its values need (and one more), when they bound every
row: a table with rows in the delta store is not narrowed and the query
stays in PostgreSQL."""

from __future__ import annotations

import decimal

import psycopg
import pytest
from psycopg import sql as psql

from oracle_pair_helpers import oracle_pair

COLUMNS = "g int, f char(1), p numeric(15,2), d numeric(15,2), t numeric(15,2), q numeric(15,2), k bigint"
OPTS = "OPTIONS (stripe_row_limit '200', chunk_group_size '50', delta_row_limit '10')"
FILL = ("SELECT i % 4, CASE WHEN i % 7 = 0 THEN NULL ELSE chr(65 + i % 3) END, "
        "CASE WHEN i % 11 = 0 THEN NULL ELSE (i * 37 % 100000) / 4.0 END, "
        "(i % 11) / 100.0, CASE WHEN i % 13 = 0 THEN NULL ELSE (i % 9) / 100.0 END, "
        "i % 50 + 1, i FROM generate_series(1, 900) i")
Q1 = ("SELECT f, g, sum(q), sum(p), sum(p * (1 - d)), sum(p * (1 - d) * (1 + t)), avg(q), avg(p), avg(d), "
      "count(*) FROM {w} WHERE k <= {limit} GROUP BY f, g ORDER BY f, g")


@pytest.fixture(scope="module")
def odb(pg_cluster, module_database):
    with pg_cluster.connect(module_database, autocommit=True) as conn:
        for t in ("w", "wd"):
            conn.execute(f"CREATE FOREIGN TABLE {t} ({COLUMNS}) SERVER orochi {OPTS}")
            conn.execute(f"CREATE TABLE {t}_h ({COLUMNS})")
            for target in (t, f"{t}_h"):
                conn.execute(f"INSERT INTO {target} {FILL}")
        conn.execute("CREATE FOREIGN TABLE m (k int, q numeric(15,2), f char(1)) SERVER orochi "
                     "OPTIONS (delta_row_limit '10')")
        conn.execute("CREATE TABLE m_h (k int, q numeric(15,2), f char(1))")
        for target in ("m", "m_h"):
            conn.execute(f"INSERT INTO {target} SELECT i % 12000, CASE WHEN i % 17 = 0 THEN NULL "
                         f"ELSE (i % 97) / 8.0 END, chr(65 + i % 2) FROM generate_series(1, 30000) i")
        for target in ("wd", "wd_h"):  # a row in the delta store: no bounds
            conn.execute(f"INSERT INTO {target} VALUES (1, 'A', 9999999999999.99, 0.5, 0.5, 1, 5)")
        conn.execute("ANALYZE")
        conn.execute("ANALYZE m")  # (a database-wide ANALYZE skips foreign tables)
    yield module_database


@pytest.fixture(scope="module")
def conns(pg_cluster, odb):
    with oracle_pair(pg_cluster, odb) as (oro, heap):
        # PostgreSQL's aggregation costs more than the engine's over these small tables
        oro.execute("SET cpu_operator_cost = 10")
        yield oro, heap


def _plan(conn, query: str) -> str:
    return "\n".join(r[0] for r in conn.execute("EXPLAIN (VERBOSE) " + query).fetchall())


def _text(rows) -> list[tuple]:
    # numerics as text: the display scale must be PostgreSQL's too
    return [tuple(None if v is None else str(v) for v in r) for r in rows]


def _both(conns, template: str, engine: bool | None = True, **kw) -> str:
    """engine: whether the engine must aggregate (None: either)."""
    oro, heap = conns
    q_oro, q_heap = template.format(w="w", **kw), template.format(w="w_h", **kw)
    plan = _plan(oro, q_oro)
    if engine is not None:
        assert ("Orochi Join (DuckDB): aggregate over w" in plan) == engine, plan
    assert _text(oro.execute(q_oro).fetchall()) == _text(heap.execute(q_heap).fetchall()), plan
    return plan


@pytest.mark.parametrize("limit", [900, 450, 0])
def test_one_table_q1_shape_in_the_engine(conns, limit):
    """TPC-H Q1's shape: every row, some, none (no group at all; estimated
    at one row, PostgreSQL aggregates it: a generic plan's run matching no
    row is below)."""
    plan = _both(conns, Q1, limit=limit, engine=True if limit else None)
    if limit:
        # narrowed by the statistics (p below 10,000 in 7 digits, d below
        # 0.1 in 3): the products fit 18 digits, left in DuckDB's own types
        # (its int64 products, checked), no cast per value
        assert '(t1."p" * (CAST($1 AS DECIMAL(1,0)) - t1."d"))' in plan, plan
        assert "AS DECIMAL(7,2)" not in plan, plan


def test_one_table_without_group_by_and_nulls(conns):
    _both(conns, "SELECT sum(p * d), avg(p * t), count(t), min(q), max(p) FROM {w}")
    _both(conns, "SELECT sum(p * d - q * t), avg(q * t), count(*) FROM {w} WHERE f IS NULL OR t IS NULL",
          engine=None)
    _both(conns, "SELECT sum(p * d - q * t), count(*) FROM {w} WHERE f = 'Z'", engine=None)


def test_one_table_parameters_generic_plan(conns):
    """$1 under a generic plan, NULL included, and a value matching no row."""
    oro, heap = conns
    q = "SELECT f, sum(p * (1 - d) * (1 + t)), count(*) FROM {} WHERE q > $1 AND k < 800 GROUP BY f ORDER BY f"
    oro.execute("SET plan_cache_mode = force_generic_plan")
    try:
        oro.execute(psql.SQL("PREPARE op(numeric) AS ") + psql.SQL(q).format(psql.Identifier("w")))
        heap.execute(psql.SQL("PREPARE hp(numeric) AS ") + psql.SQL(q).format(psql.Identifier("w_h")))
        for value in ("10", None, "1000"):
            arg = psql.SQL("({}::numeric)").format(psql.Literal(value))
            plan = "\n".join(r[0] for r in oro.execute(psql.SQL("EXPLAIN (VERBOSE) EXECUTE op") + arg))
            assert "aggregate over w" in plan, plan
            got = oro.execute(psql.SQL("EXECUTE op") + arg).fetchall()
            assert _text(got) == _text(heap.execute(psql.SQL("EXECUTE hp") + arg).fetchall())
            assert got or value != "10"
    finally:
        oro.execute("DEALLOCATE ALL")
        heap.execute("DEALLOCATE ALL")
        oro.execute("RESET plan_cache_mode")


def test_one_table_unbounded_stays_in_postgres(conns):
    """A row in the delta store: no bounds, the three-way product of
    numeric(15,2) is 45 digits wide: PostgreSQL aggregates (a two-way one
    still fits and runs in the engine)."""
    oro, heap = conns
    q = "SELECT f, sum(p * (1 - d) * (1 + t)) FROM {} GROUP BY f ORDER BY f"
    plan = _plan(oro, q.format("wd"))
    assert "DuckDB" not in plan, plan
    assert _text(oro.execute(q.format("wd")).fetchall()) == _text(heap.execute(q.format("wd_h")).fetchall())
    q2 = "SELECT f, sum(p * (1 - d)) FROM {} GROUP BY f ORDER BY f"
    assert "aggregate over wd" in _plan(oro, q2.format("wd"))
    assert _text(oro.execute(q2.format("wd")).fetchall()) == _text(heap.execute(q2.format("wd_h")).fetchall())


def test_one_table_values_past_the_planned_bounds_still_answer(pg_cluster, odb):
    """A generic plan made when the values were small (numeric columns
    narrowed to the digits they needed), run after larger ones arrived,
    in the delta store and then in a stripe: the plan's wide translation
    answers, equal to PostgreSQL's (with and without ORDER BY/LIMIT over
    the groups); rows that stay within the narrowing keep the plan's own."""
    with pg_cluster.connect(odb, autocommit=True) as conn:
        conn.execute(f"CREATE FOREIGN TABLE w2 ({COLUMNS}) SERVER orochi {OPTS}")
        conn.execute(f"INSERT INTO w2 {FILL}")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("SET cpu_operator_cost = 1")
        queries = {"o2": "SELECT sum(p * (1 - d) * (1 + t)) FROM w2 WHERE k > $1",
                   "o3": "SELECT f, sum(p * (1 - d) * (1 + t)), max(p * q) FROM w2 WHERE k > $1"
                         " GROUP BY f ORDER BY f NULLS FIRST LIMIT 2"}
        for name, q in queries.items():
            conn.execute(f"PREPARE {name}(int) AS {q}")
            assert "aggregate over w2" in "\n".join(r[0] for r in conn.execute(f"EXPLAIN EXECUTE {name}(0)"))

        def check() -> None:
            for name, q in queries.items():
                got = conn.execute(f"EXECUTE {name}(0)").fetchall()
                conn.execute("SET orochi.duckdb_join_enabled = off")
                try:
                    want = conn.execute(q.replace("$1", "0")).fetchall()
                finally:
                    conn.execute("SET orochi.duckdb_join_enabled = on")
                assert _text(got) == _text(want), name

        check()
        # a value within the narrowing's spare digit, then far beyond it
        conn.execute("INSERT INTO w2 VALUES (1, 'A', 3.5, 0.5, 0.5, 1, 5)")
        check()
        conn.execute("INSERT INTO w2 VALUES (1, 'A', 9999999999.99, 0.5, 0.5, 99999999.99, 5)")
        check()
        analyzed = "\n".join(r[0] for r in conn.execute("EXPLAIN ANALYZE EXECUTE o2(0)"))
        assert "Engine Numerics: 38 digits" in analyzed, analyzed
        conn.execute("SELECT orochi.compact('w2')")      # the rows in stripes: bounds known again
        check()
        conn.execute("SET plan_cache_mode = auto")


def test_one_table_setting_off(conns):
    oro, _heap = conns
    oro.execute("SET orochi.duckdb_join_enabled = off")
    try:
        _both(conns, Q1, engine=False, limit=900)
    finally:
        oro.execute("SET orochi.duckdb_join_enabled = on")


def test_one_table_having_in_the_engine(conns):
    """HAVING conditions over aggregates the engine computes whole go into
    DuckDB's SQL (NULL sums, an InitPlan's value); one it cannot (avg,
    computed after DuckDB) leaves them all to the scan."""
    plan = _both(conns, "SELECT g, f, sum(p * d) FROM {w} GROUP BY g, f "
                        "HAVING sum(q) > 100 AND count(t) > 3 AND max(p) IS NOT NULL ORDER BY g, f")
    assert "HAVING" in plan, plan
    plan = _both(conns, "SELECT g, sum(p * t) FROM {w} GROUP BY g "
                        "HAVING sum(p * t) > (SELECT avg(p) FROM {w}) ORDER BY g")
    assert "HAVING" in plan and "InitPlan" in plan, plan
    plan = _both(conns, "SELECT f, sum(p * d) FROM {w} GROUP BY f HAVING avg(q) > 20 ORDER BY f")
    assert "HAVING" not in plan.split("DuckDB SQL:")[1], plan
    _both(conns, "SELECT f, sum(p * d) FROM {w} GROUP BY f HAVING sum(q) > 1e9 ORDER BY f")


def test_one_table_having_with_a_parameter_in_the_engine(conns):
    """A HAVING comparing with a prepared statement's parameter under a
    generic plan goes into DuckDB's SQL as a parameter: NULL keeps no group,
    a value above every sum none, another the heap's groups (NULL sums
    included in neither)."""
    oro, heap = conns
    q = "SELECT k, sum(q), count(q) FROM {} GROUP BY k HAVING sum(q) > $1 ORDER BY k"
    try:
        for conn, t in ((oro, "m"), (heap, "m_h")):
            conn.execute("SET plan_cache_mode = force_generic_plan")
            conn.execute(f"PREPARE hp(numeric) AS {q.format(t)}")
        plan = "\n".join(r[0] for r in oro.execute("EXPLAIN (VERBOSE) EXECUTE hp(1)").fetchall())
        assert "aggregate over m" in plan and "HAVING" in plan.split("DuckDB SQL:")[1], plan
        for value in ("NULL", "1e9", "20", "12.125", "-1"):
            got = _text(oro.execute(f"EXECUTE hp({value})").fetchall())
            assert got == _text(heap.execute(f"EXECUTE hp({value})").fetchall()), value
            assert bool(got) == (value not in ("NULL", "1e9")), value
    finally:
        for conn in (oro, heap):
            conn.execute("DEALLOCATE ALL")
            conn.execute("RESET plan_cache_mode")


def test_one_table_many_groups_in_the_engine(conns):
    """GROUP BY with many groups (by PostgreSQL's estimate): the engine is
    asked before the aggregate pushdown, with the HAVING."""
    oro, heap = conns
    for q in ("SELECT k, sum(q), count(*) FROM {} GROUP BY k HAVING sum(q) > 30 ORDER BY k",
              "SELECT k, f, min(q), count(q) FROM {} GROUP BY k, f ORDER BY k, f"):
        plan = _plan(oro, q.format("m"))
        assert "aggregate over m" in plan, plan
        assert _text(oro.execute(q.format("m")).fetchall()) == _text(heap.execute(q.format("m_h")).fetchall())
    # few groups: the pushdown
    assert "DuckDB" not in _plan(oro, "SELECT f, sum(q) FROM m GROUP BY f")


def test_one_table_bounds_planned_again_after_a_write_in_the_transaction(pg_cluster, odb):
    """Planning keeps the catalog it read while the snapshot is the same:
    a row this transaction inserts (a larger value) is planned with, never
    the bounds read before it (which would overflow the narrowed DECIMAL)."""
    with pg_cluster.connect(odb, autocommit=True) as conn:
        conn.execute(f"CREATE FOREIGN TABLE w3 ({COLUMNS}) SERVER orochi {OPTS}")
        conn.execute(f"INSERT INTO w3 {FILL}")
        conn.execute("SET cpu_operator_cost = 1")
        q = "SELECT sum(p * (1 - d) * (1 + t)) FROM w3 WHERE k > 0"
        conn.execute("BEGIN")
        assert "aggregate over w3" in "\n".join(r[0] for r in conn.execute("EXPLAIN " + q))
        before = conn.execute(q).fetchone()[0]
        conn.execute("INSERT INTO w3 SELECT 1, 'A', 99999999.99, 0.5, 0.5, 1, 5 FROM generate_series(1, 20)")
        after = conn.execute(q).fetchone()[0]
        conn.execute("COMMIT")
        assert after == before + 20 * (decimal.Decimal("99999999.99") * decimal.Decimal("0.5") *
                                       decimal.Decimal("1.5"))


def test_planning_reads_of_other_columns_under_one_snapshot(pg_cluster, odb):
    """What planning keeps of a table's catalog under one snapshot serves a
    later statement's planning only with the columns that one asks for: a
    restriction on a column no earlier plan read still prunes by its own
    statistics (a stripe record without the column would read as all NULL:
    an estimate of one row)."""
    queries = ["SELECT g FROM w WHERE k BETWEEN 100 AND 800", "SELECT f FROM w WHERE q > 10"]

    def rows(conn, q):
        return conn.execute("EXPLAIN (FORMAT JSON) " + q).fetchone()[0][0]["Plan"]["Plan Rows"]

    with pg_cluster.connect(odb, autocommit=True) as conn:
        alone = [rows(conn, q) for q in queries]
    with pg_cluster.connect(odb, autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")  # one snapshot for every statement
        assert rows(conn, "SELECT g FROM w") >= 900
        assert [rows(conn, q) for q in queries] == alone
        conn.execute("COMMIT")


def test_one_table_one_character_group_keys(pg_cluster, odb):
    """char(1) and varchar(1) group keys go to DuckDB grouped by their
    character's code point (``ord``) and made again from it: the empty
    value (char(1) ' ' without its padding, varchar ''), characters of
    two and three bytes, NULL, each its own group, as in PostgreSQL; with
    a HAVING naming the column the keys stay the values."""
    with oracle_pair(pg_cluster, odb) as (oro, heap):
        oro.execute("SET cpu_operator_cost = 10")
        for conn, kind in ((oro, "FOREIGN TABLE"), (heap, "TABLE")):
            server = f" SERVER orochi {OPTS}" if kind == "FOREIGN TABLE" else ""
            conn.execute(f"CREATE {kind} c1{'' if server else '_h'} (a char(1), b varchar(1), q numeric(15,2))"
                         + server)
            conn.execute(f"INSERT INTO c1{'' if server else '_h'} SELECT (ARRAY[' ', 'A', 'é', '€', NULL])[1 + i % 5], "
                         "(ARRAY['', 'z', 'ß', NULL])[1 + i % 4], i / 4.0 FROM generate_series(1, 400) i")
            conn.execute(f"ANALYZE c1{'' if server else '_h'}")
        for q in ("SELECT a, b, sum(q * 2), count(*) FROM {} GROUP BY a, b ORDER BY a, b",
                  "SELECT b, a, sum(q * 2) FROM {} GROUP BY b, a HAVING b <> 'z' OR sum(q) > 1000 ORDER BY b, a"):
            plan = _plan(oro, q.format("c1"))
            assert "aggregate over c1" in plan, plan
            assert ("ord(" in plan) == ("HAVING" not in q), plan
            got = oro.execute(q.format("c1")).fetchall()
            assert got == heap.execute(q.format("c1_h")).fetchall(), plan
            assert len(got) == 20 or "HAVING" in q


def test_one_table_products_past_18_digits(conns):
    """Arithmetic in a sum stays in DuckDB's own decimal types while its
    narrowed result fits 18 digits; a product past them casts its operands
    to their narrowed types (DuckDB's hugeint product): p * p * p, p * p
    added to a narrowed product, avg of them, NULLs among them."""
    plan = _both(conns, "SELECT g, sum(p * p * p), avg(p * p * d), sum(p * p + q * d), avg(p * p - t) "
                        "FROM {w} GROUP BY g ORDER BY g")
    assert 'sum((t1."p" * t1."p"))' not in plan and "AS DECIMAL(14,4)" in plan, plan


def test_one_table_group_key_under_a_nondeterministic_collation(pg_cluster, odb):
    """A text group key under a nondeterministic collation ('a' and 'A'
    equal) stays in PostgreSQL: DuckDB would group by the bytes."""
    with oracle_pair(pg_cluster, odb) as (oro, heap):
        oro.execute("SET cpu_operator_cost = 10")
        for conn, name, server in ((oro, "cc", f" SERVER orochi {OPTS}"), (heap, "cc_h", "")):
            conn.execute("CREATE COLLATION IF NOT EXISTS ci "
                         "(provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
            kind = "FOREIGN TABLE" if server else "TABLE"
            conn.execute(f"CREATE {kind} {name} (a char(1) COLLATE ci, b text COLLATE ci, q numeric(15,2))"
                         + server)
            conn.execute(f"INSERT INTO {name} SELECT (ARRAY['a', 'A'])[1 + i % 2], (ARRAY['x', 'X'])[1 + i % 2], "
                         "i / 4.0 FROM generate_series(1, 400) i")
            conn.execute(f"ANALYZE {name}")
        for q in ("SELECT count(*) FROM (SELECT a, sum(q * 2) FROM {} GROUP BY a) s",
                  "SELECT count(*) FROM (SELECT b, sum(q * 2) FROM {} GROUP BY b) s"):
            assert oro.execute(q.format("cc")).fetchall() == heap.execute(q.format("cc_h")).fetchall() == [(1,)]
