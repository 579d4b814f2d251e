"""Chunk groups whose statistics prove that every row passes the filter are
taken without decoding the filter's columns (orochi_fdw.query.all_match):
the proof is sound (random rows and predicates: whenever it says "every
row", every row does), and time-range aggregates and scans over such groups
equal the heap table's, with NULLs, deleted rows, delta rows and groups the
range cuts."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orochi_fdw.bridge.api import ColumnDefinition, Qual
from orochi_fdw.bridge.batch import Column, WireKind
from orochi_fdw.query.all_match import all_match
from orochi_fdw.query.predicates import ColumnStats, bind_quals, evaluate

COLUMNS = {"i": ColumnDefinition("i", 23), "f": ColumnDefinition("f", 701)}
OPS = ["=", "<>", "<", "<=", ">", ">="]

ints = st.one_of(st.none(), st.integers(-5, 5))
floats = st.one_of(st.none(), st.sampled_from([-1.5, -0.0, 0.0, 1.0, 2.5, float("nan"), float("inf")]))
quals = st.lists(st.one_of(
    st.builds(lambda op, v: Qual("i", op, v), st.sampled_from(OPS), st.integers(-6, 6)),
    st.builds(lambda op, v: Qual("f", op, v), st.sampled_from(OPS),
              st.sampled_from([-1.0, 0.0, 1.0, 2.5, float("inf")])),
    st.builds(lambda op: Qual("i", op, None), st.sampled_from(["=", "<>"])),  # IS [NOT] NULL
    st.builds(lambda v: Qual("i", ("=", True), v), st.lists(st.integers(-3, 3), min_size=1, max_size=3)),
), min_size=1, max_size=3)


def _stats(values: list, is_float: bool) -> ColumnStats:
    present = [v for v in values if v is not None]
    numbers = [v for v in present if not (is_float and v != v)]
    return ColumnStats(len(values), len(values) - len(present), min(numbers) if numbers else None,
                       max(numbers) if numbers else None, (len(numbers) < len(present)) if is_float else None)


def _column(values: list, kind: WireKind, dtype) -> Column:
    validity = np.array([v is not None for v in values], dtype=bool)
    return Column(kind, np.array([0 if v is None else v for v in values], dtype=dtype), validity)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.tuples(ints, floats), max_size=8), qs=quals)
def test_a_proof_that_every_row_passes_is_sound(rows, qs):
    bound = bind_quals(qs, COLUMNS)
    i = [r[0] for r in rows]
    f = [r[1] for r in rows]
    stats = {"i": _stats(i, False), "f": _stats(f, True)}
    if all_match(bound.filter, stats):
        mask = evaluate(bound.filter, {"i": _column(i, WireKind.INT32, np.int32),
                                       "f": _column(f, WireKind.FLOAT64, np.float64)}, len(rows))
        assert bool(np.all(mask)), (qs, rows)


def test_what_statistics_prove():
    bound = bind_quals([Qual("i", ">=", 3), Qual("i", "<", 10)], COLUMNS).filter
    assert all_match(bound, {"i": ColumnStats(5, 0, 3, 9)})
    assert not all_match(bound, {"i": ColumnStats(5, 1, 3, 9)})  # a NULL row fails
    assert not all_match(bound, {"i": ColumnStats(5, 0, 2, 9)})
    assert not all_match(bound, {"i": None})
    f = bind_quals([Qual("f", "<", 5.0)], COLUMNS).filter
    assert all_match(f, {"f": ColumnStats(5, 0, 1.0, 2.0, False)})
    assert not all_match(f, {"f": ColumnStats(5, 0, 1.0, 2.0, True)})  # NaN is above 5
    assert not all_match(f, {"f": ColumnStats(5, 0, 1.0, 2.0, None)})


TABLE = "ts timestamptz, k int4, v float8"
RANGE = "ts BETWEEN timestamptz '2024-01-01 00:10:00+00' AND timestamptz '2024-01-01 00:50:00+00'"


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(nulls=st.sampled_from([0, 7, 25]), deleted=st.sampled_from([None, 3, 9]),
       delta=st.lists(st.tuples(st.integers(0, 3600), st.one_of(st.none(), st.floats(-10, 10))),
                      max_size=3),
       chunk=st.sampled_from([50, 200, 1000]))
def test_time_range_aggregates_equal_the_heap(db, nulls, deleted, delta, chunk):
    db.execute("DROP FOREIGN TABLE IF EXISTS c; DROP TABLE IF EXISTS h")
    db.execute(f"CREATE FOREIGN TABLE c ({TABLE}) SERVER orochi "
               f"OPTIONS (chunk_group_size '{chunk}', delta_row_limit '5')")
    db.execute(f"CREATE TABLE h ({TABLE})")
    for t in ("c", "h"):
        # one row a second for an hour; every nulls-th ts NULL (none when 0)
        db.execute(f"INSERT INTO {t} SELECT CASE WHEN %s > 0 AND i %% %s = 1 THEN NULL "
                   "ELSE timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second' END, "
                   "i %% 10, (i * 7919 %% 1000) / 7.0 FROM generate_series(0, 3599) i", [nulls, max(nulls, 1)])
        if deleted is not None:
            db.execute(f"DELETE FROM {t} WHERE k = %s", [deleted])
        for seconds, v in delta:
            db.execute(f"INSERT INTO {t} VALUES (timestamptz '2024-01-01 00:00:00+00' "
                       "+ %s * interval '1 second', -1, %s)", [seconds, v])
    for q in (f"SELECT sum(v), avg(v), count(*), count(v) FROM {{}} WHERE {RANGE}",
              f"SELECT k, count(v), max(v), min(ts) FROM {{}} WHERE {RANGE} GROUP BY k ORDER BY k",
              f"SELECT ts, k, v FROM {{}} WHERE {RANGE} AND k < 3 ORDER BY ts, k, v"):
        assert db.execute(q.format("c")).fetchall() == db.execute(q.format("h")).fetchall(), q


def test_groups_inside_the_range_skip_the_filter(db):
    db.execute(f"CREATE FOREIGN TABLE c ({TABLE}) SERVER orochi "
               "OPTIONS (chunk_group_size '100', delta_row_limit '10')")
    db.execute("INSERT INTO c SELECT timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second', "
               "i % 10, i FROM generate_series(0, 3599) i")
    plan = "\n".join(r[0] for r in db.execute(
        f"EXPLAIN (ANALYZE, VERBOSE) SELECT sum(v) FROM c WHERE {RANGE}").fetchall())
    # 00:10:00 .. 00:50:00 is rows 600 .. 3000: groups 6 .. 29 inside, 30 cut
    assert "Chunk Groups Passing Whole: 24" in plan, plan
    assert "Rows Removed by Orochi Filter: 99" in plan, plan
    assert db.execute(f"SELECT sum(v) FROM c WHERE {RANGE}").fetchone()[0] == sum(range(600, 3001))


def test_docstring_examples_run():
    import doctest

    from orochi_fdw.query import all_match as module

    result = doctest.testmod(module)
    assert result.attempted and not result.failed
