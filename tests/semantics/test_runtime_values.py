"""Values known only at execution: NULL, values that match no row and values
that match some, put into every kind of runtime value a scan can get
(prepared-statement parameters, generic and custom plans; InitPlans;
correlated subqueries; LATERAL references), under plain scans, pushed-down
aggregates with and without GROUP BY, top-N, on a columnar table and on a
hypertable. A heap table holding the same rows is the oracle."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

COLUMNS = "k int, t text, v int8, ts timestamptz"
TYPES = dict(c.split(" ", 1) for c in COLUMNS.split(", "))
_T0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def _fill(conn, table: str) -> None:
    """The same rows in every table: stripes (several, several chunk groups),
    delta rows, deleted and updated rows; one NULL k, NULL t and v."""
    rows = ("SELECT CASE WHEN i = 77 THEN NULL ELSE i END, CASE WHEN i % 11 = 0 THEN NULL ELSE 't' || i % 7 END,"
            " CASE WHEN i % 13 = 0 THEN NULL ELSE i * 3 % 101 END,"
            " timestamptz '2024-01-01 00:00+00' + i * interval '5 hours' FROM generate_series({}, {}) i")
    conn.execute(sql.SQL("INSERT INTO {} " + rows.format(1, 250)).format(sql.Identifier(table)))
    for start in range(251, 301, 10):
        conn.execute(sql.SQL("INSERT INTO {} " + rows.format(start, start + 9)).format(sql.Identifier(table)))
    conn.execute(sql.SQL("DELETE FROM {} WHERE k % 17 = 0").format(sql.Identifier(table)))
    conn.execute(sql.SQL("UPDATE {} SET v = v + 1000 WHERE k % 19 = 0").format(sql.Identifier(table)))


@pytest.fixture(scope="module")
def tables(pg_cluster, module_db):
    conn = pg_cluster.connect(module_db, autocommit=True)
    opts = "OPTIONS (stripe_row_limit '64', chunk_group_size '16', delta_row_limit '20')"
    conn.execute(f"CREATE FOREIGN TABLE ct ({COLUMNS}) SERVER orochi {opts}")
    conn.execute(f"CREATE FOREIGN TABLE hy ({COLUMNS}) SERVER orochi {opts}")
    conn.execute("SELECT orochi.create_hypertable('hy', 'ts', chunk_time_interval => interval '10 days')")
    conn.execute(f"CREATE TABLE ct_h ({COLUMNS})")
    for t in ("ct", "hy", "ct_h"):
        _fill(conn, t)
    values = {
        "k": [r[0] for r in conn.execute("SELECT DISTINCT k FROM ct_h WHERE k IS NOT NULL ORDER BY 1")],
        "t": [r[0] for r in conn.execute("SELECT DISTINCT t FROM ct_h WHERE t IS NOT NULL ORDER BY 1")],
        "ts": [r[0] for r in conn.execute("SELECT DISTINCT ts FROM ct_h ORDER BY 1")],
    }
    conn.close()
    return values


# what a scan of the table T computes, given a condition
KINDS = {
    "plain": "SELECT k, t, v FROM {T} WHERE {cond}",
    "agg": "SELECT count(*) AS n, sum(v) AS s, min(t) AS mn, max(k) AS mx, count(t) AS nt FROM {T} WHERE {cond}",
    "group": "SELECT t, count(*) AS n, sum(v) AS s FROM {T} WHERE {cond} GROUP BY t",
    "group_day": "SELECT date_trunc('day', ts) AS d, count(*) AS n, max(v) AS mx FROM {T} WHERE {cond} GROUP BY 1",
    "topn": "SELECT k, v FROM {T} WHERE {cond} ORDER BY k LIMIT 4",
}

# conditions on one column with the runtime value X
CONDS = [
    "{c} = {X}", "{c} < {X}", "{c} >= {X}", "{c} <> {X}",
    "{c} = ANY (ARRAY[{X}, {Y}])", "{c} <> ALL (ARRAY[{X}, {Y}])",
    "{c} IS NOT DISTINCT FROM {X}", "{c} = {X} AND v > 10",
]

SOURCES = ["generic", "custom", "initplan", "correlated", "lateral", "cross_lateral"]


def _lit(column: str, value) -> sql.Composable:
    return sql.SQL("{}::{}").format(sql.Literal(value), sql.SQL(TYPES[column]))


def _value(column: str, kind: str, pick: int, present: list):
    if kind == "null":
        return None
    if kind == "present":
        return present[pick % len(present)]
    # matches no row: beyond every value, or between two of them
    return {"k": [-7, 10_000, 2**31 - 1][pick % 3],
            "t": ["zz", "", "t35"][pick % 3],
            "ts": [_T0 - datetime.timedelta(days=400), _T0 + datetime.timedelta(days=9000),
                   _T0 + datetime.timedelta(minutes=17)][pick % 3]}[column]


def _queries(source: str, kind: str, cond: str, column: str, xs: list, y, table: str) -> list[str]:
    """The statements to run (the last one's rows are compared)."""
    c = column
    typ = TYPES[c]
    Y = _lit(c, y).as_string(None)
    if source in ("generic", "custom"):
        inner = KINDS[kind].format(T=table, cond=cond.format(c=c, X="$1", Y=Y))
        mode = "force_generic_plan" if source == "generic" else "force_custom_plan"
        out = [f"SET plan_cache_mode = {mode}", f"PREPARE p({typ}) AS {inner}"]
        return out + [f"EXECUTE p({_lit(c, x).as_string(None)})" for x in xs]
    if source == "initplan":
        inner = KINDS[kind].format(T=table, cond=cond.format(c=c, X=f"(SELECT {_lit(c, xs[0]).as_string(None)})",
                                                             Y=Y))
        return [inner]
    outer = "(VALUES " + ", ".join(f"({i}, {_lit(c, x).as_string(None)})" for i, x in enumerate(xs)) + ") o(i, x)"
    inner = KINDS[kind].format(T=table, cond=cond.format(c=c, X="o.x", Y=Y))
    if source == "correlated":
        return [f"SELECT o.i, ARRAY(SELECT r FROM (SELECT row(s.*)::text AS r FROM ({inner}) s) q ORDER BY r)"
                f" FROM {outer}"]
    join = "LEFT JOIN LATERAL" if source == "lateral" else "CROSS JOIN LATERAL"
    return [f"SELECT o.i, s.* FROM {outer} {join} ({inner}) s ON true" if source == "lateral"
            else f"SELECT o.i, s.* FROM {outer} {join} ({inner}) s"]


def _run(conn, statements: list[str]) -> list[list[str]]:
    """The rows of every statement that returns some, as sorted text."""
    results = []
    try:
        for q in statements:
            cur = conn.execute(q)
            if cur.description:
                results.append(sorted(repr(r) for r in cur.fetchall()))
    finally:
        if any(q.startswith("PREPARE p") for q in statements):
            conn.execute("DEALLOCATE p")
        conn.execute("RESET plan_cache_mode")
    return results


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(source=st.sampled_from(SOURCES), kind=st.sampled_from(sorted(KINDS)), cond=st.sampled_from(CONDS),
       column=st.sampled_from(["k", "t", "ts"]), hypertable=st.booleans(),
       xs=st.lists(st.tuples(st.sampled_from(["null", "present", "absent"]), st.integers(0, 10**6)),
                   min_size=1, max_size=4),
       y=st.tuples(st.sampled_from(["present", "absent"]), st.integers(0, 10**6)))
def test_runtime_values_match_heap(mconn, tables, source, kind, cond, column, hypertable, xs, y):
    values = [_value(column, k, pick, tables[column]) for k, pick in xs]
    yv = _value(column, y[0], y[1], tables[column])
    table = "hy" if hypertable else "ct"
    got = _run(mconn, _queries(source, kind, cond, column, values, yv, table))
    want = _run(mconn, _queries(source, kind, cond, column, values, yv, "ct_h"))
    assert got == want


# ---------------------------------------------------------------- the cases of the report, pinned


@pytest.fixture
def small(db):
    db.execute("CREATE FOREIGN TABLE ct (k int, t text, v int) SERVER orochi")
    db.execute("CREATE TABLE ct_h (k int, t text, v int)")
    db.execute("CREATE TABLE h (t text)")
    for t in ("ct", "ct_h"):
        db.execute(f"INSERT INTO {t} VALUES (1, 'a', 10), (2, 'b', 20), (3, NULL, 30)")
    db.execute("INSERT INTO h VALUES ('a'), (NULL), ('zz')")
    return db


def _pushed(db, query: str) -> bool:
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN (VERBOSE, COSTS OFF) " + query))
    return "Aggregates:" in plan


def test_correlated_count_with_null_outer_value(small):
    db = small
    q = "SELECT h.t, (SELECT count(*) FROM {} ct WHERE ct.t = h.t) FROM h ORDER BY 1"
    assert _pushed(db, q.format("ct"))
    assert db.execute(q.format("ct")).fetchall() == [("a", 1), ("zz", 0), (None, 0)]
    assert db.execute(q.format("ct")).fetchall() == db.execute(q.format("ct_h")).fetchall()


@pytest.mark.parametrize("query", [
    "SELECT count(*), sum(v) FROM {} WHERE k = (SELECT NULL::int)",
    "SELECT count(*) FROM {} WHERE t = (SELECT NULL::text) AND k > 0",
    "SELECT count(*) FROM {} WHERE k = ANY ((SELECT NULL::int[])::int[])",
])
def test_aggregate_without_group_by_is_one_row(small, query):
    db = small
    assert _pushed(db, query.format("ct"))
    assert db.execute(query.format("ct")).fetchall() == db.execute(query.format("ct_h")).fetchall()
    assert len(db.execute(query.format("ct")).fetchall()) == 1


@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
def test_prepared_aggregate_with_null(small, mode):
    db = small
    db.execute(f"SET plan_cache_mode = {mode}")
    db.execute("PREPARE p(int) AS SELECT count(*), max(t) FROM ct WHERE k = $1")
    db.execute("PREPARE g(int) AS SELECT t, count(*) FROM ct WHERE k = $1 GROUP BY t")
    assert db.execute("EXECUTE p(NULL)").fetchall() == [(0, None)]
    assert db.execute("EXECUTE p(2)").fetchall() == [(1, "b")]
    assert db.execute("EXECUTE g(NULL)").fetchall() == []
    assert db.execute("EXECUTE g(3)").fetchall() == [(None, 1)]
