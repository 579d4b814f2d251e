"""The expression JIT (aggregations over one columnar table whose WHERE
clauses and aggregate arguments are expressions, computed by a compiled
kernel) against the same queries over a heap table holding the same rows
(the oracle), with the JIT on and off: randomized expressions over
smallint, integer, bigint, real and double precision columns with NULLs and
edge values (the integer types' bounds, -0, NaN, ±Infinity), overflow and
division-by-zero errors (SQLSTATE and message), fallbacks, and prepared
statements with parameters (NULL among them).  Every query the generator
makes is checked to have been run by a kernel (EXPLAIN)."""

from __future__ import annotations

import datetime
import math
import re
from decimal import Decimal

import psycopg
from psycopg import sql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

COLUMNS = "i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision"
OPTS = "OPTIONS (stripe_row_limit '200', chunk_group_size '50')"
EDGE_ROWS = [
    "(32767, 2147483647, 9223372036854775807, 'Infinity', 'NaN')",
    "(-32768, -2147483648, -9223372036854775808, '-Infinity', '-0')",
    "(0, 0, 0, '-0', 'Infinity')",
    "(NULL, NULL, NULL, NULL, NULL)",
    "(-1, -1, -1, 'NaN', '-Infinity')",
    "(1, 1, 1, 1.5, 1e300)",
]


def _fill() -> str:
    return ("SELECT CASE WHEN i % 7 = 0 THEN NULL ELSE (i * 37 % 200 - 100)::smallint END, "
            "CASE WHEN i % 5 = 0 THEN NULL ELSE i * 7919 % 20011 - 10000 END, "
            "CASE WHEN i % 11 = 0 THEN NULL ELSE (i::bigint * 104729) % 1000003 - 500000 END, "
            "CASE WHEN i % 13 = 0 THEN NULL ELSE ((i * 31 % 97) - 48) / 4.0 END, "
            "CASE WHEN i % 9 = 0 THEN NULL ELSE ((i * 17 % 89) - 44) / 8.0 END "
            "FROM generate_series(1, 700) i")


def _fill_no_nulls() -> str:
    """_fill's values without its NULLs, and the edge values at row 150 (a
    chunk group of its own among those without)."""
    edges = [r for r in EDGE_ROWS if "NULL" not in r]
    return ("SELECT (i * 37 % 200 - 100)::smallint, i * 7919 % 20011 - 10000, "
            "(i::bigint * 104729) % 1000003 - 500000, ((i * 31 % 97) - 48) / 4.0, ((i * 17 % 89) - 44) / 8.0 "
            "FROM generate_series(1, 149) i UNION ALL SELECT * FROM (VALUES " + ", ".join(edges) + ") e "
            "UNION ALL SELECT (i * 37 % 200 - 100)::smallint, i * 7919 % 20011 - 10000, "
            "(i::bigint * 104729) % 1000003 - 500000, ((i * 31 % 97) - 48) / 4.0, ((i * 17 % 89) - 44) / 8.0 "
            "FROM generate_series(150, 600) i")


DT_COLUMNS = "d date, ts timestamp, tz timestamptz, i4 integer"
DT_EDGE_ROWS = [
    "('infinity', 'infinity', 'infinity', 1)",
    "('-infinity', '-infinity', '-infinity', -1)",
    "('4713-11-24 BC', '4714-11-24 00:00:00 BC', '4714-11-24 00:00:00+00 BC', 0)",
    "('5874897-12-31', '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00', 2147483647)",
    "('294277-01-01', '2000-01-01 00:00:00', '2000-01-01 00:00:00+00', -2147483648)",
    "('2000-01-01', '1999-12-31 23:59:59.999999', '1999-12-31 23:59:59.999999+00', NULL)",
    "(NULL, NULL, NULL, NULL)",
]


def _fill_dt() -> str:
    return ("SELECT CASE WHEN i % 7 = 0 THEN NULL ELSE date '2000-01-01' + (i * 7919 % 20011 - 10000) END, "
            "CASE WHEN i % 5 = 0 THEN NULL ELSE timestamp '2000-01-01' "
            "+ (i * 104729 % 1000003 - 500000) * interval '1 second 7 microseconds' END, "
            "CASE WHEN i % 11 = 0 THEN NULL ELSE timestamptz '2000-01-01 00:00:00+00' "
            "+ (i * 7919 % 100003 - 50000) * interval '1 hour 1 microsecond' END, "
            "CASE WHEN i % 13 = 0 THEN NULL ELSE i * 31 % 2001 - 1000 END "
            "FROM generate_series(1, 500) i")


@pytest.fixture(scope="module")
def jdb(pg_cluster, module_database):
    name = module_database
    with pg_cluster.connect(name, autocommit=True) as conn:
        conn.execute(f"CREATE FOREIGN TABLE t ({COLUMNS}) SERVER orochi {OPTS}")
        conn.execute(f"CREATE TABLE t_h ({COLUMNS})")
        for target in ("t", "t_h"):
            conn.execute(f"INSERT INTO {target} {_fill()}")
            # the edge values, and rows in the delta store (read after the stripes)
            for row in EDGE_ROWS:
                conn.execute(f"INSERT INTO {target} VALUES {row}")
        # no NULLs, in stripes (not the delta store): the chunk groups the
        # fast kernel computes (the edge values among them: the batches it
        # hands to the exact kernel)
        conn.execute(f"CREATE FOREIGN TABLE nn ({COLUMNS}) SERVER orochi "
                     "OPTIONS (stripe_row_limit '200', chunk_group_size '50', delta_row_limit '0')")
        conn.execute(f"CREATE TABLE nn_h ({COLUMNS})")
        for target in ("nn", "nn_h"):
            conn.execute(f"INSERT INTO {target} {_fill_no_nulls()}")
            conn.execute(f"INSERT INTO {target} VALUES " + ", ".join(r for r in EDGE_ROWS if "NULL" not in r))
        # a table whose aggregates overflow only in their arguments
        conn.execute(f"CREATE FOREIGN TABLE small ({COLUMNS}) SERVER orochi {OPTS}")
        conn.execute(f"CREATE TABLE small_h ({COLUMNS})")
        for target in ("small", "small_h"):
            conn.execute(f"INSERT INTO {target} SELECT i, i * 1000, i, i / 2.0, i / 4.0 "
                         "FROM generate_series(-20, 20) i")
        # deleted and updated rows; an empty table
        conn.execute(f"CREATE FOREIGN TABLE mod ({COLUMNS}) SERVER orochi {OPTS}")
        conn.execute(f"CREATE TABLE mod_h ({COLUMNS})")
        conn.execute(f"CREATE FOREIGN TABLE empty ({COLUMNS}) SERVER orochi")
        conn.execute(f"CREATE TABLE empty_h ({COLUMNS})")
        for target in ("mod", "mod_h"):
            conn.execute(f"INSERT INTO {target} {_fill()}")
            conn.execute(f"DELETE FROM {target} WHERE i4 % 3 = 0")
            conn.execute(f"UPDATE {target} SET i8 = i8 + 1, f8 = -f8 WHERE i2 % 4 = 1")
        # dates and times: the types' bounds, infinity, NULLs
        conn.execute(f"CREATE FOREIGN TABLE dt ({DT_COLUMNS}) SERVER orochi {OPTS}")
        conn.execute(f"CREATE TABLE dt_h ({DT_COLUMNS})")
        for target in ("dt", "dt_h"):
            conn.execute(f"INSERT INTO {target} {_fill_dt()}")
            for row in DT_EDGE_ROWS:
                conn.execute(f"INSERT INTO {target} VALUES {row}")
        conn.execute("ANALYZE")
    yield name


@pytest.fixture(scope="module")
def conns(pg_cluster, jdb):
    oro = pg_cluster.connect(jdb, autocommit=True)
    heap = pg_cluster.connect(jdb, autocommit=True)
    for c in (oro, heap):
        # no statements prepared by the driver: it deallocates them all at a
        # rollback, and with them the generic-plan tests' own PREPAREs
        c.prepare_threshold = None
        c.execute("SET max_parallel_workers_per_gather = 0")
        c.execute("SET extra_float_digits = 3")
    oro.execute("SET orochi.jit_min_cost = 0")
    yield oro, heap
    oro.close()
    heap.close()


def _run(conn, query: str, params=None):
    """('ok', rows) or ('error', sqlstate, message)."""
    try:
        with conn.transaction():
            return ("ok", conn.execute(query, params).fetchall())
    except psycopg.Error as exc:
        return ("error", exc.sqlstate, exc.diag.message_primary)


def _plan(conn, query: str, params=None) -> str:
    return "\n".join(r[0] for r in conn.execute("EXPLAIN (COSTS OFF) " + query, params).fetchall())


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
            return (math.isnan(a) and math.isnan(b)) or a == b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return a == b and str(a) == str(b)
    return type(a) is type(b) and a == b


def _same_result(x, y) -> bool:
    if x[0] != y[0]:
        return False
    if x[0] == "error":
        return x[1:] == y[1:]
    return len(x[1]) == len(y[1]) and all(
        len(r) == len(s) and all(_same(a, b) for a, b in zip(r, s)) for r, s in zip(x[1], y[1]))


def _no_nulls(query: str) -> str:
    """The query over the table without NULLs (nn) instead of t."""
    return re.sub(r" FROM t\b", " FROM nn", query)


def check(conns, query: str, params=None, jit: bool = True) -> tuple:
    """The query over the orochi table t, with the JIT on (asserting a kernel
    ran when ``jit``) and off, equals the same query over the heap table."""
    oro, heap = conns
    heap_query = query
    for table in ("t", "nn", "small", "mod", "empty", "dt"):
        heap_query = re.sub(rf" FROM {table}\b", f" FROM {table}_h", heap_query)
    expected = _run(heap, heap_query, params)
    oro.execute("SET orochi.jit_enabled = on")
    if jit:
        try:
            plan = _plan(oro, query, params)
        except psycopg.Error as exc:
            # an error of constant folding, at planning: the heap's too
            assert expected == ("error", exc.sqlstate, exc.diag.message_primary), query
            return expected
        # a WHERE that folds to a constant false reads nothing
        assert "JIT Aggregates" in plan or "One-Time Filter: false" in plan, query
    got = _run(oro, query, params)
    assert _same_result(got, expected), f"{query}\nJIT: {got}\nheap: {expected}"
    oro.execute("SET orochi.jit_enabled = off")
    try:
        got_off = _run(oro, query, params)
    finally:
        oro.execute("SET orochi.jit_enabled = on")
    assert _same_result(got_off, expected), f"{query}\nno JIT: {got_off}\nheap: {expected}"
    return expected


# ---------------------------------------------------------------------------
# generated expressions

INT_COLS = ["i2", "i4", "i8"]
FLOAT_COLS = ["f4", "f8"]
INT_CONSTS = ["0", "1", "-1", "2", "3", "7", "-7", "-5", "100", "1024", "2147483647", "(-2147483648)",
              "9223372036854775807", "32767::smallint", "NULL::int"]
FLOAT_CONSTS = ["0.5::float8", "(-0.0)::float8", "'NaN'::float8", "'Infinity'::float8", "2::real",
                "1e308::float8", "NULL::float8", "'-Infinity'::real"]


def ints(depth: int):
    leaf = st.one_of(st.sampled_from(INT_COLS), st.sampled_from(INT_CONSTS))
    if depth == 0:
        return leaf
    sub = ints(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(sub, st.sampled_from(["+", "-", "*", "/", "%"]), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        sub.map(lambda x: f"(- {x})"),
        st.tuples(sub, st.sampled_from(["smallint", "integer", "bigint"])).map(lambda t: f"({t[0]})::{t[1]}"),
        floats(depth - 1).map(lambda x: f"({x})::integer"),
        st.tuples(bools(depth - 1), sub, sub).map(lambda t: f"CASE WHEN {t[0]} THEN {t[1]} ELSE {t[2]} END"),
        st.tuples(sub, sub).map(lambda t: f"COALESCE({t[0]}, {t[1]})"),
    )


def floats(depth: int):
    leaf = st.one_of(st.sampled_from(FLOAT_COLS), st.sampled_from(FLOAT_CONSTS))
    if depth == 0:
        return leaf
    sub = floats(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(sub, st.sampled_from(["+", "-", "*", "/"]), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        sub.map(lambda x: f"(- {x})"),
        ints(depth - 1).map(lambda x: f"({x})::float8"),
        st.tuples(sub, st.sampled_from(["real", "double precision"])).map(lambda t: f"({t[0]})::{t[1]}"),
        st.tuples(bools(depth - 1), sub, sub).map(lambda t: f"CASE WHEN {t[0]} THEN {t[1]} ELSE {t[2]} END"),
        st.tuples(sub, sub).map(lambda t: f"COALESCE({t[0]}, {t[1]})"),
    )


def bools(depth: int):
    cmp = st.sampled_from(["=", "<>", "<", "<=", ">", ">="])
    comparisons = st.one_of(
        st.tuples(ints(depth), cmp, ints(depth)).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(floats(depth), cmp, floats(depth)).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(INT_COLS + FLOAT_COLS), st.booleans()).map(
            lambda t: f"({t[0]} IS {'' if t[1] else 'NOT '}NULL)"),
    )
    if depth == 0:
        return comparisons
    sub = bools(depth - 1)
    return st.one_of(
        comparisons,
        st.tuples(sub, st.sampled_from(["AND", "OR"]), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        sub.map(lambda x: f"(NOT {x})"),
    )


def _op(x: str) -> str:
    """An expression, never a bare column (those go to the aggregate pushdown)."""
    return x if x.startswith(("(", "CASE", "COALESCE")) else f"({x} + 0)" if x in INT_COLS else f"({x} * 1)"


queries = st.one_of(
    st.tuples(ints(2), bools(1)).map(
        lambda t: f"SELECT count(*), count({_op(t[0])}), sum({_op(t[0])}), min({_op(t[0])}), "
                  f"max({_op(t[0])}), avg({_op(t[0])}) FROM t WHERE {t[1]}"),
    st.tuples(floats(2), bools(1)).map(
        lambda t: f"SELECT count({_op(t[0])}), sum({_op(t[0])}), min({_op(t[0])}), max({_op(t[0])}), "
                  f"avg({_op(t[0])}) FROM t WHERE {t[1]}"),
    bools(2).map(lambda b: f"SELECT count(*) FROM t WHERE {b} AND (i4 IS NULL OR i4 + 0 > -100000)"),
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=queries)
def test_generated_expressions(conns, query):
    check(conns, query)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=queries)
def test_generated_expressions_no_nulls(conns, query):
    # the fast kernel (batches without NULLs), and the exact one where it redoes a batch
    check(conns, _no_nulls(query))


@pytest.mark.slow
@pytest.mark.timeout(3600)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=queries)
def test_generated_expressions_many(conns, query):
    check(conns, query)
    check(conns, _no_nulls(query))


# ---------------------------------------------------------------------------
# the issue's queries, errors, fallbacks, parameters


@pytest.mark.parametrize("query", [
    "SELECT sum(i4 * i2) FROM t WHERE i4 + i2 > i8",
    "SELECT avg(CASE WHEN f8 > 0 THEN f8 ELSE -f8 END), avg(CASE WHEN i4 % 2 = 0 THEN i4 END) FROM t",
    "SELECT count(*) FROM t WHERE i4 * 2 > i8",
    "SELECT sum(i8 * 3), avg(i8 - 1), sum(i2 + i2), min(f4 * 2), max(f8 / 3) FROM t WHERE f8 = f8",
    "SELECT count(*) FROM t WHERE f8 = 'NaN' OR f4 > 1e30",
    "SELECT max(f8 + 0), min(f8 + 0), max(f4 * 1), min(f4 * 1) FROM t",
    "SELECT sum(COALESCE(i2, -1) / 3), sum(i4 % -7), sum((-i4) % 7) FROM t WHERE i4 <> -2147483648",
    "SELECT count(*), sum(i4 / 2) FROM t WHERE NOT (i2 > 0 AND i4 IS NULL) AND i8 % 3 = 1",
])
def test_issue_queries(conns, query):
    check(conns, query)
    check(conns, _no_nulls(query))


@pytest.mark.parametrize("query, sqlstate, message", [
    ("SELECT sum(i4 + 1) FROM t", "22003", "integer out of range"),
    ("SELECT sum(i2 * 2::smallint) FROM t", "22003", "smallint out of range"),
    ("SELECT sum(i8 * 2) FROM t", "22003", "bigint out of range"),
    ("SELECT count(*) FROM t WHERE -i8 > 0", "22003", "bigint out of range"),
    ("SELECT count(*) FROM t WHERE i4 / i2 > 0", "22012", "division by zero"),
    ("SELECT sum(i4 % (i2 - i2)) FROM small WHERE i2 > 0", "22012", "division by zero"),
    ("SELECT sum(f8 / 0) FROM small", "22012", "division by zero"),
    ("SELECT sum(f8 * 1e308) FROM t WHERE f8 > 1", "22003", "value out of range: overflow"),
    ("SELECT count(*) FROM t WHERE (f8 * 1e300)::real > 0", "22003", "value out of range: overflow"),
    ("SELECT count(*) FROM t WHERE f8::integer > 0", "22003", "integer out of range"),
    ("SELECT sum(f8 * '1e-200'::float8 * '1e-200'::float8) FROM small WHERE f8 <> 0", "22003",
     "value out of range: underflow"),
])
def test_errors(conns, query, sqlstate, message):
    result = check(conns, query)
    assert result[:2] == ("error", sqlstate) and result[2] == message, result
    if " FROM t " in query:
        # found by the fast kernel, raised by the exact one
        check(conns, _no_nulls(query))


@pytest.mark.parametrize("query", [
    "SELECT count(*), sum(i8 * 2), avg(f8 - i4), min(i4 % 7) FROM mod WHERE i2 + 1 > 0",
    "SELECT count(*), sum(i4 + 1), avg(f8 * 2), max(i2 - 1) FROM empty WHERE i4 * 2 > 0",
    # expressions over the aggregates, HAVING: computed above the kernel
    "SELECT sum(i4 * 2) / 2, count(*) + 1 FROM t WHERE i4 - i2 > 0 HAVING count(*) > 10",
    "SELECT avg(i8 + 0) FROM t WHERE i4 - i2 > 0 HAVING sum(i2 + 0) < 0",
])
def test_table_states_and_projections(conns, query):
    check(conns, query)


#: divisors of the constant-divisor tests: written into the kernel's source
#: (1, 2, 7, 2^k...) or passed as arguments (0, -1, the types' bounds)
DIVISORS = ["1", "-1", "7", "-7", "1024", "(-32768)", "1048577", "0", "(-2147483647)", "(-2147483648)",
            "9223372036854775807", "(-9223372036854775807 - 1)"]


@pytest.mark.parametrize("d", DIVISORS)
def test_constant_divisors(conns, d):
    """/ and % by constants over smallint, integer and bigint dividends with
    negative values, the types' bounds (INT_MIN / -1 out of range, INT_MIN
    % -1 zero) and NULLs; division by zero only where a row reaches it."""
    small = f"{d}::smallint" if -32768 <= eval(d) <= 32767 else d  # noqa: S307 - a literal of the list
    aggs = (f"sum(i2 / {small}), sum(i2 % {small}), min(i2 / {d}), sum(i4 / {d}), max(i4 % {d}), "
            f"sum(i8 / {d}), min(i8 % {d}), count(i4 % {d})")
    # the whole table (its bounds row), then without it
    check(conns, f"SELECT {aggs} FROM t WHERE i4 % {d} <> 1 OR i4 IS NULL")
    check(conns, f"SELECT {aggs} FROM t WHERE COALESCE(i8, 0) > -9223372036854775808")
    if d in ("0", "-1"):
        # a division reached by no row (NULL dividends, a branch not taken) raises nothing
        check(conns, f"SELECT sum(i4 / {d}), count(*) FROM t WHERE i4 IS NULL AND i2 + 0 > -100")
        check(conns, f"SELECT sum(CASE WHEN i2 > 1000 THEN i8 % {d} ELSE 1 END) FROM small")


def test_no_error_where_postgres_skips_the_row(conns):
    # i2 <> 0 is cheaper, so PostgreSQL evaluates it first: no division by zero
    check(conns, "SELECT count(*) FROM small WHERE i4 / i2 > 10 AND i2 <> 0")
    check(conns, "SELECT count(*) FROM small WHERE i2 = 0 OR i4 / i2 > 10")
    check(conns, "SELECT sum(CASE WHEN i2 = 0 THEN 0 ELSE i4 / i2 END) FROM small")


@pytest.mark.parametrize("query", [
    # numeric arithmetic, text, functions: not for the kernel
    "SELECT sum(i4 * 1.5) FROM t WHERE i4 > 0",
    "SELECT count(*) FROM t WHERE abs(i4) > 5",
    "SELECT sum(i4 + 1) FROM t WHERE i2::text = '5'",
    # grouping: not for the kernel
    "SELECT i2 % 3, sum(i4 + 1) FROM t WHERE i4 < 0 GROUP BY 1 ORDER BY 1",
    # count(DISTINCT)
    "SELECT count(DISTINCT i4 % 5) FROM t",
])
def test_fallback(conns, query):
    oro, _heap = conns
    assert "JIT" not in _plan(oro, query)
    check(conns, query, jit=False)


def test_prepared_parameters(conns):
    oro, heap = conns
    query = "SELECT count(*), sum(i4 + %s) FROM t WHERE i8 * 2 > %s"
    for params in ((1, 0), (None, 0), (3, None), (-1000, 10)):
        # a NULL compared is a constant false: no scan at all
        check(conns, query, params, jit=params[1] is not None)
    # a generic plan: its parameters are the kernel's arguments (test_generic_plan_parameters)
    for c in (oro, heap):
        c.execute("SET plan_cache_mode = force_generic_plan")
    try:
        for params in ((1, 0), (None, 5)):
            expected = _run(heap, query.replace(" FROM t ", " FROM t_h "), params)
            assert _same_result(_run(oro, query, params), expected)
    finally:
        for c in (oro, heap):
            c.execute("RESET plan_cache_mode")


def test_explain(conns):
    oro, _heap = conns
    query = "SELECT sum(i4 * i2) FROM small WHERE i4 + i2 > i8"
    plain = _plan(oro, query)
    assert "JIT Aggregates: sum((i4 * (i2)::integer))" in plain
    assert "JIT Filter: (((i4 + (i2)::integer))::bigint > i8)" in plain
    assert "JIT Compile:" in plain
    analyzed = "\n".join(r[0] for r in oro.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + query))
    assert "JIT Time: reading" in analyzed and "JIT Rows Read: 41 in 1 batches" in analyzed
    # no NULLs: the fast loop's batch
    assert "JIT Batches Without NULLs: 1, 1 by the fast loop (0 computed again row by row)" in analyzed
    # the chunk group with infinities and NaN: computed again by the exact loop
    analyzed = "\n".join(r[0] for r in oro.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "
                                                    "SELECT count(*) FROM nn WHERE f8 * 2 > f4"))
    m = re.search(r"JIT Batches Without NULLs: (\d+), (\d+) by the fast loop \((\d+) computed again row by row\)",
                  analyzed)
    # the first batches by each loop in turn, then by the faster: the fast
    # one's batch with an infinity redone (unless the exact loop was chosen)
    no_nulls, fast, redone = (int(x) for x in m.groups())
    assert no_nulls > 4 and 2 <= fast <= no_nulls - 2 and (redone >= 1 or fast == 2), analyzed
    # a value that overflows: computed again by the exact loop, which raises
    analyzed = _run(oro, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT sum(f8 * 1e308) FROM small "
                         "WHERE f8 + 0 > 1")
    assert analyzed[:2] == ("error", "22003"), analyzed


def test_min_cost(conns):
    oro, _heap = conns
    # an expression of a shape never compiled before, on a table far below the threshold
    query = "SELECT sum(i2 * 5 - i4) FROM small WHERE i8 + 17 > -3"
    oro.execute("SET orochi.jit_min_cost = 1e9")
    try:
        assert "JIT" not in _plan(oro, query)
    finally:
        oro.execute("SET orochi.jit_min_cost = 0")
    assert "JIT Aggregates" in _plan(oro, query)


def _compile_line(conn, query: str) -> str:
    return next(line for line in _plan(conn, query).splitlines() if "JIT Compile:" in line)


def test_kernel_caches(pg_cluster, jdb, conns):
    oro, _heap = conns
    query = "SELECT sum(i4 - i2 * 3) FROM small WHERE i8 * 5 < 50"
    assert "(compiled)" in _compile_line(oro, query)
    # the same shape with other constants: the same kernel, from this backend's cache
    assert "(backend cache)" in _compile_line(oro, query.replace("* 5 < 50", "* 6 < 40"))
    check(conns, query.replace("* 5 < 50", "* 6 < 40"))
    # a new backend loads it from the disk cache
    with pg_cluster.connect(jdb, autocommit=True) as other:
        other.execute("SET orochi.jit_min_cost = 0")
        assert "(disk cache)" in _compile_line(other, query)
        other.execute("SET orochi.jit_cache_enabled = off")
        assert "(compiled)" in _compile_line(other, query)
        assert "(compiled)" in _compile_line(other, query)
        # another optimization level is another kernel
        other.execute("SET orochi.jit_cache_enabled = on")
        other.execute("SET orochi.jit_optimization_level = 1")
        assert "(compiled)" in _compile_line(other, query)
        assert other.execute(query).fetchall() == oro.execute(query).fetchall()


# ---------------------------------------------------------------------------
# dates and times (table dt): generated expressions, errors, fallbacks

DATE_CONSTS = ["date '2000-01-01'", "date '1999-12-31'", "date 'infinity'", "date '-infinity'",
               "date '4713-11-24 BC'", "date '5874897-12-31'", "date '2010-06-15'", "NULL::date"]
TS_CONSTS = ["timestamp '2000-01-01 00:00:00'", "timestamp '1999-12-31 23:59:59.999999'",
             "timestamp 'infinity'", "timestamp '-infinity'", "timestamp '294276-12-31 23:59:59.999999'",
             "timestamp '4714-11-24 00:00:00 BC'", "timestamp '2003-04-05 06:07:08.09'", "NULL::timestamp"]
TZ_CONSTS = ["timestamptz '2000-01-01 00:00:00+00'", "timestamptz '2001-02-03 04:05:06.7+05:30'",
             "timestamptz 'infinity'", "timestamptz '-infinity'", "NULL::timestamptz",
             "timestamptz '294276-12-31 23:59:59.999999+00'"]
#: intervals a kernel adds (no months; no days for timestamptz)
DAY_INTERVALS = ["interval '1 day'", "interval '-3 days 04:05:06.789'", "interval '100000 days'",
                 "interval '-1 microsecond'", "interval '36 hours'", "interval '-99999999 days'"]
TIME_INTERVALS = ["interval '3 hours'", "interval '-00:00:01'", "interval '1 microsecond'",
                  "interval '2562047788 hours'"]
DAY_INTS = ["1", "-1", "365", "i4", "(i4 * 1000)", "2147483647"]


def dates(depth: int):
    leaf = st.one_of(st.just("d"), st.sampled_from(DATE_CONSTS))
    if depth == 0:
        return leaf
    sub = dates(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(sub, st.sampled_from(["+", "-"]), st.sampled_from(DAY_INTS)).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(DAY_INTS), sub).map(lambda t: f"({t[0]} + {t[1]})"),
        st.tuples(dt_bools(depth - 1), sub, sub).map(lambda t: f"CASE WHEN {t[0]} THEN {t[1]} ELSE {t[2]} END"),
        st.tuples(sub, sub).map(lambda t: f"COALESCE({t[0]}, {t[1]})"),
    )


def timestamps(depth: int):
    leaf = st.one_of(st.just("ts"), st.sampled_from(TS_CONSTS))
    if depth == 0:
        return leaf
    sub = timestamps(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(sub, st.sampled_from(["+", "-"]), st.sampled_from(DAY_INTERVALS + TIME_INTERVALS)).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(dates(depth - 1), st.sampled_from(["+", "-"]), st.sampled_from(DAY_INTERVALS)).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"),
        dates(depth - 1).map(lambda x: f"({x})::timestamp"),
        st.tuples(sub, sub).map(lambda t: f"COALESCE({t[0]}, {t[1]})"),
    )


def timestamptzs(depth: int):
    leaf = st.one_of(st.just("tz"), st.sampled_from(TZ_CONSTS))
    if depth == 0:
        return leaf
    sub = timestamptzs(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(sub, st.sampled_from(["+", "-"]), st.sampled_from(TIME_INTERVALS)).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"),
    )


def day_counts(depth: int):
    """integers from dates: date - date"""
    return st.tuples(dates(depth), dates(depth)).map(lambda t: f"({t[0]} - {t[1]})")


def dt_bools(depth: int):
    cmp = st.sampled_from(["=", "<>", "<", "<=", ">", ">="])
    comparisons = st.one_of(
        st.tuples(dates(depth), cmp, dates(depth)).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(timestamps(depth), cmp, timestamps(depth)).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(timestamptzs(depth), cmp, timestamptzs(depth)).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        # date against timestamp (date_cmp_timestamp)
        st.tuples(dates(depth), cmp, timestamps(depth)).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(day_counts(0), cmp, st.sampled_from(["0", "i4", "-5000"])).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"),
        # timestamp - timestamp (an interval) against an interval
        st.tuples(timestamps(0), timestamps(0), cmp, st.sampled_from(
            ["interval '1 day'", "interval '-36 hours'", "interval '1 mon 2 days 00:00:00.5'",
             "(ts - timestamp '2000-01-01')"])).map(lambda t: f"(({t[0]} - {t[1]}) {t[2]} {t[3]})"),
        st.tuples(timestamptzs(0), cmp).map(lambda t: f"(({t[0]} - tz) {t[1]} interval '-5 hours')"),
        st.tuples(st.sampled_from(["d", "ts", "tz"]), st.booleans()).map(
            lambda t: f"({t[0]} IS {'' if t[1] else 'NOT '}NULL)"),
    )
    if depth == 0:
        return comparisons
    sub = dt_bools(depth - 1)
    return st.one_of(
        comparisons,
        st.tuples(sub, st.sampled_from(["AND", "OR"]), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        sub.map(lambda x: f"(NOT {x})"),
    )


def _dt_op(x: str) -> str:
    """An expression, never a bare column."""
    if x.startswith(("(", "CASE", "COALESCE")):
        return x
    return f"({x} + 0)" if x == "d" or x.startswith("date") else f"({x} + interval '0 seconds')"


#: rows without the types' largest values (fewer queries that all end in an error)
_MODERATE = "i4 BETWEEN -1000 AND 1000"

DATE_PARTS = ["year", "quarter", "month", "day", "hour", "minute", "dow", "doy", "YEAR"]


def date_parts(depth: int):
    """date_part(field, timestamp or date): double precision"""
    return st.tuples(st.sampled_from(DATE_PARTS), st.one_of(timestamps(depth), dates(depth))).map(
        lambda t: f"date_part('{t[0]}', {t[1]})")


dt_queries = st.one_of(
    st.tuples(date_parts(1), date_parts(0), st.sampled_from(["=", "<", ">="]), st.sampled_from(
        ["2000", "6", "1", "-4713", "'Infinity'::float8"]), st.booleans()).map(
        lambda t: f"SELECT count({t[0]}), sum({t[0]}), min({t[0]}), max({t[0]}) FROM dt "
                  f"WHERE {t[1]} {t[2]} {t[3]}{' AND ' + _MODERATE if t[4] else ''}"),
    st.tuples(dates(1), dt_bools(1), st.booleans()).map(
        lambda t: f"SELECT count(*), count({_dt_op(t[0])}), min({_dt_op(t[0])})::text, "
                  f"max({_dt_op(t[0])})::text FROM dt WHERE {t[1]}{' AND ' + _MODERATE if t[2] else ''}"),
    st.tuples(timestamps(1), dt_bools(1), st.booleans()).map(
        lambda t: f"SELECT count({_dt_op(t[0])}), min({_dt_op(t[0])})::text, max({_dt_op(t[0])})::text "
                  f"FROM dt WHERE {t[1]}{' AND ' + _MODERATE if t[2] else ''}"),
    st.tuples(timestamptzs(1), day_counts(1), dt_bools(1), st.booleans()).map(
        lambda t: f"SELECT min({_dt_op(t[0])})::text, max({_dt_op(t[0])})::text, sum({t[1]}), avg({t[1]}), "
                  f"max({t[1]}) FROM dt WHERE {t[2]}{' AND ' + _MODERATE if t[3] else ''}"),
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=dt_queries)
def test_generated_datetime_expressions(conns, query):
    check(conns, query)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=dt_queries)
def test_generated_datetime_expressions_many(conns, query):
    check(conns, query)


@pytest.mark.parametrize("query", [
    "SELECT count(*), min(d + 1)::text, max(ts + interval '1 day')::text FROM dt "
    "WHERE d > date '2005-01-01' AND ts < timestamp '2001-01-01'",
    "SELECT count(*), sum(d - date '2000-01-01'), avg(d - date '2000-01-01') FROM dt "
    "WHERE d BETWEEN date '1990-01-01' AND date '2010-12-31'",
    "SELECT count(*) FROM dt WHERE d = ts::date OR d::timestamp > ts - interval '36 hours'",
    "SELECT count(*), max(tz + interval '3 hours')::text, min(tz - interval '00:00:01')::text FROM dt "
    "WHERE tz > timestamptz '2001-02-03 04:05:06+05'",
    "SELECT count(*) FROM dt WHERE d + 0 < timestamp '2000-01-01 12:00:00' AND d - 0 >= timestamp '-infinity'",
    "SELECT count(*) FROM dt WHERE date '294277-01-01' > ts OR d > timestamp 'infinity'",
    # timestamp - timestamp wraps round in PostgreSQL 15 (no overflow check)
    "SELECT count(*), count(ts - timestamp '4714-11-24 00:00:00 BC') FROM dt WHERE i4 <> 1 AND i4 <> -1 "
    "AND ts - timestamp '4714-11-24 00:00:00 BC' > interval '1 day'",
    "SELECT count(*) FROM dt WHERE i4 <> 1 AND i4 <> -1 AND (tz - timestamptz '2000-01-01 00:00:00+00' "
    "= interval '1 day -3 hours' OR ts - ts IS NULL OR ts - timestamp '2000-01-01' < interval '1 mon')",
    "SELECT count(*), min(d)::text, max(ts)::text, max(tz)::text FROM dt WHERE d + 0 IS NOT NULL",
    "SELECT sum(date_part('year', ts)), min(date_part('year', ts)), max(date_part('YEAR', d)), "
    "count(date_part('dow', ts)), sum(date_part('doy', ts)), sum(date_part('hour', ts) * 60 "
    "+ date_part('minute', ts)) FROM dt WHERE date_part('month', ts) = 1 OR date_part('month', ts) = 12 OR i4 = 0",
    "SELECT count(*), sum(date_part('day', d)), avg(date_part('quarter', ts)) FROM dt "
    "WHERE date_part('year', d) >= 2000 AND i4 BETWEEN -1000 AND 1000",
])
def test_datetime_queries(conns, query):
    check(conns, query, jit="::date" not in query)


@pytest.mark.parametrize("query, message", [
    ("SELECT count(*) FROM dt WHERE d + 1 > date '2000-01-01'", "date out of range"),
    ("SELECT count(*) FROM dt WHERE d - 2147483647 > date '2000-01-01'", "date out of range"),
    ("SELECT max(ts + interval '1 microsecond') FROM dt", "timestamp out of range"),
    ("SELECT max(ts - interval '1 day') FROM dt", "timestamp out of range"),
    ("SELECT max(tz - interval '1 hour') FROM dt WHERE tz > timestamptz '-infinity'", "timestamp out of range"),
    ("SELECT count(*) FROM dt WHERE d + interval '1 hour' > timestamp '2000-01-01'",
     "date out of range for timestamp"),
    ("SELECT sum(d - date '2000-01-01') FROM dt", "cannot subtract infinite dates"),
    ("SELECT count(*) FROM dt WHERE ts - timestamp '2000-01-01' < interval '1 day'",
     "cannot subtract infinite timestamps"),
])
def test_datetime_errors(conns, query, message):
    result = check(conns, query)
    assert result == ("error", "22008", message), result


@pytest.mark.parametrize("query", [
    # months and time-zone-dependent arithmetic; timestamp against timestamptz
    "SELECT count(*) FROM dt WHERE ts + interval '1 month' > timestamp '2000-01-01' AND i4 < 1000",
    "SELECT count(*) FROM dt WHERE tz + interval '1 day' > timestamptz '2000-01-01+00' AND i4 < 1000",
    "SELECT count(*) FROM dt WHERE ts < tz AND i4 < 1000",
    "SELECT count(*) FROM dt WHERE ts - ts > interval '1 hour' + (d - d) * interval '1 day'",
    "SELECT count(*) FROM dt WHERE ts - timestamp '2000-01-01' > interval '100000000 years'",
    "SELECT count(interval '1 day') FROM dt WHERE d + 1 > date '2000-01-01' AND i4 < 1000",
])
def test_datetime_fallback(conns, query):
    oro, _heap = conns
    assert "JIT" not in _plan(oro, query)
    check(conns, query, jit=False)


def _explain_generic(conn, name: str, params: tuple) -> str:
    cur = psycopg.ClientCursor(conn)
    placeholders = ", ".join(["%s"] * len(params))
    cur.execute(sql.SQL("EXPLAIN (COSTS OFF) EXECUTE {} ({})").format(sql.Identifier(name), sql.SQL(placeholders)),
                params)
    return "\n".join(r[0] for r in cur.fetchall())


def _execute_generic(conn, name: str, params: tuple):
    cur = psycopg.ClientCursor(conn)
    placeholders = ", ".join(["%s"] * len(params))
    try:
        with conn.transaction():
            cur.execute(sql.SQL("EXECUTE {} ({})").format(sql.Identifier(name), sql.SQL(placeholders)), params)
            return ("ok", cur.fetchall())
    except psycopg.Error as exc:
        return ("error", exc.sqlstate, exc.diag.message_primary)


GENERIC = [
    ("int, float8",
     "SELECT count(*), sum(i4 + $1), avg(f8 * $2) FROM {t} WHERE i8 * 2 > $1 AND f4 < $2",
     [(1, 0.5), (None, 2.0), (3, None), (-1000, float("nan")), (2147483647, 1.0)]),
    ("date, timestamp, timestamptz, integer",
     "SELECT count(*), min(d + $4)::text, max(ts - interval '1 hour')::text FROM {t} "
     "WHERE d > $1 AND ts <= $2 AND (tz IS NULL OR tz > $3) AND i4 BETWEEN -1000 AND 1000",
     [(datetime.date(1995, 1, 1), datetime.datetime(2001, 1, 1), datetime.datetime(1999, 1, 1, tzinfo=datetime.timezone.utc), 5),
      (None, datetime.datetime(2001, 1, 1), None, 1),
      (datetime.date(1990, 1, 1), None, None, None),
      (datetime.date(2100, 1, 1), datetime.datetime(2001, 1, 1), None, 0),
      (datetime.date(1990, 1, 1), datetime.datetime(2100, 1, 1), None, 2147483647)]),
    # divisors known at execution: arguments, checked on each row
    ("int, bigint",
     "SELECT count(*), sum(i4 % $1), sum(i8 / $2), min(i2 / $1), max(i4 / $1) FROM {t} WHERE i8 % $2 <> 3",
     [(7, -7), (-1, 2), (2, -1), (0, 5), (None, 3), (-2147483648, -9223372036854775808), (64, 1)]),
]


@pytest.mark.parametrize("types, query, values", GENERIC)
def test_generic_plan_parameters(conns, types, query, values):
    """Parameters of a generic plan are the kernel's arguments: the plan
    shows them as $n, one kernel serves every value, NULLs as PostgreSQL."""
    oro, heap = conns
    table = "t" if "i8" in query else "dt"
    name = f"jit_generic_{table}"
    for c, t in ((oro, table), (heap, f"{table}_h")):
        c.execute("SET plan_cache_mode = force_generic_plan")
        c.execute(sql.SQL("PREPARE {} ({}) AS {}").format(sql.Identifier(name), sql.SQL(types),
                                                             sql.SQL(query.format(t=t))))
    try:
        plan = _explain_generic(oro, name, values[0])
        assert "JIT Aggregates" in plan and "$1" in plan, plan
        for params in values:
            expected = _execute_generic(heap, name, params)
            got = _execute_generic(oro, name, params)
            assert _same_result(got, expected), f"{params}\nJIT: {got}\nheap: {expected}"
        assert "(backend cache)" in _explain_generic(oro, name, values[-1])
    finally:
        for c in (oro, heap):
            c.execute(sql.SQL("DEALLOCATE {}").format(sql.Identifier(name)))
            c.execute("RESET plan_cache_mode")


def test_datetime_explain(conns):
    oro, _heap = conns
    plan = _plan(oro, "SELECT count(*), max(d - 1)::text FROM dt WHERE ts - interval '1 day 00:30:00' "
                      "> timestamp '2000-01-01' AND date_part('dow', d) = 0")
    assert "JIT Aggregates: count(*), max((d - 1))" in plan, plan
    assert "((ts + '-1 days -00:30:00'::interval) > '2000-01-01 00:00:00'::timestamp)" in plan, plan
    assert "(date_part('dow', (d)::timestamp) = 0.0)" in plan, plan


def test_initplan_parameter(conns):
    # an InitPlan's value (PARAM_EXEC) reaches the kernel as a parameter
    query = "SELECT count(*), sum(i4 + 1) FROM t WHERE i8 * 2 > (SELECT max(i4) FROM small)"
    oro, _heap = conns
    plan = _plan(oro, query)
    assert "JIT Aggregates" in plan and "InitPlan" in plan, plan
    check(conns, query)
    check(conns, "SELECT count(*) FROM dt WHERE d + 1 > (SELECT min(d) FROM dt WHERE i4 = 5) AND i4 < 1000")
