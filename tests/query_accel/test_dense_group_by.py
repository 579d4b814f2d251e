"""GROUP BY one integer column whose range the stripes' statistics give:
groups numbered by value - min instead of hashed (values outside the range,
as the delta store's, hashed after them). The kernel against its numpy
reference, and the SQL answers against the heap table (NULL keys and
values, deleted and updated rows, delta rows beyond the range, filters that
leave groups empty, integer extremes)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integer_kernel_helpers import DTYPES, fill_pair, integer_batches

from orochi_fdw.kernels import aggregate as K
from orochi_fdw.query import aggregate_reference as R


@st.composite
def dense_inputs(draw):
    dtype = draw(st.sampled_from(list(DTYPES)))
    lo_t, hi_t = DTYPES[dtype]
    lo = draw(st.one_of(st.integers(-70, 70), st.sampled_from([lo_t, hi_t - 10, hi_t])))
    slots = draw(st.integers(0, 12))
    near = st.integers(max(lo_t, lo - 3), min(hi_t, lo + slots + 3))
    batches = integer_batches(draw, dtype, near, 40)
    return lo, slots, batches


@settings(max_examples=100, deadline=None)
@given(dense_inputs())
def test_dense_kernel_equals_reference(inputs):
    lo, slots, batches = inputs
    got_seen, want_seen = np.zeros(slots + 1, np.uint8), np.zeros(slots + 1, np.uint8)
    for values, validity, selection in batches:
        got = K.dense_group_ids(values, lo, slots, got_seen, validity, selection)
        want = R.dense_group_ids(values, lo, slots, want_seen, validity, selection)
        assert np.array_equal(got[0], want[0])
        assert got[1] == want[1]
        assert np.array_equal(got_seen, want_seen)


COLUMNS = "k int4, s int2, b int8, f float8, t bool"
AGGREGATES = ("count(*), count(f), sum(b), avg(s), sum(f), avg(f), min(f), max(b), bool_and(t), "
              "count(DISTINCT s)")
keys = st.one_of(st.none(), st.integers(-20, 20))
rows = st.tuples(keys, st.one_of(st.none(), st.integers(-2**15, 2**15 - 1)),
                 st.one_of(st.none(), st.integers(-2**62, 2**62)),
                 st.one_of(st.none(), st.integers(-400, 400).map(lambda i: i / 4)),  # exact sums
                 st.one_of(st.none(), st.booleans()))
conditions = st.sampled_from(["true", "k > 0", "s < 0", "f IS NULL", "k = 1000", "b > 0 OR k < -10"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(parts=st.lists(st.lists(rows, min_size=4, max_size=60), min_size=0, max_size=3),
       delta=st.lists(st.tuples(st.one_of(st.none(), st.integers(-2**31, 2**31 - 1), st.integers(-30, 30)),
                                st.integers(-5, 5), st.integers(-5, 5), st.none(), st.booleans()),
                      max_size=4),
       chunk=st.sampled_from([4, 16, 1000]), deleted=st.one_of(st.none(), st.integers(-3, 3)),
       where=conditions)
def test_dense_group_by_equals_heap(db, parts, delta, chunk, deleted, where):
    def edit(table):
        db.execute(f"DELETE FROM {table} WHERE k = %s", [deleted])
        db.execute(f"UPDATE {table} SET k = k + 100 WHERE k = %s", [deleted + 1])
    fill_pair(db, COLUMNS, parts, delta, chunk, None if deleted is None else edit)
    sql = f"SELECT k, {AGGREGATES} FROM {{}} WHERE {where} GROUP BY k ORDER BY k"
    got = db.execute(sql.format("c")).fetchall()
    want = db.execute(sql.format("h")).fetchall()
    assert got == want, (sql, got, want)


def test_group_by_a_small_range_numbers_groups_by_value(db):
    db.execute("CREATE FOREIGN TABLE c (k int4, v float8) SERVER orochi OPTIONS (delta_row_limit '10')")
    db.execute("CREATE TABLE h (k int4, v float8)")
    for t in ("c", "h"):
        db.execute(f"INSERT INTO {t} SELECT CASE WHEN i % 17 = 0 THEN NULL ELSE i % 100 END, i / 4.0 "
                   "FROM generate_series(1, 5000) i")
        db.execute(f"INSERT INTO {t} VALUES (-7, 1), (99, 2), (5000000, NULL), (NULL, 3)")
    q = "SELECT k, count(*), sum(v), max(v) FROM {} WHERE v < 1000 OR k IS NULL GROUP BY k ORDER BY k"
    assert db.execute(q.format("c")).fetchall() == db.execute(q.format("h")).fetchall()
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN (ANALYZE, COSTS OFF) SELECT k, count(*) FROM c GROUP BY k").fetchall())
    assert "Group Ids By Value: k (100 values)" in plan, plan
    assert "Groups: 103" in plan, plan  # 0 .. 99, NULL, -7 and 5000000 from the delta store
