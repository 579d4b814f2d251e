"""numeric(p, s) (p <= 18) as scaled int64 and character(n) without its
padding: values round-trip exactly, filters and aggregates are pushed down
and answer like a heap table holding the same rows, min / max prune chunk
groups, and stripes written in the text layout still read (and filter and
aggregate) right."""

from __future__ import annotations

import decimal
import itertools
import os
import re

import psycopg
from psycopg import sql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from columnar_helpers import assert_same_rows

D = decimal.Decimal
_counter = itertools.count()

#: declared types and values of each (extremes, zero with scale, NaN, NULL)
ROUND_TRIP = {
    "numeric(1,0)": ["0", "9", "-9", "'NaN'"],
    "numeric(5,5)": ["0.00001", "-0.99999", "0", "0.5"],
    "numeric(15,2)": ["1.5", "-0.01", "0", "9999999999999.99", "-9999999999999.99", "'NaN'", "12.345"],
    "numeric(18,0)": ["999999999999999999", "-999999999999999999", "0", "1"],
    "numeric(18,18)": ["0.999999999999999999", "-0.000000000000000001", "0"],
    "numeric(18,6)": ["123456789012.123456", "-0.000001", "0.0000005", "'NaN'"],
    "numeric(19,2)": ["99999999999999999.99", "-1.5"],  # wider: text layout
    "char(5)": ["'ab'", "'abcde'", "''", "'a  b'", "' x'", "'é'"],
}


def _kinds(conn, table: str) -> set[str]:
    return {r[0] for r in conn.execute(
        "SELECT DISTINCT kind FROM orochi.columnar_stripe_columns c JOIN orochi.columnar_stripes s"
        " USING (stripe_id) WHERE s.relid = %s::regclass AND c.attnum = 1", (table,)).fetchall()}


@pytest.mark.parametrize("type_", list(ROUND_TRIP))
def test_round_trip(mconn, type_):
    t, h = f"rt{next(_counter)}", f"rth{next(_counter)}"
    mconn.execute(f"CREATE FOREIGN TABLE {t} (x {type_}, k int) SERVER orochi"
                  " OPTIONS (chunk_group_size '7')")
    mconn.execute(f"CREATE TABLE {h} (x {type_}, k int)")
    values = ROUND_TRIP[type_]
    for tbl in (t, h):
        mconn.execute(f"INSERT INTO {tbl} SELECT v, g FROM (VALUES "
                      + ", ".join(f"(({v})::{type_})" for v in values)
                      + ", (NULL)) AS v(v), generate_series(1, 3) g")
    assert_same_rows(mconn, t, h)
    # as PostgreSQL prints them (scale included): 1.5 in numeric(15,2) is 1.50
    got = mconn.execute(f"SELECT x::text, k FROM {t} ORDER BY x, k").fetchall()
    want = mconn.execute(f"SELECT x::text, k FROM {h} ORDER BY x, k").fetchall()
    assert got == want
    expected = {"numeric(19,2)": "numeric", "char(5)": "char"}.get(type_)
    if expected is None:
        expected = "decimal64_" + re.match(r"numeric\(\d+,(\d+)\)", type_).group(1)
    assert _kinds(mconn, t) == {expected}


def test_overflow_and_infinity_refused_like_heap(mconn):
    mconn.execute("CREATE FOREIGN TABLE ovf (x numeric(5,2)) SERVER orochi")
    for bad in ("1000", "'Infinity'", "'-Infinity'", "-999.995"):
        with pytest.raises(psycopg.errors.NumericValueOutOfRange):
            mconn.execute(f"INSERT INTO ovf VALUES ({bad})")
    mconn.execute("INSERT INTO ovf VALUES (999.994), (-0.005)")  # rounded as the heap rounds
    assert [r[0] for r in mconn.execute("SELECT x::text FROM ovf ORDER BY x").fetchall()] == [
        "-0.01", "999.99"]


# ------------------------------------------------------------ differential

_SCALES = {"p": 2, "q": 6}


def _dec(scale: int, digits: int):
    lim = 10 ** (digits - scale) - D(1).scaleb(-scale)
    return st.decimals(min_value=-lim, max_value=lim, places=scale, allow_nan=False, allow_infinity=False)


_row = st.tuples(
    st.one_of(st.none(), _dec(2, 15), st.sampled_from([D("0"), D("1.5"), D("-1.5"), D("NaN")])),
    st.one_of(st.none(), _dec(6, 18), st.sampled_from([D("0.000001"), D("NaN"), D("100")])),
    st.one_of(st.none(), st.sampled_from(["", "a", "ab", "ab ", " ab", "abc", "b", "z\t", "é"])),
    st.one_of(st.none(), st.sampled_from(["", "a", "ab", "ab ", "abc", "b", "zz"])),
    st.integers(0, 3),
)

_CONSTS = {
    "p": ["1.5", "1.50", "1.505", "-1.5", "0", "'NaN'", "'Infinity'", "'-Infinity'", "2", "12345678.91",
          "-0.001", "1e20"],
    "q": ["0.000001", "0.0000005", "100", "'NaN'", "-3", "1.5"],
    "c": ["'ab'", "'ab  '", "'abc'", "''", "'b'", "' ab'"],
    "v": ["'ab'", "'ab '", "'abc'", "''", "'b'"],
}
_OPS = ["=", "<>", "<", "<=", ">", ">="]


def _qual(draw_col: str, op: str, const: str, kind: int, other: str) -> str:
    typ = {"p": "numeric", "q": "numeric", "c": "char(5)", "v": "varchar(10)"}[draw_col]
    coll = ' COLLATE "C"' if draw_col in "cv" and op not in ("=", "<>") else ""
    if kind == 0:
        return f"{draw_col}{coll} {op} {const}::{typ}" if typ != "numeric" else f"{draw_col} {op} {const}"
    if kind == 1:
        return f"{draw_col} IN ({const}, {other})"
    if kind == 2:
        return f"{draw_col} IS {'NOT ' if op in ('<>', '<') else ''}NULL"
    return f"{draw_col}{coll} BETWEEN {min(const, other)} AND {max(const, other)}"


@st.composite
def _where(draw):
    parts = []
    for _ in range(draw(st.integers(1, 2))):
        col = draw(st.sampled_from(list(_CONSTS)))
        parts.append(_qual(col, draw(st.sampled_from(_OPS)), draw(st.sampled_from(_CONSTS[col])),
                           draw(st.integers(0, 3)), draw(st.sampled_from(_CONSTS[col]))))
    return " AND ".join(parts)


_AGGS = ("count(*), count(p), sum(p), avg(p), min(p), max(p), sum(q), avg(q), min(q), max(q),"
         " count(c), count(DISTINCT p)")


def _fill_pair(conn, rows, chunk_group: int, delta: bool = False) -> tuple[str, str]:
    t, h = f"n{next(_counter)}", f"nh{next(_counter)}"
    cols = "p numeric(15,2), q numeric(18,6), c char(5), v varchar(10), g int4"
    opts = f"chunk_group_size '{chunk_group}'" + (", delta_row_limit '100000'" if delta else "")
    conn.execute(f"CREATE FOREIGN TABLE {t} ({cols}) SERVER orochi OPTIONS ({opts})")
    conn.execute(f"CREATE TABLE {h} ({cols})")
    for tbl in (t, h):
        if rows:
            with conn.cursor().copy(f"COPY {tbl} FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
    return t, h


def _same(conn, sql_t: str, sql_h: str, params=None):
    # as text: Decimal('NaN') equals nothing in Python
    got = [tuple(map(str, r)) for r in conn.execute(sql_t, params).fetchall()]
    want = [tuple(map(str, r)) for r in conn.execute(sql_h, params).fetchall()]
    assert got == want, f"{sql_t}\n{got[:5]} != {want[:5]}"


_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])


@_SETTINGS
@given(rows=st.lists(_row, max_size=120), chunk_group=st.integers(3, 40),
       wheres=st.lists(_where(), min_size=1, max_size=4), delta=st.booleans())
def test_filters_aggregates_order_vs_heap(mconn, rows, chunk_group, wheres, delta):
    t, h = _fill_pair(mconn, rows, chunk_group, delta)
    try:
        for w in wheres:
            for tmpl in (f"SELECT p::text, q::text, c, v, g FROM {{}} WHERE {w} ORDER BY 1, 2, 3, 4, 5",
                         f"SELECT {_AGGS} FROM {{}} WHERE {w}",
                         f"SELECT g, {_AGGS} FROM {{}} WHERE {w} GROUP BY g ORDER BY g",
                         f"SELECT p, count(*), sum(q) FROM {{}} WHERE {w} GROUP BY p ORDER BY p",
                         f"SELECT c, count(*), sum(p), max(q) FROM {{}} WHERE {w} GROUP BY c ORDER BY c",
                         f"SELECT p, q FROM {{}} WHERE {w} ORDER BY p DESC, q LIMIT 7"):
                _same(mconn, tmpl.format(t), tmpl.format(h))
    finally:
        mconn.execute(f"DROP FOREIGN TABLE {t}")
        mconn.execute(f"DROP TABLE {h}")


@_SETTINGS
@given(values=st.lists(st.one_of(_dec(2, 15), st.sampled_from([D("0.01"), D("-0.01"), D("33.33")])),
                       min_size=1, max_size=60),
       repeat=st.integers(1, 3))
def test_avg_scale_as_postgres(mconn, values, repeat):
    """avg's result scale (select_div_scale) and rounding, for many sums and
    counts: digit for digit the heap's."""
    t, h = _fill_pair(mconn, [(v, None, None, None, i % 3) for i in range(repeat) for v in values], 8)
    try:
        for q in ("SELECT avg(p)::text, sum(p)::text FROM {}",
                  "SELECT g, avg(p)::text, sum(p)::text FROM {} GROUP BY g ORDER BY g"):
            _same(mconn, q.format(t), q.format(h))
    finally:
        mconn.execute(f"DROP FOREIGN TABLE {t}")
        mconn.execute(f"DROP TABLE {h}")


def test_pushdown_plans_and_prepared_parameters(mconn):
    rows = [(D(i) / 100, D(i) / 10**6, f"k{i % 50}", f"v{i % 7}", i % 4) for i in range(5000)]
    t, h = _fill_pair(mconn, rows, 500)
    # filters: exact (no Filter line for PostgreSQL), aggregates pushed
    plan = "\n".join(r[0] for r in mconn.execute(
        f"EXPLAIN (COSTS OFF) SELECT sum(p), avg(p), min(q), max(q), count(*) FROM {t}"
        " WHERE p BETWEEN 10.005 AND 20 AND c = 'k7' AND q IN (0.0001, 0.00015)").fetchall())
    assert "Aggregates: sum(p), avg(p), min(q), max(q), count(*)" in plan, plan
    for q in (f"SELECT c, sum(p), count(*) FROM {t} GROUP BY c", f"SELECT p, count(*) FROM {t} GROUP BY p"):
        plan = "\n".join(r[0] for r in mconn.execute(f"EXPLAIN (COSTS OFF) {q}").fetchall())
        assert "Group by: " in plan, plan
    plan = "\n".join(r[0] for r in mconn.execute(
        f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM {t} WHERE p >= 40.00").fetchall())
    assert "Chunk Groups Read: 2 of 10 (8 skipped by min/max)" in plan, plan
    assert "Filter:" not in plan.split("Min/Max")[0] or "Rows Removed by Filter" not in plan, plan
    plan = "\n".join(r[0] for r in mconn.execute(
        f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM {t} WHERE q < 0.0005").fetchall())
    assert "(9 skipped by min/max)" in plan, plan
    # ANALYZE samples the values as PostgreSQL reads them
    mconn.execute(f"ANALYZE {t}")
    bounds = mconn.execute("SELECT histogram_bounds::text FROM pg_stats WHERE tablename = %s"
                           " AND attname = 'p'", (t,)).fetchone()[0]
    assert bounds.startswith("{0.00,") and bounds.endswith(",49.99}"), bounds
    # ORDER BY a numeric column LIMIT n: sorted by the scan (NaN last, NULLs as asked)
    mconn.execute(f"INSERT INTO {t} VALUES ('NaN', NULL, NULL, NULL, 0), (NULL, 1, NULL, NULL, 0)")
    mconn.execute(f"INSERT INTO {h} VALUES ('NaN', NULL, NULL, NULL, 0), (NULL, 1, NULL, NULL, 0)")
    for order in ("p DESC", "p", "p DESC NULLS LAST", "p NULLS FIRST"):
        q = f"SELECT p, g FROM {{}} ORDER BY {order} LIMIT 5"
        plan = "\n".join(r[0] for r in mconn.execute(
            f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {q.format(t)}").fetchall())
        assert "Sorted by Orochi: p" in plan, plan
        _same(mconn, f"SELECT p FROM ({q.format(t)}) s", f"SELECT p FROM ({q.format(h)}) s")
    # prepared statements: parameters of other scales, NULL, no match
    for tbl in (t, h):
        mconn.execute(f"PREPARE s_{tbl}(numeric, char(5)) AS SELECT count(*), sum(p), avg(q)"
                      f" FROM {tbl} WHERE p > $1 AND c = $2")
    mconn.execute("SET plan_cache_mode = force_generic_plan")  # values known only at execution
    try:
        for args in (("1.5", "k3"), ("1.505", "k3  "), (None, "k3"), ("1e9", "k3"), ("-1", None),
                     ("NaN", "k1"), ("49.99", "k4")):
            lit = ", ".join(sql.Literal(a).as_string(mconn) for a in args)
            _same(mconn, f"EXECUTE s_{t}({lit})", f"EXECUTE s_{h}({lit})")
        plan = "\n".join(r[0] for r in mconn.execute(
            f"EXPLAIN (COSTS OFF) EXECUTE s_{t}(1.5, 'k3')").fetchall())
        assert "Aggregates: count(*), sum(p), avg(q)" in plan, plan
    finally:
        mconn.execute("RESET plan_cache_mode")
    _same(mconn, f"SELECT * FROM {t} WHERE p = ANY(%s) ORDER BY 1", f"SELECT * FROM {h} WHERE p = ANY(%s) ORDER BY 1",
          ([D("1.5"), D("2.505"), None, D("30")],))


def test_text_layout_stripes_still_read(mconn):
    """Stripes of the text layout (tables written before numeric(p, s) and
    character(n) had kinds of their own, here made by ALTER ... TYPE from
    unconstrained numeric and bpchar) read, filter and aggregate right beside
    new ones."""
    mconn.execute("CREATE FOREIGN TABLE legacy (p numeric, c bpchar, k int) SERVER orochi"
                  " OPTIONS (chunk_group_size '10')")
    mconn.execute("CREATE TABLE legacy_h (p numeric(15,2), c char(5), k int)")
    mconn.execute("INSERT INTO legacy SELECT g / 100.0, 'x' || g % 5 || ' ', g FROM generate_series(1, 100) g")
    mconn.execute("INSERT INTO legacy VALUES ('NaN', NULL, 0)")
    assert _kinds(mconn, "legacy") == {"numeric"}
    mconn.execute("ALTER FOREIGN TABLE legacy ALTER COLUMN p TYPE numeric(15,2), ALTER COLUMN c TYPE char(5)")
    mconn.execute("INSERT INTO legacy SELECT g / 100.0, 'x' || g % 5, g FROM generate_series(101, 200) g")
    mconn.execute("INSERT INTO legacy_h SELECT g / 100.0, 'x' || g % 5, g FROM generate_series(1, 200) g")
    mconn.execute("INSERT INTO legacy_h VALUES ('NaN', NULL, 0)")
    assert _kinds(mconn, "legacy") == {"numeric", "decimal64_2"}
    assert_same_rows(mconn, "legacy", "legacy_h")
    for q in ("SELECT count(*), sum(p), avg(p), min(p), max(p) FROM {} WHERE p > 0.5 AND c = 'x3'",
              "SELECT c, sum(p), count(*) FROM {} WHERE p < 1.5 GROUP BY c ORDER BY c",
              "SELECT k, p, c FROM {} WHERE c = 'x1   ' OR p = 'NaN' ORDER BY k"):
        _same(mconn, q.format("legacy"), q.format("legacy_h"))


def test_corrupted_decimal_chunk_is_a_clean_error(mconn):
    mconn.execute("CREATE FOREIGN TABLE corrupt (p numeric(15,2)) SERVER orochi")
    mconn.execute("INSERT INTO corrupt SELECT g / 7.0 FROM generate_series(1, 5000) g")
    path = mconn.execute("SELECT current_setting('data_directory') || '/' || orochi._file_path(file_path)"
                         " FROM orochi.columnar_stripes WHERE relid = 'corrupt'::regclass").fetchone()[0]
    with open(path, "r+b") as f:
        f.seek(40)
        b = f.read(1)
        f.seek(40)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(psycopg.errors.DataCorrupted):
        mconn.execute("SELECT sum(p) FROM corrupt").fetchall()


def test_added_columns_with_defaults(mconn):
    """Columns added with a default read it in older stripes, filtered and
    aggregated like the heap's."""
    for t, kw in (("addc", "FOREIGN TABLE"), ("addc_h", "TABLE")):
        mconn.execute(f"CREATE {kw} {t} (k int)" + (" SERVER orochi" if kw.startswith("FOREIGN") else ""))
        mconn.execute(f"INSERT INTO {t} SELECT g FROM generate_series(1, 50) g")
        mconn.execute(f"ALTER {kw} {t} ADD COLUMN p numeric(10,3) DEFAULT 2.5, ADD COLUMN c char(3) DEFAULT 'x'")
        mconn.execute(f"INSERT INTO {t} SELECT g, g / 8.0, 'y' FROM generate_series(51, 100) g")
    for q in ("SELECT count(*), sum(p), avg(p), max(p) FROM {} WHERE p >= 2.5",
              "SELECT c, count(*), sum(p) FROM {} GROUP BY c ORDER BY c",
              "SELECT k, p, c FROM {} WHERE c = 'x  ' AND p = 2.500 ORDER BY k LIMIT 3"):
        _same(mconn, q.format("addc"), q.format("addc_h"))


def test_delta_rows_compacted_into_the_new_layout(mconn):
    mconn.execute("CREATE FOREIGN TABLE cmp (p numeric(12,4), c char(4), k int) SERVER orochi"
                  " OPTIONS (delta_row_limit '1000')")
    mconn.execute("CREATE TABLE cmp_h (p numeric(12,4), c char(4), k int)")
    for t in ("cmp", "cmp_h"):
        mconn.execute(f"INSERT INTO {t} SELECT g / 3.0, 'c' || g % 3, g FROM generate_series(1, 300) g")
        mconn.execute(f"INSERT INTO {t} VALUES ('NaN', NULL, 0), (NULL, '', -1)")
    mconn.execute("SELECT orochi.compact('cmp')")
    assert _kinds(mconn, "cmp") == {"decimal64_4"}
    assert_same_rows(mconn, "cmp", "cmp_h")
    _same(mconn, "SELECT c, sum(p), avg(p), count(*) FROM cmp WHERE p > 10 GROUP BY c ORDER BY c",
          "SELECT c, sum(p), avg(p), count(*) FROM cmp_h WHERE p > 10 GROUP BY c ORDER BY c")
