"""Randomized differential test: generated tables and queries (quals combined
with AND / OR / NOT, aggregates, GROUP BY, ORDER BY ... LIMIT, prepared
statements) on a columnar table and on its heap twin must give the same
answers.  Float aggregates may differ by summation order only (relative
1e-9)."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

COLUMNS = "i int4, b int8, f float8, s text, t timestamptz, ok bool"

ints = st.one_of(st.none(), st.integers(-50, 50), st.sampled_from([-2**31, 2**31 - 1]))
bigs = st.one_of(st.none(), st.integers(-10**6, 10**6), st.sampled_from([-2**63, 2**63 - 1]))
floats = st.one_of(st.none(), st.floats(-1e3, 1e3, allow_nan=False).map(lambda x: round(x, 2)),
                   st.sampled_from([float("nan"), float("inf"), -0.0]))
texts = st.one_of(st.none(), st.sampled_from(["", "a", "ab", "abc", "b", "ß", "zz", "Ab"]))
times = st.one_of(st.none(), st.integers(0, 500).map(
    lambda m: dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=37 * m)))
rows = st.lists(st.tuples(ints, bigs, floats, texts, times, st.one_of(st.none(), st.booleans())),
                min_size=0, max_size=300)

atoms = st.sampled_from([
    "i > {n}", "i <= {n}", "i = {n}", "i <> {n}", "i IS NULL", "i IS NOT NULL", "i IN ({n}, 3, -7)",
    "b >= {n}", "b < {n}::numeric + 0.5", "b = ANY(ARRAY[{n}, 1000]::int8[])",
    "f > {n}", "f <= {n}.5", "f = 'NaN'", "f <> 0",
    "s = 'ab'", "s >= 'b'", "s LIKE 'a%'", "s <> ''", "s IS NULL", "s IN ('a', 'zz')",
    "t >= '2024-01-01 05:00+00'", "t < '2024-01-01 12:00+00'::timestamptz + interval '1 hour'",
    "t > '2024-01-01'::date", "ok", "NOT ok", "ok IS NULL",
])


@st.composite
def conditions(draw, depth=0):
    atom = draw(atoms).format(n=draw(st.integers(-20, 20)))
    if depth >= 2 or draw(st.booleans()):
        return atom
    op = draw(st.sampled_from(["AND", "OR", "AND NOT"]))
    return f"({atom} {op} {draw(conditions(depth + 1))})"


QUERY_SHAPES = [
    "SELECT count(*), count(i), sum(i), sum(b), min(f), max(f), min(s), max(s), bool_and(ok) FROM {t} WHERE {w}",
    "SELECT i, count(*), sum(b), max(t) FROM {t} WHERE {w} GROUP BY i ORDER BY i NULLS FIRST",
    "SELECT s, count(DISTINCT i), avg(i), min(b) FROM {t} WHERE {w} GROUP BY s ORDER BY s NULLS FIRST",
    "SELECT orochi.time_bucket('2 hours', t) AS k, count(*), sum(f) FROM {t} WHERE {w} GROUP BY 1 ORDER BY 1",
    "SELECT i, b, s FROM {t} WHERE {w} ORDER BY b DESC, i, s LIMIT 7",
    "SELECT b FROM {t} WHERE {w} ORDER BY b NULLS FIRST LIMIT 5",
    "SELECT count(*) FROM {t} WHERE {w}",
]


def _same(got, want):
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want):
        assert len(g) == len(w)
        for a, b in zip(g, w):
            if isinstance(a, float) and isinstance(b, float):
                assert (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=1e-9), (g, w)
            else:
                assert a == b, (g, w)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=rows, chunk=st.sampled_from([7, 50, 1000]), where=conditions(),
       shape=st.sampled_from(QUERY_SHAPES), prepared=st.booleans())
def test_columnar_equals_heap(db, data, chunk, where, shape, prepared):
    db.execute("DROP FOREIGN TABLE IF EXISTS c; DROP TABLE IF EXISTS h")
    db.execute(f"CREATE FOREIGN TABLE c ({COLUMNS}) SERVER orochi OPTIONS (chunk_group_size '{chunk}')")
    db.execute(f"CREATE TABLE h ({COLUMNS})")
    for table in ("c", "h"):
        if data:
            with db.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                for row in data:
                    copy.write_row(row)
    if prepared:
        # the first qual constant becomes a parameter of a prepared statement
        for table in ("c", "h"):
            db.execute(f"PREPARE q_{table}(int4) AS " + shape.format(t=table, w=f"({where}) AND coalesce(i, 0) > $1"))
        for _ in range(2):
            _same(db.execute("EXECUTE q_c(-100)").fetchall(), db.execute("EXECUTE q_h(-100)").fetchall())
        db.execute("DEALLOCATE q_c; DEALLOCATE q_h")
    else:
        _same(db.execute(shape.format(t="c", w=where)).fetchall(),
              db.execute(shape.format(t="h", w=where)).fetchall())
