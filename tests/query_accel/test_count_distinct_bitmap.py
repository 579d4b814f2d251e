"""count(DISTINCT) of integer columns in a bitmap of the range the stripes'
statistics give (values outside it, as the delta store's, in the hash set):
the kernel against its numpy reference, and the SQL answers against the
heap table (NULLs, filters that keep nothing, deleted and updated rows,
delta rows beyond the stripes' range, a range too wide for a bitmap).
orochi.approx_count_distinct and orochi.hll_agg of such columns collect the
distinct values in the same bitmap and fold each into the sketch once: the
same sketch bytes as the heap table's aggregate."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integer_kernel_helpers import DTYPES, fill_pair, integer_batches

from orochi_fdw.kernels import aggregate as K
from orochi_fdw.query import aggregate_reference as R


@st.composite
def bitmap_inputs(draw):
    dtype = draw(st.sampled_from(list(DTYPES)))
    lo_t, hi_t = DTYPES[dtype]
    lo = draw(st.one_of(st.integers(-70, 70), st.sampled_from([lo_t, hi_t - 63, hi_t])))
    words = draw(st.integers(0, 3))
    near = st.integers(max(lo_t, lo - 5), min(hi_t, lo + 64 * words + 5))
    batches = integer_batches(draw, dtype, near, 80)
    return lo, words, batches


@settings(max_examples=100, deadline=None)
@given(bitmap_inputs())
def test_bitmap_kernel_equals_reference(inputs):
    lo, words, batches = inputs
    got_bits, want_bits = np.zeros(words, np.uint64), np.zeros(words, np.uint64)
    for values, validity, selection in batches:
        got = K.distinct_bitmap_update(got_bits, lo, values, validity, selection)
        want = R.distinct_bitmap_update(want_bits, lo, values, validity, selection)
        assert got[0] == want[0]
        assert (got[1] is None) == (want[1] is None)
        if got[1] is not None:
            assert np.array_equal(got[1], want[1])
        assert np.array_equal(got_bits, want_bits)


COLUMNS = "a int2, b int4, c int8, w int8"
QUERY = "SELECT count(DISTINCT a), count(DISTINCT b), count(DISTINCT c), count(DISTINCT w), count(*) FROM {}"

small = st.one_of(st.none(), st.integers(-40, 40))
values = st.tuples(small, st.one_of(small, st.sampled_from([-2**31, 2**31 - 1])),
                   st.one_of(small, st.integers(10**12, 10**12 + 3)),
                   st.one_of(st.none(), st.integers(-2**62, 2**62)))
conditions = st.sampled_from(["true", "a > 0", "b = 7", "c IS NULL", "a = 1000", "b < -100 OR a > 30"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(parts=st.lists(st.lists(values, min_size=4, max_size=60), min_size=0, max_size=3),
       delta=st.lists(st.tuples(st.one_of(small, st.sampled_from([-2**15, 2**15 - 1])),
                                st.integers(-10**6, 10**6), st.integers(-2**63, 2**63 - 1),
                                st.none()), max_size=4),
       chunk=st.sampled_from([4, 16, 1000]), deleted=st.one_of(st.none(), st.integers(-3, 3)),
       where=conditions, param=st.sampled_from([None, "NULL", "-5", "1000"]))
def test_count_distinct_equals_heap(db, parts, delta, chunk, deleted, where, param):
    fill_pair(db, COLUMNS, parts, delta, chunk, None if deleted is None else _edit(db, deleted))
    sql = QUERY + " WHERE " + where
    if param is None:
        got = db.execute(sql.format("c")).fetchall()
        want = db.execute(sql.format("h")).fetchall()
    else:
        for t in ("c", "h"):
            db.execute(f"PREPARE q_{t}(int4) AS {sql.format(t)} AND b >= $1")
        try:
            got = db.execute(f"EXECUTE q_c({param})").fetchall()
            want = db.execute(f"EXECUTE q_h({param})").fetchall()
        finally:
            db.execute("DEALLOCATE q_c; DEALLOCATE q_h")
    assert got == want, (sql, got, want)


def test_count_distinct_uses_a_bitmap(db):
    """A small range (from the stripes' statistics) is kept in a bitmap, a
    delta row beyond it is counted too; a range too wide is hashed."""
    db.execute("CREATE FOREIGN TABLE c (a int4, w int8) SERVER orochi OPTIONS (delta_row_limit '10')")
    db.execute("CREATE TABLE h (a int4, w int8)")
    for t in ("c", "h"):
        db.execute(f"INSERT INTO {t} SELECT i % 1000, i::int8 << 40 FROM generate_series(1, 5000) i")
        db.execute(f"INSERT INTO {t} VALUES (-7, 1), (999, 2), (5000000, NULL)")
    for q in ("SELECT count(DISTINCT a) FROM {}", "SELECT count(DISTINCT w), count(DISTINCT a) FROM {}",
              "SELECT count(DISTINCT a) FROM {} WHERE a > 998"):
        assert db.execute(q.format("c")).fetchall() == db.execute(q.format("h")).fetchall(), q
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN (ANALYZE, COSTS OFF) SELECT count(DISTINCT a), count(DISTINCT w) FROM c").fetchall())
    assert "Distinct Bitmap: a (1024 bits)" in plan, plan
    assert "Distinct Bitmap: w" not in plan, plan


SKETCHES = ("SELECT orochi.approx_count_distinct(a), orochi.hll_agg(b)::text, "
            "orochi.approx_count_distinct(c, 10), orochi.hll_agg(w)::text, count(*) FROM {}")


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])
@given(parts=st.lists(st.lists(values, min_size=4, max_size=60), min_size=0, max_size=3),
       delta=st.lists(st.tuples(small, st.integers(-10**6, 10**6), st.integers(-2**63, 2**63 - 1),
                                st.none()), max_size=3),
       deleted=st.one_of(st.none(), st.integers(-3, 3)), where=conditions)
def test_hll_sketches_of_bitmaps_equal_heap(db, parts, delta, deleted, where):
    fill_pair(db, COLUMNS, parts, delta, 16, None if deleted is None else _edit(db, deleted))
    sql = SKETCHES + " WHERE " + where
    assert db.execute(sql.format("c")).fetchall() == db.execute(sql.format("h")).fetchall(), sql


def test_hll_sketch_uses_a_bitmap(db):
    """More distinct values than a sparse sketch keeps (dense registers),
    a delta row beyond the stripes' range, NULLs: the heap's sketch."""
    db.execute("CREATE FOREIGN TABLE c (a int4) SERVER orochi OPTIONS (delta_row_limit '10')")
    db.execute("CREATE TABLE h (a int4)")
    for t in ("c", "h"):
        db.execute(f"INSERT INTO {t} SELECT CASE WHEN i % 13 = 0 THEN NULL ELSE i % 5000 END "
                   "FROM generate_series(1, 20000) i")
        db.execute(f"INSERT INTO {t} VALUES (-7), (4999), (5000000), (NULL)")
    for q in ("SELECT orochi.approx_count_distinct(a), orochi.hll_agg(a)::text FROM {}",
              "SELECT orochi.approx_count_distinct(a, 8) FROM {} WHERE a > 4000"):
        assert db.execute(q.format("c")).fetchall() == db.execute(q.format("h")).fetchall(), q
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN (ANALYZE, COSTS OFF) SELECT orochi.approx_count_distinct(a) FROM c").fetchall())
    assert "Distinct Bitmap: a" in plan, plan


def _edit(db, deleted: int):
    """The DELETE and UPDATE both tables get."""
    def edit(table):
        db.execute(f"DELETE FROM {table} WHERE a = %s", [deleted])
        db.execute(f"UPDATE {table} SET b = b / 2 + 1000 WHERE a = %s", [deleted + 1])
    return edit
